//! The HTTP MI's bearer token (`http_token_file`): read from a file only heptap's user (and
//! group) can reach, compared in constant time, sent by the built-in clients.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Fewer characters than this is a password, not a token (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 16;
/// More than this is not a token file.
const MAX_TOKEN_LEN: usize = 4096;
/// Permission bits that must be clear: writable by the group, any access for others.
const FORBIDDEN_MODE: u32 = 0o027;

/// Why a token file cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("mi.http_token_file {}: {reason}", path.display())]
pub struct TokenError {
    /// The token file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A bearer token. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// Reads the token from `path`: a regular file, not writable by its group nor accessible
    /// by others, holding one line of at least [`MIN_TOKEN_LEN`] visible ASCII characters
    /// (the RFC 6750 token alphabet: letters, digits, `-._~+/` and trailing `=`). Surrounding
    /// blanks and the final newline are ignored.
    pub fn read_file(path: &Path) -> Result<BearerToken, TokenError> {
        let fail = |reason: String| TokenError {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & FORBIDDEN_MODE != 0 {
            return Err(fail(format!(
                "mode {mode:04o} lets others read or change the token; make it 0600 or 0640 \
                 (owner uid {})",
                meta.uid()
            )));
        }
        if meta.len() > MAX_TOKEN_LEN as u64 {
            return Err(fail(format!(
                "{} bytes: not a token file (at most {MAX_TOKEN_LEN})",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        BearerToken::new(text.trim()).map_err(fail)
    }

    /// Checks a token given as text (see [`BearerToken::read_file`] for the rules).
    pub fn new(token: &str) -> Result<BearerToken, String> {
        if token.is_empty() {
            return Err("empty: write a token into it, e.g. `openssl rand -hex 32`".to_owned());
        }
        let body = token.trim_end_matches('=');
        if body.is_empty()
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            return Err(
                "a token is one line of letters, digits and -._~+/ (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{} characters: too short to be a token (at least {MIN_TOKEN_LEN})",
                token.len()
            ));
        }
        Ok(BearerToken(token.to_owned()))
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The `Authorization` header value a client sends.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_visible_ascii_of_some_length() {
        assert!(BearerToken::new("0123456789abcdef").is_ok());
        assert!(BearerToken::new("abcDEF012345-._~+/==").is_ok());
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("short").is_err());
        assert!(BearerToken::new("0123456789 abcdef").is_err());
        assert!(BearerToken::new("0123456789abcdef\n0123").is_err());
        assert!(BearerToken::new("================").is_err());
    }

    #[test]
    fn matching_is_exact() {
        let t = BearerToken::new("0123456789abcdef").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "BearerToken(..)");
    }
}
