//! JSON-RPC 2.0 as OpenSIPS 3.x speaks it (spec/opensips-tracing.md §6.1): members looked up
//! case-insensitively, `params` positional or named, OpenSIPS's error codes, messages and data
//! strings, and replies printed compactly with a fixed member order.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// A request id as echoed back: OpenSIPS prints numeric ids as integers.
#[derive(Clone, Debug, PartialEq)]
pub enum Id {
    /// `"id": null`, and the id of errors about requests whose id could not be read.
    Null,
    /// A numeric id (a fractional one is truncated, as cJSON's `valueint`).
    Number(i64),
    /// A string id.
    Str(String),
}

impl Id {
    fn to_json(&self) -> Value {
        match self {
            Id::Null => Value::Null,
            Id::Number(n) => Value::from(*n),
            Id::Str(s) => Value::String(s.clone()),
        }
    }

    /// Reads an `id` member; `None` when it is not a string, number or null.
    fn from_json(v: &Value) -> Option<Id> {
        match v {
            Value::Null => Some(Id::Null),
            Value::String(s) => Some(Id::Str(s.clone())),
            Value::Number(n) => Some(Id::Number(number_as_int(n))),
            _ => None,
        }
    }
}

/// cJSON's `valueint`: integers as they are, floats truncated and saturated.
pub(crate) fn number_as_int(n: &serde_json::Number) -> i64 {
    if let Some(i) = n.as_i64() {
        i
    } else if let Some(u) = n.as_u64() {
        i64::try_from(u).unwrap_or(i64::MAX)
    } else {
        // `as` saturates and maps NaN to 0, which is what a C cast of a finite double does.
        n.as_f64().map_or(0, |f| f as i64)
    }
}

/// The parameters of a call.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Params {
    /// No `params`, `null`, `[]` or `{}`.
    #[default]
    None,
    /// `"params": [a, b]`.
    Positional(Vec<Value>),
    /// `"params": {"k": v}` (names are case-sensitive, as in OpenSIPS).
    Named(Map<String, Value>),
}

impl Params {
    /// How many parameters were given.
    pub fn len(&self) -> usize {
        match self {
            Params::None => 0,
            Params::Positional(v) => v.len(),
            Params::Named(m) => m.len(),
        }
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values in order (keys of named parameters dropped), as MI tracing prints them.
    pub fn values(&self) -> Vec<&Value> {
        match self {
            Params::None => Vec::new(),
            Params::Positional(v) => v.iter().collect(),
            Params::Named(m) => m.values().collect(),
        }
    }

    /// The `params` member to send: `{}` for none, as opensips-cli does.
    pub fn to_json(&self) -> Value {
        match self {
            Params::None => Value::Object(Map::new()),
            Params::Positional(v) => Value::Array(v.clone()),
            Params::Named(m) => Value::Object(m.clone()),
        }
    }

    fn from_json(v: Option<&Value>) -> Option<Params> {
        match v {
            None | Some(Value::Null) => Some(Params::None),
            Some(Value::Array(a)) if a.is_empty() => Some(Params::None),
            Some(Value::Object(o)) if o.is_empty() => Some(Params::None),
            Some(Value::Array(a)) => Some(Params::Positional(a.clone())),
            Some(Value::Object(o)) => Some(Params::Named(o.clone())),
            Some(_) => None,
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The method as the client sent it.
    pub method: String,
    /// The parameters.
    pub params: Params,
    /// `None` for a notification (no `id` member): it gets no reply.
    pub id: Option<Id>,
}

impl Request {
    /// Whether the client expects no reply.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// The request as one compact JSON text (what heptap's clients send).
    pub fn to_text(&self) -> String {
        let mut o = Map::new();
        o.insert("jsonrpc".into(), Value::from("2.0"));
        if let Some(id) = &self.id {
            o.insert("id".into(), id.to_json());
        }
        o.insert("method".into(), Value::from(self.method.clone()));
        o.insert("params".into(), self.params.to_json());
        Value::Object(o).to_string()
    }
}

/// A JSON-RPC error object: OpenSIPS's codes, messages and data strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The code: the JSON-RPC ones (-32700 ... -32000) or a command's own (400, 404, 500).
    pub code: i64,
    /// The message.
    pub message: Cow<'static, str>,
    /// The optional data string.
    pub data: Option<String>,
}

impl RpcError {
    /// An error with a message and no data.
    pub fn new(code: i64, message: impl Into<Cow<'static, str>>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Adds the data string.
    pub fn with_data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// -32700 "Parse error".
    pub fn parse_error() -> Self {
        RpcError::new(PARSE_ERROR, "Parse error")
    }

    /// -32600 "Invalid Request".
    pub fn invalid_request() -> Self {
        RpcError::new(INVALID_REQUEST, "Invalid Request")
    }

    /// -32601 "Method not found".
    pub fn method_not_found() -> Self {
        RpcError::new(METHOD_NOT_FOUND, "Method not found")
    }

    /// -32602 "Invalid params" with one of OpenSIPS's data strings.
    pub fn invalid_params(data: impl Into<String>) -> Self {
        RpcError::new(INVALID_PARAMS, "Invalid params").with_data(data)
    }

    /// -32000 "Server error" with a data string.
    pub fn server_error(data: impl Into<String>) -> Self {
        RpcError::new(SERVER_ERROR, "Server error").with_data(data)
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("code".into(), Value::from(self.code));
        o.insert("message".into(), Value::from(self.message.as_ref()));
        if let Some(d) = &self.data {
            o.insert("data".into(), Value::from(d.as_str()));
        }
        Value::Object(o)
    }

    /// Reads an error object from a reply (`None` if it is not one).
    pub fn from_json(v: &Value) -> Option<RpcError> {
        let o = v.as_object()?;
        let code = o
            .get("code")
            .and_then(Value::as_number)
            .map(number_as_int)?;
        let message = o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let data = o.get("data").map(|d| match d {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        Some(RpcError {
            code,
            message: Cow::Owned(message),
            data,
        })
    }
}

impl std::fmt::Display for RpcError {
    /// `code: message (data)`, as opensips-cli shows errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = &self.data {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// JSON-RPC "Parse error".
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "Method not found".
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC "Invalid params".
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC "Server error" (OpenSIPS: handler returned null; heptap: upstream MI failures).
pub const SERVER_ERROR: i64 = -32000;

/// Why a body is not a request; the error is answered even to notifications, with `"id":null`
/// unless the id could be read.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRequest {
    /// -32700 or -32600.
    pub error: RpcError,
    /// The request's id when it could be read.
    pub id: Id,
    /// The `method` member when it is a string (OpenSIPS traces a bad request under it, or
    /// under "unknown").
    pub method: Option<String>,
    /// The `params` member when it is an array or an object (traced with the request); boxed,
    /// as the error path is the rare one.
    pub params: Box<Params>,
}

/// Looks a member up the way cJSON_GetObjectItem does: case-insensitively, first match wins.
fn member<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Parses one request body.
pub fn parse_request(body: &[u8]) -> Result<Request, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BadRequest {
        error: RpcError::parse_error(),
        id: Id::Null,
        method: None,
        params: Box::default(),
    })?;
    // A batch (an array) or a scalar: no member can be read, as cJSON_GetObjectItem finds none.
    let Value::Object(o) = value else {
        return Err(BadRequest {
            error: RpcError::invalid_request(),
            id: Id::Null,
            method: None,
            params: Box::default(),
        });
    };
    let method = member(&o, "method").and_then(Value::as_str);
    let params = Params::from_json(member(&o, "params"));
    let invalid = |id: Option<&Id>| BadRequest {
        error: RpcError::invalid_request(),
        id: id.cloned().unwrap_or(Id::Null),
        method: method.map(str::to_owned),
        params: Box::new(params.clone().unwrap_or(Params::None)),
    };
    let id = match member(&o, "id") {
        None => None,
        Some(v) => Some(Id::from_json(v).ok_or_else(|| invalid(None))?),
    };
    if member(&o, "jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id.as_ref()));
    }
    let Some(method) = method else {
        return Err(invalid(id.as_ref()));
    };
    let Some(params) = params.clone() else {
        return Err(invalid(id.as_ref()));
    };
    Ok(Request {
        method: method.to_owned(),
        params,
        id,
    })
}

/// How replies are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Style {
    /// One line, no spaces (OpenSIPS's default; one-line FIFO clients need it).
    #[default]
    Compact,
    /// cJSON's tab-indented format (`pretty_printing`).
    Pretty,
}

/// A success reply: `{"jsonrpc":"2.0","result":<value>,"id":<id>}`.
pub fn success(result: &Value, id: &Id, style: Style) -> String {
    envelope("result", result, id, style)
}

/// An error reply: `{"jsonrpc":"2.0","error":{...},"id":<id>}`.
pub fn failure(error: &RpcError, id: &Id, style: Style) -> String {
    envelope("error", &error.to_json(), id, style)
}

fn envelope(key: &str, value: &Value, id: &Id, style: Style) -> String {
    // Built by hand so the member order is OpenSIPS's whatever serde_json's map does.
    match style {
        Style::Compact => {
            let mut s = String::from("{\"jsonrpc\":\"2.0\",\"");
            s.push_str(key);
            s.push_str("\":");
            s.push_str(&value.to_string());
            s.push_str(",\"id\":");
            s.push_str(&id.to_json().to_string());
            s.push('}');
            s
        }
        Style::Pretty => {
            let mut o = Map::new();
            o.insert("jsonrpc".into(), Value::from("2.0"));
            o.insert(key.into(), value.clone());
            o.insert("id".into(), id.to_json());
            let mut s = String::new();
            pretty(&Value::Object(o), 0, &mut s);
            s
        }
    }
}

/// cJSON_Print's format: objects one member per line, tab-indented, `"key":\t` before values;
/// arrays on one line with `, ` between items.
fn pretty(v: &Value, depth: usize, out: &mut String) {
    match v {
        Value::Object(o) => {
            out.push_str("{\n");
            let n = o.len();
            for (i, (k, val)) in o.iter().enumerate() {
                push_tabs(out, depth + 1);
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(":\t");
                pretty(val, depth + 1, out);
                if i + 1 < n {
                    out.push(',');
                }
                out.push('\n');
            }
            push_tabs(out, depth);
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                pretty(item, depth + 1, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn push_tabs(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push('\t');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_found_whatever_their_case() {
        let r = parse_request(br#"{"JSONRPC":"2.0","Method":"ps","ID":7,"PARAMS":["a"]}"#).unwrap();
        assert_eq!(r.method, "ps");
        assert_eq!(r.id, Some(Id::Number(7)));
        assert_eq!(r.params, Params::Positional(vec![json!("a")]));
    }

    #[test]
    fn empty_params_mean_no_params() {
        for body in [
            r#"{"jsonrpc":"2.0","method":"ps","id":"1","params":[]}"#,
            r#"{"jsonrpc":"2.0","method":"ps","id":"1","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"ps","id":"1","params":null}"#,
            r#"{"jsonrpc":"2.0","method":"ps","id":"1"}"#,
        ] {
            assert_eq!(parse_request(body.as_bytes()).unwrap().params, Params::None);
        }
    }

    #[test]
    fn a_request_without_id_is_a_notification() {
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"ps"}"#).unwrap();
        assert!(r.is_notification());
    }

    #[test]
    fn bad_bodies_get_parse_error_or_invalid_request() {
        let e = parse_request(b"{nope").unwrap_err();
        assert_eq!((e.error.code, e.id), (PARSE_ERROR, Id::Null));
        let e = parse_request(b"[1,2]").unwrap_err();
        assert_eq!(e.error.code, INVALID_REQUEST);
        let e = parse_request(br#"{"jsonrpc":"1.0","method":"ps","id":"9"}"#).unwrap_err();
        assert_eq!((e.error.code, e.id), (INVALID_REQUEST, Id::Str("9".into())));
        let e = parse_request(br#"{"jsonrpc":"2.0","method":5,"id":1}"#).unwrap_err();
        assert_eq!(e.error.code, INVALID_REQUEST);
        let e = parse_request(br#"{"jsonrpc":"2.0","method":"ps","params":"x"}"#).unwrap_err();
        assert_eq!(e.error.code, INVALID_REQUEST);
        let e = parse_request(br#"{"jsonrpc":"2.0","method":"ps","id":[1]}"#).unwrap_err();
        assert_eq!((e.error.code, e.id), (INVALID_REQUEST, Id::Null));
    }

    #[test]
    fn replies_are_compact_with_result_before_id() {
        assert_eq!(
            success(&json!("OK"), &Id::Str("123".into()), Style::Compact),
            r#"{"jsonrpc":"2.0","result":"OK","id":"123"}"#
        );
        assert_eq!(
            failure(
                &RpcError::invalid_params("Too few or too many parameters"),
                &Id::Number(4),
                Style::Compact
            ),
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":4}"#
        );
    }

    #[test]
    fn numeric_ids_are_echoed_as_integers() {
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"ps","id":12.9}"#).unwrap();
        assert_eq!(r.id, Some(Id::Number(12)));
    }

    #[test]
    fn pretty_printing_follows_cjson() {
        let s = success(
            &json!({"a": [1, 2], "b": "x"}),
            &Id::Number(1),
            Style::Pretty,
        );
        assert_eq!(
            s,
            "{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t{\n\t\t\"a\":\t[1, 2],\n\t\t\"b\":\t\"x\"\n\t},\n\t\"id\":\t1\n}"
        );
    }
}
