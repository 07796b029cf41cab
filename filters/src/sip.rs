//! What a `sip_trace_route` can see of a SIP message, and the few URI rules its variables need.
//!
//! The agent implements [`SipInspect`] over the message as its framer read it (start line and
//! header lines, looked up on demand), so a route that reads no SIP variable costs no header
//! parsing. Everything here reads slices of that text: nothing allocates.

/// The start line of a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipStart<'a> {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method as written (`$rm`).
        method: &'a str,
        /// The Request-URI (`$ru`).
        uri: &'a str,
    },
    /// `SIP/2.0 NNN reason`.
    Response {
        /// The status code (`$rs`).
        code: u16,
    },
}

/// The view of one SIP message that `sip_trace_route` evaluates against.
///
/// Called only for the variables a route reads, so implementations look values up lazily.
pub trait SipInspect {
    /// The start line; `None` when the message has none that parses (it is traced all the same).
    fn start(&self) -> Option<SipStart<'_>>;
    /// The value of the first header called `name` (case-insensitive; its compact form, such as
    /// `f` for `From`, counts too), whitespace trimmed.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<T: SipInspect + ?Sized> SipInspect for &T {
    fn start(&self) -> Option<SipStart<'_>> {
        (**self).start()
    }

    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

/// The SIP variables and the values the dynamic trace filters compare. Pure functions of a
/// [`SipInspect`], shared by routes and by the agent's `trace_start` filters, so both read a
/// message the same way.
pub mod fields {
    use super::{SipInspect, SipStart};

    /// The method: a request's own, a response's CSeq method (what `is_method()` and
    /// `sip_methods` look at).
    pub fn method(sip: &(impl SipInspect + ?Sized)) -> Option<&str> {
        match sip.start()? {
            SipStart::Request { method, .. } => Some(method),
            SipStart::Response { .. } => cseq_method(sip.header("CSeq")?),
        }
    }

    /// The URI of a `From`/`To`-style value: inside `<...>` when there are brackets, else up to
    /// the first `;` (the header's parameters).
    pub fn name_addr_uri(value: &str) -> &str {
        match value.find('<') {
            Some(open) => {
                let rest = &value[open + 1..];
                rest.find('>').map_or(rest, |close| &rest[..close]).trim()
            }
            None => value.split(';').next().unwrap_or(value).trim(),
        }
    }

    /// The part of a URI after its scheme (`sip:`, `sips:`, `tel:`), without `?headers`.
    fn after_scheme(uri: &str) -> &str {
        let rest = match uri.find(':') {
            Some(colon) if uri[..colon].chars().all(|c| c.is_ascii_alphabetic()) => {
                &uri[colon + 1..]
            }
            _ => uri,
        };
        rest.split('?').next().unwrap_or(rest)
    }

    /// The user part of a URI (`$rU`, `$fU`, `$tU`): before `@`, without a password; a `tel:`
    /// URI's number. `None` for a URI without one (`sip:example.com`).
    pub fn uri_user(uri: &str) -> Option<&str> {
        let rest = after_scheme(uri);
        let user = match rest.rfind('@') {
            Some(at) => &rest[..at],
            None if uri.len() >= 4 && uri[..4].eq_ignore_ascii_case("tel:") => {
                rest.split(';').next().unwrap_or(rest)
            }
            None => return None,
        };
        let user = user.split(':').next().unwrap_or(user);
        (!user.is_empty()).then_some(user)
    }

    /// The host part of a URI (`$rd`, `$fd`): after `@`, without port and parameters; an IPv6
    /// reference keeps its brackets.
    pub fn uri_host(uri: &str) -> Option<&str> {
        let rest = after_scheme(uri);
        let hostport = match rest.rfind('@') {
            Some(at) => &rest[at + 1..],
            None => rest,
        };
        let hostport = hostport.split(';').next().unwrap_or(hostport);
        let host = if hostport.starts_with('[') {
            hostport
                .find(']')
                .map_or(hostport, |close| &hostport[..=close])
        } else {
            hostport.split(':').next().unwrap_or(hostport)
        };
        let host = host.trim();
        (!host.is_empty()).then_some(host)
    }

    /// Whether a `To` value carries a `tag` parameter (`has_totag()`).
    pub fn has_tag(value: &str) -> bool {
        let params = match value.find('<') {
            Some(open) => value[open..]
                .find('>')
                .map_or("", |close| &value[open + close..]),
            None => value.find(';').map_or("", |semi| &value[semi..]),
        };
        params.split(';').skip(1).any(|param| {
            let name = param.split('=').next().unwrap_or(param).trim();
            name.eq_ignore_ascii_case("tag")
        })
    }

    /// Whether `match_` names the user of `uri`: `user` alone, or `user@host` (host compared
    /// case-insensitively), as OpenSIPS's `trace_start` filters match.
    pub fn user_matches(uri: &str, match_: &str) -> bool {
        let Some(user) = uri_user(uri) else {
            return false;
        };
        match match_.split_once('@') {
            None => user == match_,
            Some((want_user, want_host)) => {
                user == want_user
                    && uri_host(uri).is_some_and(|host| host.eq_ignore_ascii_case(want_host))
            }
        }
    }

    /// The method of a CSeq value `1*DIGIT LWS Method`.
    fn cseq_method(value: &str) -> Option<&str> {
        let mut parts = value.split_ascii_whitespace();
        let number = parts.next()?;
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts.next()
    }
}

#[cfg(test)]
mod tests {
    use super::fields::*;

    #[test]
    fn name_addr_and_addr_spec_give_the_uri() {
        assert_eq!(
            name_addr_uri("\"Alice\" <sip:alice@example.com>;tag=1928"),
            "sip:alice@example.com"
        );
        assert_eq!(
            name_addr_uri("sip:bob@example.com;tag=x"),
            "sip:bob@example.com"
        );
        assert_eq!(name_addr_uri("<sip:c@d"), "sip:c@d");
    }

    #[test]
    fn user_and_host_of_uris() {
        assert_eq!(uri_user("sip:alice:secret@example.com:5061"), Some("alice"));
        assert_eq!(
            uri_host("sip:alice@example.com:5061;transport=tcp"),
            Some("example.com")
        );
        assert_eq!(uri_host("sips:[2001:db8::1]:5061"), Some("[2001:db8::1]"));
        assert_eq!(uri_user("sip:example.com"), None);
        assert_eq!(uri_host("sip:example.com"), Some("example.com"));
        assert_eq!(uri_user("tel:+15551234;phone-context=x"), Some("+15551234"));
        assert_eq!(uri_user("sip:1001@10.0.0.1?subject=x"), Some("1001"));
    }

    #[test]
    fn to_tags_are_found_only_in_parameters() {
        assert!(has_tag("<sip:b@c>;tag=abc"));
        assert!(has_tag("sip:b@c; TAG = abc"));
        assert!(!has_tag("<sip:b@c;tag=inside-uri>"));
        assert!(!has_tag("<sip:b@c>;tagx=1"));
        assert!(!has_tag("sip:b@c"));
    }

    #[test]
    fn users_match_alone_or_with_their_domain() {
        assert!(user_matches("sip:alice@example.com", "alice"));
        assert!(user_matches("sip:alice@EXAMPLE.com", "alice@example.com"));
        assert!(!user_matches("sip:alice@example.com", "alice@other"));
        assert!(!user_matches("sip:alicia@example.com", "alice"));
        assert!(!user_matches("sip:example.com", "alice"));
    }
}
