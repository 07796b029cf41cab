//! JSON-RPC over HTTP (OpenSIPS mi_http): `POST /<http_root>`, replies in a 200 with
//! `application/json`, 202 with no body for notifications, 404 for other paths, 405 for other
//! methods, 400 for an empty body, 413 for a body over `max_request_size`, 408 for a request
//! that does not arrive within `request_timeout` of its first byte. Before anything else the
//! request must pass the gate (`gate`: Host 421, Origin 403, bearer token 401, Content-Type
//! 415). `GET /metrics` answers the Prometheus exposition behind the same gate (`metrics`,
//! which also serves the optional token-less `metrics_listen`).
//!
//! hyper-util serves the connections (HTTP/1.1 and HTTP/2 with prior knowledge, graceful
//! shutdown) with the limits a lock-out needs: a header timeout, capped streams, a slot kept
//! for a new connection (`slots`), each connection's deadlines (`conn`). The service in front
//! is ours, so the OpenSIPS semantics of `core` apply byte for byte (see docs/mi.md for why
//! jsonrpsee is not used).

mod conn;
mod gate;
pub(crate) mod metrics;
mod slots;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::MiOutcome;
use crate::core::Core;
use crate::error::MiError;
use crate::jsonrpc::{self, Id, RpcError};
use crate::trace::{Backend, Origin};
use conn::{Clocked, ConnState};
use gate::{Gate, Refusal, Throttle};
use slots::Slots;

/// Connections served at once, besides the one slot kept for a new connection.
const MAX_CONNECTIONS: usize = 64;
/// HTTP/2 streams open at once on one connection (further ones are refused by the peer's own
/// HTTP/2 stack): an MI client needs one.
const MAX_STREAMS: u32 = 8;
/// Largest HTTP/2 header list (HTTP/1.1 heads are bounded by hyper's read buffer).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Connections the kernel queues for accept. The default (128) overflows while clients wait for
/// a slot, and a new connection whose SYN is dropped waits 1, 3, 7 s for its retries, however
/// fast the slots turn over.
const LISTEN_BACKLOG: u32 = 1024;
/// How often refused requests may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What every connection of one listener shares.
struct Listener {
    /// The MI.
    core: Arc<Core>,
    /// Host, Origin, token checks.
    gate: Gate,
    /// Refusal warnings.
    throttle: Throttle,
}

/// Serves until `shutdown`; in-flight requests finish.
pub(crate) async fn serve(core: Arc<Core>, listener: TcpListener, shutdown: CancellationToken) {
    let timeout = core.settings.request_timeout;
    // A connection must have waited this long without an answer before it is closed to make
    // room: long enough for any real exchange, short enough that holders turn over quickly.
    let slots = Slots::new(MAX_CONNECTIONS, timeout / 10);
    let shared = Arc::new(Listener {
        gate: Gate::new(&core.settings.http_hosts, core.settings.http_token.clone()),
        throttle: Throttle::new(WARN_EVERY),
        core,
    });
    let listen_addr = listener.local_addr().ok();
    // Connections finish their in-flight requests before serve() returns.
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = slots.room() => {}
        }
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "MI HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(server) = stream.local_addr().ok().or(listen_addr) else {
            continue;
        };
        let slot = slots.admit();
        let shared = Arc::clone(&shared);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let state = Arc::clone(slot.state());
            connection(shared, stream, Origin::http(client, server), state, stop).await;
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves one connection until it ends, is idle for `request_timeout`, is closed to make room,
/// or finishes after a timed-out request.
async fn connection(
    shared: Arc<Listener>,
    stream: TcpStream,
    origin: Origin,
    state: Arc<ConnState>,
    stop: CancellationToken,
) {
    let client = origin.client;
    let timeout = shared.core.settings.request_timeout;
    let io = TokioIo::new(Clocked::new(stream, Arc::clone(&state)));
    let service = {
        let state = Arc::clone(&state);
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let state = Arc::clone(&state);
            async move {
                let busy = state.begin();
                let response = respond(&shared, req, &origin, &state).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // From when the connection waits for a head: a head (and an idle keep-alive) gets
        // `request_timeout`, then the connection is closed.
        .header_read_timeout(timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST);
    let serving = builder.serve_connection(io, service);
    tokio::pin!(serving);
    let mut draining = false;
    loop {
        tokio::select! {
            served = serving.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(client.addr = %client, error = %e, "MI HTTP connection ended");
                }
                return;
            }
            () = stop.cancelled(), if !draining => {
                serving.as_mut().graceful_shutdown();
                draining = true;
            }
            () = state.finishing(), if !draining => {
                tracing::debug!(client.addr = %client, "MI HTTP connection closing: a request timed out");
                serving.as_mut().graceful_shutdown();
                draining = true;
            }
            () = state.evicted() => {
                tracing::debug!(client.addr = %client, "MI HTTP connection closed to make room for a new one");
                return;
            }
            () = state.idle_expired(timeout) => {
                tracing::debug!(client.addr = %client, "MI HTTP connection closed: no complete request within the request timeout");
                return;
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn json(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// An error the client can read as JSON-RPC: `-32600 Invalid Request` with `data` saying why.
fn rpc_refusal(core: &Core, status: StatusCode, why: String) -> Response<Full<Bytes>> {
    let error = RpcError::invalid_request().with_data(why);
    json(status, jsonrpc::failure(&error, &Id::Null, core.style))
}

/// Ends an HTTP/1.x connection after this response (its unread body is not waited for);
/// HTTP/2 has no `Connection` header.
fn closing(version: Version, mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if version < Version::HTTP_2 {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

/// Whether `path` is the MI root: `/<root>` or `/<root>/`.
fn is_root(path: &str, root: &str) -> bool {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    p == root
}

/// Answers a refused request, logging (throttled) those that look like someone trying.
fn refuse(
    shared: &Listener,
    origin: &Origin,
    version: Version,
    refusal: &Refusal,
) -> Response<Full<Bytes>> {
    if refusal.is_hostile()
        && let Some(skipped) = shared.throttle.due()
    {
        tracing::warn!(
            client.addr = %origin.client,
            status = refusal.status().as_u16(),
            reason = %refusal.reason(),
            refused_since_last_warning = skipped,
            "MI HTTP request refused"
        );
    }
    let mut r = rpc_refusal(&shared.core, refusal.status(), refusal.reason());
    if let Some(challenge) = refusal.challenge() {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    closing(version, r)
}

async fn respond(
    shared: &Listener,
    req: http::Request<Incoming>,
    origin: &Origin,
    state: &Arc<ConnState>,
) -> Response<Full<Bytes>> {
    let core = &shared.core;
    let version = req.version();
    // HTTP/1.x: from the request's first byte; HTTP/2: from its HEADERS (one frame).
    let started = if version >= Version::HTTP_2 {
        Instant::now()
    } else {
        state.request_started()
    };
    let deadline = started + core.settings.request_timeout;
    // Every answer before the command runs is a refusal, counted as such.
    let refused = |r: Response<Full<Bytes>>| {
        core.control
            .count_mi_request(Backend::Json, MiOutcome::Refused);
        r
    };
    if let Err(refusal) = shared.gate.admit(req.uri(), req.headers()) {
        return refused(refuse(shared, origin, version, &refusal));
    }
    // A scrape passes the same gate (Prometheus sends the Host it scrapes and, when
    // configured, the bearer token) and is no MI request: not counted, not traced.
    if metrics::is_scrape(req.method(), req.uri().path()) {
        state.answered();
        return metrics::respond(core.control.as_ref(), req.method());
    }
    if !is_root(req.uri().path(), &core.settings.http_root) {
        state.answered();
        return refused(closing(
            version,
            plain(StatusCode::NOT_FOUND, "Not Found\n"),
        ));
    }
    if req.method() != Method::POST {
        core.trace_http_refusal("405 Method Not Allowed", origin);
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        state.answered();
        return refused(closing(version, r));
    }
    if let Err(refusal) = gate::check_content_type(req.headers()) {
        return refused(refuse(shared, origin, version, &refusal));
    }
    let max = core.settings.max_request_size;
    let collect = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout_at(deadline.into(), collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let why = format!("request larger than {max} bytes");
            return refused(closing(
                version,
                rpc_refusal(core, StatusCode::PAYLOAD_TOO_LARGE, why),
            ));
        }
        Ok(Err(_)) => return refused(plain(StatusCode::BAD_REQUEST, "400 Bad Request\n")),
        Err(_) => {
            // A connection whose request timed out takes no more.
            state.finish();
            let r = plain(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout\n");
            return refused(closing(version, r));
        }
    };
    state.answered();
    if body.iter().all(u8::is_ascii_whitespace) {
        core.trace_http_refusal("400 Bad Request", origin);
        return refused(plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"));
    }
    let running = state.executing();
    let reply = core.handle_jsonrpc(&body, origin).await;
    drop(running);
    state.answered();
    match reply {
        Some(text) => json(StatusCode::OK, text),
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
    }
}

/// Binds the listener (loopback unless `http_allow_remote`, checked in `Mi::new`) with a
/// listen backlog of [`LISTEN_BACKLOG`].
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, MiError> {
    socket::listen(addr, LISTEN_BACKLOG).map_err(|source| MiError::HttpBind { addr, source })
}

/// Serves the previous process's listening socket (a hand-over) when it is bound where `addr`
/// says (port 0: any port); `None` (the socket closed, the reason logged) otherwise.
pub(crate) fn take_over(socket: std::net::TcpListener, addr: SocketAddr) -> Option<TcpListener> {
    let taken = socket.local_addr().and_then(|local| {
        if local.ip() != addr.ip() || (addr.port() != 0 && local.port() != addr.port()) {
            return Err(std::io::Error::other(format!(
                "it listens on {local}, not on {addr}"
            )));
        }
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket)
    });
    match taken {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(http.addr = %addr, reason = %e, "Cannot take the MI HTTP socket over; binding a new one");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_path_answers() {
        assert!(is_root("/mi", "mi"));
        assert!(is_root("/mi/", "mi"));
        assert!(!is_root("/mix", "mi"));
        assert!(!is_root("/mi/x", "mi"));
        assert!(!is_root("/", "mi"));
        assert!(is_root("/", ""));
    }
}
