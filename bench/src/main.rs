//! `heptap-bench`: the load tools of bench/run.sh (see `heptap-bench --help`).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use heptap_bench::load::{self, Probe};
use heptap_bench::report::{self, Record};
use heptap_bench::target::Target;
use heptap_bench::{Error, echo, floor, sink, tls};

/// Load tools for comparing heptap, HAProxy, nginx and a direct connection on loopback.
#[derive(Debug, Parser)]
#[command(name = "heptap-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write cert.pem, key.pem and combined.pem (self-signed, for localhost) into a directory.
    GenCert {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The SIP responder and bulk sink the targets relay to.
    EchoServer {
        /// Plain TCP listening address; repeat for several.
        #[arg(long = "listen")]
        listen: Vec<SocketAddr>,
        /// TLS listening address; repeat for several.
        #[arg(long = "listen-tls")]
        listen_tls: Vec<SocketAddr>,
        /// Certificate for the TLS listeners.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Its key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// A HEP receiver (UDP datagrams, and HEP3 frames on TCP, at the same address) that only
    /// counts packets.
    HepSink {
        /// Where to receive.
        #[arg(long)]
        listen: SocketAddr,
        /// Where to write "<packets> <bytes>".
        #[arg(long)]
        stats: PathBuf,
    },
    /// Bulk throughput over one connection.
    Bulk {
        #[command(flatten)]
        common: Common,
        /// Seconds of sending.
        #[arg(long, default_value_t = 5)]
        duration: u64,
    },
    /// SIP request/response: fixed rate (open loop) or, with --max, as fast as possible.
    Rr {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, default_value_t = 50)]
        conns: usize,
        /// Requests per second (fixed-rate mode).
        #[arg(long, default_value_t = 5000)]
        rate: u32,
        /// Closed loop at the maximum rate instead.
        #[arg(long)]
        max: bool,
        /// Seconds.
        #[arg(long, default_value_t = 5)]
        duration: u64,
    },
    /// Connections per second: connect, one request/response, close.
    Connrate {
        #[command(flatten)]
        common: Common,
        /// Clients at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// At most this many connections.
        #[arg(long, default_value_t = 50_000)]
        max_conns: u64,
    },
    /// Memory per idle connection in the relay (--cpu-pid, every one given added up).
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to hold open.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to wait before reading memory.
        #[arg(long, default_value_t = 2)]
        settle: u64,
    },
    /// The kernel's CPU cost per HEP datagram to the sink, paid by the cheapest sender (one
    /// thread, a connected socket, 64 datagrams per sendmmsg): the floor under HEP over UDP.
    UdpFloor {
        /// The HEP sink.
        #[arg(long)]
        sink: SocketAddr,
        /// Bytes per datagram (about a traced SIP message's HEP packet in the benchmark).
        #[arg(long, default_value_t = 600)]
        size: usize,
        /// Datagrams per second (heptap sends about this many at its maximum SIP rate).
        #[arg(long, default_value_t = 100_000)]
        rate: u32,
        /// Seconds.
        #[arg(long, default_value_t = 3)]
        duration: u64,
        /// The sink's stats file: datagrams received are reported.
        #[arg(long)]
        hep_stats: Option<PathBuf>,
        /// Repetition number in the results.
        #[arg(long, default_value_t = 1)]
        round: u32,
        /// Append the result here as a JSON line.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the Markdown tables of a results file into BENCHMARKS.md.
    Report {
        /// The results (JSON lines appended by the load tools).
        #[arg(long)]
        results: PathBuf,
        /// The file to update between the relay-bench markers.
        #[arg(long)]
        file: PathBuf,
        /// Markdown put before the tables (date, machine, command).
        #[arg(long)]
        preamble: PathBuf,
        /// Markdown put after the tables (observations).
        #[arg(long)]
        postscript: Option<PathBuf>,
    },
}

/// What every load tool takes.
#[derive(Debug, Args)]
struct Common {
    /// Where to connect.
    #[arg(long)]
    target: SocketAddr,
    /// Speak TLS, trusting this certificate.
    #[arg(long, value_name = "CERT")]
    tls: Option<PathBuf>,
    /// The relay process: its CPU time (and, for idle, memory) is reported; repeat for a relay
    /// of several processes (a master and its workers), whose figures are added up.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// The HEP sink process: its CPU time is reported on its own, not in the relay's.
    #[arg(long)]
    sink_pid: Option<u32>,
    /// The HEP sink's stats file: packets received are reported.
    #[arg(long)]
    hep_stats: Option<PathBuf>,
    /// Target label in the results.
    #[arg(long, default_value = "target")]
    label: String,
    /// Repetition number in the results.
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Append the result here as a JSON line.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Common {
    fn target(&self) -> Result<Target, Error> {
        let tls = match &self.tls {
            None => None,
            Some(cert) => Some((tls::client(cert)?, tls::server_name()?)),
        };
        Ok(Target {
            addr: self.target,
            tls,
        })
    }

    fn probe(&self) -> Probe {
        Probe {
            cpu_pids: self.cpu_pids.clone(),
            sink_pid: self.sink_pid,
            hep_stats: self.hep_stats.clone(),
        }
    }

    fn emit<T: serde::Serialize>(&self, test: &str, result: &T) -> Result<(), Error> {
        let record = Record {
            test: test.into(),
            proto: if self.tls.is_some() { "tls" } else { "tcp" }.into(),
            target: self.label.clone(),
            round: self.round,
            result: serde_json::to_value(result)?,
        };
        emit(&record, self.out.as_deref())
    }
}

/// Prints a result line, and appends it to `out`.
fn emit(record: &Record, out: Option<&std::path::Path>) -> Result<(), Error> {
    let line = serde_json::to_string(record)?;
    println!("{line}");
    if let Some(out) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    heptap_bench::raise_nofile_limit();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heptap-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    Ok(if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

fn run(command: Command) -> Result<(), Error> {
    let secs = Duration::from_secs;
    match command {
        Command::GenCert { dir } => tls::generate(&dir),
        Command::EchoServer {
            listen,
            listen_tls,
            cert,
            key,
        } => {
            let acceptor = match (cert, key) {
                (Some(cert), Some(key)) => Some(tls::server(&cert, &key)?),
                _ => None,
            };
            // One thread: the responder should cost the machine as little as possible.
            runtime(1)?.block_on(echo::serve(listen, listen_tls, acceptor))
        }
        Command::HepSink { listen, stats } => sink::run(listen, stats),
        Command::Bulk { common, duration } => {
            let target = common.target()?;
            let r = runtime(2)?.block_on(load::bulk(&target, secs(duration), &common.probe()))?;
            common.emit("bulk", &r)
        }
        Command::Rr {
            common,
            conns,
            rate,
            max,
            duration,
        } => {
            let target = common.target()?;
            let rt = runtime(2)?;
            if max {
                let r = rt.block_on(load::rr_max(
                    &target,
                    conns,
                    secs(duration),
                    &common.probe(),
                ))?;
                common.emit("rr_max", &r)
            } else {
                let r = rt.block_on(load::rr_fixed(
                    &target,
                    conns,
                    rate,
                    secs(duration),
                    &common.probe(),
                ))?;
                common.emit("rr_fixed", &r)
            }
        }
        Command::Connrate {
            common,
            concurrency,
            duration,
            max_conns,
        } => {
            let target = common.target()?;
            let r = runtime(2)?.block_on(load::connrate(
                &target,
                concurrency,
                secs(duration),
                max_conns,
                &common.probe(),
            ))?;
            common.emit("connrate", &r)
        }
        Command::Idle {
            common,
            count,
            concurrency,
            settle,
        } => {
            let target = common.target()?;
            let r = runtime(2)?.block_on(load::idle(
                &target,
                count,
                concurrency,
                secs(settle),
                &common.probe(),
            ))?;
            common.emit("idle", &r)
        }
        Command::UdpFloor {
            sink,
            size,
            rate,
            duration,
            hep_stats,
            round,
            out,
        } => {
            let r = floor::udp_floor(sink, size, rate, secs(duration), hep_stats.as_deref())?;
            let record = Record {
                test: "udp_floor".into(),
                proto: "udp".into(),
                target: "bare-sender".into(),
                round,
                result: serde_json::to_value(&r)?,
            };
            emit(&record, out.as_deref())
        }
        Command::Report {
            results,
            file,
            preamble,
            postscript,
        } => {
            let records = report::read_results(&results)?;
            let mut section = std::fs::read_to_string(preamble)?;
            section.push('\n');
            section.push_str(&report::tables(&records));
            if let Some(p) = postscript {
                section.push_str(&std::fs::read_to_string(p)?);
            }
            let doc = std::fs::read_to_string(&file).unwrap_or_default();
            std::fs::write(&file, report::splice(&doc, &section))?;
            Ok(())
        }
    }
}
