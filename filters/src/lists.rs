//! Black/white lists: `trace_bwlist` command lists (checked the way OpenSIPS's
//! `parse_mi_cmd_bwlist` checks them), SIP method lists, and plain IP/CIDR lists.
//!
//! The `"w: ps, which"` string syntax itself is parsed by heptap-config, which hands over a
//! [`ListKind`] and the names.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::cidr::{CidrSet, parse_net};

/// Whether a list names what passes or what is kept out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `w:` only the listed names pass.
    White,
    /// `b:` every name passes except the listed ones.
    Black,
}

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A command list with no command (OpenSIPS's words).
    #[error("no command in list!")]
    NoCommand,
    /// A listed command the MI does not know (OpenSIPS's words).
    #[error("can't find mi command '{0}'")]
    UnknownCommand(String),
    /// A SIP method list with no method.
    #[error("no method in list")]
    NoMethod,
    /// A listed method that is not a SIP token (RFC 3261 `token`).
    #[error("'{0}' is not a SIP method name")]
    BadMethod(String),
    /// An IP list entry that is neither an address nor a CIDR.
    #[error("'{0}' is not an IP address or CIDR")]
    BadAddress(String),
}

/// A black or white list of names: MI commands for `trace_bwlist`, or SIP methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameList {
    /// White or black.
    kind: ListKind,
    /// The listed names, trimmed and without duplicates.
    names: Box<[Box<str>]>,
    /// SIP methods compare ignoring ASCII case; MI command names compare exactly.
    ignore_case: bool,
}

impl NameList {
    /// A `trace_bwlist` command list. Every name must be a command the MI knows (`is_known`,
    /// which should accept aliases too) and the list must not be empty, as in OpenSIPS; names
    /// are compared exactly by [`allows`](Self::allows), so the MI should pass the name it looked
    /// the command up by.
    pub fn new(
        kind: ListKind,
        names: Vec<String>,
        is_known: impl Fn(&str) -> bool,
    ) -> Result<NameList, ListError> {
        let names = clean(names);
        if names.is_empty() {
            return Err(ListError::NoCommand);
        }
        if let Some(unknown) = names.iter().find(|name| !is_known(name)) {
            return Err(ListError::UnknownCommand(unknown.to_string()));
        }
        Ok(NameList {
            kind,
            names,
            ignore_case: false,
        })
    }

    /// A SIP method list (per-listener `sip_methods`): methods compare ignoring ASCII case, and
    /// any RFC 3261 token is accepted, so extension methods can be listed.
    pub fn sip_methods(kind: ListKind, names: Vec<String>) -> Result<NameList, ListError> {
        let names = clean(names);
        if names.is_empty() {
            return Err(ListError::NoMethod);
        }
        if let Some(bad) = names.iter().find(|name| !is_sip_token(name)) {
            return Err(ListError::BadMethod(bad.to_string()));
        }
        Ok(NameList {
            kind,
            names,
            ignore_case: true,
        })
    }

    /// Whether `name` passes the list: listed for a white list, not listed for a black list.
    pub fn allows(&self, name: &str) -> bool {
        let listed = self.names.iter().any(|listed| {
            if self.ignore_case {
                listed.eq_ignore_ascii_case(name)
            } else {
                **listed == *name
            }
        });
        match self.kind {
            ListKind::White => listed,
            ListKind::Black => !listed,
        }
    }

    /// White or black.
    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// The listed names, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|name| &**name)
    }
}

/// Trims the names and drops repeats (an empty name is kept, so it is reported as unknown).
fn clean(names: Vec<String>) -> Box<[Box<str>]> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if !out.iter().any(|seen| **seen == *name) {
            out.push(name.into());
        }
    }
    out.into_boxed_slice()
}

/// RFC 3261 `token`: alphanumerics and `-.!%*_+`'~`.
fn is_sip_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// A list of IP addresses and CIDR networks (a bare address is a /32 or /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    /// The networks.
    set: CidrSet,
}

impl IpList {
    /// Parses entries such as `"10.0.0.0/8"`, `"192.0.2.1"`, `"2001:db8::/32"`; the first entry
    /// that is neither an address nor a CIDR is the error.
    pub fn parse<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Result<IpList, ListError> {
        let mut set = CidrSet::default();
        for item in items {
            let item = item.as_ref();
            let net = parse_net(item).ok_or_else(|| ListError::BadAddress(item.to_owned()))?;
            set.insert(net);
        }
        Ok(IpList { set })
    }

    /// A list of already parsed networks (what heptap-config hands over).
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> IpList {
        IpList {
            set: CidrSet::from_nets(nets),
        }
    }

    /// Whether `ip` is in one of the networks (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.contains(ip)
    }

    /// Number of distinct networks.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the list has no network.
    pub fn is_empty(&self) -> bool {
        self.set.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        ["ps", "which", "trace", "get_statistics"].contains(&name)
    }

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn blacklist_traces_everything_except_the_listed_commands() {
        let list = NameList::new(ListKind::Black, names(&["ps", " which "]), known).unwrap();
        assert!(!list.allows("ps"));
        assert!(!list.allows("which"));
        assert!(list.allows("trace"));
        assert!(list.allows("unknown_cmd"));
    }

    #[test]
    fn whitelist_traces_only_the_listed_commands() {
        let list = NameList::new(ListKind::White, names(&["trace"]), known).unwrap();
        assert!(list.allows("trace"));
        assert!(!list.allows("ps"));
        assert!(!list.allows("TRACE"), "MI command names compare exactly");
    }

    #[test]
    fn an_unknown_command_is_refused_with_the_opensips_message() {
        let err = NameList::new(ListKind::White, names(&["ps", "sip_trace"]), known).unwrap_err();
        assert_eq!(err, ListError::UnknownCommand("sip_trace".into()));
        assert_eq!(err.to_string(), "can't find mi command 'sip_trace'");
    }

    #[test]
    fn an_empty_command_list_is_refused_with_the_opensips_message() {
        let err = NameList::new(ListKind::Black, Vec::new(), known).unwrap_err();
        assert_eq!(err.to_string(), "no command in list!");
    }

    #[test]
    fn an_empty_name_between_commas_is_an_unknown_command() {
        let err = NameList::new(ListKind::Black, names(&["ps", ""]), known).unwrap_err();
        assert_eq!(err.to_string(), "can't find mi command ''");
    }

    #[test]
    fn sip_methods_compare_ignoring_case() {
        let list = NameList::sip_methods(ListKind::White, names(&["INVITE", "options"])).unwrap();
        assert!(list.allows("invite"));
        assert!(list.allows("OPTIONS"));
        assert!(!list.allows("REGISTER"));
        let list = NameList::sip_methods(ListKind::Black, names(&["OPTIONS"])).unwrap();
        assert!(!list.allows("Options"));
        assert!(list.allows("INVITE"));
    }

    #[test]
    fn sip_method_lists_refuse_non_tokens_and_emptiness() {
        assert_eq!(
            NameList::sip_methods(ListKind::White, names(&["IN VITE"])).unwrap_err(),
            ListError::BadMethod("IN VITE".into())
        );
        assert_eq!(
            NameList::sip_methods(ListKind::White, Vec::new()).unwrap_err(),
            ListError::NoMethod
        );
    }

    #[test]
    fn repeated_names_are_listed_once() {
        let list = NameList::new(ListKind::Black, names(&["ps", "ps"]), known).unwrap();
        assert_eq!(list.names().collect::<Vec<_>>(), ["ps"]);
        assert_eq!(list.kind(), ListKind::Black);
    }

    #[test]
    fn ip_lists_take_addresses_and_cidrs() {
        let list = IpList::parse(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.contains("10.1.1.1".parse().unwrap()));
        assert!(list.contains("192.0.2.1".parse().unwrap()));
        assert!(!list.contains("192.0.2.2".parse().unwrap()));
        assert!(list.contains("2001:db8::77".parse().unwrap()));
        assert!(list.contains("::ffff:10.2.3.4".parse().unwrap()));
    }

    #[test]
    fn ip_lists_refuse_what_is_not_an_address() {
        assert_eq!(
            IpList::parse(["10.0.0.0/8", "example.com"]).unwrap_err(),
            ListError::BadAddress("example.com".into())
        );
        assert_eq!(
            IpList::parse(["10.0.0.0/33"]).unwrap_err().to_string(),
            "'10.0.0.0/33' is not an IP address or CIDR"
        );
    }

    #[test]
    fn an_empty_ip_list_contains_nothing() {
        let list = IpList::from_nets(Vec::new());
        assert!(list.is_empty());
        assert!(!list.contains("127.0.0.1".parse().unwrap()));
    }
}
