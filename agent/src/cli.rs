//! The command line: `heptap [serve]`, `heptap check-config`, `heptap hep-dump`, `heptap
//! upgrade` (a hand-over to a new process), and the MI clients `heptap fifo` / `heptap mi`
//! (which find heptap's MI in the packaged config, make sure it is heptap before sending
//! anything, and stop quietly when their reader goes away).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use heptap_config::{Config, Source};

use crate::hep_dump::{self, ListenSpec};

/// heptap: a tracing sidecar for SIP proxies.
#[derive(Debug, Parser)]
#[command(name = "heptap", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file, for the implicit `serve` or the subcommand that follows (`heptap -c
    /// FILE check-config` is `heptap check-config -c FILE`).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the config and exit, as `check-config` does (nginx's and haproxy's habit).
    #[arg(short = 't', long = "test")]
    test: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run heptap (the default). Without -c it runs on the built-in default config.
    Serve {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load and validate the config; print OK or every error; exit 0 or 1.
    CheckConfig {
        /// The config file (TOML); the built-in default when omitted.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Send an MI command over the FIFO (2.x text framing, as `opensipsctl fifo`); print the
    /// reply. Exits 1 on an error reply, 2 when heptap cannot be reached.
    Fifo {
        /// Take the FIFO and reply directory from this config file (or $HEPTAP_CONFIG; default:
        /// the packaged /etc/heptap/heptap.toml when it exists and --fifo is not given).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The MI FIFO (default: the config's `fifo_name`, else heptap's private run directory).
        #[arg(long, value_name = "PATH")]
        fifo: Option<PathBuf>,
        /// Where to create the reply FIFO: must be heptap's `reply_dir`.
        #[arg(long, value_name = "DIR")]
        reply_dir: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Send the command whatever answers (skip the check that the server is heptap).
        #[arg(long)]
        any_server: bool,
        /// The command and its parameters.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Send an MI command as JSON-RPC over HTTP (as `opensips-cli -x mi`); print the result as
    /// JSON. `name=value` words become named parameters. Exits 1 on an error, 2 when heptap
    /// cannot be reached.
    Mi {
        /// Take the URL (and bearer token) from this config file's `[mi]` (or $HEPTAP_CONFIG;
        /// default: the packaged /etc/heptap/heptap.toml when it exists and --url is not given).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The MI URL (default: from the config, else http://127.0.0.1:8888/mi).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Send this file's bearer token (default: the config's `http_token_file`, when the URL
        /// comes from the config).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Send the command whatever answers (skip the check that the server is heptap).
        #[arg(long)]
        any_server: bool,
        /// The command and its parameters.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Hand the running heptap over to a new process started from the binary on disk (as
    /// SIGUSR2 does) and wait until the new process is ready. Live connections stay with the
    /// old process until they close (`drain_timeout`). Exits 0 when the new process took over,
    /// 1 when it failed (the running heptap keeps serving as before), 2 when no heptap that
    /// takes hand-overs was found (nothing was signalled), 3 when heptap refused (a hand-over
    /// is under way, or it is draining), 4 when no outcome came within --timeout.
    Upgrade {
        /// The running heptap's pid.
        #[arg(long, value_name = "PID", conflicts_with = "pid_file")]
        pid: Option<u32>,
        /// Read the pid from this file (default: the config's `[service] pid_file`, else the
        /// systemd unit's MainPID).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// The config whose `[service] pid_file` names the pid file (or $HEPTAP_CONFIG;
        /// default: the packaged /etc/heptap/heptap.toml when it exists).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The systemd unit whose MainPID is heptap, when no pid or pid file is given.
        #[arg(long, default_value = "heptap.service")]
        unit: String,
        /// Give up waiting for the outcome after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Receive HEP (v1/v2/v3 on UDP, HEP3 on TCP) and print one JSON line per packet.
    HepDump {
        /// Where to listen: udp:IP:PORT or tcp:IP:PORT; repeat for several.
        #[arg(short, long = "listen", value_name = "PROTO:ADDR", required = true)]
        listen: Vec<ListenSpec>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "json")]
        format: hep_dump::Format,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.test {
        return match cli.command {
            None => check_config(cli.config),
            Some(Command::CheckConfig { config }) => check_config(config.or(cli.config)),
            Some(_) => {
                print_err("heptap: -t checks the config; it takes no other subcommand");
                ExitCode::from(2)
            }
        };
    }
    // A -c before the subcommand is that subcommand's; written on both sides, the last wins.
    match cli.command {
        None => serve(cli.config),
        Some(Command::Serve { config }) => serve(config.or(cli.config)),
        Some(Command::CheckConfig { config }) => check_config(config.or(cli.config)),
        Some(Command::Fifo {
            config,
            fifo,
            reply_dir,
            timeout,
            any_server,
            command,
        }) => {
            let config = client_config_file(
                client_config(config, cli.config),
                fifo.is_some(),
                Path::new(PACKAGED_CONFIG),
            );
            mi_client(config, timeout, |config, timeout| async move {
                let (fifo, reply_dir) = fifo_paths(config.as_ref(), fifo, reply_dir);
                let (cmd, args) = split_command(command);
                if !any_server {
                    heptap_mi::check_heptap_fifo(&fifo, &reply_dir, timeout).await?;
                }
                heptap_mi::fifo_call_text(&fifo, &reply_dir, &cmd, &args, timeout).await
            })
        }
        Some(Command::Mi {
            config,
            url,
            token_file,
            timeout,
            any_server,
            command,
        }) => {
            let config = client_config_file(
                client_config(config, cli.config),
                url.is_some(),
                Path::new(PACKAGED_CONFIG),
            );
            mi_client(config, timeout, |config, timeout| async move {
                // The config's token goes only to the config's own MI, never to a --url.
                let (url, config_token) = match url {
                    Some(url) => (url, None),
                    None => (
                        mi_url(config.as_ref()),
                        config.and_then(|c| c.mi.http_token_file),
                    ),
                };
                let token = token_file
                    .or(config_token)
                    .map(|f| heptap_mi::BearerToken::read_file(&f))
                    .transpose()?;
                let (cmd, args) = split_command(command);
                let params = heptap_mi::cli_params(&cmd, &args);
                if !any_server {
                    heptap_mi::check_heptap_http(&url, timeout, token.as_ref()).await?;
                }
                let reply =
                    heptap_mi::http_call_with_token(&url, &cmd, &params, timeout, token.as_ref())
                        .await?;
                Ok(serde_json::to_string_pretty(&reply.result).unwrap_or(reply.text))
            })
        }
        Some(Command::Upgrade {
            pid,
            pid_file,
            config,
            unit,
            timeout,
        }) => {
            let config = client_config_file(
                client_config(config, cli.config),
                pid.is_some() || pid_file.is_some(),
                Path::new(PACKAGED_CONFIG),
            );
            let config_pid_file = match config {
                Some(file) => match Config::load(&source(Some(file.clone()))) {
                    Ok(c) => c.service.pid_file,
                    Err(e) => {
                        print_err(&format!(
                            "heptap: the config {} is refused:\n{e}",
                            file.display()
                        ));
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            let target = crate::handover::client::Target {
                pid,
                pid_file,
                config_pid_file,
                unit,
            };
            crate::handover::client::main(&target, Duration::from_secs(timeout))
        }
        Some(Command::HepDump { listen, format }) => {
            let rt = match runtime(true) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(hep_dump::run(listen, format)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("heptap hep-dump: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The runtime of `hep-dump` (multi-threaded, one worker per core), or of `serve`'s control
/// plane (the main thread: signals, MI, reloads; the relay has its own workers, see
/// [`crate::workers`]).
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("heptap: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// The config's source: the file and the environment, less the hand-over channel's name (it is
/// this start's only, and no config key).
fn source(file: Option<PathBuf>) -> Source {
    Source {
        file,
        env: std::env::vars()
            .filter(|(k, _)| k != crate::handover::ENV)
            .collect(),
    }
}

/// Loads the config and every part the agent builds from it (routes, destinations), so that
/// check-config refuses exactly what serve would refuse; with the warnings both show.
fn load(file: Option<PathBuf>) -> Result<(Config, Vec<String>), String> {
    let src = source(file);
    let config = Config::load(&src).map_err(|e| e.to_string())?;
    let warnings = crate::build::check(&config).map_err(|e| e.located(&src).to_string())?;
    Ok((config, warnings))
}

/// `check-config` and `-t`: every error of the file in one run: types, values and references
/// of the parts that loaded, then what `serve` would build from them (routes, TLS material,
/// `[mi]`), each problem that follows only from a part already reported left out.
fn check_config(file: Option<PathBuf>) -> ExitCode {
    let mut loaded = Config::load_all(&source(file));
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if loaded.any_loaded() {
        match crate::build::check(&loaded.config) {
            Ok(w) => warnings = w,
            Err(e) => {
                for problem in e.0 {
                    use crate::build::BuildProblem as P;
                    match problem {
                        P::Config(errors) => loaded.add(errors),
                        P::Routes(e) => {
                            if loaded.loaded("routes") && loaded.loaded("address_groups") {
                                problems.push(e.to_string());
                            }
                        }
                        // Numbered as in the file (listeners that failed to load are not built).
                        P::Listener { index, source } => {
                            let index = loaded.listener_index(index);
                            problems.push(P::Listener { index, source }.to_string());
                        }
                        P::Transparent { index, reason } => {
                            let index = loaded.listener_index(index);
                            problems.push(P::Transparent { index, reason }.to_string());
                        }
                        P::Destination { name, source } => {
                            if loaded.loaded(&format!("hep.ids.{name}")) {
                                problems.push(P::Destination { name, source }.to_string());
                            }
                        }
                        P::Mi(e) => {
                            if loaded.loaded("mi") {
                                problems.push(P::Mi(e).to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    for w in warnings {
        print_err(&format!("warning: {w}"));
    }
    if loaded.errors.is_empty() && problems.is_empty() {
        return print_out("OK");
    }
    let mut text = loaded.errors.to_string();
    for problem in problems {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&problem);
    }
    print_err(&text);
    ExitCode::FAILURE
}

fn serve(file: Option<PathBuf>) -> ExitCode {
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Started by a running heptap for a hand-over: its sockets first, so that whatever fails
    // from here on (the config too) is told to it, and it keeps serving.
    let incoming = match crate::handover::Incoming::channel_name() {
        Some(name) => match rt.block_on(crate::handover::Incoming::connect(&name)) {
            Ok(incoming) => Some(incoming),
            Err(e) => {
                eprintln!("heptap: cannot take over from the running heptap: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let (config, warnings) = match load(file.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heptap: the config is refused:\n{e}");
            if let Some(incoming) = &incoming {
                rt.block_on(incoming.failed(&format!("the config is refused: {e}")));
            }
            return ExitCode::FAILURE;
        }
    };
    let log = crate::logging::init(&config.log.level, config.log.format);
    for w in warnings {
        tracing::warn!("{w}");
    }
    match rt.block_on(crate::agent::serve(config, source(file), log, incoming)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "heptap stopped");
            eprintln!("heptap: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The variable that names the config file of `heptap fifo` / `heptap mi` (as `-c` does).
const CONFIG_ENV: &str = "HEPTAP_CONFIG";

/// A client's `-c`: after the subcommand, else before it, else [`CONFIG_ENV`].
fn client_config(after: Option<PathBuf>, before: Option<PathBuf>) -> Option<PathBuf> {
    after
        .or(before)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
}

/// Where the packages install heptap's config: the clients read it when nothing else says
/// where heptap's MI is, since heptap's default port (8888) is OpenSIPS mi_http's too.
const PACKAGED_CONFIG: &str = "/etc/heptap/heptap.toml";

/// The config file a client reads: `-c` (or [`CONFIG_ENV`]); else, when the command line does
/// not name the MI (`--url`, `--fifo`), `packaged` if it exists.
fn client_config_file(
    explicit: Option<PathBuf>,
    target_given: bool,
    packaged: &Path,
) -> Option<PathBuf> {
    explicit.or_else(|| (!target_given && packaged.exists()).then(|| packaged.to_owned()))
}

/// The command word and its parameters.
fn split_command(command: Vec<String>) -> (String, Vec<String>) {
    let mut words = command.into_iter();
    let cmd = words.next().unwrap_or_default();
    (cmd, words.collect())
}

/// Prints `text` and a newline on stdout. A reader that went away (`heptap mi ... | head -1`)
/// is not an error: the command ran, and nothing is left to say.
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            print_err(&format!("heptap: cannot write the reply: {e}"));
            ExitCode::from(2)
        }
    }
}

/// Prints `text` on stderr, if anyone still reads it.
fn print_err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Runs an MI client command: loads the config when one is named or found (for the FIFO paths,
/// the URL and the token), runs `call` within `timeout` seconds, prints the reply, and maps
/// failures to exit codes (1: the MI answered with an error; 2: it could not be reached, is
/// not heptap, or answered garbage).
fn mi_client<F>(
    config: Option<PathBuf>,
    timeout: u64,
    call: impl FnOnce(Option<Config>, Duration) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<String, heptap_mi::ClientError>>,
{
    let config = match config {
        Some(file) => match Config::load(&source(Some(file.clone()))) {
            Ok(c) => Some(c),
            Err(e) => {
                print_err(&format!(
                    "heptap: the config {} is refused:\n{e}",
                    file.display()
                ));
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_err(&format!("heptap: cannot start the runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs(timeout);
    // One deadline for the whole exchange, the check included.
    let result = rt.block_on(async {
        tokio::time::timeout(timeout, call(config, timeout))
            .await
            .unwrap_or(Err(heptap_mi::ClientError::Timeout(timeout)))
    });
    match result {
        Ok(text) => print_out(text.trim_end()),
        Err(e @ (heptap_mi::ClientError::Rpc(_) | heptap_mi::ClientError::Text { .. })) => {
            print_err(&e.to_string());
            ExitCode::from(1)
        }
        Err(e) => {
            print_err(&format!("heptap: {e}"));
            ExitCode::from(2)
        }
    }
}

/// The FIFO and reply directory: the flags, else the config's, else the private run dir.
fn fifo_paths(
    config: Option<&Config>,
    fifo: Option<PathBuf>,
    reply_dir: Option<PathBuf>,
) -> (PathBuf, PathBuf) {
    let mi = config.map(|c| &c.mi);
    let fifo = fifo
        .or_else(|| mi.and_then(|m| m.fifo_name.clone()))
        .unwrap_or_else(crate::mi_settings::default_fifo);
    let reply_dir = reply_dir
        .or_else(|| mi.and_then(|m| m.reply_dir.clone()))
        .unwrap_or_else(|| {
            fifo.parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_else(crate::mi_settings::private_run_dir)
        });
    (fifo, reply_dir)
}

/// The MI URL from the config's `http_listen` and `http_root`, else OpenSIPS's default.
fn mi_url(config: Option<&Config>) -> String {
    match config.map(|c| (&c.mi.http_listen, &c.mi.http_root)) {
        Some((Some(addr), root)) => format!("http://{addr}/{}", root.trim_matches('/')),
        _ => "http://127.0.0.1:8888/mi".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_read_the_packaged_config_only_when_nothing_names_the_mi() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let packaged = dir.path().join("heptap.toml");
        let explicit = Some(PathBuf::from("/etc/other.toml"));
        // Missing: nothing to read (the built-in defaults apply).
        assert_eq!(client_config_file(None, false, &packaged), None);
        std::fs::write(&packaged, "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            client_config_file(None, false, &packaged),
            Some(packaged.clone())
        );
        // --url / --fifo name the MI: the packaged config is not read.
        assert_eq!(client_config_file(None, true, &packaged), None);
        // -c (or HEPTAP_CONFIG) always wins.
        assert_eq!(
            client_config_file(explicit.clone(), false, &packaged),
            explicit
        );
        assert_eq!(
            client_config_file(explicit.clone(), true, &packaged),
            explicit
        );
    }
}
