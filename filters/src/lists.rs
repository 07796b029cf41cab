//! OpenSIPS black/white lists, `"w: ps, which"` / `"b: OPTIONS"`: MI `trace_bwlist` (command
//! names) and listener `sip_methods` (SIP methods). The text is parsed here, once; heptap-config
//! reads it from the file, the MI checks the names against its command table, the SIP tap
//! matches methods with it.

use std::fmt;
use std::str::FromStr;

/// Whether a [`Bwlist`] lets through only what it lists or everything but what it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BwlistKind {
    /// `w`: only the listed names pass.
    White,
    /// `b`: every name passes except the listed ones.
    Black,
}

/// Why a black/white list string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BwlistError {
    /// No `:` between type and list.
    #[error("missing ':' after the list type, expected e.g. \"b: ps, which\"")]
    MissingColon,
    /// The type is not exactly one of `w`, `W`, `b`, `B`.
    #[error("list type must be 'w' (whitelist) or 'b' (blacklist), found '{0}'")]
    BadKind(String),
    /// Nothing after `:` (OpenSIPS's own message).
    #[error("no command in list!")]
    EmptyList,
    /// `a,,b` or a trailing comma.
    #[error("empty name in list")]
    EmptyName,
}

/// An OpenSIPS black/white list of names, as parsed from `"w: ps, which"` or `"b: ps"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bwlist {
    /// White or black list.
    pub kind: BwlistKind,
    /// The listed names, trimmed, in the order written.
    pub names: Vec<String>,
    /// SIP methods compare ignoring ASCII case; MI command names compare exactly, as in OpenSIPS.
    ignore_case: bool,
}

impl Bwlist {
    /// The same list, matching names ignoring ASCII case (for SIP methods).
    pub fn ignoring_case(self) -> Bwlist {
        Bwlist {
            ignore_case: true,
            ..self
        }
    }

    /// Whether `name` passes: listed for a white list, not listed for a black list.
    pub fn allows(&self, name: &str) -> bool {
        let listed = self.names.iter().any(|listed| {
            if self.ignore_case {
                listed.eq_ignore_ascii_case(name)
            } else {
                listed == name
            }
        });
        match self.kind {
            BwlistKind::White => listed,
            BwlistKind::Black => !listed,
        }
    }

    /// The listed names that cannot be SIP methods (not an RFC 3261 `token`), for checking a
    /// `sip_methods` list; any token is accepted, so extension methods can be listed.
    pub fn non_sip_methods(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .filter(|name| !is_sip_token(name))
    }
}

impl FromStr for Bwlist {
    type Err = BwlistError;

    /// One letter of either case, `:`, names separated by commas; blanks around each are
    /// ignored. Only the first `:` separates (4.x command names contain `:` themselves).
    fn from_str(s: &str) -> Result<Self, BwlistError> {
        let (kind, list) = s.split_once(':').ok_or(BwlistError::MissingColon)?;
        let kind = match kind.trim() {
            "w" | "W" => BwlistKind::White,
            "b" | "B" => BwlistKind::Black,
            other => return Err(BwlistError::BadKind(other.to_owned())),
        };
        if list.trim().is_empty() {
            return Err(BwlistError::EmptyList);
        }
        let names: Vec<String> = list.split(',').map(|n| n.trim().to_owned()).collect();
        if names.iter().any(String::is_empty) {
            return Err(BwlistError::EmptyName);
        }
        Ok(Bwlist {
            kind,
            names,
            ignore_case: false,
        })
    }
}

impl fmt::Display for Bwlist {
    /// The list as a config writes it: `w: ps, which`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BwlistKind::White => "w",
            BwlistKind::Black => "b",
        };
        write!(f, "{kind}: {}", self.names.join(", "))
    }
}

/// RFC 3261 `token`: alphanumerics and `-.!%*_+`'~`.
fn is_sip_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Bwlist {
        text.parse().unwrap()
    }

    #[test]
    fn blacklist_passes_everything_except_the_listed_names() {
        let list = list("b: ps, which ");
        assert!(!list.allows("ps"));
        assert!(!list.allows("which"));
        assert!(list.allows("trace"));
        assert!(list.allows("unknown_cmd"));
    }

    #[test]
    fn whitelist_passes_only_the_listed_names() {
        let list = list("w: trace");
        assert!(list.allows("trace"));
        assert!(!list.allows("ps"));
        assert!(!list.allows("TRACE"), "MI command names compare exactly");
    }

    #[test]
    fn an_empty_list_is_refused_with_the_opensips_message() {
        let err = "b:".parse::<Bwlist>().unwrap_err();
        assert_eq!(err.to_string(), "no command in list!");
    }

    #[test]
    fn an_empty_name_between_commas_is_refused() {
        assert_eq!(
            "b: ps,,which".parse::<Bwlist>(),
            Err(BwlistError::EmptyName)
        );
    }

    #[test]
    fn sip_methods_compare_ignoring_case() {
        let list = self::list("w: INVITE, options").ignoring_case();
        assert!(list.allows("invite"));
        assert!(list.allows("OPTIONS"));
        assert!(!list.allows("REGISTER"));
        let list = self::list("b: OPTIONS").ignoring_case();
        assert!(!list.allows("Options"));
        assert!(list.allows("INVITE"));
    }

    #[test]
    fn sip_methods_are_rfc_3261_tokens() {
        let list = list("w: INVITE, IN VITE, X-ext.1, NOTIFY:x");
        assert_eq!(
            list.non_sip_methods().collect::<Vec<_>>(),
            ["IN VITE", "NOTIFY:x"]
        );
    }

    #[test]
    fn the_text_form_reads_back() {
        let list = list(" W :ps ,  which ");
        assert_eq!(list.to_string(), "w: ps, which");
        assert_eq!(list.to_string().parse(), Ok(list));
    }
}
