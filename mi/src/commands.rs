//! The command table: heptap's MI commands with their OpenSIPS 3.x names, 4.x canonical aliases
//! and recipes (the parameter lists `which command=X` prints), and recipe matching with
//! OpenSIPS's -32602 data strings. Also `trace_bwlist` resolved against the table: its names
//! must be known commands.

use std::collections::HashSet;

use heptap_filters::{Bwlist, BwlistKind};
use heptap_hep::NetProto;
use serde_json::{Map, Value};

use crate::jsonrpc::{Params, RpcError, number_as_int};

/// What a command does; handlers dispatch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cmd {
    Which,
    Ps,
    Version,
    Uptime,
    LogLevel,
    GetStatistics,
    ListStatistics,
    ResetStatistics,
    Reload,
    TlsReload,
    HepIds,
    SipTrace,
    Trace,
    TraceStart,
    TraceStop,
    NetTrace(NetProto),
    ListTcpConns,
    ResetAllStatistics,
    Help,
}

/// One command of the table.
#[derive(Debug)]
pub(crate) struct CommandSpec {
    /// The 3.x name, listed by `which`.
    pub name: &'static str,
    /// Other names that reach it (4.x `module:cmd` canonical names).
    pub aliases: &'static [&'static str],
    /// The accepted parameter lists.
    pub recipes: &'static [&'static [&'static str]],
    /// OpenSIPS's MI_NAMED_PARAMS_ONLY (3.x `trace`).
    pub named_only: bool,
    /// The handler.
    pub cmd: Cmd,
}

const NONE: &[&str] = &[];

/// Every command heptap answers itself.
pub(crate) static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "which",
        aliases: &["core:which"],
        recipes: &[NONE, &["command"]],
        named_only: false,
        cmd: Cmd::Which,
    },
    CommandSpec {
        name: "ps",
        aliases: &["core:ps"],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::Ps,
    },
    CommandSpec {
        name: "version",
        aliases: &["core:version"],
        recipes: &[NONE, &["revision"]],
        named_only: false,
        cmd: Cmd::Version,
    },
    CommandSpec {
        name: "uptime",
        aliases: &["core:uptime"],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::Uptime,
    },
    CommandSpec {
        name: "log_level",
        aliases: &["core:log_level"],
        recipes: &[NONE, &["level"], &["level", "pid"]],
        named_only: false,
        cmd: Cmd::LogLevel,
    },
    CommandSpec {
        name: "get_statistics",
        aliases: &["statistics:get"],
        recipes: &[&["statistics"]],
        named_only: false,
        cmd: Cmd::GetStatistics,
    },
    CommandSpec {
        name: "list_statistics",
        aliases: &["statistics:list"],
        recipes: &[NONE, &["statistics"]],
        named_only: false,
        cmd: Cmd::ListStatistics,
    },
    CommandSpec {
        name: "reset_statistics",
        aliases: &["statistics:reset"],
        recipes: &[&["statistics"]],
        named_only: false,
        cmd: Cmd::ResetStatistics,
    },
    CommandSpec {
        name: "reload",
        aliases: &["heptap:reload"],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::Reload,
    },
    CommandSpec {
        name: "tls_reload",
        aliases: &[],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::TlsReload,
    },
    CommandSpec {
        name: "hep_ids",
        aliases: &["heptap:hep_ids"],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::HepIds,
    },
    CommandSpec {
        name: "sip_trace",
        aliases: &[],
        recipes: &[NONE, &["id"], &["id", "mode"]],
        named_only: false,
        cmd: Cmd::SipTrace,
    },
    CommandSpec {
        name: "trace",
        aliases: &["tracer:trace"],
        recipes: &[NONE, &["id"], &["mode"], &["id", "mode"]],
        named_only: true,
        cmd: Cmd::Trace,
    },
    CommandSpec {
        name: "trace_start",
        aliases: &["tracer:start"],
        recipes: &[
            &["id", "uri"],
            &["id", "uri", "filter"],
            &["id", "uri", "filter", "scope", "type"],
        ],
        named_only: false,
        cmd: Cmd::TraceStart,
    },
    CommandSpec {
        name: "trace_stop",
        aliases: &["tracer:stop"],
        recipes: &[&["id"]],
        named_only: false,
        cmd: Cmd::TraceStop,
    },
    CommandSpec {
        name: "tcp_trace",
        aliases: &["tcp:trace"],
        recipes: &[NONE, &["trace_mode"]],
        named_only: false,
        cmd: Cmd::NetTrace(NetProto::Tcp),
    },
    CommandSpec {
        name: "tls_trace",
        aliases: &["tls:trace"],
        recipes: &[NONE, &["trace_mode"]],
        named_only: false,
        cmd: Cmd::NetTrace(NetProto::Tls),
    },
    CommandSpec {
        name: "ws_trace",
        aliases: &["ws:trace"],
        recipes: &[NONE, &["trace_mode"]],
        named_only: false,
        cmd: Cmd::NetTrace(NetProto::Ws),
    },
    CommandSpec {
        name: "wss_trace",
        aliases: &["wss:trace"],
        recipes: &[NONE, &["trace_mode"]],
        named_only: false,
        cmd: Cmd::NetTrace(NetProto::Wss),
    },
    // OpenSIPS core commands heptap answers meaningfully (and only those).
    CommandSpec {
        name: "list_tcp_conns",
        aliases: &["tcp:list"],
        recipes: &[NONE, &["proto"]],
        named_only: false,
        cmd: Cmd::ListTcpConns,
    },
    CommandSpec {
        name: "reset_all_statistics",
        aliases: &["statistics:reset_all"],
        recipes: &[NONE],
        named_only: false,
        cmd: Cmd::ResetAllStatistics,
    },
    CommandSpec {
        name: "help",
        aliases: &["core:help"],
        recipes: &[NONE, &["mi_cmd"]],
        named_only: false,
        cmd: Cmd::Help,
    },
];

/// `help <cmd>`'s text and the OpenSIPS module that exports the command (`Exported by`);
/// OpenSIPS's "not available for this command" for the rest.
pub(crate) fn help(cmd: Cmd) -> (&'static str, &'static str) {
    match cmd {
        Cmd::Which => ("lists all available MI commands", "core"),
        Cmd::Ps => ("lists all processes used by OpenSIPS", "core"),
        Cmd::Version => ("prints the version string of a runningOpenSIPS", "core"),
        Cmd::Uptime => (
            "prints various time information about OpenSIPS - when it started to run, for how long it runs",
            "core",
        ),
        Cmd::LogLevel => (
            "gets/sets the per process or global log level in OpenSIPS",
            "core",
        ),
        Cmd::GetStatistics => (
            "prints the statistics (all, group or one) realtime values.",
            "core",
        ),
        Cmd::ListStatistics => (
            "lists all the registered statistics and their types",
            "core",
        ),
        Cmd::ResetStatistics => ("resets the value of a statistic variable", "core"),
        Cmd::ResetAllStatistics => ("resets the value of all resetable variables", "core"),
        Cmd::ListTcpConns => ("list all ongoing TCP based connections", "core"),
        Cmd::Help => ("prints information about MI commands usage", "core"),
        Cmd::Reload => ("re-reads the config file and applies what it can", "heptap"),
        Cmd::TlsReload => ("reloads the TLS certificates, keys and CAs", "tls_mgm"),
        Cmd::HepIds => (
            "lists the HEP destinations with their state and counters",
            "heptap",
        ),
        Cmd::SipTrace | Cmd::Trace => ("list or switch the tracer's trace ids", "tracer"),
        Cmd::NetTrace(NetProto::Tcp) => ("TCP connection tracing: show or switch", "proto_tcp"),
        Cmd::NetTrace(NetProto::Tls) => ("TLS connection tracing: show or switch", "proto_tls"),
        Cmd::NetTrace(NetProto::Ws) => ("WS connection tracing: show or switch", "proto_ws"),
        Cmd::NetTrace(NetProto::Wss) => ("WSS connection tracing: show or switch", "proto_wss"),
        #[allow(unreachable_patterns)] // commands added later may have no help text yet
        _ => ("not available for this command", "heptap"),
    }
}

/// Finds a command by its name or an alias (case-sensitive, as OpenSIPS).
pub(crate) fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// What `which` lists: the 3.x names, then the aliases (opensips-cli refuses any command that
/// `which` does not list, so aliases are listed too).
pub(crate) fn all_names() -> Vec<&'static str> {
    COMMANDS
        .iter()
        .map(|c| c.name)
        .chain(COMMANDS.iter().flat_map(|c| c.aliases.iter().copied()))
        .collect()
}

/// Commands whose trailing arguments opensips-cli folds into one array parameter:
/// `(command, index of the array, its name)` (opensipscli/modules/mi.py
/// MI_ARRAY_PARAMS_COMMANDS). heptap's clients and the 2.x framing do the same.
pub(crate) const ARRAY_PARAM_COMMANDS: &[(&str, usize, &str)] = &[
    ("fs_subscribe", 1, "events"),
    ("freeswitch_scripting:subscribe", 1, "events"),
    ("fs_unsubscribe", 1, "events"),
    ("freeswitch_scripting:unsubscribe", 1, "events"),
    ("b2b_trigger_scenario", 3, "scenario_params"),
    ("b2b_logic:trigger_scenario", 3, "scenario_params"),
    ("dlg_push_var", 2, "DID"),
    ("dialog:push_var", 2, "DID"),
    ("get_statistics", 0, "statistics"),
    ("statistics:get", 0, "statistics"),
    ("list_statistics", 0, "statistics"),
    ("statistics:list", 0, "statistics"),
    ("reset_statistics", 0, "statistics"),
    ("statistics:reset", 0, "statistics"),
    ("trace_start", 0, "filter"),
    ("tracer:start", 0, "filter"),
    ("raise_event", 1, "params"),
    ("evi:raise", 1, "params"),
    ("dfks_set_feature", 4, "values"),
    ("presence_dfks:set_feature", 4, "values"),
    ("cluster_broadcast_mi", 2, "cmd_params"),
    ("clusterer:broadcast_mi", 2, "cmd_params"),
];

/// The array parameter of `cmd`, if it has one.
pub(crate) fn array_param(cmd: &str) -> Option<(usize, &'static str)> {
    ARRAY_PARAM_COMMANDS
        .iter()
        .find(|(c, _, _)| *c == cmd)
        .map(|(_, i, n)| (*i, *n))
}

/// The parameters of a call bound to the names of the recipe they matched.
#[derive(Debug, Default)]
pub(crate) struct Args(Map<String, Value>);

impl Args {
    /// Whether the parameter was given.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A string parameter; numbers are accepted and printed as integers (OpenSIPS's
    /// `get_mi_string_param`), anything else is "Bad type".
    pub fn string(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(number_as_int(n).to_string())),
            Some(_) => Err(bad_type(name)),
        }
    }

    /// An array-of-strings parameter that may also be given as one string (`trace_start
    /// filter=`: opensips-cli sends an array, an HTTP client may send one filter as text).
    pub fn strings(&self, name: &str) -> Result<Vec<String>, RpcError> {
        match self.0.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(_) => Ok(self.string_array(name)?.unwrap_or_default()),
        }
    }

    /// An array-of-strings parameter (`get_statistics statistics=[...]`).
    pub fn string_array(&self, name: &str) -> Result<Option<Vec<String>>, RpcError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) if a.is_empty() => Err(RpcError::invalid_params(format!(
                "Empty array in parameter '{name}'"
            ))),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(bad_type(name)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad_type(name)),
        }
    }
}

fn bad_type(name: &str) -> RpcError {
    RpcError::invalid_params(format!("Bad type for parameter '{name}'"))
}

/// Picks the recipe the parameters fit, as OpenSIPS does: positional parameters by count
/// (two recipes of that count = ambiguous), named ones by count and names.
pub(crate) fn match_recipe(spec: &CommandSpec, params: &Params) -> Result<Args, RpcError> {
    match params {
        Params::None => {
            if spec.recipes.iter().any(|r| r.is_empty()) {
                Ok(Args::default())
            } else {
                Err(RpcError::invalid_params("Too few or too many parameters"))
            }
        }
        Params::Positional(values) => {
            if spec.named_only {
                return Err(RpcError::invalid_params(
                    "Command only supports named parameters",
                ));
            }
            let mut fits = spec.recipes.iter().filter(|r| r.len() == values.len());
            let Some(recipe) = fits.next() else {
                return Err(RpcError::invalid_params("Too few or too many parameters"));
            };
            if fits.next().is_some() {
                return Err(RpcError::invalid_params(
                    "Ambiguous call, use named parameters instead",
                ));
            }
            Ok(Args(
                recipe
                    .iter()
                    .map(|n| (*n).to_owned())
                    .zip(values.iter().cloned())
                    .collect(),
            ))
        }
        Params::Named(map) => {
            // OpenSIPS's get_cmd_recipe: no recipe of that many parameters is "Too few or too
            // many" (so `ps` with any named parameter); one of that count with other names is
            // "do not match".
            let mut same_count = spec.recipes.iter().filter(|r| r.len() == map.len());
            let Some(first) = same_count.next() else {
                return Err(RpcError::invalid_params("Too few or too many parameters"));
            };
            let fits = std::iter::once(first)
                .chain(same_count)
                .any(|r| r.iter().all(|n| map.contains_key(*n)));
            if fits {
                Ok(Args(map.clone()))
            } else {
                Err(RpcError::invalid_params("Named parameters do not match"))
            }
        }
    }
}

/// `trace_bwlist` resolved against the command table: which requests are traced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TracedCommands {
    /// `w:` (only the listed ones) or `b:` (all but the listed ones).
    white: bool,
    /// The listed commands of heptap, by what they do (so aliases count as the same command).
    cmds: HashSet<Cmd>,
    /// Listed names heptap does not own (only allowed with an upstream MI: they may be the
    /// proxy's), matched by name.
    names: HashSet<String>,
    /// Whether commands heptap does not own are forwarded (and so filtered by name); without
    /// an upstream they are unknown commands, always traced as in OpenSIPS.
    upstream: bool,
}

/// A `trace_bwlist` name that is not an MI command (OpenSIPS's words).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trace_bwlist: can't find mi command {0:?}")]
pub struct UnknownBwlistCommand(pub String);

impl TracedCommands {
    /// Resolves the list's names: they must be heptap commands or aliases, unless an upstream
    /// MI may own them.
    pub fn resolve(list: &Bwlist, upstream: bool) -> Result<TracedCommands, UnknownBwlistCommand> {
        let mut cmds = HashSet::new();
        let mut others = HashSet::new();
        for name in &list.names {
            match lookup(name) {
                Some(spec) => {
                    cmds.insert(spec.cmd);
                }
                None if upstream => {
                    others.insert(name.clone());
                }
                None => return Err(UnknownBwlistCommand(name.clone())),
            }
        }
        Ok(TracedCommands {
            white: list.kind == BwlistKind::White,
            cmds,
            names: others,
            upstream,
        })
    }

    /// Whether a request for `method` is traced.
    pub fn allows(&self, method: &str) -> bool {
        let listed = match lookup(method) {
            Some(spec) => self.cmds.contains(&spec.cmd),
            None if self.upstream => self.names.contains(method),
            None => return true,
        };
        listed == self.white
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::INVALID_PARAMS;
    use serde_json::json;

    fn spec(name: &str) -> &'static CommandSpec {
        lookup(name).unwrap()
    }

    /// docs/mi.md documents every command: a `### ` heading naming it, and each alias.
    #[test]
    fn docs_mi_md_documents_every_command_and_alias() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/mi.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let headings: Vec<&str> = docs.lines().filter(|l| l.starts_with("### ")).collect();
        for c in COMMANDS {
            let named = format!("`{}`", c.name);
            assert!(
                headings.iter().any(|h| h.contains(&named)),
                "docs/mi.md has no heading for {named}"
            );
            for alias in c.aliases {
                assert!(
                    docs.contains(alias),
                    "docs/mi.md does not mention `{alias}`"
                );
            }
        }
    }

    #[test]
    fn aliases_reach_the_same_command() {
        assert_eq!(spec("tcp:trace").cmd, spec("tcp_trace").cmd);
        assert_eq!(spec("statistics:get").cmd, Cmd::GetStatistics);
        assert_eq!(spec("tracer:trace").cmd, Cmd::Trace);
        assert!(lookup("TCP_TRACE").is_none());
    }

    #[test]
    fn positional_params_bind_to_the_recipe_of_the_same_length() {
        let p = Params::Positional(vec![json!("tid2"), json!("off")]);
        let a = match_recipe(spec("sip_trace"), &p).unwrap();
        assert_eq!(a.string("id").unwrap().as_deref(), Some("tid2"));
        assert_eq!(a.string("mode").unwrap().as_deref(), Some("off"));
    }

    #[test]
    fn wrong_params_get_opensips_data_strings() {
        let data = |name: &str, p: Params| match_recipe(spec(name), &p).unwrap_err().data;
        let e = match_recipe(spec("ps"), &Params::Positional(vec![json!(1)])).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        assert_eq!(
            data("ps", Params::Positional(vec![json!(1)])).as_deref(),
            Some("Too few or too many parameters")
        );
        assert_eq!(
            data("trace", Params::Positional(vec![json!("on")])).as_deref(),
            Some("Command only supports named parameters")
        );
        let mut m = Map::new();
        m.insert("nope".into(), json!("x"));
        assert_eq!(
            data("tcp_trace", Params::Named(m.clone())).as_deref(),
            Some("Named parameters do not match")
        );
        // No recipe of that count: OpenSIPS says "Too few or too many", not "do not match".
        assert_eq!(
            data("ps", Params::Named(m)).as_deref(),
            Some("Too few or too many parameters")
        );
        // trace has {id} and {mode}: one positional param could be either.
        let ambiguous = CommandSpec {
            name: "x",
            aliases: &[],
            recipes: &[&["a"], &["b"]],
            named_only: false,
            cmd: Cmd::Ps,
        };
        assert_eq!(
            match_recipe(&ambiguous, &Params::Positional(vec![json!(1)]))
                .unwrap_err()
                .data
                .as_deref(),
            Some("Ambiguous call, use named parameters instead")
        );
    }

    #[test]
    fn typed_params_are_checked() {
        let p = Params::Positional(vec![json!([])]);
        let a = match_recipe(spec("get_statistics"), &p).unwrap();
        assert_eq!(
            a.string_array("statistics").unwrap_err().data.as_deref(),
            Some("Empty array in parameter 'statistics'")
        );
        let p = Params::Positional(vec![json!("all")]);
        let a = match_recipe(spec("get_statistics"), &p).unwrap();
        assert_eq!(
            a.string_array("statistics").unwrap_err().data.as_deref(),
            Some("Bad type for parameter 'statistics'")
        );
        let p = Params::Positional(vec![json!(42)]);
        let a = match_recipe(spec("tcp_trace"), &p).unwrap();
        assert_eq!(a.string("trace_mode").unwrap().as_deref(), Some("42"));
    }

    #[test]
    fn bwlist_black_and_white() {
        let resolve = |text: &str| TracedCommands::resolve(&text.parse().unwrap(), false);
        let b = resolve("b: ps, which").unwrap();
        assert!(!b.allows("ps") && !b.allows("core:which") && b.allows("sip_trace"));
        let w = resolve(" W : statistics:get").unwrap();
        assert!(w.allows("get_statistics") && !w.allows("ps"));
        // Unknown commands are traced whatever the list says (OpenSIPS cannot list them).
        assert!(w.allows("unknown_cmd") && b.allows("unknown_cmd"));
    }

    /// The list's syntax (`"b:"`, `"x: ps"`, `"ps"`) is refused where it is parsed, before the
    /// MI sees it; the MI checks the names.
    #[test]
    fn bwlist_names_must_be_known_commands() {
        use heptap_filters::BwlistError;
        let resolve =
            |text: &str, upstream| TracedCommands::resolve(&text.parse().unwrap(), upstream);
        assert_eq!(
            resolve("b: ps, dlg_list", false),
            Err(UnknownBwlistCommand("dlg_list".into()))
        );
        let with_upstream = resolve("w: dlg_list", true).unwrap();
        assert!(with_upstream.allows("dlg_list") && !with_upstream.allows("ps"));
        assert!(!with_upstream.allows("dlg_end_dlg"));
        assert_eq!("b:".parse::<Bwlist>(), Err(BwlistError::EmptyList));
        assert!(matches!(
            "x: ps".parse::<Bwlist>(),
            Err(BwlistError::BadKind(_))
        ));
        assert_eq!("ps".parse::<Bwlist>(), Err(BwlistError::MissingColon));
    }
}
