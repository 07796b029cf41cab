//! Config errors: each names the key path, where the value came from, and what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file; `line` is 1-based, when the key (or its nearest parent) is in the file.
    File {
        /// The file as it was given.
        path: PathBuf,
        /// The line of the key, if found.
        line: Option<usize>,
    },
    /// A `HEPTAP_*` environment variable (its name).
    Env(String),
    /// Not set by the file or the environment: a default (serde or built-in), or a config
    /// built in code.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{} line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Default => f.write_str("built-in default"),
        }
    }
}

/// One problem in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `hep.ids.homer.transport` or `listener[1].upstream`; empty for the
    /// file as a whole (unreadable, not TOML).
    pub path: String,
    /// Where the offending value came from.
    pub origin: Origin,
    /// What is wrong, and where useful what is expected.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` whose origin is not known yet ([`Origin::Default`]); loading fills in
    /// the origin ([`crate::Source::locate`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            origin: Origin::Default,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{} ({}): {}", self.path, self.origin, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, reported together so one run shows them all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Whether any error was collected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when no error was collected.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
