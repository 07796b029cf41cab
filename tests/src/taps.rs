//! Configs and runners for the tap tests: one `[[listener]]` written for the test, connection
//! events of every protocol traced to a collector on 127.0.0.1, the MI kept in a scratch dir.

use std::net::SocketAddr;

use heptap::LogHandle;
use heptap::{Running, start};
use heptap_config::Config;
use heptap_hep::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::collector::{Scratch, UdpCollector, WAIT};
use crate::tls::Pki;

/// A `[tracer]` section with one trace_id, `tid`, sending SIP to the destination `col` (for a
/// listener with `sip_trace_id = "tid"`).
pub const TRACER: &str = "[tracer]\ntrace_id = [\"[tid]uri=hep:col\"]\n";

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
    let mut config = Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config refused:\n{e}\n{text}"));
    // These tests read events' parts by name: JSON payloads, unless `extra` chooses
    // (OpenSIPS's and heptap's default is homer5).
    if !extra.contains("homer5_on") {
        config.hep.homer5_on = false;
    }
    config
}

/// `upstream_proto = "<proto>"` (tls or wss) with [`upstream_tls`]: the upstream leg over TLS,
/// trusting the PKI's CA.
pub fn upstream_over(proto: &str, pki: &Pki) -> String {
    format!("upstream_proto = \"{proto}\"\n{}", upstream_tls(pki))
}

/// [`config`] with one `proto` listener toward `upstream` with `keys` (a tls or wss listener
/// presents the PKI's server certificate), `extra` TOML, traced to `col`, the MI in the PKI's
/// scratch dir.
pub fn tap_config(
    proto: &str,
    upstream: SocketAddr,
    keys: &str,
    extra: &str,
    col: &UdpCollector,
    pki: &Pki,
) -> Config {
    let tls = matches!(proto, "tls" | "wss").then_some(pki);
    config(
        &listener(proto, upstream, keys, tls, ""),
        col.addr,
        extra,
        &pki.dir,
    )
}

/// Starts heptap in-process.
pub async fn run(config: Config) -> Running {
    start(config, LogHandle::detached())
        .await
        .expect("heptap starts")
}

/// A config written by a test as TOML; a refusal panics showing the error and the text.
pub fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Starts heptap in-process on a config written as TOML.
pub async fn run_toml(text: &str) -> Running {
    run(parse(text)).await
}

/// Starts heptap on [`tap_config`].
pub async fn run_tap(
    proto: &str,
    upstream: SocketAddr,
    keys: &str,
    extra: &str,
    col: &UdpCollector,
    pki: &Pki,
) -> Running {
    run(tap_config(proto, upstream, keys, extra, col, pki)).await
}

/// The next `n` packets.
pub async fn events(col: &mut UdpCollector, n: usize) -> Vec<Packet> {
    col.until(WAIT, |got| got.len() >= n).await
}

/// Writes `bytes` to `s` and reads as many back (what an echo upstream returns).
pub async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    s.read_exact(&mut back).await.unwrap();
    back
}

/// Half-closes `s` and reads until the peer closes too; returns what arrived meanwhile.
pub async fn half_close<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Vec<u8> {
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    rest
}

/// Writes `data` to `s` in slices of the `splits` sizes (in turn), then half-closes, while
/// reading what comes back until the peer closes (within [`WAIT`]); returns what came back.
pub async fn relay_in_slices<S>(s: S, data: &[u8], splits: Vec<usize>) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(s);
    let sent = data.to_vec();
    let writer = tokio::spawn(async move {
        let (mut off, mut i) = (0, 0);
        while off < sent.len() {
            let n = splits[i % splits.len()].min(sent.len() - off);
            w.write_all(&sent[off..off + n]).await.unwrap();
            off += n;
            i += 1;
        }
        // Half-close: the upstream sees EOF, echoes the rest, and closes its side.
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    tokio::time::timeout(WAIT, r.read_to_end(&mut back))
        .await
        .expect("echo within the timeout")
        .unwrap();
    writer.await.unwrap();
    back
}

/// What one read on `s` gets, which heptap is to end (close or reset) within [`WAIT`].
pub async fn read_once<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<usize> {
    let mut b = [0u8; 16];
    tokio::time::timeout(WAIT, s.read(&mut b))
        .await
        .expect("closed within the timeout")
}

/// Waits (bounded) until heptap relays no connection: each ends on its worker, after the client
/// has seen its end, and traces its CLOSED events before it counts as over.
pub async fn connections_over(heptap: &Running) {
    heptap_testkit::eventually(WAIT, "no connection active", || {
        stat(heptap, "active") == Some(0)
    })
    .await;
}

/// A listener statistic (`listener_0:<name>`).
pub fn stat(heptap: &Running, name: &str) -> Option<u64> {
    statistic(heptap, "listener_0", name)
}

/// The statistic `<group>:<name>`, as `get_statistics` reports it; None when there is none.
pub fn statistic(heptap: &Running, group: &str, name: &str) -> Option<u64> {
    heptap
        .stats()
        .snapshot()
        .into_iter()
        .find(|(g, n, _)| g == group && n == name)
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
