//! MI clients: what `heptap fifo` / `heptap mi` use, and what forwards commands to the
//! proxy's MI. They speak to any OpenSIPS 3.x MI (or heptap's): the FIFO with a private reply
//! FIFO, or HTTP POST (with heptap's bearer token when one is given). Every exchange has a
//! deadline; replies come back byte for byte. `heptap fifo` / `heptap mi` first make sure the
//! server is heptap ([`check_heptap_http`], [`check_heptap_fifo`]).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nix::libc;
use nix::sys::stat::Mode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::jsonrpc::{Id, Params, Request, RpcError};
use crate::text;
use crate::token::BearerToken;

/// Largest reply a client accepts (a full `get_statistics all` is a few KiB).
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing is serving the MI FIFO (missing, or no process reading it).
    #[error("no MI server at {path}: {reason}")]
    NoServer {
        /// The MI FIFO.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The HTTP server could not be reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The error.
        source: std::io::Error,
    },
    /// A local I/O failure (creating the reply FIFO, writing the request ...).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// No reply within the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The URL is not `http://host[:port]/path`.
    #[error("bad MI URL {0:?} (expected http://host:port/path)")]
    BadUrl(String),
    /// An HTTP failure below JSON-RPC.
    #[error("HTTP error: {0}")]
    Http(String),
    /// The server answered with an HTTP error status.
    #[error("HTTP status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The server refused the request before running it (heptap's gate: Host, Origin, bearer
    /// token, Content-Type) and said why in a JSON-RPC error.
    #[error("HTTP status {status}: {error}")]
    Refused {
        /// The status code (401, 403, 415, 421 ...).
        status: u16,
        /// What the server said.
        error: RpcError,
    },
    /// The bearer token file cannot be used.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// The server answered `version` with something other than heptap: nothing else was sent.
    #[error(
        "{target} is not heptap's MI (its version is {server:?}); nothing was sent. Point -c or \
         --url/--fifo at heptap's MI, or pass --any-server to talk to this one anyway"
    )]
    NotHeptap {
        /// The URL or FIFO asked.
        target: String,
        /// What it calls itself.
        server: String,
    },
    /// A command or argument that cannot be sent in the 2.x framing (a line break in it).
    #[error("cannot send {0:?} over the 2.x FIFO framing")]
    BadArgument(String),
    /// The reply is not a JSON-RPC response.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The command failed: the JSON-RPC error, shown as `code: message (data)`.
    #[error("{0}")]
    Rpc(RpcError),
    /// A 2.x command failed: its status line and the whole reply.
    #[error("{code} {reason}")]
    Text {
        /// The status code (not 200).
        code: u16,
        /// The reason text.
        reason: String,
        /// The whole reply as received.
        reply: String,
    },
}

/// A successful JSON-RPC reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The response exactly as received.
    pub text: String,
    /// Its `result`.
    pub result: Value,
}

/// Parameters from command-line words, the way opensips-cli builds them: all `name=value`
/// → named; otherwise positional strings; for array-parameter commands (`get_statistics`,
/// `reset_statistics`, ...) the trailing words fold into one array.
pub fn cli_params(cmd: &str, args: &[String]) -> Params {
    let named = !args.is_empty()
        && args.iter().all(|a| {
            a.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphabetic() || matches!(c, '.' | '_' | '-'))
            })
        });
    if named {
        let text: Vec<text::TextParam> = args
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(n, v)| text::TextParam {
                name: Some(n.to_owned()),
                value: v.to_owned(),
            })
            .collect();
        return text::to_params(cmd, &text);
    }
    text::positional_with_array(cmd, args.to_vec())
}

/// Reads a JSON-RPC response: `Ok` with its `result`, or the error it carries.
pub fn parse_reply(text: &str) -> Result<Reply, ClientError> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| {
        ClientError::BadReply(format!("{e}: {:?}", crate::trace::truncate(text, 200)))
    })?;
    if let Some(err) = v.get("error").and_then(RpcError::from_json) {
        return Err(ClientError::Rpc(err));
    }
    let result = v
        .get("result")
        .cloned()
        .ok_or_else(|| ClientError::BadReply("no result and no error".to_owned()))?;
    Ok(Reply {
        text: text.to_owned(),
        result,
    })
}

fn new_request(cmd: &str, params: &Params) -> String {
    Request {
        method: cmd.to_owned(),
        params: params.clone(),
        id: Some(Id::Str(rand::random_range(0..32768u32).to_string())),
    }
    .to_text()
}

/// Calls `cmd` over an MI FIFO with the 3.x framing (`:reply_fifo:{json}`), creating the
/// reply FIFO in `reply_dir`.
pub async fn fifo_call(
    fifo: &Path,
    reply_dir: &Path,
    cmd: &str,
    params: &Params,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let request = new_request(cmd, params);
    let text = fifo_exchange(fifo, reply_dir, timeout, |name| {
        format!(":{name}:{request}")
    })
    .await?;
    parse_reply(&text)
}

/// Calls `cmd` over an MI FIFO with the 2.x text framing (`:cmd:reply_fifo\nargs\n\n`), as
/// `opensipsctl fifo` did; `Ok` is the whole text reply when its code is 200.
pub async fn fifo_call_text(
    fifo: &Path,
    reply_dir: &Path,
    cmd: &str,
    args: &[String],
    timeout: Duration,
) -> Result<String, ClientError> {
    let bad_cmd = cmd.is_empty() || cmd.contains([':', '\n', '\r']);
    if bad_cmd {
        return Err(ClientError::BadArgument(cmd.to_owned()));
    }
    if let Some(a) = args.iter().find(|a| a.contains(['\n', '\r'])) {
        return Err(ClientError::BadArgument(a.clone()));
    }
    let text = fifo_exchange(fifo, reply_dir, timeout, |name| {
        let mut s = format!(":{cmd}:{name}\n");
        for a in args {
            s.push_str(&quote_text_param(a));
            s.push('\n');
        }
        s.push('\n');
        s
    })
    .await?;
    let status = text.lines().next().unwrap_or("");
    let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
    match code.parse::<u16>() {
        Ok(200) => Ok(text),
        Ok(code) => Err(ClientError::Text {
            code,
            reason: reason.to_owned(),
            reply: text.clone(),
        }),
        Err(_) => Err(ClientError::BadReply(status.to_owned())),
    }
}

/// One 2.x parameter line for `value`: quoted (with `\"`) when it would otherwise be read
/// differently (empty, blanks at either end, a quote, or `::`).
fn quote_text_param(value: &str) -> String {
    let plain =
        !value.is_empty() && value.trim() == value && !value.contains('"') && !value.contains("::");
    if plain {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('"', "\\\""))
    }
}

/// Calls `cmd` with JSON-RPC over HTTP POST to `url`.
pub async fn http_call(
    url: &str,
    cmd: &str,
    params: &Params,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    http_call_with_token(url, cmd, params, timeout, None).await
}

/// [`http_call`] with heptap's bearer token in `Authorization`.
pub async fn http_call_with_token(
    url: &str,
    cmd: &str,
    params: &Params,
    timeout: Duration,
    token: Option<&BearerToken>,
) -> Result<Reply, ClientError> {
    let request = new_request(cmd, params);
    match http_exchange(url, request, timeout, token).await? {
        Some(text) => parse_reply(&text),
        None => Err(ClientError::BadReply("empty reply".to_owned())),
    }
}

/// The server string `version` answers: heptap's starts with `heptap ` (OpenSIPS's with
/// `OpenSIPS`).
const HEPTAP_SERVER: &str = "heptap ";

/// Asks the MI at `url` its `version` and fails with [`ClientError::NotHeptap`] unless it is
/// heptap: the default URL of OpenSIPS's mi_http is heptap's too, and a command meant for
/// heptap (`tcp_trace off`) would switch the proxy's tracing.
pub async fn check_heptap_http(
    url: &str,
    timeout: Duration,
    token: Option<&BearerToken>,
) -> Result<(), ClientError> {
    let reply = http_call_with_token(url, "version", &Params::None, timeout, token).await;
    let server = match reply {
        Ok(r) => r
            .result
            .get("Server")
            .and_then(Value::as_str)
            .map_or_else(|| r.result.to_string(), str::to_owned),
        Err(ClientError::Rpc(e)) => format!("an error: {e}"),
        Err(e) => return Err(e),
    };
    is_heptap(url, server)
}

/// [`check_heptap_http`] over an MI FIFO (2.x text framing, as `heptap fifo` speaks).
pub async fn check_heptap_fifo(
    fifo: &Path,
    reply_dir: &Path,
    timeout: Duration,
) -> Result<(), ClientError> {
    let server = match fifo_call_text(fifo, reply_dir, "version", &[], timeout).await {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("Server::"))
            .map_or_else(|| text.trim().to_owned(), |s| s.trim().to_owned()),
        Err(ClientError::Text { reply, .. }) => format!("an error: {}", reply.trim()),
        Err(e) => return Err(e),
    };
    is_heptap(&fifo.display().to_string(), server)
}

fn is_heptap(target: &str, server: String) -> Result<(), ClientError> {
    if server.starts_with(HEPTAP_SERVER) {
        Ok(())
    } else {
        Err(ClientError::NotHeptap {
            target: target.to_owned(),
            server,
        })
    }
}

/// Names reply FIFOs uniquely within this process.
static REPLY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the reply FIFO however the exchange ends.
struct Unlink(
    /// The reply FIFO.
    PathBuf,
);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One FIFO exchange: creates a private reply FIFO, writes `request(reply_name)` to the MI
/// FIFO and reads the reply until the server closes it.
pub(crate) async fn fifo_exchange(
    fifo: &Path,
    reply_dir: &Path,
    timeout: Duration,
    request: impl FnOnce(&str) -> String,
) -> Result<String, ClientError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // No '.' in the name: OpenSIPS refuses those.
    let name = format!(
        "heptap_reply_{}_{}_{}",
        std::process::id(),
        nanos,
        REPLY_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = reply_dir.join(&name);
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|e| ClientError::Io {
        context: format!("cannot create reply FIFO {}", path.display()),
        source: e.into(),
    })?;
    let _cleanup = Unlink(path.clone());
    // Opened for reading before the request goes out, so the server finds a reader at once.
    // Until a writer has opened it, Linux reports it neither readable nor hung up.
    let mut rx = pipe::OpenOptions::new()
        .open_receiver(&path)
        .map_err(|source| ClientError::Io {
            context: format!("cannot open reply FIFO {}", path.display()),
            source,
        })?;
    let payload = request(&name);
    send_to_fifo(fifo, payload.as_bytes(), timeout).await?;
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            let n = rx.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() > MAX_REPLY {
                return Err(std::io::Error::other("reply too large"));
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(Err(source)) => Err(ClientError::Io {
            context: format!("cannot read reply FIFO {}", path.display()),
            source,
        }),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

/// Writes one request into an MI FIFO; fails at once if nobody serves it.
pub(crate) async fn send_to_fifo(
    fifo: &Path,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), ClientError> {
    let no_server = |reason: String| ClientError::NoServer {
        path: fifo.to_owned(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => no_server("nobody is reading the FIFO".to_owned()),
            Some(libc::ENOENT) => no_server("the FIFO does not exist".to_owned()),
            _ => no_server(e.to_string()),
        })?;
    let mut tx = pipe::Sender::from_file(file).map_err(|e| no_server(e.to_string()))?;
    match tokio::time::timeout(timeout, tx.write_all(payload)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ClientError::Io {
            context: format!("cannot write to {}", fifo.display()),
            source,
        }),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

/// The parts of an `http://` URL a client needs.
struct HttpTarget {
    /// Host to connect to (IPv6 without brackets).
    host: String,
    /// Port (80 when the URL has none).
    port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    /// Path and query to POST to.
    path: String,
}

fn parse_url(url: &str) -> Result<HttpTarget, ClientError> {
    let bad = || ClientError::BadUrl(url.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    Ok(HttpTarget {
        host,
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        path,
    })
}

/// Checks a URL without connecting (for config validation).
pub(crate) fn check_url(url: &str) -> Result<(), ClientError> {
    parse_url(url).map(|_| ())
}

/// One HTTP exchange: POSTs `body` (with `token` as a bearer token), returns the response body
/// (`None` for 202/204: a notification).
pub(crate) async fn http_exchange(
    url: &str,
    body: String,
    timeout: Duration,
    token: Option<&BearerToken>,
) -> Result<Option<String>, ClientError> {
    let target = parse_url(url)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut req = http::Request::post(target.path.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, token.authorization());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let collected = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        conn.abort();
        let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        match status {
            200 => Ok(Some(text)),
            202 | 204 => Ok(None),
            status => Err(match parse_reply(&text) {
                Err(ClientError::Rpc(error)) => ClientError::Refused { status, error },
                _ => ClientError::HttpStatus { status },
            }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn cli_args_like_opensips_cli() {
        assert_eq!(
            cli_params("sip_trace", &words(&["tid2", "off"])),
            Params::Positional(vec![json!("tid2"), json!("off")])
        );
        let Params::Named(m) = cli_params("trace", &words(&["id=tid2", "mode=off"])) else {
            panic!("named expected");
        };
        assert_eq!(Value::Object(m), json!({"id": "tid2", "mode": "off"}));
        assert_eq!(
            cli_params("get_statistics", &words(&["dialog:", "core:"])),
            Params::Positional(vec![json!(["dialog:", "core:"])])
        );
        let Params::Named(m) = cli_params("get_statistics", &words(&["statistics=core: net:"]))
        else {
            panic!("named expected");
        };
        assert_eq!(Value::Object(m), json!({"statistics": ["core:", "net:"]}));
        assert_eq!(cli_params("ps", &[]), Params::None);
        // One positional word makes them all positional.
        assert_eq!(
            cli_params("x", &words(&["a=b", "c"])),
            Params::Positional(vec![json!("a=b"), json!("c")])
        );
    }

    #[test]
    fn replies_are_results_or_errors() {
        let ok = parse_reply(r#"{"jsonrpc":"2.0","result":"OK","id":"1"}"#).unwrap();
        assert_eq!(ok.result, json!("OK"));
        let err = parse_reply(
            r#"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad trace id value"},"id":"1"}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "400: Bad trace id value");
        assert!(matches!(parse_reply("nope"), Err(ClientError::BadReply(_))));
    }

    #[test]
    fn text_params_are_quoted_when_needed() {
        for v in ["tid2", "", " x", "a::b", r#"say "hi""#] {
            let line = quote_text_param(v);
            assert_eq!(
                crate::text::parse_param_line(&line).unwrap().value,
                v,
                "{line}"
            );
            assert!(crate::text::parse_param_line(&line).unwrap().name.is_none());
        }
        assert_eq!(quote_text_param("tid2"), "tid2");
    }

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8888/mi").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8888, "/mi")
        );
        let t = parse_url("http://[::1]/mi").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(parse_url("https://x/mi").is_err());
        assert!(parse_url("nope").is_err());
    }
}
