//! The only I/O for ranges: HTTPS fetch (reqwest blocking + rustls, `If-None-Match`), the
//! atomic cache file, and `--ranges-file`.
//!
//! Owns: the fallback order and the cache format. Must not: judge entries itself (that is
//! `validate`, pure) or decide verdicts.
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

use super::validate::{self, Expect, Lists, RangesError};
use super::{Provider, ProviderRanges, RangeSource};
use reqwest::StatusCode;
use reqwest::blocking::{Client, ClientBuilder};
use reqwest::header::{ETAG, HeaderValue, IF_NONE_MATCH};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Default)]
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
}

/// Connect and whole-request timeouts: the fetch runs before every audit, and a dead network
/// must cost seconds, not minutes, before the cache is used.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The real lists are ~1 KiB; anything this big is not a range list.
const MAX_BODY: u64 = 1 << 20;

/// The HTTP client configuration production uses (rustls, timeouts, user agent). Public so a
/// test can add a private root certificate and still exercise the same settings.
pub fn client_builder() -> ClientBuilder {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .user_agent(concat!("origin-audit/", env!("CARGO_PKG_VERSION")))
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
    load_with(provider, opts, &|| {
        client_builder().build().map_err(|e| RangesError::Http {
            origin: "HTTP client".to_string(),
            reason: error_chain(&e),
        })
    })
}

/// [`load`] with a caller-built client (tests: a private root certificate for an HTTPS server).
pub fn load_with_client(
    provider: &Provider,
    opts: &LoadOptions,
    client: &Client,
) -> Result<ProviderRanges, RangesError> {
    load_with(provider, opts, &|| Ok(client.clone()))
}

type MakeClient<'a> = &'a dyn Fn() -> Result<Client, RangesError>;

fn load_with(
    provider: &Provider,
    opts: &LoadOptions,
    make_client: MakeClient<'_>,
) -> Result<ProviderRanges, RangesError> {
    if let Some(path) = &opts.file {
        return read_ranges_file(&provider.name, path);
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
    let (cached, cache_problem) = match cache_path.as_deref().map(read_cache) {
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
    let fetched = make_client()
        .map_err(|e| e.to_string())
        .and_then(|client| fetch_fresh(&client, provider, opts, cached_etag.as_deref()));
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

fn read_ranges_file(provider: &str, path: &Path) -> Result<ProviderRanges, RangesError> {
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
        provider: provider.to_string(),
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

/// Fetch from the API (or `--ranges-url`), falling back to the provider's text URLs. The error
/// is a sentence naming every URL tried and why each failed.
fn fetch_fresh(
    client: &Client,
    provider: &Provider,
    opts: &LoadOptions,
    cached_etag: Option<&str>,
) -> Result<Fresh, String> {
    let api = opts.url.as_deref().unwrap_or(&provider.api_url);
    let api_err = match get(client, api, cached_etag) {
        Ok(Response::NotModified) => return Ok(Fresh::NotModified),
        Ok(Response::Body { text, etag }) => match validate::parse_any(api, &text) {
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
            let text = match get(client, url, None)? {
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
        validate::finish(
            &format!("{} + {}", provider.text_url_v4, provider.text_url_v6),
            nets,
        )
    };
    match text_lists() {
        Ok(lists) => Ok(Fresh::New { lists, etag: None }),
        Err(e) => Err(format!("{api_err}; text fallback also failed: {e}")),
    }
}

fn get(client: &Client, url: &str, etag: Option<&str>) -> Result<Response, RangesError> {
    let http = |reason: String| RangesError::Http {
        origin: url.to_string(),
        reason,
    };
    let mut req = client.get(url);
    // An etag that cannot be a header value (hand-edited cache) just makes the request
    // unconditional.
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&entity_tag(e)).ok()) {
        req = req.header(IF_NONE_MATCH, v);
    }
    // `without_url`: the URL is already the error's origin; do not repeat it.
    let resp = req
        .send()
        .map_err(|e| http(error_chain(&e.without_url())))?;
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
    let mut body = Vec::new();
    resp.take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| http(format!("reading the body: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err(RangesError::Malformed {
            origin: url.to_string(),
            reason: format!("body larger than {MAX_BODY} bytes"),
        });
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

/// `Ok(None)`: no cache yet. `Err`: there is a file but it cannot be trusted.
fn read_cache(path: &Path) -> Result<Option<Cached>, RangesError> {
    let origin = format!("cache {}", path.display());
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RangesError::Io {
                origin,
                reason: e.to_string(),
            });
        }
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
    Ok(Some(Cached { file, lists }))
}

/// Write the cache atomically: a reader sees the old file or the new one, never half of one.
fn write_cache(path: &Path, file: &CacheFile) -> Result<(), RangesError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cache");
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| io("creating a temporary file", e))?;
        // The umask may have narrowed the mode; the lists are public and readers may be
        // unprivileged.
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| io("setting mode 0644", e))?;
        f.write_all(json.as_bytes()).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
        fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
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
    fn entity_tags_are_quoted_once() {
        assert_eq!(entity_tag("abc"), "\"abc\"");
        assert_eq!(entity_tag("\"abc\""), "\"abc\"");
        assert_eq!(entity_tag("W/\"abc\""), "W/\"abc\"");
    }
}
