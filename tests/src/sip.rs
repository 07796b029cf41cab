//! SIP peers for tests: a dialog's messages, and a scripted upstream "proxy" that answers them.

use std::net::SocketAddr;

use heptap_hep::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::collector::{UdpCollector, WAIT};

/// The Call-ID of [`dialog`]'s messages.
pub const CALL_ID: &str = "a84b4c76e66710@pc33.example.com";

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";

fn msg(start: &str, cseq: &str, body: &str, compact: bool) -> Vec<u8> {
    let (cid, cl) = if compact {
        ("i", "l")
    } else {
        ("Call-ID", "Content-Length")
    };
    format!(
        "{start}\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
         From: <sip:alice@example.com>;tag=1928301774\r\nTo: <sip:bob@example.com>\r\n\
         {cid}: {CALL_ID}\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n{cl}: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// INVITE (with SDP), ACK and BYE from the client, in order.
pub fn client_messages() -> [Vec<u8>; 3] {
    [
        msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", SDP, false),
        msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", "", true),
        msg("BYE sip:bob@example.com SIP/2.0", "2 BYE", "", false),
    ]
}

/// 100, 180, 200 (with SDP) to the INVITE; 200 to the BYE.
pub fn upstream_messages() -> [Vec<u8>; 4] {
    [
        msg("SIP/2.0 100 Trying", "1 INVITE", "", false),
        msg("SIP/2.0 180 Ringing", "1 INVITE", "", true),
        msg("SIP/2.0 200 OK", "1 INVITE", SDP, false),
        msg("SIP/2.0 200 OK", "2 BYE", "", false),
    ]
}

/// An OPTIONS request (a keep-alive probe many proxies see).
pub fn options() -> Vec<u8> {
    msg(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "3 OPTIONS",
        "",
        false,
    )
}

/// Plays [`client_messages`]' dialog on a stream through heptap to an [`answer`]ing upstream:
/// INVITE, its three replies, ACK, BYE, the 200; returns the four replies as read.
pub async fn play_dialog<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Vec<Vec<u8>> {
    let [invite, ack, bye] = client_messages();
    let mut got = Vec::new();
    s.write_all(&invite).await.unwrap();
    for _ in 0..3 {
        got.push(read_message(s).await.expect("a reply"));
    }
    s.write_all(&ack).await.unwrap();
    s.write_all(&bye).await.unwrap();
    got.push(read_message(s).await.expect("200 to BYE"));
    got
}

/// Whether a HEP packet is a traced SIP message (proto type 1), not a connection event.
pub fn is_sip(p: &Packet) -> bool {
    p.proto_type == Some(1)
}

/// Packets until `n` of them are SIP messages (all of them, connection events included).
pub async fn sip_packets(col: &mut UdpCollector, n: usize) -> Vec<Packet> {
    col.until(WAIT, |g| g.iter().filter(|p| is_sip(p)).count() >= n)
        .await
}

/// Reads one SIP message (head to the empty line, then Content-Length bytes) from `r`, skipping
/// CRLF keep-alives. None at EOF.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if r.read(&mut b).await.ok()? == 0 {
            return None;
        }
        if head.is_empty() && (b[0] == b'\r' || b[0] == b'\n') {
            continue;
        }
        head.push(b[0]);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let len = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().to_ascii_lowercase();
            (k == "content-length" || k == "l").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    head.extend(body);
    Some(head)
}

/// Answers like a proxy would: INVITE -> 100, 180, 200 (all three in one write, so the relay
/// sees coalesced messages); ACK -> nothing; BYE -> 200; OPTIONS -> 200; anything else echoed.
pub async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let up = upstream_messages();
    while let Some(m) = read_message(&mut s).await {
        let reply: Vec<u8> = if m.starts_with(b"INVITE") {
            [up[0].clone(), up[1].clone(), up[2].clone()].concat()
        } else if m.starts_with(b"ACK") {
            Vec::new()
        } else if m.starts_with(b"BYE") {
            up[3].clone()
        } else if m.starts_with(b"OPTIONS") {
            String::from_utf8_lossy(&m)
                .replacen("OPTIONS sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK", 1)
                .into_bytes()
        } else {
            m
        };
        if !reply.is_empty() && s.write_all(&reply).await.is_err() {
            return;
        }
    }
    let _ = s.shutdown().await;
}

/// A TCP upstream that [`answer`]s on every connection.
#[derive(Debug)]
pub struct SipUpstream {
    /// Where heptap relays to.
    pub addr: SocketAddr,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl SipUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(answer(s));
            }
        });
        Self { addr, task }
    }
}

impl Drop for SipUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request of `user`'s call `call_id` to bob: `method` with CSeq number `cseq`; the INVITE
/// has no To tag, later requests carry the callee's tag (`;tag=up`, as [`MirrorUpstream`]
/// answers).
pub fn call_request(method: &str, user: &str, call_id: &str, cseq: u32) -> Vec<u8> {
    let to_tag = if method == "INVITE" { "" } else { ";tag=up" };
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{cseq}\r\n\
         From: <sip:{user}@example.com>;tag=from-{user}\r\nTo: <sip:bob@example.com>{to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The reply a proxy gives `request`: `code` with its Via, From, Call-ID and CSeq, and a To
/// with the tag `up`.
pub fn reply_to(request: &[u8], code: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let mut out = format!("SIP/2.0 {code}\r\n");
    for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" if line.contains(";tag=") => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag=up\r\n")),
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// A TCP upstream that answers every request but ACK with [`reply_to`] (INVITE: 100, 180 and
/// 200), so replies carry their request's Call-ID and From.
#[derive(Debug)]
pub struct MirrorUpstream {
    /// Where heptap relays to.
    pub addr: SocketAddr,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl MirrorUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    while let Some(m) = read_message(&mut s).await {
                        let reply = if m.starts_with(b"INVITE") {
                            [
                                reply_to(&m, "100 Trying"),
                                reply_to(&m, "180 Ringing"),
                                reply_to(&m, "200 OK"),
                            ]
                            .concat()
                        } else if m.starts_with(b"ACK") {
                            continue;
                        } else {
                            reply_to(&m, "200 OK")
                        };
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for MirrorUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plays one call of `user` (`call_id`) on `s` through heptap to a [`MirrorUpstream`]: INVITE
/// (waits for its 100, 180, 200), ACK, BYE (waits for its 200). Seven messages cross.
pub async fn play_call<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, user: &str, call_id: &str) {
    s.write_all(&call_request("INVITE", user, call_id, 1))
        .await
        .expect("INVITE");
    for _ in 0..3 {
        read_message(s).await.expect("reply to INVITE");
    }
    s.write_all(&call_request("ACK", user, call_id, 1))
        .await
        .expect("ACK");
    s.write_all(&call_request("BYE", user, call_id, 2))
        .await
        .expect("BYE");
    read_message(s).await.expect("200 to BYE");
}
