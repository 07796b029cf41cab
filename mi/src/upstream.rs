//! The proxy's own MI (`[mi.upstream]`): commands heptap does not own are forwarded there as
//! the client sent them, and the reply comes back unchanged.

use std::time::Duration;

use serde_json::Value;

use crate::client::{self, ClientError};
use crate::jsonrpc::{Id, Params, Request};
use crate::settings::{UpstreamSettings, UpstreamTarget};

/// A configured upstream MI.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// Where the proxy's MI is.
    target: UpstreamTarget,
    /// Deadline of each forwarded exchange.
    timeout: Duration,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Upstream {
            target: settings.target.clone(),
            timeout: settings.timeout,
        }
    }

    /// A short description for errors and logs.
    pub fn describe(&self) -> String {
        match &self.target {
            UpstreamTarget::Fifo { fifo, .. } => format!("FIFO {}", fifo.display()),
            UpstreamTarget::Http { url } => url.clone(),
        }
    }

    /// Sends a JSON-RPC request text; returns the reply text (`None` for a notification).
    pub async fn forward(
        &self,
        request: &str,
        notification: bool,
    ) -> Result<Option<String>, ClientError> {
        match &self.target {
            UpstreamTarget::Fifo { fifo, reply_dir } => {
                if notification {
                    // `::` = no reply FIFO, as OpenSIPS defines it.
                    let payload = format!("::{request}");
                    client::send_to_fifo(fifo, payload.as_bytes(), self.timeout).await?;
                    return Ok(None);
                }
                client::fifo_exchange(fifo, reply_dir, self.timeout, |name| {
                    format!(":{name}:{request}")
                })
                .await
                .map(Some)
            }
            UpstreamTarget::Http { url } => {
                client::http_exchange(url, request.to_owned(), self.timeout, None).await
            }
        }
    }

    /// The upstream's command names (its `which`).
    pub async fn which(&self) -> Result<Vec<String>, ClientError> {
        let request = Request {
            method: "which".to_owned(),
            params: Params::None,
            id: Some(Id::Str("heptap-which".to_owned())),
        }
        .to_text();
        let text = self
            .forward(&request, false)
            .await?
            .ok_or_else(|| ClientError::BadReply("empty reply".to_owned()))?;
        let reply = client::parse_reply(&text)?;
        match reply.result {
            Value::Array(names) => Ok(names
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()),
            _ => Err(ClientError::BadReply(
                "which did not return an array".to_owned(),
            )),
        }
    }
}
