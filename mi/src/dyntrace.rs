//! `trace_start` / `trace_stop` (OpenSIPS tracer's dynamic tracing; 4.x `tracer:start` /
//! `tracer:stop`) and the dynamic rows `trace` lists, with OpenSIPS's replies and error codes.

use serde_json::{Map, Value, json};

use crate::commands::Args;
use crate::control::{Control, DynamicTraceInfo, TraceStart, TraceStartError};
use crate::jsonrpc::RpcError;

/// `trace_start id uri [filter [scope type]]`: `"OK"`, or OpenSIPS's error.
pub(crate) fn trace_start(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let required = |name: &str| -> Result<String, RpcError> {
        args.string(name)?
            .ok_or_else(|| RpcError::invalid_params(format!("Parameter '{name}' not found")))
    };
    let request = TraceStart {
        id: required("id")?,
        uri: required("uri")?,
        filters: args.strings("filter")?,
        scope: args.string("scope")?,
        kind: args.string("type")?,
    };
    if request.id.trim().is_empty() {
        return Err(bad_value("the trace id is empty"));
    }
    c.trace_start(request).map_err(|e| match e {
        TraceStartError::NotAcceptable(why) => {
            RpcError::new(406, "URI not acceptable").with_data(why)
        }
        TraceStartError::Unavailable => RpcError::new(500, "Internal error"),
        other => bad_value(other.to_string()),
    })?;
    Ok(Value::from("OK"))
}

/// `trace_stop id`: `"OK"`, or 400 "Bad parameter value" for an id that is not a dynamic trace.
pub(crate) fn trace_stop(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let id = args
        .string("id")?
        .ok_or_else(|| RpcError::invalid_params("Parameter 'id' not found"))?;
    c.trace_stop(&id)
        .map_err(|_| RpcError::new(400, "Bad parameter value"))?;
    Ok(Value::from("OK"))
}

/// 500 "Bad parameter value" with `why` as data (OpenSIPS's reply to a bad trace_start).
fn bad_value(why: impl Into<String>) -> RpcError {
    RpcError::new(500, "Bad parameter value").with_data(why.into())
}

/// The `trace` rows of the dynamic traces (only `id`'s when given), as OpenSIPS lists them:
/// `{"name", "type", "uri", "state": "dynamic", "filters": [{"caller": ".."}]}`, `filters`
/// only when there are some.
pub(crate) fn rows(traces: &[DynamicTraceInfo], id: Option<&str>) -> Vec<Value> {
    traces
        .iter()
        .filter(|t| id.is_none_or(|id| t.name == id))
        .map(|t| {
            let mut row = json!({
                "name": t.name,
                "type": t.kind,
                "uri": t.uri,
                "state": "dynamic",
            });
            if !t.filters.is_empty()
                && let Some(obj) = row.as_object_mut()
            {
                let filters = t
                    .filters
                    .iter()
                    .map(|(k, v)| {
                        let mut f = Map::new();
                        f.insert(k.clone(), Value::from(v.as_str()));
                        Value::Object(f)
                    })
                    .collect();
                obj.insert("filters".to_owned(), Value::Array(filters));
            }
            row
        })
        .collect()
}
