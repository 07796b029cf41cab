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
        Some(Command::HepDump { listen, format }) => {
            let rt = match runtime() {
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
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
    crate::agent::check(&config).map_err(|e| e.to_string())?;
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
    let rt = match runtime() {
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
