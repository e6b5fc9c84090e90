//! `/etc/origin-audit/config.toml`: parse → validate → [`Config`], and applying the policy parts
//! (severity overrides, per-port listener expectations, `[[accept]]` exceptions) to a finished
//! [`Report`].
//!
//! Owns: the file format (documented by `packaging/config.toml`, the shipped example), its
//! errors (every one names the file, the line and the key), the defaults, and the rules for
//! when an exception applies.
//! Must not: read the host or decide verdicts. [`load`] reads the one file it is given; the rest
//! is pure. Exceptions never hide a finding: an accepted one moves to [`Report::accepted`] with
//! its reason, where every renderer shows it; only the exit status ignores it.

use crate::analysis::{AcceptedFinding, Report};
use crate::findings::{Code, Finding, Severity};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use thiserror::Error;
use toml::Spanned;

/// Where the packaged configuration lives; `--config` overrides it.
pub const DEFAULT_PATH: &str = "/etc/origin-audit/config.toml";
/// The lock that keeps two runs (timer, cron, an admin) from overlapping.
pub const DEFAULT_LOCK_FILE: &str = "/run/origin-audit.lock";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, an unknown key, or a bad value.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Whether something must listen on a port (the default) or may be absent (e.g. port 80 when
/// only HTTPS is proxied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    Required,
    Optional,
}

/// One `[[accept]]` exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accept {
    pub code: Code,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<IpNet>,
    pub reason: String,
    /// Last day (inclusive, UTC) the exception applies.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_date")]
    pub until: Option<time::Date>,
    /// `file:line` of the entry, quoted in reports.
    #[serde(skip)]
    pub origin: String,
}

/// Ranges source options (`[ranges]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangesConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Extra CA certificate(s), PEM, trusted for the ranges fetch (`--ranges-ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub max_age_days: i64,
    pub offline: bool,
}

/// `[tls]`: the zone's SSL mode and hostnames, for the TLS check of the HTTPS listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    pub hostnames: Vec<String>,
    /// `flexible`, `full` or `strict`; none: TLS is not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
    pub expiry_warning_days: i64,
    /// Each handshake is abandoned after this long.
    pub timeout_secs: u64,
    /// The Cloudflare Origin CA roots (PEM) instead of the bundled ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_ca_file: Option<PathBuf>,
}

/// `[audit]`: what to audit and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    pub ports: Vec<u16>,
    /// `ports` came from the file (else the SSL mode may choose them).
    #[serde(skip)]
    pub ports_set: bool,
    pub ifaces: Vec<String>,
    pub dests: Vec<IpAddr>,
    /// Each external tool (nft, iptables-save, ipset) is killed after this long.
    pub command_timeout_secs: u64,
    pub lock_file: PathBuf,
    /// How long a second run waits for the lock before giving up (exit 3).
    pub lock_wait_secs: u64,
    /// XDP programs (names as `ip link` shows them, or ids) trusted to pass the provider's
    /// traffic; any other attached program makes the verdict `conditional`.
    pub trusted_xdp: Vec<String>,
}

/// The effective configuration: the file's values over the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file this came from; `None` when no file exists (defaults).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    pub audit: AuditConfig,
    pub ranges: RangesConfig,
    pub tls: TlsConfig,
    /// Port → expectation; ports not named are `required`.
    #[serde(serialize_with = "ser_port_map")]
    pub listener: BTreeMap<u16, Expectation>,
    /// Per-code severity overrides.
    pub severity: BTreeMap<Code, Severity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accept: Vec<Accept>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            audit: AuditConfig {
                ports: vec![80, 443],
                ports_set: false,
                ifaces: Vec::new(),
                dests: Vec::new(),
                command_timeout_secs: 10,
                lock_file: PathBuf::from(DEFAULT_LOCK_FILE),
                lock_wait_secs: 30,
                trusted_xdp: Vec::new(),
            },
            ranges: RangesConfig {
                url: None,
                file: None,
                cache_dir: None,
                ca_file: None,
                max_age_days: 30,
                offline: false,
            },
            tls: TlsConfig {
                hostnames: Vec::new(),
                ssl_mode: None,
                expiry_warning_days: 14,
                timeout_secs: 5,
                origin_ca_file: None,
            },
            listener: BTreeMap::new(),
            severity: BTreeMap::new(),
            accept: Vec::new(),
        }
    }
}

/// Written as a TOML date (`until = 2026-12-31`), as it is read.
fn ser_date<S: serde::Serializer>(d: &Option<time::Date>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => {
            let dt = toml::value::Datetime {
                date: Some(toml::value::Date {
                    year: u16::try_from(d.year()).unwrap_or(0),
                    month: u8::from(d.month()),
                    day: d.day(),
                }),
                time: None,
                offset: None,
            };
            serde::Serialize::serialize(&dt, s)
        }
        None => s.serialize_none(),
    }
}

fn ser_port_map<S: serde::Serializer>(
    m: &BTreeMap<u16, Expectation>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // TOML keys are strings.
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(&k.to_string(), v)?;
    }
    map.end()
}

fn fmt_date(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

// ---- the file as written: every value whose validity serde cannot check keeps its span ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    audit: Option<RawAudit>,
    ranges: Option<RawRanges>,
    tls: Option<RawTls>,
    listener: Option<BTreeMap<Spanned<String>, Spanned<Expectation>>>,
    severity: Option<BTreeMap<Spanned<String>, Spanned<Severity>>>,
    #[serde(default)]
    accept: Vec<Spanned<RawAccept>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    ports: Option<Spanned<Vec<u16>>>,
    ifaces: Option<Vec<String>>,
    dests: Option<Vec<Spanned<String>>>,
    command_timeout_secs: Option<Spanned<u64>>,
    lock_file: Option<PathBuf>,
    lock_wait_secs: Option<Spanned<u64>>,
    trusted_xdp: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRanges {
    url: Option<Spanned<String>>,
    file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    max_age_days: Option<Spanned<i64>>,
    offline: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    hostnames: Option<Vec<Spanned<String>>>,
    ssl_mode: Option<Spanned<String>>,
    expiry_warning_days: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<u64>>,
    origin_ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccept {
    code: Spanned<Code>,
    port: Option<Spanned<u16>>,
    range: Option<Spanned<String>>,
    reason: Spanned<String>,
    until: Option<Spanned<toml::value::Datetime>>,
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut c = parse(&path.display().to_string(), &text)?;
    c.path = Some(path.to_path_buf());
    Ok(c)
}

/// The configuration for a run: `explicit` (from `--config`) must exist; the default path may
/// be absent (defaults apply), but when present it must be valid.
pub fn load_for_run(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    match explicit {
        Some(p) => load(p),
        None => {
            let p = Path::new(DEFAULT_PATH);
            match std::fs::metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
                _ => load(p),
            }
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The key a span belongs to: the text before `=` on its line, the table name for a header,
/// or the spanned text itself.
fn key_at(text: &str, span: &Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[start..]
        .find('\n')
        .map(|i| start + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    if let Some((k, _)) = line.split_once('=') {
        let k = k.trim().trim_matches('"');
        // Prefix the enclosing table, as the key is written in errors from validation.
        let before = &text[..line_start];
        let header = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['));
        return match header {
            Some(h) if h.starts_with("[[") => {
                let t = h.trim_matches(['[', ']']).trim();
                let n = before
                    .lines()
                    .filter(|l| {
                        l.trim().trim_matches(['[', ']']).trim() == t && l.trim().starts_with("[[")
                    })
                    .count();
                format!("{t}[{n}].{k}")
            }
            Some(h) => format!("{}.{k}", h.trim_matches(['[', ']']).trim()),
            None => k.to_string(),
        };
    }
    text.get(span.clone())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(file)".to_string())
}

/// `[tls]`, validated: hostnames are DNS names, the mode one of three, the numbers in range.
/// Builds the error for a span of the file (`parse`'s `err`).
type ErrAt<'a> = &'a dyn Fn(Range<usize>, Option<&str>, String) -> ConfigError;

fn parse_tls(t: RawTls, err: ErrAt<'_>) -> Result<TlsConfig, ConfigError> {
    let mut c = Config::default().tls;
    for h in t.hostnames.unwrap_or_default() {
        let span = h.span();
        let name = h.into_inner();
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() || name.is_empty() {
            return Err(err(
                span,
                Some("tls.hostnames"),
                format!("{name:?} is not a hostname"),
            ));
        }
        c.hostnames.push(name);
    }
    if let Some(m) = t.ssl_mode {
        let span = m.span();
        let m = m.into_inner();
        if crate::analysis::tls::SslMode::parse(&m).is_none() {
            return Err(err(
                span,
                Some("tls.ssl_mode"),
                format!("{m:?}: expected \"flexible\", \"full\" or \"strict\""),
            ));
        }
        c.ssl_mode = Some(m);
    }
    if let Some(d) = t.expiry_warning_days {
        let v = *d.get_ref();
        if !(0..=365).contains(&v) {
            return Err(err(
                d.span(),
                Some("tls.expiry_warning_days"),
                format!("{v} is outside 0..=365"),
            ));
        }
        c.expiry_warning_days = v;
    }
    if let Some(s) = t.timeout_secs {
        let v = *s.get_ref();
        if !(1..=60).contains(&v) {
            return Err(err(
                s.span(),
                Some("tls.timeout_secs"),
                format!("{v} is outside 1..=60 seconds"),
            ));
        }
        c.timeout_secs = v;
    }
    c.origin_ca_file = t.origin_ca_file;
    Ok(c)
}

/// Parses and validates a configuration. `path` names the file in errors.
pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
    let err = |span: Range<usize>, key: Option<&str>, message: String| ConfigError::Invalid {
        path: path.to_string(),
        line: line_of(text, span.start),
        key: key
            .map(str::to_string)
            .unwrap_or_else(|| key_at(text, &span)),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        err(span, None, e.message().trim().to_string())
    })?;
    let provider = crate::ranges::cloudflare();
    let proxied = provider.proxied_ports();
    let mut c = Config::default();

    if let Some(a) = raw.audit {
        if let Some(ports) = a.ports {
            let span = ports.span();
            let ports = ports.into_inner();
            if ports.is_empty() {
                return Err(err(span, Some("audit.ports"), "must not be empty".into()));
            }
            if let Some(p) = ports.iter().find(|p| !proxied.contains(p)) {
                return Err(err(
                    span,
                    Some("audit.ports"),
                    format!(
                        "{p} is not a port {} proxies (HTTP {:?}, HTTPS {:?})",
                        provider.name, provider.http_ports, provider.https_ports
                    ),
                ));
            }
            c.audit.ports = ports;
            c.audit.ports_set = true;
        }
        if let Some(i) = a.ifaces {
            c.audit.ifaces = i;
        }
        for d in a.dests.unwrap_or_default() {
            let span = d.span();
            let addr = d.get_ref().parse::<IpAddr>().map_err(|_| {
                err(
                    span,
                    Some("audit.dests"),
                    format!("{:?} is not an IP address", d.get_ref()),
                )
            })?;
            c.audit.dests.push(addr);
        }
        if let Some(t) = a.command_timeout_secs {
            let v = *t.get_ref();
            if !(1..=600).contains(&v) {
                return Err(err(
                    t.span(),
                    Some("audit.command_timeout_secs"),
                    format!("{v} is outside 1..=600 seconds"),
                ));
            }
            c.audit.command_timeout_secs = v;
        }
        if let Some(l) = a.lock_file {
            c.audit.lock_file = l;
        }
        if let Some(w) = a.lock_wait_secs {
            let v = *w.get_ref();
            if v > 3600 {
                return Err(err(
                    w.span(),
                    Some("audit.lock_wait_secs"),
                    format!("{v} is more than an hour; the timer runs hourly"),
                ));
            }
            c.audit.lock_wait_secs = v;
        }
        if let Some(x) = a.trusted_xdp {
            c.audit.trusted_xdp = x;
        }
    }

    if let Some(r) = raw.ranges {
        if let Some(u) = r.url {
            let span = u.span();
            let url = u.into_inner();
            if let Err(why) = crate::cli::https_url(&url) {
                return Err(err(span, Some("ranges.url"), format!("{url:?}: {why}")));
            }
            c.ranges.url = Some(url);
        }
        c.ranges.file = r.file;
        c.ranges.cache_dir = r.cache_dir;
        c.ranges.ca_file = r.ca_file;
        if let Some(m) = r.max_age_days {
            let v = *m.get_ref();
            if v < 1 {
                return Err(err(
                    m.span(),
                    Some("ranges.max_age_days"),
                    format!("{v} must be at least 1"),
                ));
            }
            c.ranges.max_age_days = v;
        }
        c.ranges.offline = r.offline.unwrap_or(false);
    }
    if let Some(t) = raw.tls {
        c.tls = parse_tls(t, &err)?;
    }

    for (k, v) in raw.listener.unwrap_or_default() {
        let key = format!("listener.{}", k.get_ref());
        let port = k
            .get_ref()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(k.span(), Some(&key), "the key must be a port number".into()))?;
        if !proxied.contains(&port) {
            return Err(err(
                k.span(),
                Some(&key),
                format!("{port} is not a port {} proxies", provider.name),
            ));
        }
        c.listener.insert(port, v.into_inner());
    }

    for (k, v) in raw.severity.unwrap_or_default() {
        let key = format!("severity.{}", k.get_ref());
        let code = Code::ALL
            .iter()
            .copied()
            .find(|c| c.id() == k.get_ref())
            .ok_or_else(|| {
                err(
                    k.span(),
                    Some(&key),
                    format!("unknown finding code {:?}", k.get_ref()),
                )
            })?;
        let sev = v.into_inner();
        if code == Code::DumpUnparsable && sev != Severity::Unknown {
            // Lowering it would let an unparsed ruleset pass as all clear.
            return Err(err(
                k.span(),
                Some(&key),
                "dump-unparsable cannot be lowered: nothing is known about rules that could not be parsed".into(),
            ));
        }
        c.severity.insert(code, sev);
    }

    for (i, a) in raw.accept.into_iter().enumerate() {
        let entry_line = line_of(text, a.span().start);
        let a = a.into_inner();
        let key = |f: &str| format!("accept[{}].{f}", i + 1);
        if a.code.get_ref() == &Code::DumpUnparsable {
            return Err(err(
                a.code.span(),
                Some(&key("code")),
                "dump-unparsable cannot be accepted: nothing is known about rules that could not be parsed".into(),
            ));
        }
        if let Some(p) = &a.port
            && *p.get_ref() == 0
        {
            return Err(err(p.span(), Some(&key("port")), "port 0".into()));
        }
        let range = match &a.range {
            None => None,
            Some(r) => Some(r.get_ref().parse::<IpNet>().map_err(|_| {
                err(
                    r.span(),
                    Some(&key("range")),
                    format!("{:?} is not a CIDR (e.g. 173.245.48.0/20)", r.get_ref()),
                )
            })?),
        };
        if a.reason.get_ref().trim().is_empty() {
            return Err(err(
                a.reason.span(),
                Some(&key("reason")),
                "must say why this finding is accepted".into(),
            ));
        }
        let until = match &a.until {
            None => None,
            Some(u) => {
                let dt = u.get_ref();
                match (dt.date, dt.time, dt.offset) {
                    (Some(d), None, None) => Some(
                        time::Month::try_from(d.month)
                            .ok()
                            .and_then(|m| {
                                time::Date::from_calendar_date(i32::from(d.year), m, d.day).ok()
                            })
                            .ok_or_else(|| {
                                err(u.span(), Some(&key("until")), format!("{dt} is not a date"))
                            })?,
                    ),
                    _ => {
                        return Err(err(
                            u.span(),
                            Some(&key("until")),
                            format!("{dt}: give a plain date, e.g. until = 2026-12-31"),
                        ));
                    }
                }
            }
        };
        c.accept.push(Accept {
            code: a.code.into_inner(),
            port: a.port.map(Spanned::into_inner),
            range,
            reason: a.reason.into_inner().trim().to_string(),
            until,
            origin: format!("{path}:{entry_line}"),
        });
    }
    Ok(c)
}

impl Config {
    /// Fills what the command line left unset from the file: flags override the configuration.
    pub fn merge_input(&self, input: &mut crate::cli::InputArgs) {
        if input.iface.is_empty() {
            input.iface = self.audit.ifaces.clone();
        }
        if input.dest.is_empty() {
            input.dest = self.audit.dests.clone();
        }
        input.offline |= self.ranges.offline;
        if input.ranges_file.is_none() {
            input.ranges_file = self.ranges.file.clone();
        }
        if input.ranges_url.is_none() {
            input.ranges_url = self.ranges.url.clone();
        }
        if input.cache_dir.is_none() {
            input.cache_dir = self.ranges.cache_dir.clone();
        }
        if input.ranges_ca.is_none() {
            input.ranges_ca = self.ranges.ca_file.clone();
        }
        if input.ssl_mode.is_none() {
            input.ssl_mode = self.tls.ssl_mode.clone();
        }
        if input.hostname.is_empty() {
            input.hostname = self.tls.hostnames.clone();
        }
        if input.origin_ca.is_none() {
            input.origin_ca = self.tls.origin_ca_file.clone();
        }
    }

    /// The effective configuration as TOML (`config show`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Exceptions whose `until` date has passed (they no longer apply).
    pub fn expired(&self, today: time::Date) -> Vec<&Accept> {
        self.accept
            .iter()
            .filter(|a| a.until.is_some_and(|u| today > u))
            .collect()
    }

    /// Applies severity overrides, listener expectations and exceptions to a finished report,
    /// then recomputes its status. `today` decides which exceptions have expired.
    pub fn apply(&self, report: &mut Report, today: time::Date) {
        let origin = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into());
        let mut kept = Vec::new();
        for mut f in std::mem::take(&mut report.findings) {
            if let Some(s) = self.severity.get(&f.code)
                && f.severity != Severity::Unknown
            {
                f.severity = *s;
            }
            if matches!(
                f.code,
                Code::NoListener | Code::ListenerLoopbackOnly | Code::ListenerWrongAddress
            ) && !f.ports.is_empty()
                && f.ports
                    .iter()
                    .all(|p| self.listener.get(p) == Some(&Expectation::Optional))
                && f.severity != Severity::Unknown
            {
                f.severity = Severity::Info;
                f.message.push_str(&format!(
                    " (a listener is optional on this port per {origin})"
                ));
            }
            match self.exception_for(&f, today) {
                Match::Applies(a) => report.accepted.push(AcceptedFinding {
                    finding: f,
                    reason: a.reason.clone(),
                    until: a.until.map(fmt_date),
                    origin: a.origin.clone(),
                }),
                Match::Expired(a) => {
                    f.message.push_str(&format!(
                        " [exception at {} expired on {}]",
                        a.origin,
                        a.until.map(fmt_date).unwrap_or_default()
                    ));
                    kept.push(f);
                }
                Match::None => kept.push(f),
            }
        }
        report.findings = kept;
        report.recompute_status();
    }

    fn exception_for(&self, f: &Finding, today: time::Date) -> Match<'_> {
        // An unknown verdict is never accepted: that would turn "could not tell" into all clear.
        if f.severity == Severity::Unknown {
            return Match::None;
        }
        let mut expired = None;
        for a in self.accept.iter().filter(|a| a.covers(f)) {
            match a.until {
                Some(u) if today > u => expired = expired.or(Some(a)),
                _ => return Match::Applies(a),
            }
        }
        expired.map(Match::Expired).unwrap_or(Match::None)
    }
}

enum Match<'a> {
    Applies(&'a Accept),
    Expired(&'a Accept),
    None,
}

impl Accept {
    /// Covers a finding only wholly: every port it names is `port`, every range it names lies
    /// inside `range`. A finding that reaches beyond the exception stays open.
    pub fn covers(&self, f: &Finding) -> bool {
        if self.code != f.code {
            return false;
        }
        if let Some(p) = self.port
            && (f.ports.is_empty() || f.ports.iter().any(|fp| *fp != p))
        {
            return false;
        }
        if let Some(r) = &self.range {
            if f.sources.is_empty() {
                return false;
            }
            let inside = |s: &String| s.parse::<IpNet>().is_ok_and(|n| r.contains(&n));
            if !f.sources.iter().all(inside) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own inputs
mod tests {
    use super::*;

    fn bad(text: &str) -> (usize, String, String) {
        match parse("/etc/oa.toml", text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, msg) = bad("[audit]\nports = [443]\nprots = [80]\n");
        assert_eq!((line, key.as_str()), (3, "audit.prots"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn unknown_table_is_an_error() {
        let (line, key, _) = bad("# x\n[audits]\nports = [443]\n");
        assert_eq!((line, key.as_str()), (2, "audits"));
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let (line, key, msg) = bad("[audit]\nports = [443, 22]\n");
        assert_eq!((line, key.as_str()), (2, "audit.ports"));
        assert!(msg.contains("22"), "{msg}");
        let (line, key, _) = bad("[audit]\nports = [70000]\n");
        assert_eq!((line, key.as_str()), (2, "audit.ports"));
        let (line, key, _) = bad("\n\n[[accept]]\ncode = \"range-dropped\"\nreason = \" \"\n");
        assert_eq!((line, key.as_str()), (5, "accept[1].reason"));
        let (line, key, _) = bad("[[accept]]\ncode = \"range-dropped\"\n");
        assert_eq!(line, 1, "{key}");
        let (line, key, msg) = bad("[[accept]]\ncode = \"range-droped\"\nreason = \"x\"\n");
        assert_eq!((line, key.as_str()), (2, "accept[1].code"), "{msg}");
        let (line, key, _) = bad(
            "[[accept]]\ncode = \"range-dropped\"\nreason = \"x\"\n\n[[accept]]\ncode = \"no-listener\"\nreason = \"y\"\nrange = \"1.2.3.4/40\"\n",
        );
        assert_eq!((line, key.as_str()), (8, "accept[2].range"));
        let (line, key, _) = bad("[listener]\n22 = \"optional\"\n");
        assert_eq!((line, key.as_str()), (2, "listener.22"));
        let (line, key, _) = bad("[listener]\n80 = \"maybe\"\n");
        assert_eq!(line, 2, "{key}");
        let (line, key, _) = bad(
            "[[accept]]\ncode = \"range-dropped\"\nreason = \"x\"\nuntil = 2026-01-01T00:00:00Z\n",
        );
        assert_eq!((line, key.as_str()), (4, "accept[1].until"));
    }

    #[test]
    fn full_example_parses() {
        let text = include_str!("../packaging/config.toml");
        let c = parse("packaging/config.toml", text).unwrap();
        assert_eq!(c.audit.ports, vec![80, 443]);
        // The example's settings are the defaults, written out.
        let d = Config::default();
        assert_eq!(c.audit, d.audit);
        assert_eq!(c.ranges, d.ranges);
        assert_eq!(c.tls, d.tls);
    }

    #[test]
    fn ranges_url_must_be_https_and_ca_file_is_read() {
        let (line, key, msg) = bad("[ranges]\nurl = \"http://mirror.example/ips\"\n");
        assert_eq!((line, key.as_str()), (2, "ranges.url"));
        assert!(msg.contains("only https:// URLs are fetched"), "{msg}");
        let c = parse(
            "x",
            "[ranges]\nurl = \"https://mirror.example/ips\"\nca_file = \"/etc/origin-audit/mirror-ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            c.ranges.ca_file.as_deref(),
            Some(Path::new("/etc/origin-audit/mirror-ca.pem"))
        );
        let mut input = crate::cli::InputArgs::default();
        c.merge_input(&mut input);
        assert_eq!(input.ranges_ca, c.ranges.ca_file);
        assert_eq!(
            input.ranges_url.as_deref(),
            Some("https://mirror.example/ips")
        );
        // A flag wins over the file.
        let mut input = crate::cli::InputArgs {
            ranges_ca: Some(PathBuf::from("/tmp/other.pem")),
            ..Default::default()
        };
        c.merge_input(&mut input);
        assert_eq!(input.ranges_ca, Some(PathBuf::from("/tmp/other.pem")));
        assert_eq!(parse("shown", &c.to_toml()).unwrap().ranges, c.ranges);
    }

    #[test]
    fn show_round_trips() {
        let c = parse(
            "x",
            "[audit]\nports=[443]\n[listener]\n80=\"optional\"\n[severity]\nranges-stale=\"info\"\n[[accept]]\ncode=\"range-dropped\"\nport=443\nrange=\"173.245.48.0/20\"\nreason=\"maintenance\"\nuntil=2030-01-31\n",
        )
        .unwrap();
        let shown = c.to_toml();
        let again = parse("shown", &shown).unwrap();
        assert_eq!(again.audit, c.audit);
        assert_eq!(again.listener, c.listener);
        assert_eq!(again.severity, c.severity);
        assert_eq!(again.accept.len(), 1);
        assert_eq!(again.accept[0].until, c.accept[0].until);
        assert!(shown.contains("until = 2030-01-31"), "{shown}");
    }
}
