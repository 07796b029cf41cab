//! The responder every target relays to: a SIP server that answers each 600-byte request
//! with a 400-byte `200 OK`, and a bulk sink.
//!
//! A connection whose first bytes are [`BULK_PREAMBLE`] is a bulk connection: everything after
//! the preamble is counted and discarded; at end of stream the count goes back as 8 bytes
//! (big endian) and the connection closes. Any other connection is SIP.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Error;
use crate::sip::{Framer, reply};

/// What a bulk client sends first.
pub const BULK_PREAMBLE: &[u8] = b"BULK\r\n\r\n";

/// Serves every listener until the process is stopped. `tls` listeners do the TLS handshake
/// first with `acceptor`.
pub async fn serve(
    plain: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    acceptor: Option<TlsAcceptor>,
) -> Result<(), Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for addr in plain {
        let listener = TcpListener::bind(addr).await?;
        tasks.spawn(accept_loop(listener, None));
    }
    for addr in tls {
        let listener = TcpListener::bind(addr).await?;
        let acceptor = acceptor
            .clone()
            .ok_or_else(|| Error::Tls("a TLS listener needs --cert and --key".into()))?;
        tasks.spawn(accept_loop(listener, Some(acceptor)));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Protocol(format!("accept loop: {e}")))?;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => {
                // EMFILE and friends: let some connections close first.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let _ = handle(tcp).await;
                }
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = handle(tls).await;
                    }
                }
            }
        });
    }
}

/// One connection: bulk or SIP, decided by its first bytes.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<(), Error> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    // Enough bytes to tell the preamble from a SIP start line.
    while filled < BULK_PREAMBLE.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
    if buf.starts_with(BULK_PREAMBLE) {
        let mut count = (filled - BULK_PREAMBLE.len()) as u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            count += n as u64;
        }
        stream.write_all(&count.to_be_bytes()).await?;
        stream.shutdown().await?;
        return Ok(());
    }
    let mut framer = Framer::new();
    framer.buffer(&buf[..filled]);
    let mut out = Vec::with_capacity(4096);
    loop {
        // Every message of one read is answered in one write, as a SIP server would.
        while let Some(msg) = framer.next_message()? {
            out.extend_from_slice(&reply(&msg));
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        framer.buffer(&buf[..n]);
    }
}
