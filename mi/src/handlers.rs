//! The commands heptap answers itself, written against [`Control`]. Each returns the JSON
//! `result` or an error as OpenSIPS would; the 2.x text form is rendered from the same value.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use heptap_hep::NetProto;
use serde_json::{Map, Value, json};

use crate::commands::{self, Args, Cmd, CommandSpec};
use crate::control::{Control, LogLevel, Statistic, TraceIdInfo};
use crate::jsonrpc::{Params, RpcError};

/// What the handlers need besides the parameters.
pub(crate) struct Env<'a> {
    /// The agent.
    pub control: &'a Arc<dyn Control>,
    /// When the MI started (for `uptime`).
    pub started: SystemTime,
}

/// Runs a command of the table.
pub(crate) async fn run(
    env: &Env<'_>,
    spec: &CommandSpec,
    params: &Params,
) -> Result<Value, RpcError> {
    let args = commands::match_recipe(spec, params)?;
    let c = env.control;
    match spec.cmd {
        Cmd::Which => which(&args, &[]),
        Cmd::Ps => Ok(ps(c.as_ref())),
        Cmd::Version => Ok(version()),
        Cmd::Uptime => Ok(uptime(env.started, SystemTime::now())),
        Cmd::LogLevel => log_level(c.as_ref(), &args),
        Cmd::GetStatistics => get_statistics(c.as_ref(), &args),
        Cmd::ListStatistics => list_statistics(c.as_ref(), &args),
        Cmd::ResetStatistics => reset_statistics(c.as_ref(), &args),
        Cmd::Reload => reload(c, Reload::Config).await,
        Cmd::TlsReload => reload(c, Reload::Tls).await,
        Cmd::HepIds => Ok(c.hep_ids()),
        Cmd::SipTrace => sip_trace(c.as_ref(), &args),
        Cmd::Trace => trace(c.as_ref(), &args),
        Cmd::TraceStart => crate::dyntrace::trace_start(c.as_ref(), &args),
        Cmd::TraceStop => crate::dyntrace::trace_stop(c.as_ref(), &args),
        Cmd::NetTrace(proto) => net_trace(c.as_ref(), proto, &args),
        Cmd::ListTcpConns => list_tcp_conns(c.as_ref(), &args),
        Cmd::ResetAllStatistics => Ok(reset_all_statistics(c.as_ref())),
        Cmd::Help => help(&args),
    }
}

/// The most connections one `list_tcp_conns` reply lists (about 500 bytes each, so replies stay
/// under a few hundred KiB, which opensips-cli reads as one line). More are cut, and the reply
/// says so.
pub const MAX_LISTED_CONNECTIONS: usize = 1000;

/// `list_tcp_conns` [`proto`]: OpenSIPS's `{"Connections":[...]}` with its members for the
/// client leg (`ID`, `Type`, `State`, `Remote`, `Local`, `Lifetime`), then heptap's: the
/// listener, the connection ids the HEP events carry, the upstream leg, bytes each way, age.
fn list_tcp_conns(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let proto = match args.string("proto")? {
        None => None,
        Some(p) => Some(
            NetProto::ALL
                .into_iter()
                .find(|n| n.name().eq_ignore_ascii_case(p.trim()))
                .ok_or_else(|| {
                    RpcError::new(400, "Bad proto").with_data("proto should be tcp, tls, ws or wss")
                })?,
        ),
    };
    let list = c.tcp_connections(proto, MAX_LISTED_CONNECTIONS);
    let now = SystemTime::now();
    let rows: Vec<Value> = list
        .listed
        .iter()
        .map(|conn| tcp_conn_row(conn, now))
        .collect();
    let mut out = Map::new();
    out.insert("Connections".into(), Value::Array(rows));
    if list.total > list.listed.len() {
        out.insert(
            "Truncated".into(),
            Value::from(format!(
                "{} of {} connections listed (at most {MAX_LISTED_CONNECTIONS} per reply)",
                list.listed.len(),
                list.total
            )),
        );
    }
    Ok(Value::Object(out))
}

fn tcp_conn_row(conn: &crate::control::TcpConnInfo, now: SystemTime) -> Value {
    let leg = &conn.client;
    let mut row = Map::new();
    // OpenSIPS's `ID` is its 32-bit connection counter: the low half of the id traced.
    row.insert("ID".into(), Value::from(leg.conn_id & 0xFFFF_FFFF));
    row.insert("Type".into(), Value::from(leg.proto.name()));
    row.insert("State".into(), Value::from(conn.state.opensips_number()));
    row.insert("Remote".into(), Value::from(leg.remote.to_string()));
    row.insert("Local".into(), Value::from(leg.local.to_string()));
    if let Some(t) = conn.expires {
        row.insert("Lifetime".into(), Value::from(datetime(t)));
    }
    row.insert("Listener".into(), Value::from(conn.listener.as_str()));
    row.insert("Phase".into(), Value::from(conn.state.name()));
    row.insert("Connection id".into(), Value::from(leg.conn_id.to_string()));
    if let Some(up) = &conn.upstream {
        row.insert(
            "Upstream".into(),
            json!({
                "Type": up.proto.name(),
                "Remote": up.remote.to_string(),
                "Local": up.local.to_string(),
                "Connection id": up.conn_id.to_string(),
            }),
        );
    }
    row.insert("Bytes in".into(), Value::from(conn.bytes_in));
    row.insert("Bytes out".into(), Value::from(conn.bytes_out));
    let age = now.duration_since(conn.since).unwrap_or_default().as_secs();
    row.insert("Age".into(), Value::from(age));
    Value::Object(row)
}

/// `reset_all_statistics`: every counter zeroed (gauges keep their state), as OpenSIPS.
fn reset_all_statistics(c: &dyn Control) -> Value {
    for s in c.statistics().iter().filter(|s| !s.gauge) {
        c.reset_statistic(&s.group, &s.name);
    }
    ok()
}

/// `help` [`mi_cmd`], OpenSIPS's texts.
fn help(args: &Args) -> Result<Value, RpcError> {
    let Some(name) = args.string("mi_cmd")? else {
        return Ok(Value::from(
            "Usage: help mi_cmd - returns information about 'mi_cmd'",
        ));
    };
    let spec = commands::lookup(&name).ok_or_else(|| RpcError::new(404, "unknown MI command"))?;
    let (text, module) = commands::help(spec.cmd);
    Ok(json!({ "Help": text, "Exported by": module }))
}

/// `which`: every command name (heptap's, then `extra` from the upstream MI); with
/// `command`, that command's recipes.
pub(crate) fn which(args: &Args, extra: &[String]) -> Result<Value, RpcError> {
    match args.string("command")? {
        None => {
            let mut names: Vec<Value> =
                commands::all_names().into_iter().map(Value::from).collect();
            for n in extra {
                if commands::lookup(n).is_none() && !names.iter().any(|v| v == n.as_str()) {
                    names.push(Value::from(n.as_str()));
                }
            }
            Ok(Value::Array(names))
        }
        Some(name) => {
            let spec =
                commands::lookup(&name).ok_or_else(|| RpcError::new(404, "unknown MI command"))?;
            Ok(Value::Array(
                spec.recipes
                    .iter()
                    .map(|r| Value::Array(r.iter().map(|n| Value::from(*n)).collect()))
                    .collect(),
            ))
        }
    }
}

fn ps(c: &dyn Control) -> Value {
    let rows: Vec<Value> = c
        .processes()
        .into_iter()
        .map(|p| json!({"ID": p.id, "PID": p.pid, "Type": p.kind}))
        .collect();
    json!({ "Processes": rows })
}

/// `heptap <version> (<arch>/<os>)`.
pub(crate) fn server_string() -> String {
    format!(
        "heptap {} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

fn version() -> Value {
    json!({ "Server": server_string() })
}

fn uptime(started: SystemTime, now: SystemTime) -> Value {
    let up = now.duration_since(started).unwrap_or_default().as_secs();
    json!({
        "Now": ctime(now),
        "Up since": ctime(started),
        "Up time": format!("{up} [sec]"),
    })
}

/// C's ctime() without the newline, in UTC: `Thu Nov  1 12:00:00 2026`.
pub(crate) fn ctime(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// `%Y-%m-%d %H:%M:%S` in UTC (OpenSIPS's `list_tcp_conns` `Lifetime`, which is local time).
pub(crate) fn datetime(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn log_level(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let pid = std::process::id();
    let Some(level) = args.string("level")? else {
        return Ok(json!({
            "Processes": [{"PID": pid, "Log level": c.log_level().opensips_number()}]
        }));
    };
    if let Some(p) = args.string("pid")?
        && p.trim() != pid.to_string()
    {
        return Err(RpcError::new(404, "Process not found"));
    }
    let level =
        LogLevel::parse(&level).ok_or_else(|| RpcError::invalid_params("Bad log level value"))?;
    c.set_log_level(level)
        .map_err(|e| RpcError::new(500, "Failed to set log level").with_data(e))?;
    Ok(json!({ "New global log level": level.opensips_number() }))
}

/// The statistics a list of selectors names: `all`, `group:`, `group:name` or a bare `name`
/// (any group). Each statistic once, in the registry's order.
fn select<'a>(stats: &'a [Statistic], selectors: &[String]) -> Vec<&'a Statistic> {
    stats
        .iter()
        .filter(|s| {
            selectors.iter().any(|sel| {
                let sel = sel.trim();
                if sel == "all" {
                    true
                } else if let Some(group) = sel.strip_suffix(':') {
                    s.group == group
                } else if let Some((group, name)) = sel.split_once(':') {
                    s.group == group && s.name == name
                } else {
                    s.name == sel
                }
            })
        })
        .collect()
}

fn statistics_not_found() -> RpcError {
    RpcError::new(404, "Statistics Not Found")
}

fn get_statistics(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let selectors = args.string_array("statistics")?.unwrap_or_default();
    let stats = c.statistics();
    let found = select(&stats, &selectors);
    if found.is_empty() {
        return Err(statistics_not_found());
    }
    let mut out = Map::new();
    for s in found {
        out.insert(format!("{}:{}", s.group, s.name), Value::from(s.value));
    }
    Ok(Value::Object(out))
}

fn list_statistics(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let selectors = args
        .string_array("statistics")?
        .unwrap_or_else(|| vec!["all".to_owned()]);
    let stats = c.statistics();
    let found = select(&stats, &selectors);
    if found.is_empty() {
        return Err(statistics_not_found());
    }
    let mut out = Map::new();
    for s in found {
        let kind = if s.gauge {
            "non-incremental"
        } else {
            "incremental"
        };
        out.insert(format!("{}:{}", s.group, s.name), Value::from(kind));
    }
    Ok(Value::Object(out))
}

fn reset_statistics(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let selectors = args.string_array("statistics")?.unwrap_or_default();
    let stats = c.statistics();
    let found = select(&stats, &selectors);
    if found.is_empty() {
        return Err(statistics_not_found());
    }
    for s in found.into_iter().filter(|s| !s.gauge) {
        c.reset_statistic(&s.group, &s.name);
    }
    Ok(ok())
}

/// Which reload: the whole config (`reload`) or only the TLS files (`tls_reload`).
#[derive(Clone, Copy)]
enum Reload {
    Config,
    Tls,
}

/// `reload` and `tls_reload`: `"OK"` (OpenSIPS's reply to its reload commands) only when
/// everything asked for now runs; 500 "Reload incomplete" when something was left as it was,
/// every item in `data` (what was not applied and why first, then what was); 500 "Reload
/// failed" when nothing changed.
async fn reload(c: &Arc<dyn Control>, which: Reload) -> Result<Value, RpcError> {
    let c = Arc::clone(c);
    let done = tokio::task::spawn_blocking(move || match which {
        Reload::Config => c.reload(),
        Reload::Tls => c.tls_reload(),
    });
    match done.await {
        Ok(Ok(report)) if report.is_complete() => Ok(ok()),
        Ok(Ok(report)) => {
            Err(RpcError::new(500, "Reload incomplete").with_data(report.lines().join("; ")))
        }
        Ok(Err(refused)) => {
            Err(RpcError::new(500, "Reload failed").with_data(refused.errors.join("; ")))
        }
        Err(_) => Err(RpcError::server_error("Command handler returned null")),
    }
}

fn ok() -> Value {
    Value::from("OK")
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `on`/`off`, exactly, any case (tracer's `trace` and `sip_trace`).
fn exact_mode(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("on") {
        Some(true)
    } else if s.eq_ignore_ascii_case("off") {
        Some(false)
    } else {
        None
    }
}

/// The transport modules' prefix match: `on...` is on, `off...` is off (`"ONX"` is on).
fn prefix_mode(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    if b.len() >= 2 && b[..2].eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if b.len() >= 3 && b[..3].eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

fn destinations<'a>(ids: impl IntoIterator<Item = &'a TraceIdInfo>) -> Vec<Value> {
    ids.into_iter()
        .flat_map(|t| {
            t.destinations.iter().map(move |d| {
                json!({"name": t.name, "type": d.kind, "uri": d.uri, "state": on_off(t.on)})
            })
        })
        .collect()
}

fn trace_status(c: &dyn Control) -> Value {
    let mut rows = destinations(&c.trace_ids());
    rows.extend(crate::dyntrace::rows(&c.dynamic_traces(), None));
    json!({
        "global": on_off(c.sip_trace_on()),
        "trace destinations": rows,
    })
}

fn trace_id_status(c: &dyn Control, id: &str) -> Result<Value, RpcError> {
    let ids = c.trace_ids();
    let found: Vec<&TraceIdInfo> = ids.iter().filter(|t| t.name == id).collect();
    let mut rows = destinations(found);
    rows.extend(crate::dyntrace::rows(&c.dynamic_traces(), Some(id)));
    if rows.is_empty() {
        return Err(RpcError::new(400, "Bad trace id value"));
    }
    Ok(json!({ "trace destinations": rows }))
}

fn bad_trace_mode() -> RpcError {
    RpcError::new(500, "Bad parameter value").with_data("trace mode should be 'on' or 'off'")
}

fn set_trace_id(c: &dyn Control, id: &str, mode: &str) -> Result<Value, RpcError> {
    if !c.trace_ids().iter().any(|t| t.name == id) {
        return Err(RpcError::new(400, "Bad parameter value"));
    }
    let on = exact_mode(mode).ok_or_else(bad_trace_mode)?;
    c.set_trace_id_on(id, on)
        .map_err(|_| RpcError::new(400, "Bad parameter value"))?;
    Ok(ok())
}

/// 2.x `sip_trace`, positional: none = status, `on|off` = global, `<tid>` = that id's status,
/// `<tid> on|off` = switch that id.
fn sip_trace(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let id = args.string("id")?;
    let mode = args.string("mode")?;
    match (id, mode) {
        (None, _) => Ok(trace_status(c)),
        (Some(arg), None) => match exact_mode(&arg) {
            Some(on) => {
                c.set_sip_trace_on(on);
                Ok(ok())
            }
            None => trace_id_status(c, &arg),
        },
        (Some(id), Some(mode)) => set_trace_id(c, &id, &mode),
    }
}

/// 3.x `trace`, named only: `{}`, `{id}`, `{mode}`, `{id, mode}`.
fn trace(c: &dyn Control, args: &Args) -> Result<Value, RpcError> {
    let id = args.string("id")?;
    let mode = args.string("mode")?;
    match (id, mode) {
        (None, None) => Ok(trace_status(c)),
        (Some(id), None) => trace_id_status(c, &id),
        (None, Some(mode)) => {
            let on = exact_mode(&mode).ok_or_else(bad_trace_mode)?;
            c.set_sip_trace_on(on);
            Ok(ok())
        }
        (Some(id), Some(mode)) => set_trace_id(c, &id, &mode),
    }
}

/// `tcp_trace` / `tls_trace` / `ws_trace` / `wss_trace` [trace_mode] (spec §3.6).
fn net_trace(c: &dyn Control, proto: NetProto, args: &Args) -> Result<Value, RpcError> {
    let Some(mode) = args.string("trace_mode")? else {
        let mut o = Map::new();
        o.insert(
            format!("{} tracing", proto.label()),
            Value::from(on_off(c.net_trace_on(proto))),
        );
        return Ok(Value::Object(o));
    };
    let Some(on) = prefix_mode(&mode) else {
        const DATA: &str = "trace_mode should be 'on' or 'off'";
        // proto_tcp answers -32602, the others 500 (a quirk kept for scripts that check).
        return Err(match proto {
            NetProto::Tcp => RpcError::invalid_params(DATA),
            _ => RpcError::new(500, "Bad parameter value").with_data(DATA),
        });
    };
    c.set_net_trace_on(proto, on);
    Ok(ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datetime_is_opensips_lifetime_format() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_488_884_884);
        assert_eq!(datetime(t), "2017-03-07 11:08:04");
    }

    #[test]
    fn ctime_matches_c() {
        let t = UNIX_EPOCH + Duration::from_secs(1_488_884_884);
        assert_eq!(ctime(t), "Tue Mar  7 11:08:04 2017");
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(ctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn transport_modes_match_by_prefix() {
        assert_eq!(prefix_mode("ON"), Some(true));
        assert_eq!(prefix_mode("onx"), Some(true));
        assert_eq!(prefix_mode("Off"), Some(false));
        assert_eq!(prefix_mode("of"), None);
        assert_eq!(prefix_mode("o"), None);
        assert_eq!(exact_mode("onx"), None);
    }

    #[test]
    fn statistics_selectors() {
        let s = |g: &str, n: &str| Statistic {
            group: g.into(),
            name: n.into(),
            value: 1,
            gauge: false,
        };
        let stats = vec![
            s("core", "a"),
            s("core", "b"),
            s("net", "a"),
            s("homer", "sent"),
        ];
        let names = |sel: &[&str]| -> Vec<String> {
            let sel: Vec<String> = sel.iter().map(|x| x.to_string()).collect();
            select(&stats, &sel)
                .iter()
                .map(|s| format!("{}:{}", s.group, s.name))
                .collect()
        };
        assert_eq!(names(&["all"]).len(), 4);
        assert_eq!(names(&["core:"]), ["core:a", "core:b"]);
        assert_eq!(names(&["a"]), ["core:a", "net:a"]);
        assert_eq!(names(&["homer:sent", "core:b"]), ["core:b", "homer:sent"]);
        assert!(names(&["nope:"]).is_empty());
    }
}
