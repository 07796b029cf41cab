//! JSON-RPC over HTTP (OpenSIPS mi_http): `POST /<http_root>`, replies in a 200 with
//! `application/json`, 202 with no body for notifications, 404 for other paths, 405 for other
//! methods, 400 for an empty body, 413 for a body over `max_request_size`, 408 for a body that
//! does not arrive within `request_timeout`. A connection with no complete request for
//! `request_timeout` is closed.
//!
//! jsonrpsee serves the connections (HTTP/1.1 and HTTP/2, graceful shutdown); the service in
//! front of it is ours, so the OpenSIPS semantics of `core` apply byte for byte (see
//! docs/mi.md for why jsonrpsee's RpcModule is not used).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Core;
use crate::error::MiError;
use crate::jsonrpc::{self, Id, RpcError};
use crate::trace::Origin;

/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serves until `shutdown`; in-flight requests finish.
pub(crate) async fn serve(core: Arc<Core>, listener: TcpListener, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let listen_addr = listener.local_addr().ok();
    // Connections finish their in-flight requests before serve() returns.
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => p,
        };
        let Ok(permit) = permit else { break };
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
        let origin = Origin::http(client, server);
        let core = Arc::clone(&core);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let idle = core.settings.request_timeout;
            let activity = Arc::new(Activity::new());
            let watched = Arc::clone(&activity);
            let service = tower::service_fn(move |req: http::Request<Incoming>| {
                let core = Arc::clone(&core);
                let busy = watched.begin();
                async move {
                    let response = respond(&core, req, origin).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            let serving = jsonrpsee::server::serve_with_graceful_shutdown(
                stream,
                service,
                stop.cancelled_owned(),
            );
            tokio::select! {
                served = serving => if let Err(e) = served {
                    tracing::debug!(client.addr = %client, error = %e, "MI HTTP connection ended");
                },
                () = activity.expired(idle) => {
                    tracing::debug!(client.addr = %client, "MI HTTP connection closed: no complete request within the request timeout");
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// When a connection last finished answering a request, and whether it is answering one now:
/// a connection that holds its slot without a complete request for `request_timeout` (half a
/// head, a silent client, an idle keep-alive) is closed, so 64 such clients cannot lock the MI.
#[derive(Debug)]
struct Activity {
    /// Requests being answered.
    busy: AtomicUsize,
    /// When the connection opened or last finished answering.
    last: Mutex<Instant>,
}

/// Marks a request as being answered until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            busy: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been answered or in progress for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
            let next = if self.busy.load(Ordering::SeqCst) > 0 {
                Instant::now() + idle
            } else if last.elapsed() >= idle {
                return;
            } else {
                last + idle
            };
            tokio::time::sleep_until(next.into()).await;
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

/// Whether `path` is the MI root: `/<root>` or `/<root>/`.
fn is_root(path: &str, root: &str) -> bool {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    p == root
}

async fn respond(
    core: &Core,
    req: http::Request<Incoming>,
    origin: Origin,
) -> Response<Full<Bytes>> {
    if !is_root(req.uri().path(), &core.settings.http_root) {
        return plain(StatusCode::NOT_FOUND, "Not Found\n");
    }
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let max = core.settings.max_request_size;
    let too_large = || {
        let error =
            RpcError::invalid_request().with_data(format!("request larger than {max} bytes"));
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::failure(&error, &Id::Null, core.style),
        )
    };
    let collect = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(core.settings.request_timeout, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout\n"),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n");
    }
    match core.handle_jsonrpc(&body, &origin).await {
        Some(text) => json(StatusCode::OK, text),
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
    }
}

/// Binds the listener (loopback unless `http_allow_remote`, checked in `Mi::new`).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, MiError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MiError::HttpBind { addr, source })
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
