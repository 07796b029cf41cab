//! The command line: `heptap [serve]`, `heptap check-config`, `heptap hep-dump`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use heptap_config::{Config, Source};

use crate::hep_dump::{self, ListenSpec};

/// heptap: a tracing sidecar for SIP proxies.
#[derive(Debug, Parser)]
#[command(name = "heptap", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
    /// For the implicit `serve`: the config file.
    #[arg(short, long, value_name = "FILE", global = false)]
    config: Option<PathBuf>,
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
        /// Take the FIFO and reply directory from this config file.
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
        /// The command and its parameters.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Send an MI command as JSON-RPC over HTTP (as `opensips-cli -x mi`); print the result as
    /// JSON. `name=value` words become named parameters. Exits 1 on an error, 2 when heptap
    /// cannot be reached.
    Mi {
        /// Take the URL from this config file's `[mi] http_listen` and `http_root`.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The MI URL (default: from the config, else http://127.0.0.1:8888/mi).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The command and its parameters.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
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
    match cli.command {
        None => serve(cli.config),
        Some(Command::Serve { config }) => serve(config.or(cli.config)),
        Some(Command::CheckConfig { config }) => check_config(config),
        Some(Command::Fifo {
            config,
            fifo,
            reply_dir,
            timeout,
            command,
        }) => mi_client(config, |rt, config| {
            let (fifo, reply_dir) = fifo_paths(config.as_ref(), fifo, reply_dir);
            let (cmd, args) = command
                .split_first()
                .map(|(c, a)| (c.clone(), a.to_vec()))
                .unwrap_or_default();
            rt.block_on(heptap_mi::fifo_call_text(
                &fifo,
                &reply_dir,
                &cmd,
                &args,
                std::time::Duration::from_secs(timeout),
            ))
        }),
        Some(Command::Mi {
            config,
            url,
            timeout,
            command,
        }) => mi_client(config, |rt, config| {
            let url = url.unwrap_or_else(|| mi_url(config.as_ref()));
            let (cmd, args) = command
                .split_first()
                .map(|(c, a)| (c.clone(), a.to_vec()))
                .unwrap_or_default();
            let params = heptap_mi::cli_params(&cmd, &args);
            rt.block_on(heptap_mi::http_call(
                &url,
                &cmd,
                &params,
                std::time::Duration::from_secs(timeout),
            ))
            .map(|reply| serde_json::to_string_pretty(&reply.result).unwrap_or(reply.text))
        }),
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

fn source(file: Option<PathBuf>) -> Source {
    Source {
        file,
        env: std::env::vars().collect(),
    }
}

/// Loads the config and every part the agent builds from it (routes, destinations), so that
/// check-config refuses exactly what serve would refuse.
fn load(file: Option<PathBuf>) -> Result<Config, String> {
    let config = Config::load(&source(file)).map_err(|e| e.to_string())?;
    crate::build::check(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

fn check_config(file: Option<PathBuf>) -> ExitCode {
    match load(file) {
        Ok(_) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(file: Option<PathBuf>) -> ExitCode {
    let config = match load(file.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heptap: the config is refused:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let log = crate::logging::init(&config.log.level);
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::agent::serve(config, source(file), log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "heptap stopped");
            eprintln!("heptap: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an MI client command: loads the config when one is named (for the FIFO paths or the
/// URL), prints the reply, and maps failures to exit codes (1: the MI answered with an error;
/// 2: it could not be reached or answered garbage).
fn mi_client(
    config: Option<PathBuf>,
    call: impl FnOnce(
        &tokio::runtime::Runtime,
        Option<Config>,
    ) -> Result<String, heptap_mi::ClientError>,
) -> ExitCode {
    let config = match config {
        Some(file) => match Config::load(&source(Some(file))) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("heptap: the config is refused:\n{e}");
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
            eprintln!("heptap: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match call(&rt, config) {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e @ (heptap_mi::ClientError::Rpc(_) | heptap_mi::ClientError::Text { .. })) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("heptap: {e}");
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
