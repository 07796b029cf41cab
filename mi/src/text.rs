//! The 2.x text MI: parameters as lines, replies as `<code> <reason>` then one line per node,
//! `[tabs]name:: value attr=val ...`, then an empty line (modules/mi_fifo 2.x mi_writer.c).

use std::fmt::Write as _;

use serde_json::Value;

use crate::commands::{self, Cmd};
use crate::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError};
use crate::jsonrpc::{Params, number_as_int};

/// One parameter line of a 2.x request: `value`, `"quoted value"` or `name::value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextParam {
    /// The name before `::`, if any.
    pub name: Option<String>,
    /// The value.
    pub value: String,
}

/// Parses one parameter line (without its newline); `None` if it is garbled (a stray quote).
pub(crate) fn parse_param_line(line: &str) -> Option<TextParam> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix('"') {
        return Some(TextParam {
            name: None,
            value: unquote(rest)?,
        });
    }
    match line.split_once("::") {
        Some((name, value)) => {
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => unquote(rest)?,
                None if value.contains('"') => return None,
                None => value.to_owned(),
            };
            let name = name.trim();
            Some(TextParam {
                name: (!name.is_empty()).then(|| name.to_owned()),
                value,
            })
        }
        None if line.contains('"') => None,
        None => Some(TextParam {
            name: None,
            value: line.to_owned(),
        }),
    }
}

/// The inside of a quoted value whose opening quote is already gone: `\"` is a quote, the
/// closing quote must end the line.
fn unquote(rest: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.as_str().starts_with('"') => {
                out.push('"');
                chars.next();
            }
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// Turns 2.x parameters into JSON-RPC ones: named if every line had a name, positional
/// otherwise, with the trailing values of array-parameter commands folded into one array (as
/// opensips-cli does).
pub(crate) fn to_params(command: &str, params: &[TextParam]) -> Params {
    if params.is_empty() {
        return Params::None;
    }
    if params.iter().all(|p| p.name.is_some()) {
        let mut m = serde_json::Map::new();
        for p in params {
            let name = p.name.clone().unwrap_or_default();
            let value = match commands::array_param(command) {
                Some((_, array)) if array == name => Value::Array(
                    p.value
                        .split_whitespace()
                        .map(|s| Value::from(s.to_owned()))
                        .collect(),
                ),
                _ => Value::from(p.value.clone()),
            };
            m.insert(name, value);
        }
        return Params::Named(m);
    }
    let values: Vec<String> = params.iter().map(|p| p.value.clone()).collect();
    positional_with_array(command, values)
}

/// Positional string parameters, folding the tail into an array for array-parameter commands.
pub(crate) fn positional_with_array(command: &str, values: Vec<String>) -> Params {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    match commands::array_param(command) {
        Some((index, _)) => {
            let mut it = values.into_iter();
            out.extend(it.by_ref().take(index).map(Value::from));
            let tail: Vec<Value> = it.map(Value::from).collect();
            if !tail.is_empty() {
                out.push(Value::Array(tail));
            }
        }
        None => out.extend(values.into_iter().map(Value::from)),
    }
    if out.is_empty() {
        Params::None
    } else {
        Params::Positional(out)
    }
}

/// A 2.x reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextReply {
    /// `200`, `400`, `500` ...
    pub code: u16,
    /// `OK`, or the error text.
    pub reason: String,
    /// The node lines, each ending in `\n`.
    pub body: String,
    /// Whether the empty end-of-reply line follows (server-level errors such as
    /// `500 command 'x' not available` have none in OpenSIPS 2.x).
    pub end_line: bool,
}

impl TextReply {
    /// The bytes written to the reply FIFO.
    pub fn to_text(&self) -> String {
        let mut s = format!("{} {}\n{}", self.code, self.reason, self.body);
        if self.end_line {
            s.push('\n');
        }
        s
    }
}

/// Renders a successful result.
pub(crate) fn render_ok(cmd: Option<Cmd>, result: &Value) -> TextReply {
    let mut body = String::new();
    match (cmd, result) {
        (_, Value::String(s)) if s == "OK" => {}
        (Some(Cmd::SipTrace | Cmd::Trace), Value::Object(o)) => {
            if let Some(g) = o.get("global") {
                line(&mut body, 0, Some("global"), &scalar(g), &[]);
            }
            for d in o
                .get("trace destinations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let get = |k: &str| d.get(k).map(scalar).unwrap_or_default();
                let attrs = [
                    ("type", get("type")),
                    ("uri", get("uri")),
                    ("state", get("state")),
                ];
                line(&mut body, 0, Some(&get("name")), "", &attrs);
            }
        }
        (Some(Cmd::Ps), Value::Object(o)) => {
            for p in o
                .get("Processes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let get = |k: &str| p.get(k).map(scalar).unwrap_or_default();
                let attrs = [
                    ("ID", get("ID")),
                    ("PID", get("PID")),
                    ("Type", get("Type")),
                ];
                line(&mut body, 0, Some("Process"), "", &attrs);
            }
        }
        (Some(Cmd::GetStatistics), Value::Object(o)) => {
            for (k, v) in o {
                line(&mut body, 0, None, &format!("{k} = {}", scalar(v)), &[]);
            }
        }
        (_, v) => generic(&mut body, v, None, 0),
    }
    TextReply {
        code: 200,
        reason: "OK".to_owned(),
        body,
        end_line: true,
    }
}

/// Renders an error the way 2.x reported it.
pub(crate) fn render_error(error: &RpcError, command: &str) -> TextReply {
    let server_level = |code: u16, reason: String| TextReply {
        code,
        reason,
        body: String::new(),
        end_line: false,
    };
    match error.code {
        METHOD_NOT_FOUND => server_level(500, format!("command '{command}' not available")),
        PARSE_ERROR | INVALID_REQUEST => {
            server_level(400, format!("parse error in command '{command}'"))
        }
        code => {
            let code = match u16::try_from(code) {
                Ok(c) if (100..=999).contains(&c) => c,
                _ if code == INVALID_PARAMS => 400,
                _ => 500,
            };
            let reason = match &error.data {
                Some(d) => format!("{}: {d}", error.message),
                None => error.message.to_string(),
            };
            TextReply {
                code,
                reason,
                body: String::new(),
                end_line: true,
            }
        }
    }
}

/// Nodes from any JSON value: members become `name:: value` lines (nested values indented),
/// array items repeat their parent's name, bare strings become value-only lines.
fn generic(out: &mut String, v: &Value, name: Option<&str>, level: usize) {
    match v {
        Value::Object(o) => {
            let kids = if let Some(n) = name {
                line(out, level, Some(n), "", &[]);
                level + 1
            } else {
                level
            };
            for (k, val) in o {
                generic(out, val, Some(k), kids);
            }
        }
        Value::Array(a) => {
            for item in a {
                generic(out, item, name, level);
            }
        }
        scalar_value => line(out, level, name, &scalar(scalar_value), &[]),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_as_int(n).to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One node line: `name:: ` (when named), the value, ` attr=val` for each attribute. A named
/// node with attributes and no value therefore has two spaces after `::`, as in 2.x.
fn line(out: &mut String, level: usize, name: Option<&str>, value: &str, attrs: &[(&str, String)]) {
    for _ in 0..level {
        out.push('\t');
    }
    if let Some(n) = name {
        out.push_str(n);
        out.push_str(":: ");
    }
    out.push_str(value);
    for (k, v) in attrs {
        let _ = write!(out, " {k}={v}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameter_lines() {
        let p = |s: &str| parse_param_line(s);
        assert_eq!(
            p("tid2"),
            Some(TextParam {
                name: None,
                value: "tid2".into()
            })
        );
        assert_eq!(
            p("mode:: off"),
            Some(TextParam {
                name: Some("mode".into()),
                value: "off".into()
            })
        );
        assert_eq!(p(r#""a \"b\" c""#).unwrap().value, r#"a "b" c"#);
        assert_eq!(p(r#"x::"q""#).unwrap().value, "q");
        assert_eq!(p(r#"bad"quote"#), None);
        assert_eq!(p(r#""unterminated"#), None);
    }

    #[test]
    fn trace_status_renders_as_2x() {
        let v = json!({"global": "on", "trace destinations": [
            {"name": "tid", "type": "HEP", "uri": "1.2.3.4:6053", "state": "on"}]});
        assert_eq!(
            render_ok(Some(Cmd::SipTrace), &v).to_text(),
            "200 OK\nglobal:: on\ntid::  type=HEP uri=1.2.3.4:6053 state=on\n\n"
        );
        assert_eq!(
            render_ok(Some(Cmd::SipTrace), &json!("OK")).to_text(),
            "200 OK\n\n"
        );
    }

    #[test]
    fn generic_rendering() {
        let v = json!({"TCP tracing": "on"});
        assert_eq!(
            render_ok(None, &v).to_text(),
            "200 OK\nTCP tracing:: on\n\n"
        );
        let v = json!(["ps", "which"]);
        assert_eq!(
            render_ok(Some(Cmd::Which), &v).to_text(),
            "200 OK\nps\nwhich\n\n"
        );
        let v = json!({"a": {"b": 1}});
        assert_eq!(render_ok(None, &v).to_text(), "200 OK\na:: \n\tb:: 1\n\n");
    }

    #[test]
    fn errors_render_as_2x() {
        assert_eq!(
            render_error(&RpcError::method_not_found(), "nope").to_text(),
            "500 command 'nope' not available\n"
        );
        assert_eq!(
            render_error(&RpcError::new(400, "Bad trace id value"), "sip_trace").to_text(),
            "400 Bad trace id value\n\n"
        );
        assert_eq!(
            render_error(
                &RpcError::invalid_params("Too few or too many parameters"),
                "ps"
            )
            .to_text(),
            "400 Invalid params: Too few or too many parameters\n\n"
        );
    }

    #[test]
    fn array_commands_fold_their_tail() {
        assert_eq!(
            positional_with_array("get_statistics", vec!["core:".into(), "net:".into()]),
            Params::Positional(vec![json!(["core:", "net:"])])
        );
        assert_eq!(
            positional_with_array("sip_trace", vec!["tid".into(), "on".into()]),
            Params::Positional(vec![json!("tid"), json!("on")])
        );
        assert_eq!(positional_with_array("ps", vec![]), Params::None);
    }
}
