//! The WebSocket upgrade (RFC 6455, RFC 7118) on both legs: the client's request read and
//! answered, and ours written to the upstream and its reply checked.
//!
//! The upgrades are done here rather than by tungstenite's handshake, for three reasons: the
//! trace carries the exact bytes of the request and the reply (`Ws-Request`/`Ws-Reply`, as
//! OpenSIPS traces what it read and wrote), a refused upgrade gets OpenSIPS's `400 Bad Request`
//! reply, and bytes the client sent right behind its request are kept. After the upgrade,
//! tungstenite does the framing ([`super::ws_relay`]).

use std::io;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// An upgrade request or reply head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;

/// OpenSIPS's reply to a request it will not upgrade (`WS_HTTP_BAD_REQ`).
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The HTTP heads of an upgrade, as its handshake event shows them.
#[derive(Clone, Copy, Debug)]
pub struct WsHeads<'a> {
    /// The request (empty when none was written).
    pub request: &'a [u8],
    /// The reply, when there was one.
    pub reply: Option<&'a [u8]>,
}

/// A client's accepted upgrade.
#[derive(Debug)]
pub struct Upgrade {
    /// The request head as received, up to and including its empty line.
    pub request: Vec<u8>,
    /// The 101 reply as written.
    pub reply: Vec<u8>,
    /// The request target (path and query), requested again from the upstream.
    pub target: String,
    /// The client's `Origin`, passed on to the upstream.
    pub origin: Option<String>,
    /// Whether the client offered the `sip` subprotocol (and got it).
    pub sip: bool,
    /// Bytes read behind the request head: the first frames, for tungstenite.
    pub leftover: Vec<u8>,
}

impl Upgrade {
    /// The request as received and the 101 as written.
    pub fn heads(&self) -> WsHeads<'_> {
        WsHeads {
            request: &self.request,
            reply: Some(&self.reply),
        }
    }
}

/// Why a client's upgrade failed.
#[derive(Debug)]
pub enum AcceptError {
    /// Not a valid WebSocket upgrade; [`BAD_REQUEST`] was sent back.
    Refused {
        /// The request head as received (or its first [`MAX_HEAD`] bytes).
        request: Vec<u8>,
        /// What was wrong with it.
        reason: BadRequest,
    },
    /// The connection failed or ended before a whole request head arrived.
    Io(io::Error),
}

/// What was wrong with a client's upgrade request (traced in its CLOSED event as it says).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    /// No empty line within [`MAX_HEAD`] bytes.
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    /// The head ended early (cannot happen once its empty line was read; kept for httparse).
    #[error("incomplete request head")]
    Incomplete,
    /// Not HTTP.
    #[error("bad request head: {0}")]
    Parse(httparse::Error),
    /// Another method than GET.
    #[error("method {0}, not GET")]
    Method(String),
    /// HTTP/1.0.
    #[error("not HTTP/1.1")]
    Version,
    /// No `Upgrade: websocket`.
    #[error("no Upgrade: websocket")]
    NoUpgrade,
    /// No `Connection: Upgrade`.
    #[error("no Connection: Upgrade")]
    NoConnection,
    /// No `Sec-WebSocket-Version: 13`.
    #[error("no Sec-WebSocket-Version: 13")]
    NoVersion,
    /// No 24-character `Sec-WebSocket-Key`.
    #[error("no valid Sec-WebSocket-Key")]
    NoKey,
}

/// Why the upgrade toward the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum BadUpstreamUpgrade {
    /// The request could not be written.
    #[error("write: {0}")]
    Write(io::Error),
    /// The reply could not be read.
    #[error("read: {0}")]
    Read(io::Error),
    /// No empty line within [`MAX_HEAD`] bytes.
    #[error("reply head over {MAX_HEAD} bytes")]
    TooLarge,
    /// The head ended early (cannot happen once its empty line was read; kept for httparse).
    #[error("incomplete reply head")]
    Incomplete,
    /// Not HTTP.
    #[error("bad reply head: {0}")]
    Parse(httparse::Error),
    /// Not 101.
    #[error("upgrade refused: {code} {reason}")]
    Refused {
        /// The status code (0 if none).
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A subprotocol other than the `sip` we asked for.
    #[error("subprotocol {0} was not asked for")]
    Subprotocol(String),
    /// No `Upgrade: websocket` or no `Connection: Upgrade`.
    #[error("no Upgrade: websocket / Connection: Upgrade in the reply")]
    NoUpgrade,
    /// A `Sec-WebSocket-Accept` that does not answer our key.
    #[error("wrong Sec-WebSocket-Accept")]
    WrongAccept,
}

/// Reads the client's upgrade request and answers it: 101 with `Sec-WebSocket-Protocol: sip`
/// when the client offered `sip` (OpenSIPS's header order), or OpenSIPS's 400.
pub async fn accept<S>(s: &mut S) -> Result<Upgrade, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, leftover) = match read_head(s).await {
        Ok(head) => head,
        Err(HeadError::Io(e)) => return Err(AcceptError::Io(e)),
        Err(HeadError::TooLarge(partial)) => {
            return Err(refuse(s, partial, BadRequest::TooLarge).await);
        }
    };
    let checked = match check_request(&request) {
        Ok(c) => c,
        Err(reason) => return Err(refuse(s, request, reason).await),
    };
    let mut reply = Vec::with_capacity(160);
    reply.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    if checked.sip {
        reply.extend_from_slice(b"Sec-WebSocket-Protocol: sip\r\n");
    }
    reply.extend_from_slice(b"Sec-WebSocket-Accept: ");
    reply.extend_from_slice(derive_accept_key(checked.key.as_bytes()).as_bytes());
    reply.extend_from_slice(b"\r\n\r\n");
    s.write_all(&reply).await.map_err(AcceptError::Io)?;
    s.flush().await.map_err(AcceptError::Io)?;
    Ok(Upgrade {
        request,
        reply,
        target: checked.target,
        origin: checked.origin,
        sip: checked.sip,
        leftover,
    })
}

/// Sends the 400 reply (best effort: the client may be gone) and says why.
async fn refuse<S>(s: &mut S, request: Vec<u8>, reason: BadRequest) -> AcceptError
where
    S: AsyncWrite + Unpin,
{
    if s.write_all(BAD_REQUEST).await.is_ok() {
        let _ = s.flush().await;
    }
    AcceptError::Refused { request, reason }
}

/// How long a refused client is given to read the 400 and close before its socket is closed.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much of what a refused client still sends is read and discarded meanwhile.
const LINGER_BYTES: usize = 64 * 1024;

/// Closes a refused connection as HTTP servers do (a "lingering close"): our side is shut down
/// first (the FIN follows the 400), then what the client still sends is read and discarded
/// until it closes too, for at most [`LINGER`] and [`LINGER_BYTES`]. Closing a socket with
/// unread bytes in it (the rest of an oversized head, a request sent behind the upgrade) makes
/// the kernel send a reset instead of a FIN, and a reset can destroy the 400 before the client
/// has read it.
pub async fn linger_close<S>(s: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(LINGER, async {
        if s.shutdown().await.is_err() {
            return;
        }
        // Taken only here: a connection that is not refused never holds it.
        let mut buf = vec![0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// What the relay needs from a valid upgrade request.
struct Checked {
    /// Request target.
    target: String,
    /// `Sec-WebSocket-Key`.
    key: String,
    /// `Origin`.
    origin: Option<String>,
    /// `sip` offered in `Sec-WebSocket-Protocol`.
    sip: bool,
}

/// RFC 6455 §4.2.1: GET, HTTP/1.1, `Upgrade: websocket`, `Connection: Upgrade`, a 24-character
/// key, version 13. Host, Origin and the subprotocol are not required (OpenSIPS requires them;
/// heptap leaves that to the upstream).
fn check_request(head: &[u8]) -> Result<Checked, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(BadRequest::Incomplete),
        Err(e) => return Err(BadRequest::Parse(e)),
    }
    if req.method != Some("GET") {
        return Err(BadRequest::Method(req.method.unwrap_or("").to_owned()));
    }
    if req.version != Some(1) {
        return Err(BadRequest::Version);
    }
    let target = req.path.unwrap_or("/").to_owned();
    let mut upgrade = false;
    let mut connection = false;
    let mut version = false;
    let mut key = None;
    let mut origin = None;
    let mut sip = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version |= value == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            sip |= has_token(value, "sip");
        }
    }
    if !upgrade {
        return Err(BadRequest::NoUpgrade);
    }
    if !connection {
        return Err(BadRequest::NoConnection);
    }
    if !version {
        return Err(BadRequest::NoVersion);
    }
    let Some(key) = key.filter(|k| k.len() == 24) else {
        return Err(BadRequest::NoKey);
    };
    Ok(Checked {
        target,
        key,
        origin,
        sip,
    })
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Why a head could not be read.
enum HeadError {
    /// The connection failed or ended first.
    Io(io::Error),
    /// No empty line within [`MAX_HEAD`] bytes; what was read.
    TooLarge(Vec<u8>),
}

/// Reads up to and including the first empty line; returns the head and what came after it.
async fn read_head<S>(s: &mut S) -> Result<(Vec<u8>, Vec<u8>), HeadError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the HTTP head",
            )));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = memchr::memmem::find(&buf[from..], b"\r\n\r\n") {
            let end = from + at + 4;
            // The limit holds whatever the reads: a head whose end arrived in the read that
            // crossed it is still too large.
            if end > MAX_HEAD {
                buf.truncate(MAX_HEAD);
                return Err(HeadError::TooLarge(buf));
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            buf.truncate(MAX_HEAD);
            return Err(HeadError::TooLarge(buf));
        }
    }
}

/// An upstream's accepted upgrade.
#[derive(Debug)]
pub struct Connected {
    /// The request as written.
    pub request: Vec<u8>,
    /// The 101 reply head as received.
    pub reply: Vec<u8>,
    /// Bytes read behind the reply head: the first frames, for tungstenite.
    pub leftover: Vec<u8>,
}

impl Connected {
    /// The request as written and the 101 as received.
    pub fn heads(&self) -> WsHeads<'_> {
        WsHeads {
            request: &self.request,
            reply: Some(&self.reply),
        }
    }
}

/// Why an upgrade toward the upstream failed.
#[derive(Debug)]
pub struct ConnectError {
    /// The request as written (empty if it could not be written).
    pub request: Vec<u8>,
    /// The reply head, when one arrived.
    pub reply: Option<Vec<u8>>,
    /// What went wrong.
    pub reason: BadUpstreamUpgrade,
}

/// What to ask the upstream for.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    /// `Host`: the upstream as configured.
    pub host: &'a str,
    /// The client's request target.
    pub target: &'a str,
    /// The client's `Origin`, or (as OpenSIPS sends) the host.
    pub origin: &'a str,
    /// Ask for the `sip` subprotocol (the client got it from us).
    pub sip: bool,
}

/// Upgrades the connection to the upstream, writing the request in OpenSIPS's shape
/// (`ws_start_handshake`), and checks the reply as RFC 6455 §4.1 asks.
pub async fn connect<S>(s: &mut S, req: &UpgradeRequest<'_>) -> Result<Connected, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nOrigin: {}\r\nSec-WebSocket-Key: {key}\r\n\
         Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n",
        req.target, req.host, req.origin
    )
    .into_bytes();
    if req.sip {
        request.extend_from_slice(b"Sec-WebSocket-Protocol: sip\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let fail = |request: Vec<u8>, reply: Option<Vec<u8>>, reason| ConnectError {
        request,
        reply,
        reason,
    };
    if let Err(e) = s.write_all(&request).await {
        return Err(fail(request, None, BadUpstreamUpgrade::Write(e)));
    }
    if let Err(e) = s.flush().await {
        return Err(fail(request, None, BadUpstreamUpgrade::Write(e)));
    }
    let (reply, leftover) = match read_head(s).await {
        Ok(r) => r,
        Err(HeadError::Io(e)) => return Err(fail(request, None, BadUpstreamUpgrade::Read(e))),
        Err(HeadError::TooLarge(partial)) => {
            return Err(fail(request, Some(partial), BadUpstreamUpgrade::TooLarge));
        }
    };
    match check_reply(&reply, &key, req.sip) {
        Ok(()) => Ok(Connected {
            request,
            reply,
            leftover,
        }),
        Err(reason) => Err(fail(request, Some(reply), reason)),
    }
}

/// 101, `Upgrade: websocket`, `Connection: Upgrade`, the right `Sec-WebSocket-Accept`, and no
/// subprotocol we did not ask for.
fn check_reply(head: &[u8], key: &str, sip: bool) -> Result<(), BadUpstreamUpgrade> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut rsp = httparse::Response::new(&mut headers);
    match rsp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(BadUpstreamUpgrade::Incomplete),
        Err(e) => return Err(BadUpstreamUpgrade::Parse(e)),
    }
    if rsp.code != Some(101) {
        return Err(BadUpstreamUpgrade::Refused {
            code: rsp.code.unwrap_or(0),
            reason: rsp.reason.unwrap_or("").to_owned(),
        });
    }
    let expected = derive_accept_key(key.as_bytes());
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    for h in rsp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept |= value == expected;
        } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol")
            && !(sip && value.eq_ignore_ascii_case("sip"))
        {
            return Err(BadUpstreamUpgrade::Subprotocol(value.to_owned()));
        }
    }
    if !upgrade || !connection {
        return Err(BadUpstreamUpgrade::NoUpgrade);
    }
    if !accept {
        return Err(BadUpstreamUpgrade::WrongAccept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const REQUEST: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: sip.example.com\r\n\
        Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://phone.example.com\r\n\
        Sec-WebSocket-Protocol: chat, sip\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[tokio::test]
    async fn a_valid_upgrade_gets_opensips_101_with_sip_and_keeps_early_frames() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut sent = REQUEST.to_vec();
        sent.extend_from_slice(b"\x81\x00"); // an early empty text frame
        client.write_all(&sent).await.unwrap();
        let up = accept(&mut server).await.unwrap();
        assert_eq!(up.request, REQUEST);
        assert_eq!(up.leftover, b"\x81\x00");
        assert_eq!(up.target, "/ws?x=1");
        assert_eq!(up.origin.as_deref(), Some("https://phone.example.com"));
        assert!(up.sip);
        let expected: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(up.reply, expected);
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_plain_http_get_is_refused_with_opensips_400() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(req).await.unwrap();
        match accept(&mut server).await {
            Err(AcceptError::Refused { request, reason }) => {
                assert_eq!(request, req);
                assert_eq!(reason.to_string(), "no Upgrade: websocket");
            }
            other => panic!("{other:?}"),
        }
        let mut got = vec![0u8; BAD_REQUEST.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, BAD_REQUEST);
    }

    #[tokio::test]
    async fn an_endless_head_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; MAX_HEAD + 10]).await.unwrap();
        assert!(matches!(
            accept(&mut server).await,
            Err(AcceptError::Refused { request, .. }) if request.len() == MAX_HEAD
        ));
    }

    #[tokio::test]
    async fn the_upstream_request_is_opensips_shaped_and_the_reply_is_checked() {
        let (mut heptap, mut upstream) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let up = accept(&mut upstream).await.unwrap();
            (up, upstream)
        });
        let req = UpgradeRequest {
            host: "127.0.0.1:5060",
            target: "/ws",
            origin: "https://phone.example.com",
            sip: true,
        };
        let connected = connect(&mut heptap, &req).await.unwrap();
        let (up, _) = server.await.unwrap();
        assert_eq!(connected.request, up.request);
        assert_eq!(connected.reply, up.reply);
        let text = String::from_utf8(connected.request).unwrap();
        assert!(text.starts_with(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:5060\r\nOrigin: https://phone.example.com\r\nSec-WebSocket-Key: "
        ));
        assert!(text.ends_with(
            "\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
        ));
    }

    #[tokio::test]
    async fn a_refused_upstream_upgrade_keeps_the_reply() {
        let (mut heptap, mut upstream) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let _ = read_head(&mut upstream).await;
            upstream
                .write_all(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .await
                .unwrap();
            upstream
        });
        let req = UpgradeRequest {
            host: "h:1",
            target: "/",
            origin: "h:1",
            sip: false,
        };
        let e = connect(&mut heptap, &req).await.unwrap_err();
        assert_eq!(
            e.reply.as_deref(),
            Some(&b"HTTP/1.1 404 Not Found\r\n\r\n"[..])
        );
        assert_eq!(e.reason.to_string(), "upgrade refused: 404 Not Found");
        drop(server);
    }
}
