//! Loading: built-in defaults < TOML file < `HEPTAP_*` environment, merged with figment, then
//! deserialized one part at a time (each section, each `[hep.ids]` entry, each listener) so
//! that one run reports every broken part, then validated. Every error is located: the file
//! line of its key (toml_edit spans), the environment variable that set it, or the default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, TableLike};

use crate::error::{ConfigError, ConfigErrors, Origin};
use crate::model::{Config, Hep, HepIdEntry, Listener, NetTracing};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "HEPTAP_";
/// Separator of key levels in environment variable names (`HEPTAP_HEP__CAPTURE_ID`).
pub const ENV_SEPARATOR: &str = "__";
/// The name errors use for text given to [`Config::from_toml_str`].
const INLINE_TOML: &str = "<toml>";

/// The top-level tables, in the order the docs list them.
const SECTIONS: [&str; 9] = [
    "log",
    "service",
    "hep",
    "tracer",
    "listener",
    "net",
    "routes",
    "address_groups",
    "mi",
];

/// Where a config comes from. The environment is passed in, never read here: `main` passes
/// `std::env::vars()`, tests pass what they need.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The TOML file; None: start from [`Config::builtin_default`].
    pub file: Option<PathBuf>,
    /// Environment variables; those named `HEPTAP_<SECTION>[__<KEY>...]` override keys.
    /// `HEPTAP_<NAME>` without `__` where NAME is no section (e.g. `HEPTAP_CONFIG`) is left to
    /// the command line.
    pub env: Vec<(String, String)>,
}

impl Source {
    /// Fills in the origin (file line, environment variable) of errors produced outside
    /// [`Config::load`], e.g. by [`Config::check_route_names`].
    pub fn locate(&self, errors: ConfigErrors) -> ConfigErrors {
        let text = self
            .file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok());
        let file = self.file.as_deref().zip(text.as_deref());
        let locator = Locator::new(file, &env_vars(&self.env).0);
        ConfigErrors(errors.into_iter().map(|e| locator.locate(e)).collect())
    }
}

impl Config {
    /// Loads the config: the file (or, without one, [`Config::builtin_default`]), then the
    /// `HEPTAP_*` variables of `src.env` on top, then [`Config::validate`]. Every error found
    /// is returned, each with its key path and origin.
    pub fn load(src: &Source) -> Result<Config, ConfigErrors> {
        match &src.file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => load_from(Some((path, &text)), &src.env),
                Err(e) => Err(ConfigError {
                    path: String::new(),
                    origin: Origin::File {
                        path: path.clone(),
                        line: None,
                    },
                    message: format!("cannot read the config file: {e}"),
                }
                .into()),
            },
            None => load_from(None, &src.env),
        }
    }

    /// Loads a config from TOML text alone (no environment), with the same defaults and
    /// validation as a file; errors name the file `<toml>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        load_from(Some((Path::new(INLINE_TOML), text)), &[])
    }
}

fn load_from(
    file: Option<(&Path, &str)>,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let (vars, mut errors) = env_vars(env);
    let mut figment = Figment::new();
    match file {
        Some((path, text)) => {
            if let Err(e) = ImDocument::parse(text) {
                let line = e.span().map(|s| line_of(text, s.start));
                let message = format!("not valid TOML: {}", e.message().trim_end());
                return Err(ConfigError {
                    path: String::new(),
                    origin: Origin::File {
                        path: path.to_owned(),
                        line,
                    },
                    message,
                }
                .into());
            }
            figment = figment.merge(Toml::string(text));
        }
        None => figment = figment.merge(Serialized::defaults(Config::builtin_default())),
    }
    for var in &vars {
        figment = figment.merge(Serialized::default(
            &var.segments.join("."),
            var.value.clone(),
        ));
    }
    let locator = Locator::new(file, &vars);

    let config = match figment.extract::<Dict>() {
        Ok(dict) => build(dict, &mut errors),
        Err(e) => {
            errors.extend(from_figment(e, ""));
            None
        }
    };
    let result = match config {
        Some(config) if errors.is_empty() => config.validate().map(|()| config),
        _ => Err(ConfigErrors(errors)),
    };
    result.map_err(|errs| {
        let mut located: Vec<ConfigError> = errs.into_iter().map(|e| locator.locate(e)).collect();
        // File order reads best; environment and defaults after the file.
        located.sort_by_key(|e| match e.origin {
            Origin::File { line, .. } => (0, line.unwrap_or(0)),
            Origin::Env(_) => (1, 0),
            Origin::Default => (2, 0),
        });
        ConfigErrors(located)
    })
}

/// One `HEPTAP_*` variable that names a config key.
#[derive(Debug, Clone)]
struct EnvVar {
    name: String,
    segments: Vec<String>,
    value: Value,
}

/// Picks the config variables out of the environment, most general first (so
/// `HEPTAP_HEP__CAPTURE_ID` wins over a `capture_id` inside `HEPTAP_HEP`).
fn env_vars(env: &[(String, String)]) -> (Vec<EnvVar>, Vec<ConfigError>) {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segments: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.len() == 1 && !SECTIONS.contains(&segments[0].as_str()) {
            continue;
        }
        if segments.iter().any(String::is_empty) {
            errors.push(ConfigError {
                path: String::new(),
                origin: Origin::Env(name.clone()),
                message: format!("'{name}' is not of the form HEPTAP_<SECTION>__<KEY>"),
            });
            continue;
        }
        vars.push(EnvVar {
            name: name.clone(),
            segments,
            value: env_value(raw),
        });
    }
    vars.sort_by(|a, b| {
        a.segments
            .len()
            .cmp(&b.segments.len())
            .then_with(|| a.name.cmp(&b.name))
    });
    (vars, errors)
}

/// An environment value is a string, unless it is written as an array or table
/// (`["[a]uri=stdout"]`, `{host="10.0.0.5"}`); numbers and booleans are read from strings
/// where the key wants one.
fn env_value(raw: &str) -> Value {
    let t = raw.trim();
    if t.starts_with('[') || t.starts_with('{') {
        let Ok(value) = t.parse::<Value>();
        if matches!(value, Value::Array(..) | Value::Dict(..)) {
            return value;
        }
    }
    Value::from(raw.to_owned())
}

/// Deserializes the merged dict part by part, collecting the errors of every part.
fn build(dict: Dict, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut config = Config::default();
    for (key, value) in dict {
        match key.as_str() {
            "log" => set(&mut config.log, part(value, "log", errors)),
            "service" => set(&mut config.service, part(value, "service", errors)),
            "tracer" => set(&mut config.tracer, part(value, "tracer", errors)),
            "routes" => set(&mut config.routes, part(value, "routes", errors)),
            "mi" => set(&mut config.mi, part(value, "mi", errors)),
            "address_groups" => {
                #[derive(Deserialize)]
                struct Groups(
                    #[serde(deserialize_with = "crate::model::de_address_groups")]
                    BTreeMap<String, Vec<ipnet::IpNet>>,
                );
                set(
                    &mut config.address_groups,
                    part::<Groups>(value, "address_groups", errors).map(|g| g.0),
                );
            }
            "hep" => build_hep(value, &mut config.hep, errors),
            "net" => match value {
                Value::Dict(_, protos) => {
                    for (proto, value) in protos {
                        let path = format!("net.{proto}");
                        let slot = match proto.as_str() {
                            "tcp" => &mut config.net.tcp,
                            "tls" => &mut config.net.tls,
                            "ws" => &mut config.net.ws,
                            "wss" => &mut config.net.wss,
                            _ => {
                                errors.push(ConfigError::new(
                                    path,
                                    "unknown key, expected one of: tcp, tls, ws, wss",
                                ));
                                continue;
                            }
                        };
                        set(slot, part::<NetTracing>(value, &path, errors));
                    }
                }
                other => set(&mut config.net, part(other, "net", errors)),
            },
            "listener" => match value {
                Value::Array(_, items) => {
                    config.listener = items
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, v)| part::<Listener>(v, &format!("listener[{i}]"), errors))
                        .collect();
                }
                _ => errors.push(ConfigError::new(
                    "listener",
                    "expected an array of tables: write each listener as a [[listener]] table",
                )),
            },
            _ => errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "unknown section '{key}', expected one of: {}",
                    SECTIONS.join(", ")
                ),
            )),
        }
    }
    errors.is_empty().then_some(config)
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// `[hep]` without its ids, then each id on its own.
fn build_hep(value: Value, hep: &mut Hep, errors: &mut Vec<ConfigError>) {
    let Value::Dict(tag, mut dict) = value else {
        set(hep, part(value, "hep", errors));
        return;
    };
    let ids = dict.remove("ids");
    set(hep, part(Value::Dict(tag, dict), "hep", errors));
    match ids {
        None => {}
        Some(Value::Dict(_, ids)) => {
            for (name, v) in ids {
                let path = format!("hep.ids.{name}");
                if let Some(entry) = part::<HepIdEntry>(v, &path, errors) {
                    hep.ids.insert(name, entry);
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(
            "hep.ids",
            "expected a table of hep_id names: [hep.ids] homer = \"[homer] 10.0.0.5:9060\"",
        )),
    }
}

/// Deserializes one part (figment's lossy mode: "5" is a number where one is wanted, since
/// environment values are strings).
fn part<T: DeserializeOwned>(value: Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    #[derive(Deserialize)]
    struct Wrap<T> {
        v: T,
    }
    let mut dict = Dict::new();
    dict.insert("v".to_owned(), value);
    match Figment::from(Serialized::defaults(dict)).extract_lossy::<Wrap<T>>() {
        Ok(w) => Some(w.v),
        Err(e) => {
            errors.extend(from_figment(e, path));
            None
        }
    }
}

/// Turns figment's (chained) errors into config errors with our key paths and wording.
fn from_figment(error: figment::Error, base: &str) -> Vec<ConfigError> {
    use figment::error::Kind;
    error
        .into_iter()
        .map(|e| {
            let mut path = base.to_owned();
            let segments = match e.path.first().map(String::as_str) {
                Some("v") => &e.path[1..],
                _ => &e.path[..],
            };
            for seg in segments {
                push_segment(&mut path, seg);
            }
            let message = match &e.kind {
                Kind::MissingField(field) => {
                    push_segment(&mut path, field);
                    "missing key (it has no default)".to_owned()
                }
                Kind::UnknownField(field, expected) => {
                    // Unknown keys usually arrive with the key already in the path.
                    if segments.last() != Some(field) {
                        push_segment(&mut path, field);
                    }
                    format!(
                        "unknown key '{field}', expected one of: {}",
                        expected.join(", ")
                    )
                }
                Kind::UnknownVariant(value, expected) => {
                    format!(
                        "unknown value '{value}', expected one of: {}",
                        expected.join(", ")
                    )
                }
                Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                    format!("expected {expected}, found {actual}")
                }
                other => other.to_string(),
            };
            ConfigError::new(path, message)
        })
        .collect()
}

fn push_segment(path: &mut String, seg: &str) {
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        path.push_str(&format!("[{seg}]"));
    } else {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(seg);
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `listener[1].tls.cert_file` into segments.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key.to_owned()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

/// Finds where the value at a key path came from.
struct Locator<'a> {
    file: Option<(&'a Path, &'a str, Option<ImDocument<&'a str>>)>,
    env: Vec<(Vec<Segment>, String)>,
}

impl<'a> Locator<'a> {
    fn new(file: Option<(&'a Path, &'a str)>, vars: &[EnvVar]) -> Self {
        Locator {
            file: file.map(|(path, text)| (path, text, ImDocument::parse(text).ok())),
            env: vars
                .iter()
                .map(|v| {
                    (
                        v.segments.iter().cloned().map(Segment::Key).collect(),
                        v.name.clone(),
                    )
                })
                .collect(),
        }
    }

    fn locate(&self, mut error: ConfigError) -> ConfigError {
        if error.origin == Origin::Default {
            error.origin = self.origin(&error.path);
        }
        error
    }

    /// The environment wins (it is merged last), then the file; else the value is a default.
    /// The deepest key of the path found in the file gives the line: an error about a key the
    /// file leaves out points at its table.
    fn origin(&self, path: &str) -> Origin {
        let segments = parse_path(path);
        let env = self
            .env
            .iter()
            .filter(|(prefix, _)| segments.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len());
        if let Some((_, name)) = env {
            return Origin::Env(name.clone());
        }
        if let Some((file, text, Some(doc))) = &self.file
            && let Some(line) = line_in(doc, text, &segments)
        {
            return Origin::File {
                path: file.to_path_buf(),
                line: Some(line),
            };
        }
        // An error reported at a parent of what a variable set (an unknown section, say).
        match self
            .env
            .iter()
            .find(|(set, _)| !segments.is_empty() && set.starts_with(&segments))
        {
            Some((_, name)) => Origin::Env(name.clone()),
            None => Origin::Default,
        }
    }
}

/// A node of the TOML document while walking a key path.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Value(&'d toml_edit::Value),
    Table(&'d toml_edit::Table),
}

impl<'d> Node<'d> {
    fn table_like(&self) -> Option<&'d dyn TableLike> {
        match *self {
            Node::Item(Item::Table(t)) | Node::Table(t) => Some(t),
            Node::Item(Item::Value(toml_edit::Value::InlineTable(t)))
            | Node::Value(toml_edit::Value::InlineTable(t)) => Some(t),
            _ => None,
        }
    }

    fn child(&self, seg: &Segment) -> Option<(Node<'d>, Option<usize>)> {
        match seg {
            Segment::Key(key) => {
                let (k, item) = self.table_like()?.get_key_value(key)?;
                let start = k.span().or_else(|| item.span()).map(|s| s.start);
                Some((Node::Item(item), start))
            }
            Segment::Index(i) => match *self {
                Node::Item(Item::ArrayOfTables(a)) => {
                    let t = a.get(*i)?;
                    Some((Node::Table(t), t.span().map(|s| s.start)))
                }
                Node::Item(Item::Value(toml_edit::Value::Array(a)))
                | Node::Value(toml_edit::Value::Array(a)) => {
                    let v = a.get(*i)?;
                    Some((Node::Value(v), v.span().map(|s| s.start)))
                }
                _ => None,
            },
        }
    }
}

/// The line of the deepest part of `segments` present in the document; None when not even the
/// first key is there.
fn line_in(doc: &ImDocument<&str>, text: &str, segments: &[Segment]) -> Option<usize> {
    let mut node = Node::Table(doc.as_table());
    let mut found = None;
    for seg in segments {
        let Some((child, start)) = node.child(seg) else {
            break;
        };
        if let Some(start) = start {
            found = Some(start);
        }
        node = child;
    }
    found.map(|offset| line_of(text, offset))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_split_into_keys_and_indexes() {
        use Segment::{Index, Key};
        assert_eq!(
            parse_path("listener[1].tls.cert_file"),
            vec![
                Key("listener".into()),
                Index(1),
                Key("tls".into()),
                Key("cert_file".into())
            ]
        );
        assert_eq!(
            parse_path("tracer.trace_id[0]"),
            vec![Key("tracer".into()), Key("trace_id".into()), Index(0)]
        );
    }

    #[test]
    fn environment_values_are_strings_unless_written_as_arrays_or_tables() {
        assert_eq!(env_value("5"), Value::from("5".to_owned()));
        assert_eq!(
            env_value("[homer] 10.0.0.5:9060"),
            Value::from("[homer] 10.0.0.5:9060".to_owned())
        );
        assert!(matches!(env_value("[\"[a]uri=stdout\"]"), Value::Array(..)));
        assert!(matches!(env_value("{host=\"10.0.0.5\"}"), Value::Dict(..)));
    }
}
