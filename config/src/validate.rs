//! `Config::validate`: every rule that ties keys together or looks at the filesystem. All
//! problems are collected; each names its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::ConfigErrors;
use heptap_hep::NetProto;

use crate::model::{
    ClientCert, Config, HepIdEntry, HepIdTable, Listener, NetTracing, UpstreamSource,
    UpstreamSourceFallback, UpstreamSourcePort,
};
use crate::opensips::{HepIdError, STDOUT, TraceUri, Transport};

/// The smallest `max_udp_size` accepted: below it even a short SIP message cannot be sent.
const MIN_UDP_SIZE: usize = 512;
/// The largest UDP payload over IPv4.
const MAX_UDP_SIZE: usize = 65_507;
/// `service.workers` above this is a typo, not a host.
const MAX_WORKERS: usize = 1024;

impl Config {
    /// Checks everything a type cannot: names and references between sections, value ranges,
    /// combinations, and that every file named (certificates, keys, CAs, route files) is a
    /// readable file. Route *names* are checked by [`Config::check_route_names`] once the routes
    /// are compiled. Errors carry key paths; their origin is [`crate::Origin::Default`] unless
    /// they come from [`Config::load`], which locates them.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = ConfigErrors::default();
        self.check_log(&mut errs);
        self.check_service(&mut errs);
        self.check_hep(&mut errs);
        self.check_tracer(&mut errs);
        self.check_listeners(&mut errs);
        for proto in NetProto::ALL {
            self.check_net(proto, self.net.get(proto), &mut errs);
        }
        for (i, file) in self.routes.files.iter().enumerate() {
            check_readable(&mut errs, &format!("routes.files[{i}]"), file);
        }
        for name in self.address_groups.keys() {
            check_name(&mut errs, &format!("address_groups.{name}"), name);
        }
        self.check_mi(&mut errs);
        errs.into_result()
    }

    /// Whether `name` is a destination: `stdout`, a `[hep.ids]` key, or `file:<path>`.
    pub fn destination_exists(&self, name: &str) -> bool {
        name == STDOUT
            || self.hep.ids.contains_key(name)
            || name
                .strip_prefix("file:")
                .is_some_and(|p| !p.trim().is_empty())
    }

    fn check_destination_ref(&self, errs: &mut ConfigErrors, path: &str, name: &str) {
        if let Some(dest) = name.strip_prefix("hep:")
            && self.destination_exists(dest)
        {
            errs.push(
                path,
                format!(
                    "'{name}': hep:<name> is trace_id's uri syntax; here write the name alone, \"{dest}\""
                ),
            );
        } else if !self.destination_exists(name) {
            errs.push(
                path,
                format!(
                    "unknown destination '{name}': {}",
                    self.known_destinations()
                ),
            );
        }
    }

    fn known_destinations(&self) -> String {
        let mut text = String::from("expected a [hep.ids] name, stdout or file:<path>");
        if !self.hep.ids.is_empty() {
            let names: Vec<&str> = self.hep.ids.keys().map(String::as_str).collect();
            let _ = write!(text, " (hep.ids has {})", names.join(", "));
        }
        text
    }

    fn check_log(&self, errs: &mut ConfigErrors) {
        let level = self.log.level.trim();
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        if level.is_empty() {
            errs.push(
                "log.level",
                "empty log level, expected trace, debug, info, warn, error or off",
            );
        } else if !level.contains(['=', ',', '['])
            && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level))
        {
            errs.push(
                "log.level",
                format!(
                    "unknown log level '{level}', expected trace, debug, info, warn, error, off \
                     or a directive such as \"info,heptap=debug\""
                ),
            );
        }
    }

    fn check_service(&self, errs: &mut ConfigErrors) {
        check_non_empty(errs, "service.user", self.service.user.as_deref());
        check_non_empty(errs, "service.group", self.service.group.as_deref());
        if self.service.workers > MAX_WORKERS {
            errs.push(
                "service.workers",
                format!(
                    "{} is more threads than any host has cores (at most {MAX_WORKERS}; 0 means one per core)",
                    self.service.workers
                ),
            );
        }
        check_positive(errs, "service.drain_timeout", self.service.drain_timeout);
        check_positive(
            errs,
            "service.handover_timeout",
            self.service.handover_timeout,
        );
        if let Some(pid_file) = &self.service.pid_file
            && (pid_file.as_os_str().is_empty() || pid_file.file_name().is_none())
        {
            errs.push("service.pid_file", "must name a file");
        }
    }

    fn check_hep(&self, errs: &mut ConfigErrors) {
        let hep = &self.hep;
        if hep.homer5_delim.is_empty() {
            errs.push("hep.homer5_delim", "homer5_delim must not be empty");
        }
        check_non_empty(errs, "hep.auth_key", hep.auth_key.as_deref());
        check_non_empty(errs, "hep.node_name", hep.node_name.as_deref());
        check_queue(
            errs,
            "hep",
            Some(hep.queue_packets),
            Some(hep.queue_bytes),
            Some(hep.max_udp_size),
        );
        check_spool(
            errs,
            "hep",
            hep.spool_dir.as_deref(),
            Some(hep.spool_max_bytes),
            Some(hep.spool_max_age),
        );
        check_positive(errs, "hep.connect_timeout", hep.connect_timeout);
        check_positive(errs, "hep.write_timeout", hep.write_timeout);
        check_positive(errs, "hep.backoff_initial", hep.backoff_initial);
        if hep.backoff_initial > hep.backoff_max {
            errs.push(
                "hep.backoff_max",
                format!(
                    "backoff_max ({}) is shorter than backoff_initial ({})",
                    crate::units::format_duration(hep.backoff_max),
                    crate::units::format_duration(hep.backoff_initial)
                ),
            );
        }
        for (name, entry) in &hep.ids {
            let path = format!("hep.ids.{name}");
            check_name(errs, &path, name);
            match entry {
                HepIdEntry::Hep(_) | HepIdEntry::File(_) if name == STDOUT => errs.push(
                    &path,
                    "'stdout' is the built-in local destination and cannot be redefined",
                ),
                HepIdEntry::Hep(table) => self.check_hep_id(errs, &path, name, table),
                HepIdEntry::Stdout | HepIdEntry::File(_) => {}
            }
        }
    }

    fn check_hep_id(&self, errs: &mut ConfigErrors, path: &str, name: &str, t: &HepIdTable) {
        if let Some(declared) = &t.declared_name
            && declared != name
        {
            errs.push(
                path,
                format!("the hep_id string is named '[{declared}]' but its key is '{name}'"),
            );
        }
        check_host(errs, &format!("{path}.host"), &t.host);
        if t.port == 0 {
            errs.push(format!("{path}.port"), "port 0 is not a destination port");
        }
        let transport = match t.resolve(name, &self.hep) {
            Ok(id) => id.transport,
            Err(e @ HepIdError::VersionNeedsUdp { .. }) => {
                errs.push(format!("{path}.transport"), e.to_string());
                return;
            }
            Err(e) => {
                errs.push(path, e.to_string());
                return;
            }
        };
        let tls_only = [
            ("ca_file", t.ca_file.is_some()),
            ("cert_file", t.cert_file.is_some()),
            ("key_file", t.key_file.is_some()),
            ("server_name", t.server_name.is_some()),
            ("tls_pin_sha256", t.tls_pin_sha256.is_some()),
        ];
        if transport != Transport::Tls {
            for (key, set) in tls_only {
                if set {
                    errs.push(
                        format!("{path}.{key}"),
                        format!("{key} is only used with transport = \"tls\" (this hep_id uses {transport})"),
                    );
                }
            }
        } else {
            check_cert_pair(errs, path, t.cert_file.as_deref(), t.key_file.as_deref());
            if t.tls_pin_sha256.is_some() {
                let key = format!("{path}.tls_pin_sha256");
                if t.ca_file.is_some() {
                    errs.push(
                        &key,
                        "tls_pin_sha256 trusts one certificate, ca_file a CA: set one of them",
                    );
                }
                if !t.tls_verify {
                    errs.push(
                        &key,
                        "tls_pin_sha256 is a way of verifying: it cannot go with tls_verify = false",
                    );
                }
            }
            for (key, file) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if let Some(file) = file {
                    check_readable(errs, &format!("{path}.{key}"), file);
                }
            }
            check_non_empty(
                errs,
                &format!("{path}.server_name"),
                t.server_name.as_deref(),
            );
        }
        check_queue(errs, path, t.queue_packets, t.queue_bytes, t.max_udp_size);
        check_spool(
            errs,
            path,
            t.spool_dir.as_deref(),
            t.spool_max_bytes,
            t.spool_max_age,
        );
    }

    fn check_tracer(&self, errs: &mut ConfigErrors) {
        let mut seen = BTreeSet::new();
        for (i, entry) in self.tracer.trace_id.iter().enumerate() {
            let path = format!("tracer.trace_id[{i}]");
            check_name(errs, &path, &entry.name);
            if let TraceUri::Hep(dest) = &entry.uri
                && !(dest == STDOUT || self.hep.ids.contains_key(dest))
            {
                errs.push(
                    &path,
                    format!(
                        "uri=hep:{dest}: unknown hep_id '{dest}': {}",
                        self.known_destinations()
                    ),
                );
            }
            if !seen.insert((entry.name.as_str(), entry.uri.destination_name())) {
                errs.push(&path, format!("'{entry}' is listed twice"));
            }
        }
    }

    fn check_listeners(&self, errs: &mut ConfigErrors) {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut addrs: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        let trace_ids: BTreeSet<&str> = self
            .tracer
            .trace_id
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        for (i, l) in self.listener.iter().enumerate() {
            let path = format!("listener[{i}]");
            if let Some(name) = &l.name {
                check_name(errs, &format!("{path}.name"), name);
                if let Some(first) = names.insert(name, i) {
                    errs.push(
                        format!("{path}.name"),
                        format!("listener name '{name}' is also used by listener[{first}]"),
                    );
                }
            }
            if l.listen.port() != 0
                && let Some(first) = addrs.insert(l.listen, i)
            {
                errs.push(
                    format!("{path}.listen"),
                    format!(
                        "{} is already the listen address of listener[{first}]",
                        l.listen
                    ),
                );
            }
            check_listener_protos(errs, &path, l);
            check_upstream_source(errs, &path, l);
            if let Some(tid) = &l.sip_trace_id
                && !trace_ids.contains(tid.as_str())
            {
                let known: Vec<&str> = trace_ids.iter().copied().collect();
                let hint = if known.is_empty() {
                    "tracer.trace_id defines none".to_owned()
                } else {
                    format!("tracer.trace_id defines {}", known.join(", "))
                };
                errs.push(
                    format!("{path}.sip_trace_id"),
                    format!("unknown trace_id '{tid}': {hint}"),
                );
            }
            if l.sip_trace_route.is_some() && l.sip_trace_id.is_none() {
                errs.push(
                    format!("{path}.sip_trace_route"),
                    "sip_trace_route needs sip_trace_id: the trace id of the messages the route \
                     lets through without choosing one with trace()",
                );
            }
            if let Some(methods) = &l.sip_methods {
                for m in methods.non_sip_methods() {
                    errs.push(
                        format!("{path}.sip_methods"),
                        format!("'{m}' is not a SIP method name"),
                    );
                }
            }
            if l.max_connections == 0 {
                errs.push(
                    format!("{path}.max_connections"),
                    "max_connections must be at least 1",
                );
            }
            check_positive(
                errs,
                &format!("{path}.handshake_timeout"),
                l.handshake_timeout,
            );
            check_positive(errs, &format!("{path}.connect_timeout"), l.connect_timeout);
            if let Some(idle) = l.idle_timeout {
                check_positive(errs, &format!("{path}.idle_timeout"), idle);
            }
            check_message_limits(errs, &path, l);
        }
    }

    fn check_net(&self, proto: NetProto, net: &NetTracing, errs: &mut ConfigErrors) {
        let path = format!("net.{proto}");
        match &net.trace_destination {
            Some(dest) => {
                self.check_destination_ref(errs, &format!("{path}.trace_destination"), dest)
            }
            None if net.trace_on => errs.push(
                format!("{path}.trace_destination"),
                "trace_on is true but no trace_destination is set",
            ),
            None => {}
        }
        if net.trace_master_key && !proto.is_tls() {
            errs.push(
                format!("{path}.trace_master_key"),
                format!("trace_master_key only applies to tls and wss, not {proto}"),
            );
        }
        if let Some(route) = &net.trace_filter_route {
            let key = format!("{path}.trace_filter_route");
            if route.trim().is_empty() {
                errs.push(key, "empty route name");
            } else if self.routes.files.is_empty() && self.routes.inline.is_none() {
                errs.push(
                    key,
                    format!(
                        "route '{route}' cannot exist: [routes] has no files and no inline text"
                    ),
                );
            }
        }
    }

    fn check_mi(&self, errs: &mut ConfigErrors) {
        let mi = &self.mi;
        if let Some(fifo) = &mi.fifo_name {
            check_absolute(errs, "mi.fifo_name", fifo);
        }
        if let Some(dir) = &mi.reply_dir {
            check_absolute(errs, "mi.reply_dir", dir);
        }
        check_non_empty(errs, "mi.fifo_user", mi.fifo_user.as_deref());
        check_non_empty(errs, "mi.fifo_group", mi.fifo_group.as_deref());
        check_positive(errs, "mi.request_timeout", mi.request_timeout);
        if let Some(addr) = mi.http_listen
            && !addr.ip().is_loopback()
            && !mi.http_allow_remote
        {
            errs.push(
                "mi.http_listen",
                format!(
                    "{addr} is not a loopback address: the MI switches tracing and reloads the \
                     config, so set http_allow_remote = true to expose it on purpose"
                ),
            );
        }
        if let (Some(metrics), Some(http)) = (mi.metrics_listen, mi.http_listen)
            && metrics == http
            && metrics.port() != 0
        {
            errs.push(
                "mi.metrics_listen",
                format!(
                    "{metrics} is http_listen's address: leave metrics_listen empty to scrape \
                     GET /metrics there, or give it another port"
                ),
            );
        }
        match &mi.http_token_file {
            Some(file) => {
                check_absolute(errs, "mi.http_token_file", file);
                check_readable(errs, "mi.http_token_file", file);
            }
            None if mi.http_allow_remote && mi.http_listen.is_some() => errs.push(
                "mi.http_token_file",
                "http_allow_remote = true needs a token file: whoever reaches the MI can switch \
                 tracing and reload the config",
            ),
            None => {}
        }
        for (i, host) in mi.http_hosts.iter().enumerate() {
            if !is_host_name(host) {
                errs.push(
                    format!("mi.http_hosts[{i}]"),
                    format!(
                        "'{host}' is not a host name (letters, digits, '-' and dots; no port, \
                         no scheme)"
                    ),
                );
            }
        }
        let root = mi.http_root.trim();
        if root.is_empty() || root.contains(['/', '?', '#']) || root.contains(char::is_whitespace) {
            errs.push(
                "mi.http_root",
                format!(
                    "http_root '{}' must be one path segment such as \"mi\"",
                    mi.http_root
                ),
            );
        }
        if let Some(dest) = &mi.trace_destination {
            self.check_destination_ref(errs, "mi.trace_destination", dest);
        }
        if let Some(up) = &mi.upstream {
            match (&up.fifo, &up.url) {
                (Some(_), Some(_)) => errs.push("mi.upstream", "set one of fifo and url, not both"),
                (None, None) => errs.push(
                    "mi.upstream",
                    "set fifo (the proxy's MI FIFO) or url (its JSON-RPC URL)",
                ),
                (Some(fifo), None) => check_absolute(errs, "mi.upstream.fifo", fifo),
                (None, Some(url)) => {
                    if let Err(e) = check_http_url(url) {
                        errs.push("mi.upstream.url", e);
                    }
                }
            }
            check_absolute(errs, "mi.upstream.reply_dir", &up.reply_dir);
            check_positive(errs, "mi.upstream.timeout", up.timeout);
        }
    }
}

/// `max_message_bytes` below this would refuse ordinary SIP messages.
const MIN_MESSAGE_BYTES: u64 = 1024;
/// What tungstenite allowed before the limit existed: an operator can go back to it, no
/// further (each relayed direction may hold this much).
const MAX_MESSAGE_BYTES: u64 = 16 << 20;

/// `max_message_bytes` within its range; `message_timeout` positive and only where messages
/// are reassembled (ws, wss).
fn check_message_limits(errs: &mut ConfigErrors, path: &str, l: &Listener) {
    if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&l.max_message_bytes) {
        errs.push(
            format!("{path}.max_message_bytes"),
            format!(
                "max_message_bytes {} is out of range {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES}",
                l.max_message_bytes
            ),
        );
    }
    if let Some(timeout) = l.message_timeout {
        let key = format!("{path}.message_timeout");
        if l.proto.is_ws() {
            check_positive(errs, &key, timeout);
        } else {
            errs.push(
                key,
                format!(
                    "message_timeout only applies to ws and wss listeners (a {} listener relays bytes, not messages)",
                    l.proto
                ),
            );
        }
    }
}

/// `upstream_source_port` and `upstream_source_fallback` mean something only for a transparent
/// listener: set on another, they are a mistake worth telling.
fn check_upstream_source(errs: &mut ConfigErrors, path: &str, l: &Listener) {
    if l.upstream_source == UpstreamSource::Client {
        return;
    }
    if l.upstream_source_port != UpstreamSourcePort::Any {
        errs.push(
            format!("{path}.upstream_source_port"),
            "upstream_source_port is only used with upstream_source = \"client\"",
        );
    }
    if l.upstream_source_fallback != UpstreamSourceFallback::Refuse {
        errs.push(
            format!("{path}.upstream_source_fallback"),
            "upstream_source_fallback is only used with upstream_source = \"client\"",
        );
    }
}

fn check_listener_protos(errs: &mut ConfigErrors, path: &str, l: &Listener) {
    let up = l.upstream_proto();
    let allowed = if l.proto.is_ws() {
        [NetProto::Ws, NetProto::Wss]
    } else {
        [NetProto::Tcp, NetProto::Tls]
    };
    if !allowed.contains(&up) {
        errs.push(
            format!("{path}.upstream_proto"),
            format!(
                "a {} listener relays to {} or {}, not {up}",
                l.proto, allowed[0], allowed[1]
            ),
        );
    }
    match (&l.tls, l.proto.is_tls()) {
        (None, true) => errs.push(
            format!("{path}.tls"),
            format!(
                "a {} listener needs tls = {{ cert_file = \"...\", key_file = \"...\" }}",
                l.proto
            ),
        ),
        (Some(_), false) => errs.push(
            format!("{path}.tls"),
            format!(
                "tls is only used by tls and wss listeners, this one is {}",
                l.proto
            ),
        ),
        (Some(tls), true) => {
            check_readable(errs, &format!("{path}.tls.cert_file"), &tls.cert_file);
            check_readable(errs, &format!("{path}.tls.key_file"), &tls.key_file);
            match (&tls.client_ca_file, tls.client_cert) {
                (Some(ca), ClientCert::Require) => {
                    check_readable(errs, &format!("{path}.tls.client_ca_file"), ca);
                }
                (None, ClientCert::Require) => errs.push(
                    format!("{path}.tls.client_ca_file"),
                    "client_cert = \"require\" needs client_ca_file to verify client certificates",
                ),
                (Some(_), _) => errs.push(
                    format!("{path}.tls.client_ca_file"),
                    "client_ca_file is only used with client_cert = \"require\" (set it to verify client certificates)",
                ),
                (None, _) => {}
            }
        }
        (None, false) => {}
    }
    match (&l.upstream_tls, up.is_tls()) {
        (Some(_), false) => errs.push(
            format!("{path}.upstream_tls"),
            format!(
                "upstream_tls is only used when upstream_proto is tls or wss, this one is {up}"
            ),
        ),
        (Some(t), true) => {
            let tpath = format!("{path}.upstream_tls");
            check_cert_pair(errs, &tpath, t.cert_file.as_deref(), t.key_file.as_deref());
            for (key, file) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if let Some(file) = file {
                    check_readable(errs, &format!("{tpath}.{key}"), file);
                }
            }
            check_non_empty(
                errs,
                &format!("{tpath}.server_name"),
                t.server_name.as_deref(),
            );
        }
        (None, _) => {}
    }
}

/// Names (hep_id, trace_id, listener, address group) appear in MI replies, route scripts and
/// key paths: keep them to one plain word.
fn check_name(errs: &mut ConfigErrors, path: &str, name: &str) {
    if name.is_empty() {
        errs.push(path, "empty name");
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errs.push(
            path,
            format!("name '{name}' may contain only letters, digits, '_' and '-'"),
        );
    }
}

fn check_non_empty(errs: &mut ConfigErrors, path: &str, value: Option<&str>) {
    if value.is_some_and(|v| v.trim().is_empty()) {
        errs.push(path, "must not be empty (leave the key out instead)");
    }
}

fn check_positive(errs: &mut ConfigErrors, path: &str, d: Duration) {
    if d.is_zero() {
        errs.push(path, "must be longer than 0");
    }
}

fn check_queue(
    errs: &mut ConfigErrors,
    path: &str,
    packets: Option<usize>,
    bytes: Option<u64>,
    udp: Option<usize>,
) {
    if packets == Some(0) {
        errs.push(
            format!("{path}.queue_packets"),
            "queue_packets must be at least 1",
        );
    }
    if bytes == Some(0) {
        errs.push(
            format!("{path}.queue_bytes"),
            "queue_bytes must be at least 1",
        );
    }
    if let Some(size) = udp
        && !(MIN_UDP_SIZE..=MAX_UDP_SIZE).contains(&size)
    {
        errs.push(
            format!("{path}.max_udp_size"),
            format!("max_udp_size {size} is out of range {MIN_UDP_SIZE}..={MAX_UDP_SIZE}"),
        );
    }
}

/// The smallest `spool_max_bytes`: a few segments of the smallest size.
const MIN_SPOOL_BYTES: u64 = 1 << 20;

fn check_spool(
    errs: &mut ConfigErrors,
    path: &str,
    dir: Option<&Path>,
    max_bytes: Option<u64>,
    max_age: Option<Duration>,
) {
    // "" switches the spool off; anything else must not depend on the working directory.
    if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) {
        check_absolute(errs, &format!("{path}.spool_dir"), dir);
    }
    if let Some(bytes) = max_bytes
        && bytes < MIN_SPOOL_BYTES
    {
        errs.push(
            format!("{path}.spool_max_bytes"),
            format!("spool_max_bytes {bytes} is below the minimum of 1MiB ({MIN_SPOOL_BYTES})"),
        );
    }
    if let Some(age) = max_age {
        check_positive(errs, &format!("{path}.spool_max_age"), age);
    }
}

fn check_host(errs: &mut ConfigErrors, path: &str, host: &str) {
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if host.trim().is_empty() {
        errs.push(path, "empty host");
    } else if let Some(v6) = inner {
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            errs.push(path, format!("'{v6}' is not an IPv6 address"));
        }
    } else if let Some(hint) = crate::units::pasted_uri(host) {
        errs.push(path, hint);
    } else if host.contains(':') {
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            errs.push(
                path,
                format!("'{host}' is not a host name or IP address (put the port in port = ...)"),
            );
        }
    } else if host.contains(|c: char| c.is_whitespace() || c == '/') {
        errs.push(path, format!("'{host}' is not a host name or IP address"));
    }
}

/// A DNS name: labels of letters, digits and `-` (not at either end) joined by dots, an
/// optional final dot.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn check_cert_pair(errs: &mut ConfigErrors, path: &str, cert: Option<&Path>, key: Option<&Path>) {
    match (cert, key) {
        (Some(_), None) => errs.push(
            format!("{path}.key_file"),
            "cert_file is set, so key_file is needed too",
        ),
        (None, Some(_)) => errs.push(
            format!("{path}.cert_file"),
            "key_file is set, so cert_file is needed too",
        ),
        _ => {}
    }
}

/// Opens the file to prove it is readable now (by the user heptap starts as).
fn check_readable(errs: &mut ConfigErrors, path: &str, file: &Path) {
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_dir() => {
            errs.push(
                path,
                format!("'{}' is a directory, not a file", file.display()),
            );
            return;
        }
        Ok(_) => {}
        Err(e) => {
            errs.push(path, format!("cannot read '{}': {e}", file.display()));
            return;
        }
    }
    if let Err(e) = std::fs::File::open(file) {
        errs.push(path, format!("cannot read '{}': {e}", file.display()));
    }
}

fn check_absolute(errs: &mut ConfigErrors, path: &str, p: &Path) {
    if !p.is_absolute() {
        errs.push(path, format!("'{}' must be an absolute path", p.display()));
    }
}

/// `http://host[:port][/path]`: the MI client speaks plain HTTP to a local proxy.
fn check_http_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "'{url}' must start with http://, e.g. http://127.0.0.1:8889/mi"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, _port) = crate::units::split_host_port(authority)
        .map_err(|e| format!("bad host in '{url}': {e}"))?;
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    Ok(())
}
