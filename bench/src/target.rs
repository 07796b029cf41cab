//! Connecting to a target (a relay's listener or the responder itself) over TCP or TLS, and
//! reading SIP messages back.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::sip::Framer;

/// A byte stream to a target, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connected stream, whatever its transport.
pub type BoxStream = Box<dyn Stream>;

/// Where a load tool connects, and how.
#[derive(Clone)]
pub struct Target {
    /// The listening address.
    pub addr: SocketAddr,
    /// TLS client settings when the target speaks TLS.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Connects, with TCP_NODELAY as SIP stacks set it, and completes the TLS handshake.
    pub async fn connect(&self) -> Result<BoxStream, Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Error::Tls(format!("handshake with {}: {e}", self.addr)))?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// Reads whole SIP messages from a stream.
#[derive(Debug)]
pub struct MessageReader<R> {
    /// The read half.
    reader: R,
    /// Bytes read and not yet framed.
    framer: Framer,
    /// The read buffer.
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Wraps a read half.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            framer: Framer::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// The next message; [`Error::Closed`] at end of stream.
    pub async fn next(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(msg) = self.framer.next_message()? {
                return Ok(msg);
            }
            let n = self.reader.read(&mut self.buf).await?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.framer.buffer(&self.buf[..n]);
        }
    }

    /// The stream, for writing requests.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// The read half back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}
