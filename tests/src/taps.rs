//! Configs and runners for the tap tests: one `[[listener]]` written for the test, connection
//! events of every protocol traced to a collector on 127.0.0.1, the MI kept in a scratch dir.

use std::net::SocketAddr;

use heptap::agent::{Running, start};
use heptap::logging::LogHandle;
use heptap_config::Config;
use heptap_hep::Packet;

use crate::collector::{Scratch, UdpCollector, WAIT};
use crate::tls::Pki;

/// A `[[listener]]` of `proto` on 127.0.0.1:0 relaying to `upstream`, with `keys` (listener
/// keys, one per line) and, for tls/wss, a `[listener.tls]` table with the PKI's server
/// certificate and `tls_keys`.
pub fn listener(
    proto: &str,
    upstream: SocketAddr,
    keys: &str,
    pki: Option<&Pki>,
    tls_keys: &str,
) -> String {
    let mut text = format!(
        "[[listener]]\nproto = \"{proto}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{keys}\n"
    );
    if let Some(pki) = pki {
        text.push_str(&format!(
            "[listener.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{tls_keys}\n",
            pki.server.cert_file.display(),
            pki.server.key_file.display()
        ));
    }
    text
}

/// `upstream_tls` keys trusting the PKI's CA (to put in a listener's `keys`).
pub fn upstream_tls(pki: &Pki) -> String {
    format!(
        "upstream_tls = {{ ca_file = \"{}\", server_name = \"localhost\" }}",
        pki.ca_file.display()
    )
}

/// A config with `listener`, the four `[net.*]` sections on and traced to the collector, an
/// `[hep]`/`[tracer]` section in `extra`, and the MI inside `dir`.
pub fn config(listener: &str, collector: SocketAddr, extra: &str, dir: &Scratch) -> Config {
    let mi = dir.mi_toml(false);
    let mut net = String::new();
    for p in ["tcp", "tls", "ws", "wss"] {
        net.push_str(&format!(
            "[net.{p}]\ntrace_on = true\ntrace_destination = \"col\"\n"
        ));
    }
    let text = format!(
        "[hep.ids]\ncol = \"[col] {collector}; transport=udp\"\n{extra}\n{listener}\n{net}\n{mi}\n"
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config refused:\n{e}\n{text}"))
}

/// Starts heptap in-process.
pub async fn run(config: Config) -> Running {
    start(config, LogHandle::detached())
        .await
        .expect("heptap starts")
}

/// The next `n` packets.
pub async fn events(col: &mut UdpCollector, n: usize) -> Vec<Packet> {
    col.until(WAIT, |got| got.len() >= n).await
}

/// A listener statistic (`listener_0:<name>`).
pub fn stat(heptap: &Running, name: &str) -> Option<u64> {
    heptap
        .stats()
        .snapshot()
        .into_iter()
        .find(|(g, n, _)| g == "listener_0" && n == name)
        .map(|(_, _, v)| v)
}

/// `n` pseudo-random bytes from `seed` (xorshift: reproducible, no dependency).
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Pseudo-random sizes in `1..=max` from `seed`.
pub fn random_sizes(seed: u64, count: usize, max: usize) -> Vec<usize> {
    random_bytes(seed, count * 2)
        .chunks(2)
        .map(|c| 1 + (usize::from(c[0]) << 8 | usize::from(c[1])) % max)
        .collect()
}
