//! WebSocket peers for the WS/WSS tap tests: a client that writes its upgrade request itself
//! (so a test knows the exact bytes heptap traces) and then speaks through tungstenite, and an
//! upstream that runs tungstenite's own server handshake (an implementation independent of
//! heptap's) while recording the raw handshake bytes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The RFC 6455 example key, so the expected `Sec-WebSocket-Accept` is known.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `Sec-WebSocket-Accept` for [`KEY`].
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A browser-like SIP upgrade request for `target` at `host`.
pub fn upgrade_request(target: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nOrigin: https://phone.test\r\n\
         Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The 101 reply heptap sends to [`upgrade_request`] (OpenSIPS's header order).
pub fn expected_reply() -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    )
    .into_bytes()
}

/// Reads an HTTP head byte by byte (so nothing after it is consumed).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

/// Sends `request`, reads the reply head, and, on a 101, returns a client WebSocket.
pub async fn client<S>(mut s: S, request: &[u8]) -> (Option<WebSocketStream<S>>, Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(request).await.expect("write the upgrade");
    let reply = read_head(&mut s).await.expect("a reply head");
    if !reply.starts_with(b"HTTP/1.1 101 ") {
        return (None, reply);
    }
    (
        Some(WebSocketStream::from_raw_socket(s, Role::Client, None).await),
        reply,
    )
}

/// A stream that records what was read and written through it (its first 4 KiB each way).
#[derive(Debug)]
pub struct Recorder<S> {
    /// The stream.
    inner: S,
    /// Bytes read, then bytes written.
    log: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

const RECORD_MAX: usize = 4096;

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let mut log = self.log.lock().expect("lock");
        let room = RECORD_MAX.saturating_sub(log.0.len());
        let new = &buf.filled()[before..];
        log.0.extend_from_slice(&new[..new.len().min(room)]);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let mut log = self.log.lock().expect("lock");
            let room = RECORD_MAX.saturating_sub(log.1.len());
            log.1.extend_from_slice(&buf[..(*n).min(room)]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The part of `bytes` up to and including the first empty line.
pub fn head_of(bytes: &[u8]) -> Vec<u8> {
    match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => bytes[..i + 4].to_vec(),
        None => bytes.to_vec(),
    }
}

/// What an upstream saw of one connection's upgrade.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The upgrade request as received.
    pub request: Vec<u8>,
    /// The 101 reply as written.
    pub reply: Vec<u8>,
}

/// What a WS upstream does after the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes text and binary messages; on the text `send-pong` it first sends an unsolicited
    /// pong `keepalive`; reports every ping it reads.
    Echo,
    /// Answers SIP messages like a proxy: INVITE -> 100, 180, 200 (three messages), BYE -> 200,
    /// anything else -> nothing.
    Sip,
}

/// A WS (or, with a TLS config, WSS) upstream on 127.0.0.1.
#[derive(Debug)]
pub struct WsUpstream {
    /// Where heptap should relay to.
    pub addr: SocketAddr,
    /// Each connection's handshake.
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// The payload of every ping read.
    pub pings: mpsc::UnboundedReceiver<Vec<u8>>,
    /// The accept task.
    task: tokio::task::JoinHandle<()>,
}

impl WsUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind(tls: Option<Arc<ServerConfig>>, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (ping_tx, pings) = mpsc::unbounded_channel();
        let acceptor = tls.map(TlsAcceptor::from);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen_tx = seen_tx.clone();
                let ping_tx = ping_tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve(tls, behaviour, seen_tx, ping_tx).await;
                            }
                        }
                        None => serve(tcp, behaviour, seen_tx, ping_tx).await,
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            pings,
            task,
        }
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S>(
    stream: S,
    behaviour: Behaviour,
    seen: mpsc::UnboundedSender<Seen>,
    pings: mpsc::UnboundedSender<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let log = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let rec = Recorder {
        inner: stream,
        log: log.clone(),
    };
    // tungstenite does not pick a subprotocol by itself: answer `sip` when it is offered.
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let pick_sip = |req: &Request, mut rsp: Response| {
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .any(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split(',')
                    .any(|p| p.trim() == "sip")
            });
        if offered {
            rsp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
        }
        Ok(rsp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(rec, pick_sip).await else {
        return;
    };
    {
        let log = log.lock().expect("lock");
        let _ = seen.send(Seen {
            request: head_of(&log.0),
            reply: head_of(&log.1),
        });
    }
    let up = crate::sip::upstream_messages();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Ping(p) => {
                let _ = pings.send(p.to_vec());
            }
            Message::Close(_) => break,
            Message::Text(t) if behaviour == Behaviour::Sip => {
                let replies: Vec<&[u8]> = if t.starts_with("INVITE") {
                    vec![&up[0], &up[1], &up[2]]
                } else if t.starts_with("BYE") {
                    vec![&up[3]]
                } else {
                    Vec::new()
                };
                for r in replies {
                    let text = String::from_utf8(r.to_vec()).expect("SIP is text");
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
            Message::Text(t) => {
                if t.as_str() == "send-pong"
                    && ws
                        .send(Message::Pong(b"keepalive".to_vec().into()))
                        .await
                        .is_err()
                {
                    return;
                }
                if ws.send(Message::Text(t)).await.is_err() {
                    return;
                }
            }
            Message::Binary(b) => {
                let echoed = ws.send(Message::Binary(b)).await;
                if echoed.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
    // Finish the close handshake tungstenite started.
    while let Some(Ok(_)) = ws.next().await {}
}
