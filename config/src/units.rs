//! Small value syntaxes shared by many keys: durations ("100ms", "2s"), byte sizes ("16MiB"),
//! octal file modes ("0600"), `host:port` pairs and socket addresses. Each has a parser with a
//! message fit for a config error, and serde helpers so the model serializes back to the same
//! text (the effective config can be printed and loaded again).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Parses a duration written as one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`
/// (e.g. `"100ms"`, `"2s"`, `"1m30s"`). A bare number is refused: its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration '{text}': expected e.g. \"100ms\", \"2s\", \"5m\" or \"1h\"");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" | "min" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Writes a duration the way [`parse_duration`] reads it: whole seconds as `"Ns"`, anything
/// else as milliseconds.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Parses a byte count: a plain integer, or an integer followed by `B`, `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `kB`, `MB`, `GB` (powers of 1000), with optional space in between.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size '{text}': expected a byte count such as 1048576 or \"16MiB\"");
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let value: u64 = s[..digits].parse().map_err(|_| bad())?;
    let factor: u64 = match s[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    value.checked_mul(factor).ok_or_else(bad)
}

/// Parses a file mode written in octal (`"0600"`, `"660"`). At most `0777`: set-id and sticky
/// bits make no sense on a FIFO.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let bad = || format!("invalid file mode '{text}': expected octal digits such as \"0600\"");
    let s = text.trim();
    if s.is_empty() || s.len() > 4 {
        return Err(bad());
    }
    let mode = u32::from_str_radix(s, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(bad());
    }
    Ok(mode)
}

/// A destination written as `host:port`, where host is a name, an IPv4 address or a bracketed
/// IPv6 address (`[::1]:5060`). Names stay unresolved: the agent resolves them when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// Port, never 0 (a destination needs a real port).
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is one (no resolution is done).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        let (host, port) = split_host_port(s)?;
        let Some(port) = port else {
            return Err(format!(
                "'{s}' has no port: expected host:port, e.g. 127.0.0.1:5060"
            ));
        };
        if port == 0 {
            return Err(format!("'{s}': port 0 is not a destination port"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

/// When `s` is a collector written as another tool writes it (`udp:10.0.0.1:9060;hep=3` in
/// FreeSWITCH's `capture-server`, `sip:10.0.0.1:9060` in Kamailio's siptrace `duplicate_uri`,
/// a `udp://` or `hep:` URI from a heplify or Homer how-to), what to write instead: a
/// transport prefix otherwise reads as an IPv6 address without brackets.
pub(crate) fn pasted_uri(s: &str) -> Option<String> {
    let (scheme, rest) = s.trim().split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.trim_start_matches('/');
    // What follows the scheme, less FreeSWITCH's and Kamailio's parameters.
    let host_port = rest.split([';', '?']).next().unwrap_or(rest);
    let transport = match scheme.as_str() {
        "udp" | "tcp" | "tls" => scheme.as_str(),
        "sip" | "sips" | "hep" | "hep3" | "heps" => "udp",
        _ => return None,
    };
    // `hep:homer` (trace_id's uri syntax) names a destination, no address.
    if !host_port.contains(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Some(format!(
        "'{}' is a URI as FreeSWITCH (capture-server), Kamailio (duplicate_uri) or a heplify \
         how-to write it; heptap takes the host and port alone and the transport as a key: \
         \"{host_port}; transport={transport}\" (in a table: host, port, transport = \"{transport}\")",
        s.trim()
    ))
}

/// Splits `host[:port]` or `[v6][:port]`; refuses unbracketed IPv6 because the first-colon
/// split (what OpenSIPS does) would silently cut it.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(hint) = pasted_uri(s) {
        return Err(hint);
    }
    let (host, port_text) = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(format!("'{s}': missing ']' after the IPv6 address"));
        };
        let host = &rest[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{host}' is not an IPv6 address"));
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("'{s}': unexpected '{after}' after ']'")),
        }
    } else {
        match s.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(format!(
                    "'{s}': IPv6 addresses need brackets, e.g. [2001:db8::1]:9060"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("'{host}' is not a host name or address"));
    }
    let port = match port_text {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("'{s}': port '{p}' is not a number from 1 to 65535"))?,
        ),
    };
    Ok((host, port))
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a local socket address (`0.0.0.0:5060`, `[::]:5060`) with a message that shows the
/// expected form.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid address '{text}': expected ip:port, e.g. 127.0.0.1:5060 or [::1]:5060")
    })
}

/// A list, or one value alone where OpenSIPS writes one modparam line per entry
/// (`trace_id = "[tid]uri=hep:homer"` is `trace_id = ["[tid]uri=hep:homer"]`).
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            use serde::de::IntoDeserializer;
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// Deserializes any `FromStr` type whose error is a message, from a string; shared by the
/// `serde` helpers below and by the OpenSIPS string types.
pub(crate) struct FromStrVisitor<T>(
    pub(crate) &'static str,
    pub(crate) std::marker::PhantomData<T>,
);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// Implements `Serialize` (via `Display`) and `Deserialize` (via `FromStr`, from a string) for
/// a type whose text form is its config form.
macro_rules! serde_via_str {
    ($ty:ty, $expecting:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::units::FromStrVisitor::<$ty>(
                    $expecting,
                    std::marker::PhantomData,
                ))
            }
        }
    };
}
pub(crate) use serde_via_str;

serde_via_str!(HostPort, "a host:port string");

/// A certificate's SHA-256 fingerprint (`tls_pin_sha256`): the one certificate a collector
/// may show, however it is signed. Written as 64 hex digits, with or without the colons
/// `openssl x509 -noout -fingerprint -sha256` puts between bytes (its `sha256 Fingerprint=`
/// prefix too), in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Fingerprint(pub [u8; 32]);

impl FromStr for Sha256Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t
            .split_once('=')
            .filter(|(label, _)| label.to_ascii_lowercase().contains("fingerprint"))
            .map_or(t, |(_, value)| value.trim());
        let digits: Vec<u8> = t.bytes().filter(|b| *b != b':').collect();
        let bad = || {
            format!(
                "'{text}' is not a SHA-256 fingerprint: expected 64 hex digits, as `openssl x509 \
                 -noout -fingerprint -sha256 -in cert.pem` prints them"
            )
        };
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Sha256Fingerprint(out))
    }
}

impl fmt::Display for Sha256Fingerprint {
    /// The form `openssl` prints: upper-case hex bytes joined by colons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

serde_via_str!(Sha256Fingerprint, "a SHA-256 fingerprint (64 hex digits)");

/// Newtype used by the helper modules: the text forms of durations.
struct DurationText(Duration);

impl FromStr for DurationText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(DurationText)
    }
}

/// serde helpers for `Duration` fields written as `"2s"` / `"100ms"`.
pub mod duration {
    use super::*;

    /// Writes the duration as text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads the duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(FromStrVisitor::<DurationText>(
            "a duration such as \"2s\" or \"100ms\"",
            std::marker::PhantomData,
        ))
        .map(|t| t.0)
    }

    /// The same for `Option<Duration>`: absent means "none".
    pub mod option {
        use super::*;

        /// Writes the duration as text when present.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// serde helpers for byte counts: an integer, or a string such as `"16MiB"`.
pub mod size {
    use super::*;

    /// Writes the size as a plain integer (exact, and valid TOML).
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    /// Reads an integer or a size string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte count such as 1048576 or \"16MiB\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }

    /// The same for `Option<u64>` (per-destination overrides).
    pub mod option {
        use super::*;

        /// Writes the size when present.
        pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(v),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional size.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] u64);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// serde helpers for file modes: an octal string `"0600"`. An integer is read as octal digits
/// too (`600` means 0o600), because environment values such as `0600` arrive as numbers.
pub mod mode {
    use super::*;

    /// Writes the mode as a 4-digit octal string.
    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:04o}"))
    }

    /// Reads an octal string or integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(ModeVisitor)
    }

    struct ModeVisitor;

    impl Visitor<'_> for ModeVisitor {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an octal file mode such as \"0600\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            parse_mode(&v.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            parse_mode(&v.to_string()).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            parse_mode(v).map_err(E::custom)
        }
    }
}

/// serde helpers for `SocketAddr` fields, with a message naming the expected form.
pub mod socket_addr {
    use super::*;

    /// Writes `ip:port`.
    pub fn serialize<S: Serializer>(v: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads `ip:port`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(FromStrVisitor::<Addr>(
            "an ip:port string",
            std::marker::PhantomData,
        ))
        .map(|a| a.0)
    }

    struct Addr(SocketAddr);

    impl FromStr for Addr {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            parse_socket_addr(s).map(Addr)
        }
    }

    /// `Option<SocketAddr>` where the empty string means "none" (how a file switches a listener
    /// off, since TOML has no null). None is written back as `""` so it survives a round trip.
    pub mod empty_is_none {
        use super::*;

        /// Writes the address, or `""` for none.
        pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(a) => s.collect_str(a),
                None => s.serialize_str(""),
            }
        }

        /// Reads an address or `""`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SocketAddr>, D::Error> {
            let text = Option::<String>::deserialize(d)?;
            match text.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(t) => parse_socket_addr(t).map(Some).map_err(de::Error::custom),
            }
        }
    }
}

/// `Option<PathBuf>` where the empty string means "none" (see the users' docs for what none
/// means for each key). None is written back as `""` so it survives a round trip.
pub mod path_empty_is_none {
    use super::*;
    use std::path::PathBuf;

    /// Writes the path, or `""` for none.
    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => p.serialize(s),
            None => s.serialize_str(""),
        }
    }

    /// Reads a path or `""`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.filter(|t| !t.trim().is_empty()).map(PathBuf::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_integer_parts_with_units() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        for bad in ["", "2", "s", "2 s", "1.5s", "2sec", "-1s", "10d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations_format_back_to_what_parses() {
        for d in [
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_millis(1500),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn sizes_accept_integers_and_binary_or_decimal_suffixes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1000B"), Ok(1000));
        for bad in ["", "MiB", "16mib", "16 TiB", "-1", "1.5MiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn modes_are_octal_up_to_0777() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        for bad in ["", "0800", "rw", "01777", "7777"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn host_port_takes_names_ipv4_and_bracketed_ipv6() {
        let hp: HostPort = "proxy.example.com:5060".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("proxy.example.com", 5060));
        let hp: HostPort = "[::1]:5060".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 5060));
        assert_eq!(hp.to_string(), "[::1]:5060");
        assert_eq!(hp.ip(), Some("::1".parse().unwrap()));
        let hp: HostPort = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(hp.to_string(), "127.0.0.1:5060");
    }

    #[test]
    fn host_port_refuses_missing_or_zero_ports_and_bare_ipv6() {
        assert!(
            HostPort::from_str("127.0.0.1")
                .unwrap_err()
                .contains("no port")
        );
        assert!(
            HostPort::from_str("127.0.0.1:0")
                .unwrap_err()
                .contains("port 0")
        );
        assert!(
            HostPort::from_str("127.0.0.1:70000")
                .unwrap_err()
                .contains("65535")
        );
        assert!(
            HostPort::from_str("::1:5060")
                .unwrap_err()
                .contains("brackets")
        );
        assert!(
            HostPort::from_str("[zz]:5060")
                .unwrap_err()
                .contains("not an IPv6")
        );
        assert!(HostPort::from_str(":5060").unwrap_err().contains("no host"));
    }
}
