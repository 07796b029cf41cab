//! `GET /metrics`: the Prometheus text exposition the agent renders (`Control::metrics`),
//! served on the MI's HTTP listener (behind its gate) and, when `metrics_listen` is set, on a
//! listener of its own that serves nothing else and asks for no token, as Prometheus scrapers
//! expect (docs/metrics.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::error::MiError;

/// The path every Prometheus scrape config uses by default.
pub(crate) const PATH: &str = "/metrics";

/// The text format 0.0.4, which every Prometheus version and agent reads.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes served at once on `metrics_listen`; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

/// How long a scraper may take to send its request head, and to stay idle between scrapes.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a request is a scrape: `GET` or `HEAD` of `/metrics`.
pub(crate) fn is_scrape(method: &Method, path: &str) -> bool {
    path == PATH && (method == Method::GET || method == Method::HEAD)
}

/// The exposition, or 404 when the control keeps no metrics. A `HEAD` gets the headers only.
pub(crate) fn respond(control: &dyn Control, method: &Method) -> Response<Full<Bytes>> {
    let Some(text) = control.metrics() else {
        return text_response(StatusCode::NOT_FOUND, "text/plain", "Not Found\n".into());
    };
    let body = if method == Method::HEAD {
        String::new()
    } else {
        text
    };
    text_response(StatusCode::OK, CONTENT_TYPE, body)
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// What the token-less metrics listener answers: the exposition at `GET /metrics`, 405 for
/// another method there, 404 elsewhere. It reads counters and switches nothing, so it has no
/// gate: the operator chose to publish it by setting `metrics_listen`.
fn answer(control: &dyn Control, req: &http::Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return text_response(StatusCode::NOT_FOUND, "text/plain", "Not Found\n".into());
    }
    if !is_scrape(req.method(), PATH) {
        let mut r = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "405 Method Not Allowed\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    respond(control, req.method())
}

/// How often a process started by a hand-over tries `metrics_listen` again while the previous
/// process still holds it.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Binds `metrics_listen` (without `SO_REUSEPORT`: another program, or another heptap, on the
/// same address is an error, not a silent share of the scrapes).
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, MiError> {
    super::socket::listen(addr, 128).map_err(|source| MiError::MetricsBind { addr, source })
}

/// Whether a bind failed because the address is taken.
pub(crate) fn in_use(e: &MiError) -> bool {
    matches!(e, MiError::MetricsBind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
}

/// At a hand-over: binds `addr` once the previous process has let it go (it stops its MI when
/// the new process is ready), then serves until `shutdown`.
pub(crate) async fn serve_when_free(
    control: Arc<dyn Control>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) {
    tracing::info!(metrics.addr = %addr, "Metrics address held by the previous process; bound once it lets go");
    loop {
        match bind(addr) {
            Ok(listener) => {
                tracing::info!(metrics.addr = %addr, "Metrics listening (GET /metrics, no token)");
                return serve(control, listener, shutdown).await;
            }
            Err(e) if in_use(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "Cannot bind the metrics listener; /metrics is only on http_listen");
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Serves scrapes on `listener` until `shutdown`; a scrape in flight finishes.
pub(crate) async fn serve(
    control: Arc<dyn Control>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "Metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let control = Arc::clone(&control);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let r = answer(control.as_ref(), &req);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            let serving = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(serving);
            tokio::select! {
                _ = serving.as_mut() => {}
                () = stop.cancelled() => {
                    serving.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, serving).await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_the_metrics_path_are_scrapes() {
        assert!(is_scrape(&Method::GET, "/metrics"));
        assert!(is_scrape(&Method::HEAD, "/metrics"));
        assert!(!is_scrape(&Method::POST, "/metrics"));
        assert!(!is_scrape(&Method::GET, "/metrics/"));
        assert!(!is_scrape(&Method::GET, "/mi"));
    }
}
