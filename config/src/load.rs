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

/// Keys a file may write under their OpenSIPS modparam name (serde aliases in the model): an
/// error about `capture_id` is located at the file's `hep_capture_id`.
const OPENSIPS_NAMES: [(&str, &str); 2] = [("capture_id", "hep_capture_id"), ("http_root", "root")];

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
        let loaded = Config::load_all(src);
        loaded.errors.into_result().map(|()| loaded.config)
    }

    /// Loads the config as far as it goes and reports every error on the way in one pass:
    /// types and values key by key (a bad key costs only that key), each `[hep.ids]` entry and
    /// each listener on its own, then [`Config::validate`] on what loaded, less the errors that
    /// only follow from a part that failed. TOML syntax is the one error that stops everything
    /// (the parser cannot go past it). `check-config` uses this; [`Config::load`] is its
    /// all-or-nothing form.
    pub fn load_all(src: &Source) -> Loaded {
        match &src.file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => load_from(Some((path, &text)), src),
                Err(e) => Loaded::nothing(
                    src,
                    ConfigError {
                        path: String::new(),
                        origin: Origin::File {
                            path: path.clone(),
                            line: None,
                        },
                        message: format!("cannot read the config file: {e}"),
                    },
                ),
            },
            None => load_from(None, src),
        }
    }

    /// Loads a config from TOML text alone (no environment), with the same defaults and
    /// validation as a file; errors name the file `<toml>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let loaded = load_from(Some((Path::new(INLINE_TOML), text)), &Source::default());
        loaded.errors.into_result().map(|()| loaded.config)
    }
}

/// What [`Config::load_all`] made of a config: the config with every part that failed left at
/// its default (a failed `[hep.ids]` entry stands in as a local destination, so what refers to
/// it is not reported again), and every error, located and in file order.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config as far as it loaded.
    pub config: Config,
    /// Every error found, located.
    pub errors: ConfigErrors,
    /// Key paths of the parts that failed; `""` when nothing loaded (unreadable, not TOML).
    failed: Vec<String>,
    /// Where the config came from, to locate errors found later.
    source: Source,
}

impl Loaded {
    fn nothing(src: &Source, error: ConfigError) -> Loaded {
        Loaded {
            config: Config::default(),
            errors: error.into(),
            failed: vec![String::new()],
            source: src.clone(),
        }
    }

    /// Whether anything loaded (false when the file cannot be read or is not TOML): only
    /// then is there anything to build and check further.
    pub fn any_loaded(&self) -> bool {
        !self.failed.iter().any(String::is_empty)
    }

    /// Whether the part at key path `path` (`listener[1]`, `mi`, `hep.ids.homer`, ...) loaded
    /// whole, so that what is built from it is built from what the file says.
    pub fn loaded(&self, path: &str) -> bool {
        !self.failed.iter().any(|f| under(path, f) || under(f, path))
    }

    /// The index in the file of `config.listener[index]` (listeners that failed to load are
    /// not in `config`).
    pub fn listener_index(&self, index: usize) -> usize {
        (0..)
            .filter(|i| !self.failed.contains(&format!("listener[{i}]")))
            .nth(index)
            .unwrap_or(index)
    }

    /// An error about `config.listener[i]` made one about the file's listener (those that
    /// failed to load are not in `config`).
    fn renumbered(&self, mut error: ConfigError) -> ConfigError {
        if let Some(rest) = error.path.strip_prefix("listener[")
            && let Some((index, rest)) = rest.split_once(']')
            && let Ok(index) = index.parse::<usize>()
        {
            error.path = format!("listener[{}]{rest}", self.listener_index(index));
        }
        error
    }

    /// Adds errors found by checks run on [`Loaded::config`] (routes, TLS files): located, and
    /// left out when they only follow from a part that failed to load.
    pub fn add(&mut self, errors: ConfigErrors) {
        let kept = errors
            .into_iter()
            .map(|e| self.renumbered(e))
            .filter(|e| self.relevant(e))
            .collect();
        let located = self.source.locate(ConfigErrors(kept));
        self.errors.0.extend(located);
        sort_errors(&mut self.errors.0);
    }

    /// Whether `error` says something of its own, not only that a part that failed to load is
    /// missing: errors under a failed part, and references to one, are left out.
    fn relevant(&self, error: &ConfigError) -> bool {
        let path = error.path.as_str();
        !self.failed.iter().any(|f| {
            under(path, f)
                || (path.ends_with(".sip_trace_id") && under(f, "tracer"))
                || (path.ends_with(".trace_filter_route")
                    && (under(f, "routes") || under(f, "address_groups")))
                || (f == "hep.ids"
                    && (path.ends_with(".trace_destination") || under(path, "tracer.trace_id")))
        })
    }
}

/// Whether key path `path` is `parent` or inside it (`listener[1].tls` is inside `listener[1]`
/// and `listener`; everything is inside `""`).
fn under(path: &str, parent: &str) -> bool {
    parent.is_empty()
        || path == parent
        || path
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// File order reads best; environment and defaults after the file.
fn sort_errors(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| match e.origin {
        Origin::File { line, .. } => (0, line.unwrap_or(0)),
        Origin::Env(_) => (1, 0),
        Origin::Default => (2, 0),
    });
}

fn load_from(file: Option<(&Path, &str)>, src: &Source) -> Loaded {
    let (vars, mut errors) = env_vars(&src.env);
    let mut figment = Figment::new();
    match file {
        Some((path, text)) => {
            if let Err(e) = ImDocument::parse(text) {
                let line = e.span().map(|s| line_of(text, s.start));
                let message = format!("not valid TOML: {}", e.message().trim_end());
                return Loaded::nothing(
                    src,
                    ConfigError {
                        path: String::new(),
                        origin: Origin::File {
                            path: path.to_owned(),
                            line,
                        },
                        message,
                    },
                );
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

    let mut failed = Vec::new();
    let config = match figment.extract::<Dict>() {
        Ok(dict) => build(dict, &mut errors, &mut failed),
        Err(e) => {
            errors.extend(from_figment(e, ""));
            failed.push(String::new());
            Config::default()
        }
    };
    let mut loaded = Loaded {
        config,
        errors: ConfigErrors::default(),
        failed,
        source: src.clone(),
    };
    if let Err(more) = loaded.config.validate() {
        errors.extend(
            more.into_iter()
                .map(|e| loaded.renumbered(e))
                .filter(|e| loaded.relevant(e)),
        );
    }
    let mut located: Vec<ConfigError> = errors.into_iter().map(|e| locator.locate(e)).collect();
    sort_errors(&mut located);
    loaded.errors = ConfigErrors(located);
    loaded
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

/// Deserializes the merged dict part by part, collecting the errors of every part and the key
/// paths of those that failed (left at their defaults).
fn build(dict: Dict, errors: &mut Vec<ConfigError>, failed: &mut Vec<String>) -> Config {
    let mut config = Config::default();
    let mut parts = Parts { errors, failed };
    for (key, value) in dict {
        match key.as_str() {
            "log" => set(&mut config.log, parts.by_key(value, "log")),
            "service" => set(&mut config.service, parts.by_key(value, "service")),
            "tracer" => set(&mut config.tracer, parts.by_key(value, "tracer")),
            "routes" => set(&mut config.routes, parts.by_key(value, "routes")),
            "mi" => set(&mut config.mi, parts.by_key(value, "mi")),
            "address_groups" => {
                #[derive(Deserialize)]
                struct Groups(
                    #[serde(deserialize_with = "crate::model::de_address_groups")]
                    BTreeMap<String, Vec<ipnet::IpNet>>,
                );
                set(
                    &mut config.address_groups,
                    parts.by_key::<Groups>(value, "address_groups").map(|g| g.0),
                );
            }
            "hep" => parts.hep(value, &mut config.hep),
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
                                parts
                                    .error(path, "unknown key, expected one of: tcp, tls, ws, wss");
                                continue;
                            }
                        };
                        set(slot, parts.by_key::<NetTracing>(value, &path));
                    }
                }
                other => set(&mut config.net, parts.whole(other, "net")),
            },
            "listener" => match value {
                Value::Array(_, items) => {
                    config.listener = items
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, v)| parts.by_key::<Listener>(v, &format!("listener[{i}]")))
                        .collect();
                }
                _ => parts.error(
                    "listener",
                    "expected an array of tables: write each listener as a [[listener]] table",
                ),
            },
            _ => parts.error(
                key.clone(),
                format!(
                    "unknown section '{key}', expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }
    config
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The errors of the parts deserialized so far, and the key paths of those that failed.
struct Parts<'a> {
    errors: &'a mut Vec<ConfigError>,
    failed: &'a mut Vec<String>,
}

impl Parts<'_> {
    /// An error at `path`, which is left at its default.
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.failed.push(path.clone());
        self.errors.push(ConfigError::new(path, message));
    }

    /// One part, all or nothing (a listener, a `[hep.ids]` entry: their keys make sense only
    /// together).
    fn whole<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match part(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.extend(from_figment(e, path));
                self.failed.push(path.to_owned());
                None
            }
        }
    }

    /// A table key by key: each bad key is reported (serde stops at the first) and left out,
    /// at its default; the good ones are kept. A table that still does not load without its
    /// bad keys (a required key was bad or is missing) fails whole.
    fn by_key<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        use figment::error::Kind;
        let Value::Dict(tag, dict) = value else {
            return self.whole(value, path);
        };
        if let Ok(v) = part(Value::Dict(tag, dict.clone())) {
            return Some(v);
        }
        let mut good = Dict::new();
        for (key, v) in &dict {
            // Alone, a key is missing its required neighbours: those errors are not its own.
            let own: Vec<figment::Error> =
                match part::<T>(Value::Dict(tag, Dict::from([(key.clone(), v.clone())]))) {
                    Ok(_) => Vec::new(),
                    Err(e) => e
                        .into_iter()
                        .filter(|e| !matches!(e.kind, Kind::MissingField(_)))
                        .collect(),
                };
            if own.is_empty() {
                good.insert(key.clone(), v.clone());
            } else {
                let mut key_path = path.to_owned();
                push_segment(&mut key_path, key);
                self.errors.extend(from_figment(own, path));
                self.failed.push(key_path);
            }
        }
        match part(Value::Dict(tag, good)) {
            Ok(v) => Some(v),
            Err(e) => {
                // "missing" a key that is there but bad was said above.
                let rest: Vec<figment::Error> = e
                    .into_iter()
                    .filter(|e| !matches!(&e.kind, Kind::MissingField(f) if dict.contains_key(f.as_ref())))
                    .collect();
                self.errors.extend(from_figment(rest, path));
                self.failed.push(path.to_owned());
                None
            }
        }
    }

    /// `[hep]` without its ids, then each id on its own; OpenSIPS's `hep_id` lines (one string
    /// or a list of them, each `"[name] host..."`) join `[hep.ids]` under their names.
    fn hep(&mut self, value: Value, hep: &mut Hep) {
        let Value::Dict(tag, mut dict) = value else {
            set(hep, self.whole(value, "hep"));
            return;
        };
        let ids = dict.remove("ids");
        let lines = dict.remove("hep_id");
        set(hep, self.by_key(Value::Dict(tag, dict), "hep"));
        match ids {
            None => {}
            Some(Value::Dict(_, ids)) => {
                for (name, v) in ids {
                    let path = format!("hep.ids.{name}");
                    match self.by_key::<HepIdEntry>(v, &path) {
                        Some(entry) => hep.ids.insert(name, entry),
                        // A stand-in, so that what names it is not reported as well.
                        None => hep.ids.insert(name, HepIdEntry::Stdout),
                    };
                }
            }
            Some(_) => self.error(
                "hep.ids",
                "expected a table of hep_id names: [hep.ids] homer = \"[homer] 10.0.0.5:9060\"",
            ),
        }
        let lines = match lines {
            None => Vec::new(),
            Some(Value::Array(_, items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("hep.hep_id[{i}]"), v))
                .collect(),
            Some(one) => vec![("hep.hep_id".to_owned(), one)],
        };
        for (path, v) in lines {
            let Some(text) = self.whole::<String>(v, &path) else {
                continue;
            };
            match crate::opensips::HepIdString::parse(&text, true) {
                Ok(parsed) => {
                    let name = parsed.name.clone().unwrap_or_default();
                    match hep.ids.entry(name) {
                        std::collections::btree_map::Entry::Occupied(e) => {
                            let message = format!("hep_id '{}' is defined twice", e.key());
                            self.error(path, message);
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(HepIdEntry::Hep(crate::model::HepIdTable::from(parsed)));
                        }
                    }
                }
                Err(e) => self.error(path, format!("'{text}': {e}")),
            }
        }
    }
}

/// Deserializes one part (figment's lossy mode: "5" is a number where one is wanted, since
/// environment values are strings).
// Figment's error is large, but parts are read once per load, never on a hot path.
#[allow(clippy::result_large_err)]
fn part<T: DeserializeOwned>(value: Value) -> Result<T, figment::Error> {
    #[derive(Deserialize)]
    struct Wrap<T> {
        v: T,
    }
    let mut dict = Dict::new();
    dict.insert("v".to_owned(), value);
    Figment::from(Serialized::defaults(dict))
        .extract_lossy::<Wrap<T>>()
        .map(|w| w.v)
}

/// Turns figment's (chained) errors into config errors with our key paths and wording.
fn from_figment(errors: impl IntoIterator<Item = figment::Error>, base: &str) -> Vec<ConfigError> {
    use figment::error::Kind;
    errors
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
                    format!(
                        "expected {}, found {}",
                        in_words(expected),
                        actual_in_words(actual)
                    )
                }
                other => other.to_string(),
            };
            ConfigError::new(path, message)
        })
        .collect()
}

/// serde's name of the type a key wants, as an operator says it ("a whole number", not `u32`).
fn in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "a character" | "char" => "a string in quotes",
        "a sequence" | "a tuple" => "a list in brackets, [ ... ]",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => return other.to_owned(),
    };
    words.to_owned()
}

/// What was found instead, in the file's words.
fn actual_in_words(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Bool(b) => format!("{b}"),
        Actual::Unsigned(n) => format!("{n}"),
        Actual::Signed(n) => format!("{n}"),
        Actual::Float(n) => format!("{n}"),
        Actual::Char(c) => format!("\"{c}\""),
        Actual::Str(text) => format!("\"{text}\""),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        other => other.to_string(),
    }
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
                let table = self.table_like()?;
                let (k, item) = table.get_key_value(key).or_else(|| {
                    OPENSIPS_NAMES
                        .iter()
                        .find(|(ours, _)| ours == key)
                        .and_then(|(_, theirs)| table.get_key_value(theirs))
                })?;
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
