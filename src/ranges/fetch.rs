//! The only I/O for ranges: HTTPS fetch (reqwest blocking + rustls, `If-None-Match`), the
//! atomic cache file, `--ranges-file` and the `--ranges-ca` file.
//!
//! Owns: the fallback order, the cache format, and the transport rules. Must not: judge entries
//! itself (that is `validate` and `policy`, pure) or decide verdicts.
//!
//! Transport rules, because the fetched list decides what the audit trusts:
//! - only `https://` URLs are fetched (a plain `http://` URL is refused before any request);
//! - a redirect is followed only if it stays `https://` and on the original host (or a host
//!   under cloudflare.com), at most [`MAX_REDIRECTS`] times;
//! - one deadline ([`FETCH_DEADLINE`]) bounds the whole fetch step — every URL tried, connect,
//!   headers and body — and the body is read in chunks against it and capped at 1 MiB, so a
//!   server trickling bytes cannot hold a run;
//! - extra trust for a mirror with a private CA comes only from `--ranges-ca FILE` / `[ranges]
//!   ca_file` (PEM), added to the system roots.
//!
//! Every list, whatever its source, passes `validate` (syntax) and `policy::check_static`
//! (allocations, special-purpose space, counts); a fetched list must also stay within
//! `policy::check_change` of the last good list (the cache, else the bundled list). A refused
//! list is never cached: the last good list is used and the refusal becomes a problem.
//!
//! Order, see [`load`]:
//! 1. `--ranges-file`: that file or an error — the admin asked for it, so a refused file is never
//!    silently replaced by another list.
//! 2. unless `offline`: the API (or `--ranges-url`), conditional on the cached etag; if the API
//!    fails and no `--ranges-url` was given, the provider's two plain-text URLs.
//! 3. the cache (`<cache dir>/<provider>.json`), validated again on every read.
//! 4. the bundled snapshot compiled into the binary.
//!
//! Every step that was tried and failed leaves a sentence in `ProviderRanges::problems` when the
//! result is worse than it should have been (each becomes a finding). `offline` adds no problems
//! about the network: the admin asked for it.
//!
//! Cache file (`cloudflare.json`), JSON: `{"etag": "..." | null, "fetched_at": RFC 3339,
//! "ipv4": [...], "ipv6": [...]}`. Written atomically: a temp file in the same directory, fsync,
//! rename, mode 0644 (the lists are public; a root-run timer and an unprivileged `check` share it).

use super::policy;
use super::validate::{self, Expect, Lists, RangesError};
use super::{Provider, ProviderRanges, RangeSource};
use reqwest::blocking::Client;
use reqwest::header::{ETAG, HeaderValue, IF_NONE_MATCH};
use reqwest::redirect::Policy;
use reqwest::{Certificate, StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Never touch the network: cache, else bundled.
    pub offline: bool,
    /// `--ranges-file`: JSON as the API returns it, or one CIDR a line (both families).
    pub file: Option<PathBuf>,
    /// `--ranges-url`: replaces the API URL and disables the provider's text fallbacks; the body
    /// may be API JSON or a text list (detected by content).
    pub url: Option<String>,
    /// Cache directory; default see [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// `--ranges-ca` / `[ranges] ca_file`: PEM certificate(s) trusted in addition to the
    /// system roots, for a mirror with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Bound on the whole fetch step (every URL tried; connect, headers, body). Not a flag or
    /// config key: production uses [`FETCH_DEADLINE`]; tests pass a small value.
    pub deadline: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            offline: false,
            file: None,
            url: None,
            cache_dir: None,
            ca_file: None,
            deadline: FETCH_DEADLINE,
        }
    }
}

/// The fetch runs before every audit, and a dead or slow network must cost seconds, not
/// minutes, before the cache is used. The connect timeout applies per connection; the deadline
/// to everything together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const FETCH_DEADLINE: Duration = Duration::from_secs(20);
/// The real lists are ~1 KiB; anything this big is not a range list.
const MAX_BODY: usize = 1 << 20;
/// Redirects followed per request (each must pass [`redirect_refusal`]).
pub const MAX_REDIRECTS: usize = 5;

/// The HTTP client: rustls, https only, the redirect rule, the extra CA if configured.
/// reqwest's blocking `timeout` is per read, so it does not bound a trickling body: each
/// request also gets the time left to the deadline as its (total) timeout, and [`get`] checks
/// the deadline between chunks.
fn client(opts: &LoadOptions) -> Result<Client, RangesError> {
    let mut b = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(opts.deadline)
        .https_only(true)
        .redirect(Policy::custom(|attempt| {
            match redirect_refusal(
                attempt.previous().first(),
                attempt.url(),
                attempt.previous().len(),
            ) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }
        }))
        .user_agent(concat!("origin-audit/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &opts.ca_file {
        let bad = |reason: String| RangesError::Io {
            origin: format!("CA file {}", path.display()),
            reason,
        };
        let pem = fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not PEM certificates: {}", error_chain(&e))))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".to_string()));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| RangesError::Http {
        origin: "HTTP client".to_string(),
        reason: error_chain(&e),
    })
}

/// Why a redirect from `first` (the URL originally asked for) to `next` is refused, if it is.
/// Allowed: https, and the same host as `first` or a host under cloudflare.com; at most
/// [`MAX_REDIRECTS`] hops (`hops` = URLs visited so far).
fn redirect_refusal(first: Option<&Url>, next: &Url, hops: usize) -> Option<String> {
    let why = if hops > MAX_REDIRECTS {
        format!("more than {MAX_REDIRECTS} redirects")
    } else if next.scheme() != "https" {
        "it leaves https".to_string()
    } else {
        let host = next.host_str().unwrap_or("");
        let orig = first.and_then(Url::host_str).unwrap_or("");
        let cloudflare = host == "cloudflare.com" || host.ends_with(".cloudflare.com");
        if host == orig || cloudflare {
            return None;
        }
        format!("{host} is neither {orig} nor a host under cloudflare.com")
    };
    Some(format!("redirect to {next} refused: {why}"))
}

/// Load the provider's ranges: `--ranges-file`, else fresh fetch → cache → bundled.
///
/// Returns `Err` only when
/// - `opts.file` is set and that file cannot be read or fails validation (the admin named that
///   file; replacing it with another list would audit something they did not ask for), or
/// - the provider's bundled list is invalid, which [`super::cloudflare`] rules out (only a
///   hand-built [`Provider`] can get there).
///
/// Everything else (network down, list refused, cache unreadable or unwritable) degrades to the
/// next source with a sentence in `problems`.
///
/// A `304 Not Modified` gives source `cache` with `as_of` = now: the server has just confirmed
/// the cached list is current, so its age is zero; the cache's `fetched_at` is refreshed too, so
/// a later `offline` run reports the same age.
pub fn load(provider: &Provider, opts: &LoadOptions) -> Result<ProviderRanges, RangesError> {
    if let Some(path) = &opts.file {
        return read_ranges_file(provider, path);
    }
    let mut problems = Vec::new();
    let cache_path = match opts.cache_dir.clone().or_else(default_cache_dir) {
        Some(dir) => Some(dir.join(format!("{}.json", provider.name))),
        None => {
            problems.push(
                "no cache directory: neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir"
                    .to_string(),
            );
            None
        }
    };
    // A cache directory another user can write could hold a planted list: refused outright
    // (exit 3), so it is fixed or `--cache-dir` names another one.
    if let Some(dir) = cache_path.as_deref().and_then(Path::parent) {
        crate::safefs::trusted_dir(dir).map_err(|reason| RangesError::Io {
            origin: "cache directory".into(),
            reason: format!("{reason} (or pass --cache-dir)"),
        })?;
    }
    let (cached, cache_problem) = match cache_path.as_deref().map(|p| read_cache(provider, p)) {
        None | Some(Ok(None)) => (None, None),
        Some(Ok(Some(c))) => (Some(c), None),
        Some(Err(e)) => (None, Some(format!("cached ranges ignored: {e}"))),
    };

    if opts.offline {
        problems.extend(cache_problem);
        return match cached {
            Some(c) => Ok(from_cache(provider, c, problems)),
            None => bundled(provider, problems),
        };
    }

    let cached_etag = cached.as_ref().and_then(|c| c.file.etag.clone());
    // The last good list a fetched one is compared with: the cache, else the bundled list.
    let bundled_lists;
    let baseline = match &cached {
        Some(c) => Baseline {
            lists: &c.lists,
            name: format!("the cache from {}", c.file.fetched_at),
        },
        None => {
            let b = provider.bundled_ranges()?;
            bundled_lists = Lists {
                ipv4: b.ipv4,
                ipv6: b.ipv6,
            };
            Baseline {
                lists: &bundled_lists,
                name: format!("the bundled list of {}", provider.bundled.as_of),
            }
        }
    };
    let deadline = Instant::now() + opts.deadline;
    let fetched = client(opts).map_err(|e| e.to_string()).and_then(|client| {
        fetch_fresh(
            &client,
            provider,
            opts,
            cached_etag.as_deref(),
            &baseline,
            deadline,
        )
    });
    match (fetched, cached) {
        (Ok(Fresh::NotModified), Some(mut c)) => {
            let now = now_rfc3339();
            c.file.fetched_at = now.clone();
            if let Some(path) = &cache_path
                && let Err(e) = write_cache(path, &c.file)
            {
                problems.push(format!("could not refresh the cache: {e}"));
            }
            let mut r = from_cache(provider, c, problems);
            r.as_of = now;
            Ok(r)
        }
        (Ok(Fresh::New { lists, etag }), _) => {
            let now = now_rfc3339();
            if let Some(path) = &cache_path {
                let file = CacheFile {
                    etag: etag.clone(),
                    fetched_at: now.clone(),
                    ipv4: lists.ipv4.iter().map(|n| n.to_string()).collect(),
                    ipv6: lists.ipv6.iter().map(|n| n.to_string()).collect(),
                };
                if let Err(e) = write_cache(path, &file) {
                    problems.push(format!("could not write the cache: {e}"));
                }
            }
            Ok(ProviderRanges {
                provider: provider.name.clone(),
                source: RangeSource::Fetched,
                as_of: now,
                ipv4: lists.ipv4,
                ipv6: lists.ipv6,
                etag,
                problems,
            })
        }
        // `fetch_fresh` only sends If-None-Match with a cached etag, so a 304 without a cache
        // is a misbehaving server or mirror.
        (Ok(Fresh::NotModified), None) => {
            problems.push(format!(
                "could not fetch fresh {} ranges: the server answered 304 Not Modified to an \
                 unconditional request",
                provider.name
            ));
            problems.extend(cache_problem);
            bundled(provider, problems)
        }
        (Err(why), Some(c)) => {
            problems.push(format!(
                "could not fetch fresh {} ranges, using the cache from {}: {why}",
                provider.name, c.file.fetched_at
            ));
            Ok(from_cache(provider, c, problems))
        }
        (Err(why), None) => {
            problems.push(format!(
                "could not fetch fresh {} ranges, using the bundled list of {}: {why}",
                provider.name, provider.bundled.as_of
            ));
            problems.extend(cache_problem);
            bundled(provider, problems)
        }
    }
}

fn bundled(provider: &Provider, problems: Vec<String>) -> Result<ProviderRanges, RangesError> {
    let mut r = provider.bundled_ranges()?;
    r.problems = problems;
    Ok(r)
}

fn from_cache(provider: &Provider, c: Cached, problems: Vec<String>) -> ProviderRanges {
    ProviderRanges {
        provider: provider.name.clone(),
        source: RangeSource::Cache,
        as_of: c.file.fetched_at,
        ipv4: c.lists.ipv4,
        ipv6: c.lists.ipv6,
        etag: c.file.etag,
        problems,
    }
}

fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_else(|_| now.to_string())
}

// ---------------------------------------------------------------------------------------------
// --ranges-file

/// A `--ranges-file` passes the same syntax and plausibility checks as a fetched list (not the
/// change bound: the admin chose this list, there is no "previous" one).
fn read_ranges_file(provider: &Provider, path: &Path) -> Result<ProviderRanges, RangesError> {
    let origin = path.display().to_string();
    let io = |e: std::io::Error| RangesError::Io {
        origin: origin.clone(),
        reason: e.to_string(),
    };
    let meta = fs::metadata(path).map_err(io)?;
    let bytes = fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| RangesError::Malformed {
        origin: origin.clone(),
        reason: "not UTF-8 text".to_string(),
    })?;
    let (lists, etag) = validate::parse_any(&origin, &text)?;
    provider.check_plausible(&origin, &lists)?;
    // The file's own modification time is the best "as of" there is: it is when the admin (or
    // their script) saved this list.
    let as_of = meta
        .modified()
        .ok()
        .map(OffsetDateTime::from)
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(now_rfc3339);
    Ok(ProviderRanges {
        provider: provider.name.clone(),
        source: RangeSource::File,
        as_of,
        ipv4: lists.ipv4,
        ipv6: lists.ipv6,
        etag,
        problems: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP

enum Fresh {
    NotModified,
    New { lists: Lists, etag: Option<String> },
}

enum Response {
    NotModified,
    Body { text: String, etag: Option<String> },
}

/// The last good list and how to name it in a refusal.
struct Baseline<'a> {
    lists: &'a Lists,
    name: String,
}

/// Fetch from the API (or `--ranges-url`), falling back to the provider's text URLs. The error
/// is a sentence naming every URL tried and why each failed. A list is returned only if it
/// passes the plausibility checks and the change bound against `baseline`.
fn fetch_fresh(
    client: &Client,
    provider: &Provider,
    opts: &LoadOptions,
    cached_etag: Option<&str>,
    baseline: &Baseline<'_>,
    deadline: Instant,
) -> Result<Fresh, String> {
    let plausible = |origin: &str, lists: Lists| -> Result<Lists, RangesError> {
        provider.check_plausible(origin, &lists)?;
        policy::check_change(
            origin,
            baseline.lists,
            &baseline.name,
            &lists,
            provider.limits.max_change_percent,
        )?;
        Ok(lists)
    };
    let deadline = Deadline {
        at: deadline,
        total: opts.deadline,
    };
    let api = opts.url.as_deref().unwrap_or(&provider.api_url);
    let api_err = match get(client, api, cached_etag, deadline) {
        Ok(Response::NotModified) => return Ok(Fresh::NotModified),
        Ok(Response::Body { text, etag }) => match validate::parse_any(api, &text)
            .and_then(|(l, json_etag)| Ok((plausible(api, l)?, json_etag)))
        {
            // Prefer the HTTP ETag (what If-None-Match is compared against); the API's
            // `result.etag` is the fallback for servers that send no header.
            Ok((lists, json_etag)) => {
                return Ok(Fresh::New {
                    lists,
                    etag: etag.or(json_etag),
                });
            }
            Err(e) => format!("list refused: {e}"),
        },
        Err(e) => e.to_string(),
    };
    if opts.url.is_some() {
        return Err(api_err);
    }
    let text_lists = || -> Result<Lists, RangesError> {
        let mut nets = Vec::new();
        for (url, expect) in [
            (&provider.text_url_v4, Expect::V4),
            (&provider.text_url_v6, Expect::V6),
        ] {
            let text = match get(client, url, None, deadline)? {
                Response::Body { text, .. } => text,
                Response::NotModified => {
                    return Err(RangesError::Http {
                        origin: url.clone(),
                        reason: "304 Not Modified to an unconditional request".to_string(),
                    });
                }
            };
            nets.extend(validate::parse_text(url, &text, expect)?);
        }
        let origin = format!("{} + {}", provider.text_url_v4, provider.text_url_v6);
        plausible(&origin, validate::finish(&origin, nets)?)
    };
    match text_lists() {
        Ok(lists) => Ok(Fresh::New { lists, etag: None }),
        Err(e) => Err(format!("{api_err}; text fallback also failed: {e}")),
    }
}

/// When the whole fetch step must be over, and how long it was given (for messages).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    fn message(&self, what: &str) -> String {
        format!(
            "no complete answer within the {:?} deadline for the whole fetch (connect, headers \
             and body): {what}",
            self.total
        )
    }
}

fn get(
    client: &Client,
    url: &str,
    etag: Option<&str>,
    deadline: Deadline,
) -> Result<Response, RangesError> {
    let http = |reason: String| RangesError::Http {
        origin: url.to_string(),
        reason,
    };
    // The client is https-only too; this gives the clear message before any connection.
    if Url::parse(url)
        .map(|u| u.scheme() != "https")
        .unwrap_or(true)
    {
        return Err(RangesError::NotHttps {
            origin: url.to_string(),
        });
    }
    let left = deadline.at.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(http(deadline.message("no time left for this URL")));
    }
    // A per-request timeout is reqwest's total one: it also ends a body still being read.
    let mut req = client.get(url).timeout(left);
    // An etag that cannot be a header value (hand-edited cache) just makes the request
    // unconditional.
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&entity_tag(e)).ok()) {
        req = req.header(IF_NONE_MATCH, v);
    }
    // `without_url`: the URL is already the error's origin; do not repeat it.
    let mut resp = req.send().map_err(|e| {
        if deadline.passed() {
            http(deadline.message("no response headers"))
        } else {
            http(error_chain(&e.without_url()))
        }
    })?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Response::NotModified);
    }
    if !status.is_success() {
        return Err(http(format!("server answered {status}")));
    }
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // In chunks, checking the deadline between them: a server sending one byte a second must
    // not hold the run.
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if deadline.passed() {
            return Err(http(
                deadline.message(&format!("body cut after {} bytes", body.len())),
            ));
        }
        match resp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) if deadline.passed() => {
                return Err(http(
                    deadline.message(&format!("body cut after {} bytes", body.len())),
                ));
            }
            Err(e) => return Err(http(format!("reading the body: {e}"))),
        }
        if body.len() > MAX_BODY {
            return Err(RangesError::Malformed {
                origin: url.to_string(),
                reason: format!("body larger than {MAX_BODY} bytes"),
            });
        }
    }
    let text = String::from_utf8(body).map_err(|_| RangesError::Malformed {
        origin: url.to_string(),
        reason: "body is not UTF-8 text".to_string(),
    })?;
    Ok(Response::Body { text, etag })
}

/// If-None-Match takes entity-tags (`"x"` or `W/"x"`, RFC 9110 §8.8.3); the API's
/// `result.etag` is a bare hex string, so quote it.
fn entity_tag(e: &str) -> String {
    if e.starts_with('"') || e.starts_with("W/\"") {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
}

/// reqwest's top-level message ("error sending request") hides the cause (refused, timeout,
/// certificate): include the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Cache

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheFile {
    etag: Option<String>,
    fetched_at: String,
    ipv4: Vec<String>,
    ipv6: Vec<String>,
}

struct Cached {
    file: CacheFile,
    lists: Lists,
}

/// `/var/cache/origin-audit` when running as root (the systemd timer), else
/// `$XDG_CACHE_HOME/origin-audit` or `$HOME/.cache/origin-audit`. `None` without a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from("/var/cache/origin-audit"));
    }
    // XDG Base Directory spec: a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from)
        && x.is_absolute()
    {
        return Some(x.join("origin-audit"));
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .map(|h| h.join(".cache").join("origin-audit"))
}

/// Effective uid 0, from the `Uid:` line of /proc/self/status (real, effective, saved, fs; see
/// proc(5)). Reading procfs avoids `libc::geteuid` and thus `unsafe`.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| euid_from_status(&s))
        == Some(0)
}

fn euid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `Ok(None)`: no cache yet. `Err`: there is a file but it cannot be trusted. The cache passes
/// the plausibility checks again on every read, so a list cached by an older, laxer version is
/// not used.
fn read_cache(provider: &Provider, path: &Path) -> Result<Option<Cached>, RangesError> {
    let origin = format!("cache {}", path.display());
    // Not a symlink, not another user's, not writable by others: else not trusted.
    let text = match crate::safefs::trusted_file(path) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(None) => return Ok(None),
        Err(reason) => return Err(RangesError::Io { origin, reason }),
    };
    let file: CacheFile = serde_json::from_str(&text).map_err(|e| RangesError::Malformed {
        origin: origin.clone(),
        reason: format!("invalid cache JSON: {e}"),
    })?;
    if OffsetDateTime::parse(&file.fetched_at, &Rfc3339).is_err() {
        return Err(RangesError::Malformed {
            origin,
            reason: format!("fetched_at {:?} is not an RFC 3339 time", file.fetched_at),
        });
    }
    let lists = validate::validate_named(&origin, "ipv4", &file.ipv4, "ipv6", &file.ipv6)?;
    provider.check_plausible(&origin, &lists)?;
    Ok(Some(Cached { file, lists }))
}

/// Write the cache atomically: a reader sees the old file or the new one, never half of one.
fn write_cache(path: &Path, file: &CacheFile) -> Result<(), RangesError> {
    let origin = format!("cache {}", path.display());
    let io = |what: &str, e: std::io::Error| RangesError::Io {
        origin: origin.clone(),
        reason: format!("{what}: {e}"),
    };
    let dir = path.parent().ok_or_else(|| RangesError::Io {
        origin: origin.clone(),
        reason: "has no parent directory".to_string(),
    })?;
    fs::create_dir_all(dir).map_err(|e| io("creating the directory", e))?;
    let mut json = serde_json::to_string_pretty(file).map_err(|e| RangesError::Io {
        origin: origin.clone(),
        reason: e.to_string(),
    })?;
    json.push('\n');
    crate::safefs::trusted_dir(dir).map_err(|r| io("the directory", std::io::Error::other(r)))?;
    // Random O_EXCL temporary name, then rename: a planted symlink is replaced, never followed.
    // 0644: the lists are public and readers may be unprivileged.
    crate::safefs::write_atomic(path, json.as_bytes(), 0o644).map_err(|e| io("writing", e))?;
    // Make the rename itself durable. Not every filesystem allows fsync on a directory; the
    // file is already complete, so a failure here is not worth a problem.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap in a test is a failed test
mod tests {
    use super::*;

    #[test]
    fn euid_is_the_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(euid_from_status(status), Some(0));
        let status = "Uid:\t0\t1000\t1000\t1000\n";
        assert_eq!(euid_from_status(status), Some(1000));
        assert_eq!(euid_from_status("Name:\tx\n"), None);
    }

    #[test]
    fn redirects_stay_https_and_on_the_host() {
        let u = |s: &str| Url::parse(s).unwrap();
        let first = u("https://mirror.example/ips");
        let ok = |next: &str| redirect_refusal(Some(&first), &u(next), 1);
        assert_eq!(ok("https://mirror.example/ips/v2"), None);
        assert_eq!(ok("https://mirror.example:8443/ips"), None);
        assert_eq!(ok("https://www.cloudflare.com/ips-v4"), None);
        assert_eq!(ok("https://cloudflare.com/ips-v4"), None);
        assert_eq!(
            ok("http://mirror.example/ips").as_deref(),
            Some("redirect to http://mirror.example/ips refused: it leaves https")
        );
        assert_eq!(
            ok("https://evil.example/ips").as_deref(),
            Some(
                "redirect to https://evil.example/ips refused: evil.example is neither \
                 mirror.example nor a host under cloudflare.com"
            )
        );
        // A look-alike suffix is not "under cloudflare.com".
        assert!(ok("https://evilcloudflare.com/ips").is_some());
        assert!(ok("https://cloudflare.com.evil.example/ips").is_some());
        let far = redirect_refusal(Some(&first), &u("https://mirror.example/x"), 6);
        assert!(far.unwrap().contains("more than 5 redirects"));
    }

    #[test]
    fn entity_tags_are_quoted_once() {
        assert_eq!(entity_tag("abc"), "\"abc\"");
        assert_eq!(entity_tag("\"abc\""), "\"abc\"");
        assert_eq!(entity_tag("W/\"abc\""), "W/\"abc\"");
    }
}
