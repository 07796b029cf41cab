//! `[mi]` as the MI crate wants it: the settings, the private run directory that holds the FIFO
//! when the config names none, and the check `check-config` and reload run on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use heptap_config::Config;
use heptap_hep::{NetProto, TraceMessage};
use heptap_mi::{
    BearerToken, Control, LogLevel, MiSettings, ProcessInfo, ReloadRefused, ReloadReport,
    Statistic, TraceIdInfo, UnknownTraceId, UpstreamSettings, UpstreamTarget,
};
use serde_json::Value;

/// The private run directory used when `[mi]` names no FIFO or reply directory:
/// `$XDG_RUNTIME_DIR/heptap`, else `/tmp/heptap-<uid>`.
pub fn private_run_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("heptap"),
        None => PathBuf::from(format!("/tmp/heptap-{}", nix::unistd::getuid())),
    }
}

/// The FIFO heptap serves by default, and `heptap fifo` talks to by default.
pub fn default_fifo() -> PathBuf {
    private_run_dir().join("heptap_fifo")
}

/// Creates the private run directory (mode 0700) if it is missing, and refuses one that is not
/// a directory owned by us with no access for others (someone could plant FIFOs there).
fn ensure_private_dir(dir: &Path) -> Result<(), heptap_mi::MiError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let err = |why: String| heptap_mi::MiError::Upstream(format!("{}: {why}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create the run directory: {e}")))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("the run directory is not a directory".to_owned()));
    }
    if meta.uid() != nix::unistd::getuid().as_raw() || meta.permissions().mode() & 0o077 != 0 {
        return Err(err(
            "the run directory must belong to heptap's user with mode 0700".to_owned(),
        ));
    }
    Ok(())
}

/// `[mi]` as the MI crate wants it. With no `fifo_name`/`reply_dir` both live in the private
/// run directory, which is created here.
pub fn mi_settings(config: &Config) -> Result<MiSettings, heptap_mi::MiError> {
    let mi = &config.mi;
    let private = || -> Result<PathBuf, heptap_mi::MiError> {
        let dir = private_run_dir();
        ensure_private_dir(&dir)?;
        Ok(dir)
    };
    let fifo_name = match &mi.fifo_name {
        Some(p) => p.clone(),
        None => private()?.join("heptap_fifo"),
    };
    let reply_dir = match &mi.reply_dir {
        Some(d) => d.clone(),
        None => private()?,
    };
    let upstream = mi.upstream.as_ref().and_then(|u| {
        let target = match (&u.fifo, &u.url) {
            (Some(fifo), _) => UpstreamTarget::Fifo {
                fifo: fifo.clone(),
                reply_dir: u.reply_dir.clone(),
            },
            (None, Some(url)) => UpstreamTarget::Http { url: url.clone() },
            (None, None) => return None,
        };
        Some(UpstreamSettings {
            target,
            timeout: u.timeout,
        })
    });
    // Read (and its permissions checked) here, at start and by check-config, as the user
    // heptap starts as.
    let http_token = mi
        .http_token_file
        .as_deref()
        .map(BearerToken::read_file)
        .transpose()?;
    Ok(MiSettings {
        fifo_name: Some(fifo_name),
        fifo_mode: mi.fifo_mode,
        fifo_user: mi.fifo_user.clone(),
        fifo_group: mi.fifo_group.clone(),
        reply_dir,
        http_listen: mi.http_listen,
        metrics_listen: mi.metrics_listen,
        http_root: mi.http_root.clone(),
        http_allow_remote: mi.http_allow_remote,
        http_hosts: mi.http_hosts.clone(),
        http_token,
        trace_bwlist: mi.trace_bwlist.clone(),
        pretty_printing: mi.pretty_printing,
        request_timeout: mi.request_timeout,
        upstream,
        ..MiSettings::default()
    })
}

/// Checks `[mi]` exactly as `start` would build it, without creating or binding anything.
pub fn check(config: &Config) -> Result<(), heptap_mi::MiError> {
    heptap_mi::Mi::new(mi_settings(config)?, Arc::new(NullControl)).map(|_| ())
}

/// A control that controls nothing: lets `check-config` validate `[mi]` exactly as `start`
/// would, without an agent.
#[derive(Debug)]
struct NullControl;

impl Control for NullControl {
    fn sip_trace_on(&self) -> bool {
        false
    }
    fn set_sip_trace_on(&self, _: bool) {}
    fn trace_ids(&self) -> Vec<TraceIdInfo> {
        Vec::new()
    }
    fn set_trace_id_on(&self, name: &str, _: bool) -> Result<(), UnknownTraceId> {
        Err(UnknownTraceId(name.to_owned()))
    }
    fn net_trace_on(&self, _: NetProto) -> bool {
        false
    }
    fn set_net_trace_on(&self, _: NetProto, _: bool) {}
    fn statistics(&self) -> Vec<Statistic> {
        Vec::new()
    }
    fn reset_statistic(&self, _: &str, _: &str) {}
    fn hep_ids(&self) -> Value {
        Value::Null
    }
    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        Ok(ReloadReport::default())
    }
    fn tls_reload(&self) -> Result<ReloadReport, ReloadRefused> {
        Ok(ReloadReport::default())
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }
    fn set_log_level(&self, _: LogLevel) -> Result<(), String> {
        Ok(())
    }
    fn processes(&self) -> Vec<ProcessInfo> {
        Vec::new()
    }
    fn mi_tracing_enabled(&self) -> bool {
        false
    }
    fn trace_mi(&self, _: TraceMessage) {}
    fn tcp_connections(&self, _: Option<NetProto>, _: usize) -> heptap_mi::TcpConnList {
        heptap_mi::TcpConnList::default()
    }
}
