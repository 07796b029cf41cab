//! Reloads that never cut a call (issue 17): certificates renewed under live TLS connections,
//! listeners added, changed and removed while their connections go on, and a reply that says
//! what was applied and what was not.
//!
//! heptap runs in-process on a config file (`start_with_source`), which each test rewrites
//! before `reload_from_source` (what SIGHUP and MI `reload` run) or the MI itself (opensips-cli,
//! the client operators use: needs `opensips-cli` on PATH or in `OPENSIPS_CLI`). Every
//! certificate is made by the test (rcgen). The binary with a real SIGHUP and `openssl
//! s_client` is in service.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use heptap::{LogHandle, Running, Stop, start_with_source};
use heptap_config::{Config, Source};
use heptap_mi::{LogLevel, ReloadItem, ReloadReport};
use heptap_testkit::eventually;
use heptap_tests::collector::{EchoUpstream, Scratch, UdpCollector, WAIT, event_of};
use heptap_tests::events::part;
use heptap_tests::mi_cli::opensips_cli;
use heptap_tests::sip::{SipUpstream, is_sip, options, read_message};
use heptap_tests::taps::{roundtrip, statistic};
use heptap_tests::tls::{Pki, SERVER_SUBJECT, subject_of};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

/// The config file of a test: a collector for every connection event, the MI (FIFO and HTTP)
/// in the scratch directory, and `listeners`.
fn config_text(col: SocketAddr, dir: &Scratch, listeners: &str) -> String {
    let mut net = String::new();
    for p in ["tcp", "tls"] {
        net.push_str(&format!(
            "[net.{p}]\ntrace_on = true\ntrace_destination = \"col\"\n"
        ));
    }
    format!(
        // JSON payloads: the tests read the events' parts by name.
        "[hep]\nhomer5_on = false\n[hep.ids]\ncol = \"[col] {col}; transport=udp\"\n\n{net}\n{mi}\n{listeners}\n",
        mi = dir.mi_toml(true)
    )
}

/// A `[[listener]]` named `name`, TCP on `listen`, relaying to `upstream`, with `keys`.
fn tcp_listener(name: &str, listen: &str, upstream: SocketAddr, keys: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nproto = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n{keys}\n"
    )
}

/// A TLS `[[listener]]` named `name` on 127.0.0.1:0, relaying to `upstream` over TCP, its
/// certificate and key in `cert` and `key`.
fn tls_listener(name: &str, upstream: SocketAddr, cert: &Path, key: &Path) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nproto = \"tls\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n\
         [listener.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// Writes `text` as `dir`/heptap.toml and starts heptap on it, as `heptap serve -c` would.
async fn start_file(dir: &Scratch, text: &str) -> (Running, PathBuf) {
    let file = dir.path().join("heptap.toml");
    std::fs::write(&file, text).unwrap();
    let source = Source {
        file: Some(file.clone()),
        env: Vec::new(),
    };
    let config = Config::load(&source).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let h = start_with_source(config, LogHandle::detached(), Some(source))
        .await
        .expect("heptap starts");
    (h, file)
}

/// Rewrites the config file and reloads it, as SIGHUP does.
fn reload(h: &Running, file: &Path, text: &str) -> ReloadReport {
    std::fs::write(file, text).unwrap();
    h.reload_from_source().expect("the reload is not refused")
}

fn item(item: &str, detail: impl Into<String>) -> ReloadItem {
    ReloadItem {
        item: item.to_owned(),
        detail: detail.into(),
    }
}

/// Puts `from`'s content at `to` by a rename, as a certificate renewal deploys it (the file is
/// replaced whole, never seen half written).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A listener's certificate and key, copied where the config names them.
fn deploy(pki: &Pki, dir: &Scratch, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.path().join(format!("{name}.pem")),
        dir.path().join(format!("{name}.key")),
    );
    replace(&pki.server.cert_file, &cert);
    replace(&pki.server.key_file, &key);
    (cert, key)
}

/// The certificate the server showed.
fn peer_cert(s: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The text of the ACCEPTED events of TLS client legs, in arrival order: their
/// `server-subject` parts.
async fn accepted_tls_subjects(col: &mut UdpCollector, n: usize) -> Vec<String> {
    let tls_accepted =
        |p: &heptap_hep::Packet| event_of(p) == "ACCEPTED" && part(p, "Protocol") == "TLS";
    col.until(WAIT, |got| {
        got.iter().filter(|p| tls_accepted(p)).count() >= n
    })
    .await
    .iter()
    .filter(|p| tls_accepted(p))
    .map(|p| part(p, "server-subject"))
    .collect()
}

/// The MI `ps` rows about listeners.
fn listener_rows(h: &Running) -> Vec<String> {
    h.control()
        .processes()
        .into_iter()
        .map(|p| p.kind)
        .filter(|k| k.contains(" listener "))
        .collect()
}

#[tokio::test]
async fn a_renewed_certificate_serves_the_next_handshake_while_a_live_tls_connection_goes_on() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let (cert, key) = deploy(&pki, &dir, "edge");
    let text = config_text(col.addr, &dir, &tls_listener("edge", up.addr, &cert, &key));
    let (h, file) = start_file(&dir, &text).await;
    let listen = h.listen_addrs()[0];
    let mut live = pki.connect(listen).await;
    assert_eq!(roundtrip(&mut live, b"before").await, b"before");
    assert_eq!(peer_cert(&live), pki.server.cert);

    // The certificate is renewed (same file names, new content) and the same config reloaded.
    let renewed = pki.issue_server("renewed", "renewed");
    replace(&renewed.cert_file, &cert);
    replace(&renewed.key_file, &key);
    let took = std::time::Instant::now();
    let report = reload(&h, &file, &text);
    eprintln!("FIGURES renewal: reload took {:?}", took.elapsed());
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item(
                "listener edge",
                format!(
                    "TLS files reloaded: new handshakes get the certificate {}, live connections go on",
                    subject_of("renewed")
                )
            )],
            not_applied: vec![],
        }
    );

    let mut next = pki.connect(listen).await;
    assert_eq!(peer_cert(&next), renewed.cert, "the next handshake");
    assert_eq!(roundtrip(&mut next, b"after").await, b"after");
    // The live connection goes on, on the certificate it was accepted with.
    assert_eq!(roundtrip(&mut live, b"still here").await, b"still here");
    assert_eq!(peer_cert(&live), pki.server.cert);
    assert_eq!(
        accepted_tls_subjects(&mut col, 2).await,
        [SERVER_SUBJECT.to_owned(), subject_of("renewed")],
        "each handshake is traced with the certificate it got"
    );
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn unusable_tls_files_are_refused_naming_the_path_the_old_ones_keep_serving_the_others_renew()
{
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let mut listeners = String::new();
    let mut files = Vec::new();
    for name in ["garbled", "mismatched", "good"] {
        let (cert, key) = deploy(&pki, &dir, name);
        listeners.push_str(&tls_listener(name, up.addr, &cert, &key));
        files.push((cert, key));
    }
    let text = config_text(col.addr, &dir, &listeners);
    let (h, file) = start_file(&dir, &text).await;
    let addrs = h.listen_addrs();

    // garbled: its certificate file is not PEM any more. mismatched: a new certificate with
    // the key of another one. good: renewed as it should be.
    std::fs::write(&files[0].0, "this is not a certificate\n").unwrap();
    let (renewed, other) = (
        pki.issue_server("renewed", "renewed"),
        pki.issue_server("other", "other"),
    );
    replace(&renewed.cert_file, &files[1].0);
    replace(&other.key_file, &files[1].1);
    replace(&renewed.cert_file, &files[2].0);
    replace(&renewed.key_file, &files[2].1);
    let report = reload(&h, &file, &text);
    assert_eq!(
        report.not_applied,
        vec![
            item(
                "listener garbled",
                format!(
                    "tls.cert_file {}: no PEM certificate in the file; it goes on as it was",
                    files[0].0.display()
                )
            ),
            item(
                "listener mismatched",
                format!(
                    "tls.key_file {} does not match tls.cert_file {}: it is not the key of that \
                     certificate; it goes on as it was",
                    files[1].1.display(),
                    files[1].0.display()
                )
            ),
        ]
    );
    assert_eq!(report.applied.len(), 1, "{report:#?}");
    assert_eq!(report.applied[0].item, "listener good");

    // The refused ones serve the old certificate; the good one the new.
    for (addr, cert) in addrs
        .iter()
        .zip([&pki.server.cert, &pki.server.cert, &renewed.cert])
    {
        let mut c = pki.connect(*addr).await;
        assert_eq!(&peer_cert(&c), cert);
        assert_eq!(roundtrip(&mut c, b"x").await, b"x");
    }
    // The MI's seam answers the same: not "OK".
    let again = h.control().reload().unwrap();
    assert!(!again.is_complete(), "{again:#?}");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn tls_reload_over_the_mi_renews_certificates_and_nothing_else() {
    let pki = Pki::new();
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let (cert, key) = deploy(&pki, &dir, "edge");
    // A TLS destination too: its CA file is read again by tls_reload.
    let ca = dir.path().join("collector-ca.pem");
    replace(&pki.ca_file, &ca);
    let destination = format!(
        "[hep.ids.secure]\nhost = \"127.0.0.1\"\nport = {}\ntransport = \"tls\"\nca_file = \"{}\"\n\
         [tracer]\ntrace_id = [\"[tid]uri=hep:secure\"]\n",
        col.addr.port(),
        ca.display()
    );
    let listener = tls_listener("edge", up.addr, &cert, &key);
    let text = config_text(col.addr, &dir, &format!("{destination}\n{listener}"));
    let (h, file) = start_file(&dir, &text).await;
    let listen = h.listen_addrs()[0];

    // The certificate is renewed, and the file gains a listener: tls_reload takes the first
    // only.
    let renewed = pki.issue_server("renewed", "renewed");
    replace(&renewed.cert_file, &cert);
    replace(&renewed.key_file, &key);
    let more = tcp_listener("more", "127.0.0.1:0", up.addr, "");
    std::fs::write(&file, format!("{text}\n{more}")).unwrap();
    let (code, out) = opensips_cli(&h, &dir, "http", &["mi", "tls_reload"]).await;
    assert_eq!((code, out.trim()), (0, "\"OK\""));
    assert_eq!(peer_cert(&pki.connect(listen).await), renewed.cert);
    assert_eq!(
        h.listen_addrs(),
        [listen],
        "the file's new listener waits for a reload"
    );

    // Files that cannot be used: the reply says which and why (over the FIFO too), and the
    // renewed certificate keeps serving.
    std::fs::write(&cert, "not PEM").unwrap();
    std::fs::write(&ca, "not PEM either").unwrap();
    let (code, out) = opensips_cli(&h, &dir, "fifo", &["mi", "tls_reload"]).await;
    assert_ne!(code, 0, "{out}");
    let expected = format!(
        "500: Reload incomplete (not applied: listener edge: tls.cert_file {}: no PEM certificate \
         in the file; it goes on with the files it had; not applied: hep_id secure: cannot load \
         ca_file from {}: no PEM certificate in the file; it goes on with the files it had)",
        cert.display(),
        ca.display()
    );
    assert!(out.contains(&expected), "{out}\nexpected: {expected}");
    assert_eq!(peer_cert(&pki.connect(listen).await), renewed.cert);
    // A CA file renewed again: the destination says so.
    let other = Pki::new();
    replace(&other.ca_file, &ca);
    replace(&pki.server.cert_file, &cert);
    replace(&pki.server.key_file, &key);
    let report = h.tls_reload().unwrap();
    assert_eq!(
        report.applied,
        vec![
            item(
                "listener edge",
                format!(
                    "TLS files reloaded: new handshakes get the certificate {SERVER_SUBJECT}, live connections go on"
                )
            ),
            item(
                "hep_id secure",
                "TLS files reloaded: its next connections use them, the one up goes on"
            ),
        ]
    );
    assert_eq!(report.not_applied, vec![]);
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_listener_added_to_the_file_serves_after_a_reload() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let first = tcp_listener("first", "127.0.0.1:0", up.addr, "");
    let text = config_text(col.addr, &dir, &first);
    let (h, file) = start_file(&dir, &text).await;
    let before = h.listen_addrs();

    let added = tcp_listener("added", "127.0.0.1:0", up.addr, "");
    let report = reload(&h, &file, &format!("{text}\n{added}"));
    let addrs = h.listen_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], before[0], "the first one keeps its socket");
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item(
                "listener added",
                format!("added: listening on {}", addrs[1])
            )],
            not_applied: vec![],
        }
    );
    let mut c = TcpStream::connect(addrs[1]).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"hello").await, b"hello");
    let me = c.local_addr().unwrap();
    let got = col
        .until(WAIT, |g| {
            g.iter()
                .any(|p| p.src() == Some(me) && event_of(p) == "ACCEPTED")
        })
        .await;
    assert!(got.iter().any(|p| p.dst() == Some(addrs[1])));
    assert_eq!(statistic(&h, "listener_added", "accepted"), Some(1));
    assert_eq!(
        listener_rows(&h),
        [
            format!("TCP listener first on {}", addrs[0]),
            format!("TCP listener added on {}", addrs[1])
        ]
    );
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_removed_listener_refuses_new_connections_while_its_live_connection_keeps_relaying() {
    let up = EchoUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let kept = tcp_listener("kept", "127.0.0.1:0", up.addr, "");
    let gone = tcp_listener("gone", "127.0.0.1:0", up.addr, "");
    let (h, file) = start_file(
        &dir,
        &config_text(col.addr, &dir, &format!("{kept}\n{gone}")),
    )
    .await;
    let [kept_addr, gone_addr] = h.listen_addrs()[..] else {
        panic!("two listeners")
    };
    let mut live = TcpStream::connect(gone_addr).await.unwrap();
    assert_eq!(roundtrip(&mut live, b"call").await, b"call");
    let me = live.local_addr().unwrap();

    let took = std::time::Instant::now();
    let report = reload(&h, &file, &config_text(col.addr, &dir, &kept));
    eprintln!(
        "FIGURES removal: reload (sockets closed) took {:?}",
        took.elapsed()
    );
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item(
                "listener gone",
                format!(
                    "removed: stopped accepting on {gone_addr}; its 1 connection(s) go on until they close"
                )
            )],
            not_applied: vec![],
        }
    );
    // Its sockets are closed when the reload answers: a new connection is refused.
    let refused = std::net::TcpStream::connect(gone_addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(h.listen_addrs(), [kept_addr]);
    // The live connection relays on, counted and shown.
    assert_eq!(
        roundtrip(&mut live, b"still talking").await,
        b"still talking"
    );
    assert_eq!(statistic(&h, "listener_gone", "active"), Some(1));
    assert_eq!(
        listener_rows(&h),
        [
            format!("TCP listener kept on {kept_addr}"),
            format!("TCP listener gone on {gone_addr} (removed; 1 connection(s) open)")
        ]
    );
    // ... and traced until it closes.
    drop(live);
    col.until(WAIT, |g| {
        g.iter()
            .any(|p| p.src() == Some(me) && event_of(p) == "CLOSED")
    })
    .await;
    eventually(WAIT, "the removed listener gone from ps", || {
        listener_rows(&h).len() == 1
    })
    .await;
    assert_eq!(statistic(&h, "listener_gone", "active"), Some(0));
    h.shutdown(Stop::Immediate).await;
}

/// A connection through heptap to a [`tagged_upstream`]: the tag it read.
fn tagged_connection(listen: SocketAddr) -> std::io::Result<[u8; 2]> {
    let mut c = std::net::TcpStream::connect(listen)?;
    c.set_read_timeout(Some(WAIT))?;
    let mut t = [0u8; 2];
    c.read_exact(&mut t)?;
    Ok(t)
}

/// An upstream that writes `tag` to every connection it accepts, then echoes.
async fn tagged_upstream(tag: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                if w.write_all(tag).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listener_keeps_its_socket_new_connections_get_the_new_settings_live_ones_the_old()
 {
    let (u1, u2) = (tagged_upstream(b"u1").await, tagged_upstream(b"u2").await);
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let before = tcp_listener("edge", "127.0.0.1:0", u1, "");
    let (h, file) = start_file(&dir, &config_text(col.addr, &dir, &before)).await;
    let listen = h.listen_addrs()[0];
    let mut live = std::net::TcpStream::connect(listen).unwrap();
    let mut tag = [0u8; 2];
    live.read_exact(&mut tag).unwrap();
    assert_eq!(&tag, b"u1");

    // A client opens one connection after the other throughout the reload (each must be
    // accepted and reach an upstream), and three more open as many as they can meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let sequential = Arc::new(AtomicUsize::new(0));
    let client = std::thread::spawn({
        let (stop, sequential) = (stop.clone(), sequential.clone());
        move || {
            let (mut tags, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Acquire) || tags.last() != Some(b"u2") {
                match tagged_connection(listen) {
                    Ok(t) => tags.push(t),
                    Err(e) => failures.push(e.to_string()),
                }
                sequential.fetch_add(1, Ordering::AcqRel);
            }
            (tags, failures)
        }
    });
    let hammers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut done, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Acquire) {
                    match tagged_connection(listen) {
                        Ok(_) => done += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (done, failures)
            })
        })
        .collect();
    eventually(WAIT, "10 sequential connections before the reload", || {
        sequential.load(Ordering::Acquire) >= 10
    })
    .await;
    let control = h.control();
    let reload_to = |keys: &str| {
        let text = config_text(
            col.addr,
            &dir,
            &tcp_listener("edge", "127.0.0.1:0", u2, keys),
        );
        std::fs::write(&file, text).unwrap();
        let control = control.clone();
        tokio::task::spawn_blocking(move || {
            let took = std::time::Instant::now();
            (control.reload().unwrap(), took.elapsed())
        })
    };
    let (report, took) = reload_to("max_connections = 5").await.unwrap();
    // Ten more reloads while the clients go on, each changing the connection limit.
    let mut slowest = took;
    for i in 0..10 {
        let (r, took) = reload_to(&format!("max_connections = {}", 6 - i % 2))
            .await
            .unwrap();
        assert!(r.is_complete(), "{r:#?}");
        slowest = slowest.max(took);
    }
    let accepted = statistic(&h, "listener_edge", "accepted").unwrap();
    eventually(WAIT, "connections after the reloads", || {
        statistic(&h, "listener_edge", "accepted").unwrap() > accepted + 20
    })
    .await;
    stop.store(true, Ordering::Release);
    let (tags, mut failures) = client.join().unwrap();
    let mut others = 0;
    for hammer in hammers {
        let (done, f) = hammer.join().unwrap();
        others += done;
        failures.extend(f);
    }

    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item(
                "listener edge",
                "new connections get the new max_connections, upstream; live ones keep what they had"
            )],
            not_applied: vec![],
        }
    );
    eprintln!(
        "FIGURES change: {} connections across 11 reloads (slowest {slowest:?}, the first \
         {took:?}), {} failed",
        tags.len() + others,
        failures.len()
    );
    assert_eq!(failures, Vec::<String>::new(), "no attempt refused or cut");
    assert_eq!(h.listen_addrs(), [listen], "the same socket");
    // One connection after the other: every one before the swap went to u1, every one after
    // to u2.
    let first_u2 = tags.iter().position(|t| t == b"u2").unwrap();
    assert!(first_u2 >= 10, "{first_u2}");
    assert!(tags[..first_u2].iter().all(|t| t == b"u1"));
    assert!(tags[first_u2..].iter().all(|t| t == b"u2"), "{tags:?}");
    // The live connection still relays to the upstream it was opened to.
    live.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    live.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_listener_that_cannot_bind_is_not_applied_and_the_rest_is() {
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let first = tcp_listener("first", "127.0.0.1:0", up.addr, "");
    let text = config_text(col.addr, &dir, &first);
    let (h, file) = start_file(&dir, &text).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let busy = tcp_listener("busy", &taken.to_string(), up.addr, "");
    let fresh = tcp_listener("fresh", "127.0.0.1:0", up.addr, "");
    let wanted = config_text(col.addr, &dir, &format!("{first}\n{busy}\n{fresh}"));

    let report = reload(&h, &file, &wanted);
    assert_eq!(report.not_applied.len(), 1, "{report:#?}");
    let ReloadItem { item: what, detail } = &report.not_applied[0];
    assert_eq!(what, "listener busy");
    assert!(
        detail.starts_with(&format!("cannot listen on {taken}: "))
            && detail.contains("in use")
            && detail.ends_with("; not started"),
        "{detail}"
    );
    let addrs = h.listen_addrs();
    assert_eq!(
        report.applied,
        vec![item(
            "listener fresh",
            format!("added: listening on {}", addrs[1])
        )]
    );
    let mut c = TcpStream::connect(addrs[1]).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"x").await, b"x");

    // Once the address is free, the same file applies whole.
    drop(holder);
    let report = reload(&h, &file, &wanted);
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item(
                "listener busy",
                format!("added: listening on {taken}")
            )],
            not_applied: vec![],
        }
    );
    assert_eq!(h.listen_addrs(), [addrs[0], taken, addrs[1]]);
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn the_mi_reload_reply_lists_what_was_not_applied_and_answers_ok_only_when_all_was() {
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let first = tcp_listener("first", "127.0.0.1:0", up.addr, "");
    let text = config_text(col.addr, &dir, &first);
    let (h, file) = start_file(&dir, &text).await;
    let running = std::thread::available_parallelism().unwrap().get();
    let more = running + 1;

    // More workers (a restart's business) and a new listener (applied) in one reload.
    let added = tcp_listener("added", "127.0.0.1:0", up.addr, "");
    let wanted = format!("{text}\n{added}\n[service]\nworkers = {more}\n");
    std::fs::write(&file, &wanted).unwrap();
    let (code, out) = opensips_cli(&h, &dir, "http", &["mi", "reload"]).await;
    assert_ne!(code, 0, "{out}");
    let added_at = h.listen_addrs()[1];
    let expected = format!(
        "500: Reload incomplete (not applied: service.workers: {more} asked, {running} running; \
         it takes effect at the next restart; applied: listener added: added: listening on \
         {added_at})"
    );
    assert!(out.contains(&expected), "{out}\nexpected: {expected}");
    // The same file again: still not what runs, still said.
    let (code, out) = opensips_cli(&h, &dir, "fifo", &["mi", "reload"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "500: Reload incomplete (not applied: service.workers: {more} asked, {running} running; it takes effect at the next restart)"
        )),
        "{out}"
    );
    // Back to what runs: "OK", as OpenSIPS answers its reloads.
    std::fs::write(&file, format!("{text}\n{added}\n")).unwrap();
    let (code, out) = opensips_cli(&h, &dir, "http", &["mi", "reload"]).await;
    assert_eq!((code, out.trim()), (0, "\"OK\""));
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn what_other_sections_give_a_listener_reaches_its_next_connections_and_a_switch_the_file_changed_switches()
 {
    let up = SipUpstream::bind().await;
    let mut col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let listener = tcp_listener("edge", "127.0.0.1:0", up.addr, "sip_trace_id = \"tid\"");
    let tracer = "[tracer]\ntrace_id = [\"[tid]uri=hep:col\"]\n";
    let text = format!("{}\n{tracer}", config_text(col.addr, &dir, &listener));
    let (h, file) = start_file(&dir, &text).await;
    let listen = h.listen_addrs()[0];
    let traced = async |col: &mut UdpCollector| {
        let mut c = TcpStream::connect(listen).await.unwrap();
        c.write_all(&options()).await.unwrap();
        read_message(&mut c).await.expect("200 to OPTIONS");
        let me = c.local_addr().unwrap();
        let got = col
            .until(WAIT, |g| g.iter().any(|p| is_sip(p) && p.src() == Some(me)))
            .await;
        let accepted = got
            .iter()
            .any(|p| p.src() == Some(me) && event_of(p) == "ACCEPTED");
        let sip = got.into_iter().find(is_sip).unwrap();
        (
            String::from_utf8(sip.payload.unwrap().to_vec()).unwrap(),
            accepted,
        )
    };
    let (payload, accepted) = traced(&mut col).await;
    assert!(payload.starts_with("OPTIONS sip:"), "{payload}");
    assert!(accepted);

    // The listener's own section is unchanged; what it takes from [tracer] is not, and the
    // file switches TCP connection events off.
    let changed = text.replace("[net.tcp]\ntrace_on = true", "[net.tcp]\ntrace_on = false")
        + "sip_payload = \"json\"\n";
    let report = reload(&h, &file, &changed);
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![
                item("net.tcp.trace_on", "TCP tracing switched off"),
                item("tracer.sip_payload", "applied"),
            ],
            not_applied: vec![],
        }
    );
    col.drain(std::time::Duration::from_millis(100)).await;
    let (payload, accepted) = traced(&mut col).await;
    let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert!(
        json["payload"]
            .as_str()
            .unwrap()
            .starts_with("OPTIONS sip:"),
        "{payload}"
    );
    assert!(!accepted, "no TCP connection event any more");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_listener_moved_to_an_address_its_old_one_covers_is_bound_once_the_old_one_has_closed() {
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wildcard = tcp_listener("edge", &format!("0.0.0.0:{port}"), up.addr, "");
    let (h, file) = start_file(&dir, &config_text(col.addr, &dir, &wildcard)).await;
    let loopback: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut live = TcpStream::connect(loopback).await.unwrap();
    assert_eq!(roundtrip(&mut live, b"x").await, b"x");

    // The wildcard socket holds the port on 127.0.0.1 too: the new one is bound after it.
    let narrow = tcp_listener("edge", &loopback.to_string(), up.addr, "");
    let report = reload(&h, &file, &config_text(col.addr, &dir, &narrow));
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![
                item(
                    "listener edge",
                    format!(
                        "removed: stopped accepting on 0.0.0.0:{port}; its 1 connection(s) go on until they close"
                    )
                ),
                item("listener edge", format!("added: listening on {loopback}")),
            ],
            not_applied: vec![],
        }
    );
    assert_eq!(h.listen_addrs(), [loopback]);
    let mut c = TcpStream::connect(loopback).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"y").await, b"y");
    assert_eq!(roundtrip(&mut live, b"z").await, b"z");
    h.shutdown(Stop::Immediate).await;
}

#[tokio::test]
async fn a_log_level_the_file_changed_is_applied_and_the_mi_reports_it() {
    let up = EchoUpstream::bind().await;
    let col = UdpCollector::bind().await;
    let dir = Scratch::new();
    let text = config_text(
        col.addr,
        &dir,
        &tcp_listener("edge", "127.0.0.1:0", up.addr, ""),
    );
    let (h, file) = start_file(&dir, &format!("[log]\nlevel = \"info\"\n{text}")).await;
    assert_eq!(h.control().log_level(), LogLevel::Info);
    let report = reload(&h, &file, &format!("[log]\nlevel = \"debug\"\n{text}"));
    assert_eq!(
        report,
        ReloadReport {
            applied: vec![item("log.level", "info -> debug")],
            not_applied: vec![],
        }
    );
    assert_eq!(h.control().log_level(), LogLevel::Debug);
    h.shutdown(Stop::Immediate).await;
}
