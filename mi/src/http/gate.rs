//! Who may ask the HTTP MI: the Host it was reached by (against DNS rebinding), the page a
//! browser sends the request from (`Origin`, against cross-site requests), the bearer token,
//! and the body's `Content-Type` (a page can POST `text/plain` or a form without a CORS
//! preflight, never `application/json`). Each refusal says why.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Uri};

use crate::token::BearerToken;

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "heptap MI";

/// Why a request is refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Host` (nor `:authority`), or several.
    NoHost,
    /// A `Host` that is not an IP address, `localhost` or a name in `http_hosts`.
    Host(String),
    /// An `Origin` other than the MI's own or a listed name's.
    Origin(String),
    /// A token is configured and none was sent.
    NoToken,
    /// A token was sent and it is not the configured one.
    WrongToken,
    /// A body that is not `application/json` (what was sent, if anything).
    ContentType(Option<String>),
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::Host(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::NoToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The explanation the client gets (as the JSON-RPC error's `data`).
    pub(crate) fn reason(&self) -> String {
        match self {
            Refusal::NoHost => "the request must name one Host".to_owned(),
            Refusal::Host(h) => format!(
                "Host {h:?} is not an IP address, localhost or a name listed in mi.http_hosts"
            ),
            Refusal::Origin(o) => format!("cross-origin request refused (Origin {o:?})"),
            Refusal::NoToken => {
                "a bearer token is required (Authorization: Bearer <token>)".to_owned()
            }
            Refusal::WrongToken => "wrong bearer token".to_owned(),
            Refusal::ContentType(Some(t)) => {
                format!("Content-Type must be application/json, not {t:?}")
            }
            Refusal::ContentType(None) => "Content-Type must be application/json".to_owned(),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750).
    pub(crate) fn challenge(&self) -> Option<HeaderValue> {
        let text = match self {
            Refusal::NoToken => format!("Bearer realm=\"{REALM}\""),
            Refusal::WrongToken => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            _ => return None,
        };
        HeaderValue::from_str(&text).ok()
    }

    /// Whether the operator should hear of it: a request from a browser page, a rebinding
    /// name or without the token is someone trying; a wrong Content-Type is a client's
    /// mistake.
    pub(crate) fn is_hostile(&self) -> bool {
        matches!(
            self,
            Refusal::Host(_) | Refusal::Origin(_) | Refusal::NoToken | Refusal::WrongToken
        )
    }
}

/// The checks of one listener, from its settings.
#[derive(Debug)]
pub(crate) struct Gate {
    /// `http_hosts`, lower case, without a final dot.
    hosts: Vec<String>,
    /// `http_token_file`'s token.
    token: Option<BearerToken>,
}

/// A `Host` as sent, split.
struct HostPort {
    /// The host, lower case, IPv6 without brackets, without a final dot.
    host: String,
    /// The port, when given.
    port: Option<u16>,
}

impl Gate {
    pub(crate) fn new(hosts: &[String], token: Option<BearerToken>) -> Self {
        Gate {
            hosts: hosts.iter().map(|h| normalize(h)).collect(),
            token,
        }
    }

    /// Everything but the Content-Type, in the order that tells the client most: Host, Origin,
    /// token.
    pub(crate) fn admit(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = self.check_host(uri, headers)?;
        self.check_origin(&host, headers)?;
        self.check_token(headers)
    }

    fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<HostPort, Refusal> {
        let mut named = headers.get_all(header::HOST).iter();
        let host_header = named.next();
        if named.next().is_some() {
            return Err(Refusal::NoHost);
        }
        let host_header = host_header
            .map(|v| v.to_str().map_err(|_| Refusal::Host(lossy(v))))
            .transpose()?;
        // HTTP/2's :authority (and an absolute-form HTTP/1 target) must pass too.
        let authority = uri.authority().map(|a| a.as_str());
        let (first, second) = match (host_header, authority) {
            (Some(h), Some(a)) => (h, Some(a)),
            (Some(h), None) => (h, None),
            (None, Some(a)) => (a, None),
            (None, None) => return Err(Refusal::NoHost),
        };
        let host = self.allowed_host(first)?;
        if let Some(other) = second {
            self.allowed_host(other)?;
        }
        Ok(host)
    }

    fn allowed_host(&self, value: &str) -> Result<HostPort, Refusal> {
        let refused = || Refusal::Host(value.to_owned());
        let hp = split_host(value).ok_or_else(refused)?;
        let literal = hp.host.parse::<IpAddr>().is_ok();
        if literal || hp.host == "localhost" || self.hosts.contains(&hp.host) {
            Ok(hp)
        } else {
            Err(refused())
        }
    }

    /// A browser names the page a request comes from: only the MI's own origin
    /// (`http://<Host>`) and pages on a listed name may send one.
    fn check_origin(&self, host: &HostPort, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(value) = origins.next() else {
            return Ok(());
        };
        let text = value.to_str().map_err(|_| Refusal::Origin(lossy(value)))?;
        let refused = || Refusal::Origin(text.to_owned());
        if origins.next().is_some() {
            return Err(refused());
        }
        let uri: Uri = text.parse().map_err(|_| refused())?;
        let scheme = uri.scheme_str().ok_or_else(refused)?;
        let authority = uri.authority().ok_or_else(refused)?;
        let origin = split_host(authority.as_str()).ok_or_else(refused)?;
        let default_port = |p: Option<u16>| p.unwrap_or(80);
        let own = scheme.eq_ignore_ascii_case("http")
            && origin.host == host.host
            && default_port(origin.port) == default_port(host.port);
        let listed = (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
            && self.hosts.contains(&origin.host);
        if own || listed {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
            .ok_or(Refusal::NoToken)?;
        if token.matches(presented) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// The body must be JSON: `application/json`, parameters allowed, any case.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::ContentType(None));
    };
    let media = value.as_bytes().split(|&b| b == b';').next().unwrap_or(&[]);
    if media.trim_ascii().eq_ignore_ascii_case(b"application/json") {
        Ok(())
    } else {
        Err(Refusal::ContentType(Some(lossy(value))))
    }
}

/// The token of `Bearer <token>` (scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

/// `host[:port]` (IPv6 in brackets) to its parts; `None` for anything else (user info, a
/// path, an empty host).
fn split_host(value: &str) -> Option<HostPort> {
    let authority: http::uri::Authority = value.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some(HostPort {
        host: normalize(host),
        port: authority.port_u16(),
    })
}

/// Host names compare in lower case, without the final dot of a fully qualified name.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn lossy(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// Warns about refused requests at most once per `every`, counting the ones in between, so a
/// page hammering the MI cannot flood the log.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// How often a warning may be written.
    every: Duration,
    /// When the last one was written, and how many refusals were not written since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a warning is due now, `n` = refusals not logged since the last one.
    pub(crate) fn due(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let skipped = s.1;
                *s = (Some(now), 0);
                Some(skipped)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    fn admit(gate: &Gate, pairs: &[(&str, &str)]) -> Result<(), Refusal> {
        gate.admit(&Uri::from_static("/mi"), &headers(pairs))
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        let gate = Gate::new(&["MI.example.org.".to_owned()], None);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8888",
            "[::1]:8888",
            "10.1.2.3",
            "localhost:8888",
            "LOCALHOST.",
            "mi.example.org",
            "mi.example.org:8889",
        ] {
            assert_eq!(admit(&gate, &[("host", ok)]), Ok(()), "{ok}");
        }
        for bad in [
            "rebind.attacker.example",
            "rebind.attacker.example:8888",
            "localhost.attacker.example",
            "x",
            "user@127.0.0.1",
            "",
        ] {
            assert!(
                matches!(admit(&gate, &[("host", bad)]), Err(Refusal::Host(_))),
                "{bad}"
            );
        }
        assert_eq!(admit(&gate, &[]), Err(Refusal::NoHost));
        assert_eq!(
            admit(&gate, &[("host", "127.0.0.1"), ("host", "127.0.0.1")]),
            Err(Refusal::NoHost)
        );
        // HTTP/2: the :authority.
        let h2 = Uri::from_static("http://evil.example/mi");
        assert!(matches!(
            gate.admit(&h2, &HeaderMap::new()),
            Err(Refusal::Host(_))
        ));
        let h2 = Uri::from_static("http://127.0.0.1:8888/mi");
        assert_eq!(gate.admit(&h2, &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn origins_are_the_mis_own_or_a_listed_names() {
        let gate = Gate::new(&["mi.example.org".to_owned()], None);
        let with = |host: &str, origin: &str| admit(&gate, &[("host", host), ("origin", origin)]);
        assert_eq!(with("127.0.0.1:8888", "http://127.0.0.1:8888"), Ok(()));
        assert_eq!(with("localhost", "http://localhost:80"), Ok(()));
        assert_eq!(with("127.0.0.1:8888", "https://mi.example.org"), Ok(()));
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8888",
            "null",
            "file://",
            "http://127.0.0.1:8888.evil.example",
        ] {
            assert!(
                matches!(with("127.0.0.1:8888", bad), Err(Refusal::Origin(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_token_is_a_bearer_token() {
        let token = BearerToken::new("0123456789abcdef").unwrap_or_else(|e| panic!("{e}"));
        let gate = Gate::new(&[], Some(token));
        let host = ("host", "127.0.0.1");
        assert_eq!(admit(&gate, &[host]), Err(Refusal::NoToken));
        assert_eq!(
            admit(&gate, &[host, ("authorization", "Basic YTpi")]),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            admit(&gate, &[host, ("authorization", "Bearer 0123456789abcdeX")]),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            admit(
                &gate,
                &[host, ("authorization", "bearer  0123456789abcdef")]
            ),
            Ok(())
        );
    }

    #[test]
    fn the_body_must_be_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert_eq!(
                check_content_type(&headers(&[("content-type", ok)])),
                Ok(()),
                "{ok}"
            );
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            assert!(
                check_content_type(&headers(&[("content-type", bad)])).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            check_content_type(&HeaderMap::new()),
            Err(Refusal::ContentType(None))
        );
    }
}
