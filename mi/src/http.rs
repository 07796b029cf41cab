//! JSON-RPC over HTTP (OpenSIPS mi_http): `POST /<http_root>`, replies in a 200 with
//! `application/json`, 202 with no body for notifications, 404 for other paths, 405 for other
//! methods, 400 for an empty body, 413 for a body over `max_request_size`.
//!
//! jsonrpsee serves the connections (HTTP/1.1 and HTTP/2, graceful shutdown); the service in
//! front of it is ours, so the OpenSIPS semantics of `core` apply byte for byte (see
//! docs/mi.md for why jsonrpsee's RpcModule is not used).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::Core;
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
            let service = tower::service_fn(move |req: http::Request<Incoming>| {
                let core = Arc::clone(&core);
                async move { Ok::<_, Infallible>(respond(&core, req, origin).await) }
            });
            if let Err(e) = jsonrpsee::server::serve_with_graceful_shutdown(
                stream,
                service,
                stop.cancelled_owned(),
            )
            .await
            {
                tracing::debug!(client.addr = %client, error = %e, "MI HTTP connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
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
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"),
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
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::MiError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::MiError::HttpBind { addr, source })
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
