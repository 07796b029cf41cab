//! The transport-independent MI: one request in, one reply out. Parses, traces, runs heptap's
//! commands or forwards the others upstream, renders the reply for the framing it came in.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::commands::{self, Cmd, TracedCommands};
use crate::control::{Control, MiOutcome};
use crate::handlers::{self, Env};
use crate::jsonrpc::{self, Id, Params, Request, RpcError, Style};
use crate::settings::MiSettings;
use crate::text::{self, TextParam, TextReply};
use crate::trace::{Backend, MiTracer, Origin};
use crate::upstream::Upstream;

/// Shared by every transport task.
pub(crate) struct Core {
    /// The settings the servers read (limits, reply_dir ...).
    pub settings: MiSettings,
    /// The agent.
    pub control: Arc<dyn Control>,
    /// `trace_bwlist`, resolved against the command table.
    pub traced: Option<TracedCommands>,
    /// For `uptime`.
    pub started: SystemTime,
    /// `[mi.upstream]`.
    pub upstream: Option<Upstream>,
    /// MI trace messages and ids.
    pub tracer: MiTracer,
    /// Compact or pretty replies.
    pub style: Style,
}

/// What executing a request produced.
enum Outcome {
    /// heptap answered (or refused) it.
    Local(Result<Value, RpcError>),
    /// The upstream answered; its reply text, unchanged (`None` for a notification).
    Forwarded(Option<String>),
}

impl Core {
    /// Starts tracing a request if MI tracing is on and `trace_bwlist` lets it through; returns the
    /// correlation id to trace the reply with.
    fn trace_request(&self, method: &str, params: &Params, origin: &Origin) -> Option<String> {
        if !self.control.mi_tracing_enabled() {
            return None;
        }
        if self.traced.as_ref().is_some_and(|t| !t.allows(method)) {
            return None;
        }
        let corr = self.tracer.correlation_id();
        let msg = self.tracer.request(&corr, method, &params.values(), origin);
        self.control.trace_mi(msg);
        Some(corr)
    }

    /// Handles one JSON-RPC request body; `None` = send nothing back (a notification).
    pub async fn handle_jsonrpc(&self, body: &[u8], origin: &Origin) -> Option<String> {
        let req = match jsonrpc::parse_request(body) {
            Ok(r) => r,
            Err(bad) => {
                self.control
                    .count_mi_request(origin.backend, MiOutcome::Error);
                return Some(self.answer_bad_request(&bad, origin));
            }
        };
        let corr = self.trace_request(&req.method, &req.params, origin);
        let (reply, outcome) = match self.execute(&req, body).await {
            // The upstream's own errors are its to count.
            Outcome::Forwarded(reply) => (reply, MiOutcome::Ok),
            Outcome::Local(result) => {
                let outcome = if result.is_ok() {
                    MiOutcome::Ok
                } else {
                    MiOutcome::Error
                };
                let reply = req.id.as_ref().map(|id| match &result {
                    Ok(v) => jsonrpc::success(v, id, self.style),
                    Err(e) => jsonrpc::failure(e, id, self.style),
                });
                (reply, outcome)
            }
        };
        self.control.count_mi_request(origin.backend, outcome);
        if let Some(corr) = corr {
            let traced = match (&reply, origin.backend) {
                (Some(text), _) => Some(text.as_str()),
                // mi_http traces the status it answers a notification with.
                (None, Backend::Json) => Some("202 Accepted"),
                (None, Backend::Fifo) => None,
            };
            if let Some(text) = traced {
                self.control
                    .trace_mi(self.tracer.reply(&corr, text, origin));
            }
        }
        reply
    }

    /// Answers a body that is not a valid request (-32700 or -32600, even to a notification) and
    /// traces it as OpenSIPS's mi_http does: under its `method` when one could be read (the
    /// `trace_bwlist` then applies), else as command "unknown", with the error reply.
    fn answer_bad_request(&self, bad: &jsonrpc::BadRequest, origin: &Origin) -> String {
        let reply = jsonrpc::failure(&bad.error, &bad.id, self.style);
        let method = bad.method.as_deref().unwrap_or(UNKNOWN_METHOD);
        self.trace_exchange(method, &bad.params, &reply, origin);
        reply
    }

    /// Traces an HTTP request refused before JSON-RPC (not a POST, an empty body) as mi_http's
    /// `trace_json_err`: command "unknown", the status line as the reply.
    pub fn trace_http_refusal(&self, status_line: &str, origin: &Origin) {
        self.trace_exchange(UNKNOWN_METHOD, &Params::None, status_line, origin);
    }

    /// Traces a request and the reply it got in one go (requests answered without running).
    fn trace_exchange(&self, method: &str, params: &Params, reply: &str, origin: &Origin) {
        if let Some(corr) = self.trace_request(method, params, origin) {
            self.control
                .trace_mi(self.tracer.reply(&corr, reply, origin));
        }
    }

    /// Runs a parsed request here or upstream.
    async fn execute(&self, req: &Request, raw: &[u8]) -> Outcome {
        let spec = commands::lookup(&req.method);
        let foreign = match spec {
            None => true,
            // `which command=<a proxy command>` is the proxy's to answer.
            Some(s) if s.cmd == Cmd::Which => {
                self.upstream.is_some()
                    && which_target(&req.params).is_some_and(|n| commands::lookup(&n).is_none())
            }
            Some(_) => false,
        };
        if foreign {
            let Some(up) = &self.upstream else {
                return Outcome::Local(Err(RpcError::method_not_found()));
            };
            let text = String::from_utf8_lossy(raw);
            return match up.forward(&text, req.is_notification()).await {
                Ok(reply) => Outcome::Forwarded(reply),
                Err(e) => {
                    tracing::warn!(upstream = %up.describe(), method = %req.method, error = %e, "Upstream MI failed");
                    Outcome::Local(Err(upstream_error(up, &e)))
                }
            };
        }
        let Some(spec) = spec else {
            return Outcome::Local(Err(RpcError::method_not_found()));
        };
        Outcome::Local(self.run_local(spec, &req.params).await)
    }

    /// Runs one of heptap's commands; `which` also lists the upstream's commands.
    async fn run_local(
        &self,
        spec: &'static commands::CommandSpec,
        params: &Params,
    ) -> Result<Value, RpcError> {
        if spec.cmd == Cmd::Which
            && let Some(up) = &self.upstream
        {
            let args = commands::match_recipe(spec, params)?;
            if !args.has("command") {
                let extra = match up.which().await {
                    Ok(names) => names,
                    Err(e) => {
                        // Still list heptap's own: opensips-cli needs `which` to run anything.
                        tracing::warn!(upstream = %up.describe(), error = %e, "Upstream MI which failed; listing heptap's commands only");
                        Vec::new()
                    }
                };
                return handlers::which(&args, &extra);
            }
        }
        let env = Env {
            control: &self.control,
            started: self.started,
        };
        handlers::run(&env, spec, params).await
    }

    /// Handles one 2.x text request; the reply is always sent (2.x has no notifications).
    pub async fn handle_text(&self, command: &str, params: &[TextParam]) -> TextReply {
        let origin = Origin::fifo();
        let params = text::to_params(command, params);
        let corr = self.trace_request(command, &params, &origin);
        let reply = match commands::lookup(command) {
            Some(spec) => match self.run_local(spec, &params).await {
                Ok(v) => text::render_ok(Some(spec.cmd), &v),
                Err(e) => text::render_error(&e, command),
            },
            None => match &self.upstream {
                None => text::render_error(&RpcError::method_not_found(), command),
                Some(up) => {
                    let request = Request {
                        method: command.to_owned(),
                        params,
                        id: Some(Id::Str(rand::random::<u32>().to_string())),
                    }
                    .to_text();
                    let reply = match up.forward(&request, false).await {
                        Ok(Some(text)) => crate::client::parse_reply(&text),
                        Ok(None) => Err(crate::client::ClientError::BadReply(
                            "empty reply".to_owned(),
                        )),
                        Err(e) => Err(e),
                    };
                    match reply {
                        Ok(r) => text::render_ok(None, &r.result),
                        Err(crate::client::ClientError::Rpc(e)) => text::render_error(&e, command),
                        Err(e) => text::render_error(&upstream_error(up, &e), command),
                    }
                }
            },
        };
        let outcome = if reply.code == 200 {
            MiOutcome::Ok
        } else {
            MiOutcome::Error
        };
        self.control.count_mi_request(origin.backend, outcome);
        if let Some(corr) = corr {
            let msg =
                self.tracer
                    .text_reply(&corr, reply.code, &reply.reason, &reply.body, &origin);
            self.control.trace_mi(msg);
        }
        reply
    }
}

/// The command a request without a readable `method` is traced as (mi_http.c `unknown_method`).
const UNKNOWN_METHOD: &str = "unknown";

/// The `command` parameter of a `which` call, if any.
fn which_target(params: &Params) -> Option<String> {
    match params {
        Params::Positional(v) => v.first().and_then(Value::as_str).map(str::to_owned),
        Params::Named(m) => m.get("command").and_then(Value::as_str).map(str::to_owned),
        Params::None => None,
    }
}

/// -32000 "Server error" naming the upstream and what went wrong.
fn upstream_error(up: &Upstream, e: &crate::client::ClientError) -> RpcError {
    RpcError::server_error(format!("upstream MI {} failed: {e}", up.describe()))
}
