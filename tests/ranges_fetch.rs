//! `ranges::fetch::load` against real HTTPS (and, to prove they are refused, plain HTTP) servers
//! on loopback (std `TcpListener` in a thread, started by each test): fresh fetch, ETag
//! revalidation, refused lists (malformed, hostile, too big a change), server down, offline,
//! `--ranges-file`, a corrupted cache, plain http, redirects, a trickling body.
//!
//! The HTTPS servers use a private CA generated once per test binary; the fetch trusts it only
//! through `LoadOptions::ca_file` (what `--ranges-ca FILE` sets), as production would.
//!
//! Every server answers a fixed script of responses and then stops; it also stops when the test
//! calls `finish()` or after a deadline, and its thread is joined, so no test can hang on it.

// A failed unwrap here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod package_support;

use origin_audit::ranges::fetch::{LoadOptions, load};
use origin_audit::ranges::{Provider, ProviderRanges, RangeSource, RangesError, cloudflare};
use package_support::pem;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Send the body one byte a second (a server holding the client).
    trickle: bool,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.to_string(),
        trickle: false,
    }
}

fn redirect_to(location: &str) -> Reply {
    let mut r = reply(302, "");
    r.headers.push(("Location", location.to_string()));
    r
}

fn with_etag(mut r: Reply, etag: &str) -> Reply {
    r.headers.push(("ETag", etag.to_string()));
    r
}

/// What the server saw: request line and headers (names lower-cased).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Server {
    addr: SocketAddr,
    tls: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `script` over HTTPS (the test CA) in order, one connection each
    /// (`Connection: close`), then stop.
    fn start(script: Vec<Reply>) -> Server {
        Server::start_with(script, Some(test_ca().server.clone()))
    }

    /// As [`Server::start`], over plain HTTP.
    fn start_plain(script: Vec<Reply>) -> Server {
        Server::start_with(script, None)
    }

    /// As [`Server::start`], over TLS when `tls` is given.
    fn start_with(script: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let is_tls = tls.is_some();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut script = script.into_iter();
            let mut next = script.next();
            while next.is_some() && !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let (tcp, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let served = match &tls {
                    None => serve_one(tcp, next.as_ref().unwrap(), &stop2),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        serve_one(
                            rustls::StreamOwned::new(conn, tcp),
                            next.as_ref().unwrap(),
                            &stop2,
                        )
                    }
                };
                // A connection that never got as far as a request (failed TLS handshake) does
                // not use up a scripted reply.
                if let Some(s) = served {
                    seen2.lock().unwrap().push(s);
                    next = script.next();
                }
            }
        });
        Server {
            addr,
            tls: is_tls,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Stop the server, join its thread, return every request it saw.
    fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Read one request, answer `r`. `None` if no request could be read.
fn serve_one<S: std::io::Read + Write>(stream: S, r: &Reply, stop: &AtomicBool) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let reason = match r.status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        _ => "Whatever",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
    for (n, v) in &r.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if r.status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    out.push_str("\r\n");
    if r.status != 304 && !r.trickle {
        out.push_str(&r.body);
    }
    let mut stream = reader.into_inner();
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
    if r.trickle {
        // One byte a second until the body is out, the client hangs up, or the test stops us;
        // at most 60 bytes, so the loop is bounded even if nothing else ends it.
        'bytes: for b in r.body.as_bytes().iter().take(60) {
            if stream
                .write_all(&[*b])
                .and_then(|()| stream.flush())
                .is_err()
            {
                break;
            }
            for _ in 0..50 {
                if stop.load(Ordering::SeqCst) {
                    break 'bytes;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Some(Seen { path, headers })
}

/// The private CA (PEM file for `ca_file`) and the server configuration it signed, made once
/// per test binary. The file lives in Cargo's per-target temporary directory.
struct TestCa {
    server: Arc<rustls::ServerConfig>,
    pem: PathBuf,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let (server, pem) = private_tls();
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ranges_fetch-ca-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        TestCa { server, pem: path }
    })
}

/// A loopback address nobody listens on: bind, read the port, close.
fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("https://{addr}/client/v4/ips")
}

/// Cloudflare's provider with every URL on our server (or a closed port).
fn provider_at(api: &str, v4: &str, v6: &str) -> Provider {
    let mut p = cloudflare();
    p.api_url = api.to_string();
    p.text_url_v4 = v4.to_string();
    p.text_url_v6 = v6.to_string();
    p
}

/// The API's JSON shape.
fn api_body(v4: &[&str], v6: &[&str], etag: &str) -> String {
    serde_json::json!({
        "result": {"ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": etag},
        "success": true, "errors": [], "messages": []
    })
    .to_string()
}

/// A real list that differs from the bundled one, so a test can tell which source it got:
/// Cloudflare's IPv4 list before April 2021 (104.16.0.0/12, later split into 104.16.0.0/13 and
/// 104.24.0.0/14), and the IPv6 list.
const V4: [&str; 14] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/12",
    "172.64.0.0/13",
    "131.0.72.0/22",
];
const V6: [&str; 7] = [
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// One CIDR a line, as ips-v4 / ips-v6 serve it.
fn text(list: &[&str]) -> String {
    list.iter().map(|n| format!("{n}\n")).collect()
}

fn good_api() -> Reply {
    with_etag(
        reply(200, &api_body(&V4, &V6, "bodyetag1")),
        "\"httpetag1\"",
    )
}

/// Production options, with the cache in `cache` and the test CA trusted (`--ranges-ca`).
fn opts(cache: &Path) -> LoadOptions {
    LoadOptions {
        cache_dir: Some(cache.to_path_buf()),
        ca_file: Some(test_ca().pem.clone()),
        ..Default::default()
    }
}

fn nets(r: &ProviderRanges) -> (Vec<String>, Vec<String>) {
    (
        r.ipv4.iter().map(|n| n.to_string()).collect(),
        r.ipv6.iter().map(|n| n.to_string()).collect(),
    )
}

/// A list as validation leaves it: sorted, as strings.
fn sorted(v4: &[&str], v6: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut a: Vec<ipnet::Ipv4Net> = v4.iter().map(|s| s.parse().unwrap()).collect();
    let mut b: Vec<ipnet::Ipv6Net> = v6.iter().map(|s| s.parse().unwrap()).collect();
    a.sort_unstable();
    b.sort_unstable();
    (
        a.iter().map(|n| n.to_string()).collect(),
        b.iter().map(|n| n.to_string()).collect(),
    )
}

fn expected_fetched() -> (Vec<String>, Vec<String>) {
    sorted(&V4, &V6)
}

fn seconds_ago(as_of: &str) -> i64 {
    let t = OffsetDateTime::parse(as_of, &Rfc3339).unwrap();
    (OffsetDateTime::now_utc() - t).whole_seconds()
}

/// Fill the cache with the good list through a real fetch; returns the cache file's content.
fn prime_cache(cache: &Path) -> String {
    let server = Server::start(vec![good_api()]);
    let p = provider_at(&server.url("/api"), &server.url("/v4"), &server.url("/v6"));
    let r = load(&p, &opts(cache)).unwrap();
    assert_eq!(r.source, RangeSource::Fetched, "{:?}", r.problems);
    assert_eq!(server.finish().len(), 1);
    std::fs::read_to_string(cache.join("cloudflare.json")).unwrap()
}

#[test]
fn fetch_writes_cache_then_revalidates_with_if_none_match() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("sub"); // created on demand

    let server = Server::start(vec![good_api(), reply(304, "")]);
    let p = provider_at(&server.url("/client/v4/ips"), &closed_url(), &closed_url());

    let first = load(&p, &opts(&cache)).unwrap();
    assert_eq!(first.source, RangeSource::Fetched);
    assert_eq!(first.problems, Vec::<String>::new());
    assert_eq!(nets(&first), expected_fetched());
    assert_eq!(first.etag.as_deref(), Some("\"httpetag1\""));
    assert!(seconds_ago(&first.as_of) < 60, "{}", first.as_of);

    let file = cache.join("cloudflare.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["etag"], "\"httpetag1\"");
    assert_eq!(written["fetched_at"], first.as_of.as_str());
    assert_eq!(written["ipv4"], serde_json::json!(expected_fetched().0));
    assert_eq!(written["ipv6"], serde_json::json!(expected_fetched().1));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Atomic write leaves no temporary file behind.
    let names: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cloudflare.json")]);

    // Make the cached fetch time old, to see a 304 refresh it.
    let old = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&first.as_of, "2020-01-01T00:00:00Z");
    std::fs::write(&file, old).unwrap();

    let second = load(&p, &opts(&cache)).unwrap();
    let seen = server.finish();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/client/v4/ips");
    assert_eq!(seen[0].header("if-none-match"), None);
    assert_eq!(seen[1].header("if-none-match"), Some("\"httpetag1\""));
    assert!(
        seen[1]
            .header("user-agent")
            .unwrap_or("")
            .starts_with("origin-audit/")
    );

    assert_eq!(second.source, RangeSource::Cache);
    assert_eq!(second.problems, Vec::<String>::new());
    assert_eq!(nets(&second), expected_fetched());
    // Just confirmed current by the server: age zero, and the cache says so too.
    assert!(seconds_ago(&second.as_of) < 60, "{}", second.as_of);
    let refreshed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(refreshed["fetched_at"], second.as_of.as_str());
}

#[test]
fn body_etag_is_used_when_the_server_sends_no_etag_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![
        reply(200, &api_body(&V4, &V6, "abc123")),
        reply(304, ""),
    ]);
    let mut o = opts(dir.path());
    o.url = Some(server.url("/mirror"));
    let first = load(&cloudflare(), &o).unwrap();
    assert_eq!(first.source, RangeSource::Fetched);
    assert_eq!(first.etag.as_deref(), Some("abc123"));
    let second = load(&cloudflare(), &o).unwrap();
    assert_eq!(second.source, RangeSource::Cache);
    let seen = server.finish();
    assert_eq!(seen[1].header("if-none-match"), Some("\"abc123\""));
}

#[test]
fn invalid_lists_are_refused_and_the_previous_cache_is_used() {
    let html = "<!DOCTYPE html>\n<html><body>Please log in to the hotel WiFi</body></html>\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("a /4", api_body(&["16.0.0.0/4"], &V6, "x"), "\"16.0.0.0/4\" is wider than /8"),
        ("html", html.to_string(), "line 1: \"<!DOCTYPE html>\" is not an address/prefix"),
        (
            "success:false",
            r#"{"result":null,"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#
                .to_string(),
            "success: false",
        ),
        ("empty v6", api_body(&V4, &[], "x"), "no IPv6 ranges"),
        ("text without v6", "173.245.48.0/20\n".to_string(), "no IPv6 ranges"),
        (
            "over 1 MiB",
            text(&V4).repeat(5000) + &text(&V6),
            "body larger than 1048576 bytes",
        ),
    ];
    for (what, body, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let before = prime_cache(dir.path());

        let server = Server::start(vec![reply(200, &body)]);
        let url = server.url("/mirror/ips");
        let mut o = opts(dir.path());
        o.url = Some(url.clone());
        let r = load(&cloudflare(), &o).unwrap();
        assert_eq!(server.finish().len(), 1, "{what}");

        assert_eq!(r.source, RangeSource::Cache, "{what}");
        assert_eq!(nets(&r), expected_fetched(), "{what}");
        assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
        let p = &r.problems[0];
        assert!(p.contains(&url), "{what}: {p}");
        assert!(p.contains(reason), "{what}: {p}");
        assert!(p.contains("using the cache from"), "{what}: {p}");
        // The refused list did not overwrite the cache.
        let after = std::fs::read_to_string(dir.path().join("cloudflare.json")).unwrap();
        assert_eq!(after, before, "{what}");
    }
}

#[test]
fn http_error_status_falls_back_to_the_text_lists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![
        reply(503, "upstream down"),
        reply(200, &text(&V4).replace('\n', "\r\n")),
        reply(200, text(&V6).replace('\n', "\n\n").trim_end()),
    ]);
    let p = provider_at(
        &server.url("/api"),
        &server.url("/ips-v4"),
        &server.url("/ips-v6"),
    );
    let r = load(&p, &opts(dir.path())).unwrap();
    let seen = server.finish();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/api", "/ips-v4", "/ips-v6"]);
    assert_eq!(r.source, RangeSource::Fetched);
    assert_eq!(r.etag, None);
    assert_eq!(nets(&r), expected_fetched());
    assert!(dir.path().join("cloudflare.json").exists());
}

#[test]
fn a_bad_text_fallback_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![
        reply(500, ""),
        reply(200, "173.245.48.0/20\n"),
        reply(200, "<html>captive</html>"),
    ]);
    let p = provider_at(
        &server.url("/api"),
        &server.url("/ips-v4"),
        &server.url("/ips-v6"),
    );
    let r = load(&p, &opts(dir.path())).unwrap();
    assert_eq!(server.finish().len(), 3);
    assert_eq!(r.source, RangeSource::Bundled);
    let p0 = &r.problems[0];
    assert!(p0.contains("500"), "{p0}");
    assert!(
        p0.contains("/ips-v6: line 1: \"<html>captive</html>\""),
        "{p0}"
    );
    assert!(!dir.path().join("cloudflare.json").exists());
}

#[test]
fn ranges_url_disables_the_text_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![reply(503, ""), reply(200, "173.245.48.0/20\n")]);
    let p = provider_at(
        &server.url("/api"),
        &server.url("/ips-v4"),
        &server.url("/ips-v6"),
    );
    let mut o = opts(dir.path());
    o.url = Some(server.url("/mirror"));
    let r = load(&p, &o).unwrap();
    let seen = server.finish();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/mirror");
    assert_eq!(r.source, RangeSource::Bundled);
}

#[test]
fn server_down_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    prime_cache(dir.path());
    let down = closed_url();
    let p = provider_at(&down, &closed_url(), &closed_url());
    let r = load(&p, &opts(dir.path())).unwrap();
    assert_eq!(r.source, RangeSource::Cache);
    assert_eq!(nets(&r), expected_fetched());
    assert_eq!(r.etag.as_deref(), Some("\"httpetag1\""));
    // as_of stays the time of the fetch that filled the cache, not now.
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cloudflare.json")).unwrap())
            .unwrap();
    assert_eq!(cached["fetched_at"], r.as_of.as_str());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains(&down), "{}", r.problems[0]);
    assert!(
        r.problems[0].contains("text fallback also failed"),
        "{}",
        r.problems[0]
    );
}

#[test]
fn no_cache_and_server_down_uses_the_bundled_list() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider_at(&closed_url(), &closed_url(), &closed_url());
    let r = load(&p, &opts(dir.path())).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert_eq!(r.as_of, p.bundled.as_of);
    assert_eq!(r.ipv4.len(), p.bundled.ipv4.len());
    assert_eq!(r.ipv6.len(), p.bundled.ipv6.len());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].contains("using the bundled list of"),
        "{}",
        r.problems[0]
    );
    assert!(r.age_days(OffsetDateTime::now_utc()).is_some());
}

#[test]
fn offline_never_touches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![good_api()]);
    let p = provider_at(&server.url("/api"), &server.url("/v4"), &server.url("/v6"));
    let mut o = opts(dir.path());
    o.offline = true;

    // No cache yet: bundled, and no complaint about the network.
    let r = load(&p, &o).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert_eq!(r.problems, Vec::<String>::new());

    // With a cache: the cache.
    let before = prime_cache(dir.path());
    let r = load(&p, &o).unwrap();
    assert_eq!(r.source, RangeSource::Cache);
    assert_eq!(r.problems, Vec::<String>::new());
    assert_eq!(nets(&r), expected_fetched());

    assert_eq!(server.finish().len(), 0, "offline load sent a request");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cloudflare.json")).unwrap(),
        before
    );
}

#[test]
fn corrupted_cache_is_ignored_with_a_problem() {
    for garbage in [
        "{\"etag\":null,\"fetched_at\":\"2025-01-01T00:00:00Z\",\"ipv4\":[\"0.0.0.0/0\"],\"ipv6\":[\"2400:cb00::/32\"]}",
        "{\"etag\":null,\"fetched_at\":\"yesterday\",\"ipv4\":[\"1.0.0.0/24\"],\"ipv6\":[\"2400:cb00::/32\"]}",
        "\u{0}\u{0}\u{0}\u{0}",
        "{\"etag\":null,\"fetched_at\":\"2025-01-01T00:00:00Z\",\"ipv4\":[\"1.0.0.0/24\"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cloudflare.json");
        std::fs::write(&file, garbage).unwrap();
        let cache_name = format!("cache {}", file.display());

        // Network down: bundled, saying why the fetch failed and why the cache was not used.
        let p = provider_at(&closed_url(), &closed_url(), &closed_url());
        let r = load(&p, &opts(dir.path())).unwrap();
        assert_eq!(r.source, RangeSource::Bundled, "{garbage}");
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(
            r.problems[1].starts_with("cached ranges ignored: "),
            "{}",
            r.problems[1]
        );
        assert!(r.problems[1].contains(&cache_name), "{}", r.problems[1]);

        // Offline: bundled with the note about the cache only.
        let mut o = opts(dir.path());
        o.offline = true;
        let r = load(&p, &o).unwrap();
        assert_eq!(r.source, RangeSource::Bundled);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains(&cache_name), "{}", r.problems[0]);

        // Network up: a fresh fetch (unconditional: the corrupted etag is not trusted)
        // replaces the bad cache.
        let server = Server::start(vec![good_api()]);
        let mut o = opts(dir.path());
        o.url = Some(server.url("/api"));
        let r = load(&cloudflare(), &o).unwrap();
        let seen = server.finish();
        assert_eq!(seen[0].header("if-none-match"), None);
        assert_eq!(r.source, RangeSource::Fetched);
        assert_eq!(r.problems, Vec::<String>::new());
        o.offline = true;
        assert_eq!(load(&cloudflare(), &o).unwrap().source, RangeSource::Cache);
    }
}

#[test]
fn cache_that_cannot_be_written_is_a_problem_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A directory path below a regular file cannot be created, even by root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let server = Server::start(vec![good_api()]);
    let mut o = opts(&blocker.join("cache"));
    o.url = Some(server.url("/api"));
    let r = load(&cloudflare(), &o).unwrap();
    server.finish();
    assert_eq!(r.source, RangeSource::Fetched);
    assert_eq!(nets(&r), expected_fetched());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].starts_with("could not write the cache: cache "),
        "{}",
        r.problems[0]
    );
}

#[test]
fn ranges_file_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![good_api()]);
    let mut o = opts(dir.path());
    o.url = Some(server.url("/api"));

    let text_file = dir.path().join("ips.txt");
    let body = format!("{}\r\n{}", text(&V6), text(&V4)).replace('\n', "\r\n");
    std::fs::write(&text_file, body.trim_end()).unwrap();
    o.file = Some(text_file.clone());
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(r.source, RangeSource::File);
    assert_eq!(r.etag, None);
    assert_eq!(r.problems, Vec::<String>::new());
    assert_eq!(nets(&r), expected_fetched());
    let mtime = OffsetDateTime::from(std::fs::metadata(&text_file).unwrap().modified().unwrap());
    let as_of = OffsetDateTime::parse(&r.as_of, &Rfc3339).unwrap();
    assert!(
        (mtime - as_of).whole_seconds().abs() <= 1,
        "{} vs {mtime}",
        r.as_of
    );

    let json = dir.path().join("ips.json");
    std::fs::write(&json, api_body(&V4, &V6, "fileetag")).unwrap();
    o.file = Some(json);
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(r.source, RangeSource::File);
    assert_eq!(r.etag.as_deref(), Some("fileetag"));
    assert_eq!(nets(&r), expected_fetched());

    // A refused file is an error naming it and the entry, not a silent switch to another list.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "173.245.48.0/20\n2400:cb00::/32\n16.0.0.0/4\n").unwrap();
    o.file = Some(bad.clone());
    let e = load(&cloudflare(), &o).unwrap_err();
    assert_eq!(
        e,
        RangesError::TooWide {
            origin: bad.display().to_string(),
            at: "line 3".into(),
            entry: "16.0.0.0/4".into(),
            min_prefix: 8
        }
    );
    // A file passes the same plausibility checks as a fetched list.
    let private = dir.path().join("private.txt");
    std::fs::write(&private, format!("10.0.0.0/8\n{}{}", text(&V4), text(&V6))).unwrap();
    o.file = Some(private.clone());
    let e = load(&cloudflare(), &o).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: 10.0.0.0/8 is private-use (RFC 1918) space (10.0.0.0/8), never a provider's \
             range",
            private.display()
        )
    );
    o.file = Some(dir.path().join("missing.txt"));
    let e = load(&cloudflare(), &o).unwrap_err();
    assert!(matches!(e, RangesError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing.txt"), "{e}");

    assert_eq!(server.finish().len(), 0, "--ranges-file must not fetch");
    assert!(
        !dir.path().join("cloudflare.json").exists(),
        "--ranges-file must not write the cache"
    );
}

/// A private CA (as PEM) and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn private_tls() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (Arc::new(cfg), pem("CERTIFICATE", ca_cert.der()))
}

#[test]
fn https_fetch_trusts_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![good_api()]);
    let mut o = opts(dir.path());
    o.url = Some(server.url("/client/v4/ips"));
    let r = load(&cloudflare(), &o).unwrap();
    let seen = server.finish();
    assert_eq!(seen.len(), 1);
    assert_eq!(r.source, RangeSource::Fetched, "{:?}", r.problems);
    assert_eq!(nets(&r), expected_fetched());
}

#[test]
fn https_server_with_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![good_api()]);
    let url = server.url("/client/v4/ips");
    let mut o = opts(dir.path());
    o.url = Some(url.clone());
    // No --ranges-ca: system trust only, which does not include our private CA.
    o.ca_file = None;
    let r = load(&cloudflare(), &o).unwrap();
    let seen = server.finish();
    assert_eq!(
        seen.len(),
        0,
        "a request got through an untrusted TLS connection"
    );
    assert_eq!(r.source, RangeSource::Bundled);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains(&url), "{}", r.problems[0]);
    assert!(
        r.problems[0].to_lowercase().contains("certificate"),
        "{}",
        r.problems[0]
    );
}

#[test]
fn an_unusable_ca_file_is_a_problem_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (ca, why) in [
        (dir.path().join("missing.pem"), "No such file"),
        (not_pem, "holds no PEM certificate"),
    ] {
        let server = Server::start(vec![good_api()]);
        let mut o = opts(&dir.path().join("cache"));
        o.url = Some(server.url("/ips"));
        o.ca_file = Some(ca.clone());
        let r = load(&cloudflare(), &o).unwrap();
        assert_eq!(server.finish().len(), 0);
        assert_eq!(r.source, RangeSource::Bundled);
        let p = &r.problems[0];
        assert!(
            p.contains(&format!("CA file {}", ca.display())) && p.contains(why),
            "{p}"
        );
    }
}

/// The hostile lists of the bug report, each as a mirror would serve it, with the words the
/// refusal must contain.
fn hostile_lists() -> Vec<(&'static str, String, String)> {
    let many: String = (0..50_000u32)
        .map(|i| {
            let a = u32::from(std::net::Ipv4Addr::new(20, 0, 0, 0)) + i * 256;
            format!("{}/24\n", std::net::Ipv4Addr::from(a))
        })
        .collect();
    // Inside the allocations and plausible in size, but most of the address space gone.
    let cut = [
        "173.245.48.0/20",
        "103.21.244.0/22",
        "103.22.200.0/22",
        "103.31.4.0/22",
        "131.0.72.0/22",
    ];
    vec![
        (
            "private + ULA",
            api_body(&["10.0.0.0/8"], &["fd00::/16"], "x"),
            "10.0.0.0/8 is private-use (RFC 1918) space".to_string(),
        ),
        (
            "documentation",
            text(&["198.51.100.0/24", "2001:db8::/32"]),
            "198.51.100.0/24 is documentation TEST-NET-2 (RFC 5737) space".to_string(),
        ),
        (
            "a single v4 entry",
            api_body(&["173.245.48.0/20"], &V6, "x"),
            "1 IPv4 ranges, outside the plausible 5..=200".to_string(),
        ),
        (
            "50,000 /24s",
            many + &text(&V6),
            "20.0.0.0/24 is outside every allocation of cloudflare".to_string(),
        ),
        (
            "most of the space removed",
            api_body(&cut, &V6, "x"),
            "the IPv4 list changes too much at once compared with".to_string(),
        ),
    ]
}

#[test]
fn hostile_lists_are_refused_never_cached_and_the_last_good_list_is_used() {
    for (what, body, reason) in hostile_lists() {
        // With a good cache: the cache, unchanged, and offline runs keep using it.
        let dir = tempfile::tempdir().unwrap();
        let before = prime_cache(dir.path());
        let server = Server::start(vec![reply(200, &body)]);
        let url = server.url("/mirror/ips");
        let mut o = opts(dir.path());
        o.url = Some(url.clone());
        let r = load(&cloudflare(), &o).unwrap();
        assert_eq!(server.finish().len(), 1, "{what}");
        assert_eq!(r.source, RangeSource::Cache, "{what}: {:?}", r.problems);
        assert_eq!(nets(&r), expected_fetched(), "{what}");
        assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
        let p = &r.problems[0];
        assert!(p.contains("using the cache from"), "{what}: {p}");
        assert!(p.contains(&format!("list refused: {url}: ")), "{what}: {p}");
        assert!(p.contains(&reason), "{what}: {p}");
        assert!(
            p.len() < 2000,
            "{what}: the problem is not shortened: {}",
            p.len()
        );
        let file = dir.path().join("cloudflare.json");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "{what}");
        o.offline = true;
        let r = load(&cloudflare(), &o).unwrap();
        assert_eq!(
            (r.source, nets(&r)),
            (RangeSource::Cache, expected_fetched())
        );

        // Without a cache: the bundled list, and still nothing cached.
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(vec![reply(200, &body)]);
        let mut o = opts(dir.path());
        o.url = Some(server.url("/mirror/ips"));
        let r = load(&cloudflare(), &o).unwrap();
        server.finish();
        assert_eq!(r.source, RangeSource::Bundled, "{what}: {:?}", r.problems);
        let p = &r.problems[0];
        assert!(p.contains("using the bundled list of"), "{what}: {p}");
        assert!(p.contains(&reason), "{what}: {p}");
        if what == "most of the space removed" {
            assert!(
                p.contains("compared with the bundled list of 2026-07-02"),
                "{p}"
            );
            assert!(
                p.contains("added: none; removed: 104.16.0.0/13, 104.24.0.0/14"),
                "{p}"
            );
        }
        assert!(!dir.path().join("cloudflare.json").exists(), "{what}");
    }
}

#[test]
fn a_poisoned_cache_from_a_laxer_version_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudflare.json");
    std::fs::write(
        &file,
        r#"{"etag":null,"fetched_at":"2025-01-01T00:00:00Z","ipv4":["10.0.0.0/8"],"ipv6":["fd00::/16"]}"#,
    )
    .unwrap();
    let mut o = opts(dir.path());
    o.offline = true;
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0].contains("10.0.0.0/8 is private-use (RFC 1918) space"),
        "{}",
        r.problems[0]
    );
}

/// The binary end to end: a hostile mirror with `--ranges-ca`, a ruleset that drops Cloudflare.
/// The report must not be an all clear: it audits the bundled list and says why.
#[test]
fn check_with_a_hostile_mirror_reports_ranges_fallback_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(vec![reply(
        200,
        &api_body(&["10.0.0.0/8"], &["fd00::/16"], "x"),
    )]);
    let fixture = |p: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/iptables")
            .join(p)
    };
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_origin-audit"))
        .args(["check", "--format", "json", "--ranges-url"])
        .arg(server.url("/ips"))
        .arg("--ranges-ca")
        .arg(&test_ca().pem)
        .arg("--cache-dir")
        .arg(dir.path())
        .arg("--iptables-save")
        .arg(fixture("ufw-v4.nft.rules"))
        .arg("--ip6tables-save")
        .arg(fixture("ufw-v6.nft.rules"))
        .args([
            "--iface",
            "eth0",
            "--dest",
            "203.0.113.2",
            "--dest",
            "2001:db8:1::2",
        ])
        .output()
        .unwrap();
    server.finish();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_ne!(v["status"], "ok", "{v}");
    assert_eq!(v["ranges"]["source"], "bundled", "{v}");
    let fallback: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "ranges-fallback")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(fallback.len(), 1, "{v}");
    assert!(
        fallback[0].contains("10.0.0.0/8 is private-use"),
        "{}",
        fallback[0]
    );
    assert!(!dir.path().join("cloudflare.json").exists());

    // A plain http:// --ranges-url is refused by the command line itself.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_origin-audit"))
        .args(["check", "--ranges-url", "http://mirror.example/ips"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "a usage error is unknown (exit 3)"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only https:// URLs are fetched"), "{err}");
}

#[test]
fn plain_http_is_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Server::start_plain(vec![good_api(), good_api(), good_api()]);
    // As --ranges-url...
    let mut o = opts(dir.path());
    o.url = Some(plain.url("/ips"));
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert!(
        r.problems[0].contains(&format!(
            "{}: refused: only https:// URLs are fetched",
            plain.url("/ips")
        )),
        "{}",
        r.problems[0]
    );
    // ...and as the provider's own URLs (API and both text fallbacks).
    let p = provider_at(&plain.url("/api"), &plain.url("/v4"), &plain.url("/v6"));
    let r = load(&p, &opts(dir.path())).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert!(
        r.problems[0].contains("text fallback also failed"),
        "{}",
        r.problems[0]
    );
    assert_eq!(plain.finish().len(), 0, "a plain http request was sent");
    assert!(!dir.path().join("cloudflare.json").exists());
}

#[test]
fn redirects_must_stay_https_and_on_the_host() {
    // https → http: refused, the plain server never asked.
    let dir = tempfile::tempdir().unwrap();
    let plain = Server::start_plain(vec![good_api()]);
    let plain_url = plain.url("/ips");
    let tls = Server::start(vec![redirect_to(&plain_url)]);
    let mut o = opts(dir.path());
    o.url = Some(tls.url("/ips"));
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(tls.finish().len(), 1);
    assert_eq!(plain.finish().len(), 0, "the redirect to http was followed");
    assert_eq!(r.source, RangeSource::Bundled);
    let p = &r.problems[0];
    assert!(
        p.contains(&format!("redirect to {plain_url} refused: it leaves https")),
        "{p}"
    );

    // https to another host (localhost, not 127.0.0.1; the certificate is valid for both).
    let other = Server::start(vec![good_api()]);
    let elsewhere = format!("https://localhost:{}/ips", other.addr.port());
    let tls = Server::start(vec![redirect_to(&elsewhere)]);
    o.url = Some(tls.url("/ips"));
    let r = load(&cloudflare(), &o).unwrap();
    tls.finish();
    assert_eq!(
        other.finish().len(),
        0,
        "the redirect to another host was followed"
    );
    let p = &r.problems[0];
    assert!(
        p.contains("localhost is neither 127.0.0.1 nor a host under cloudflare.com"),
        "{p}"
    );

    // Same host, https: followed.
    let same = Server::start(vec![good_api()]);
    let tls = Server::start(vec![redirect_to(&same.url("/v2/ips"))]);
    o.url = Some(tls.url("/ips"));
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(tls.finish().len(), 1);
    assert_eq!(same.finish()[0].path, "/v2/ips");
    assert_eq!(r.source, RangeSource::Fetched, "{:?}", r.problems);
    assert_eq!(nets(&r), expected_fetched());
}

#[test]
fn a_trickling_body_is_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut slow = reply(200, &api_body(&V4, &V6, "x"));
    slow.trickle = true;
    let server = Server::start(vec![slow]);
    let mut o = opts(dir.path());
    o.url = Some(server.url("/ips"));
    o.deadline = Duration::from_millis(1500);
    let started = Instant::now();
    let r = load(&cloudflare(), &o).unwrap();
    let took = started.elapsed();
    server.finish();
    assert!(took < Duration::from_secs(5), "the fetch took {took:?}");
    assert!(
        took >= Duration::from_millis(1400),
        "cut too early: {took:?}"
    );
    assert_eq!(r.source, RangeSource::Bundled);
    let p = &r.problems[0];
    assert!(
        p.contains("no complete answer within the 1.5s deadline for the whole fetch"),
        "{p}"
    );
    assert!(p.contains("body cut after"), "{p}");
    assert!(!dir.path().join("cloudflare.json").exists());
}

#[test]
fn a_cache_others_can_write_or_planted_by_another_user_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let p = provider_at(&closed_url(), &closed_url(), &closed_url());
    // A list that drops nothing Cloudflare really uses would audit as OK: planted by another user.
    let planted = r#"{"etag":null,"fetched_at":"2026-11-01T00:00:00Z","ipv4":["173.245.48.0/20","103.21.244.0/22","103.22.200.0/22","103.31.4.0/22","141.101.64.0/18"],"ipv6":["2400:cb00::/32","2606:4700::/32"]}"#;

    // World-writable cache directory: refused outright, naming the directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cloudflare.json"), planted).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut o = opts(dir.path());
    o.offline = true;
    let e = load(&p, &o).unwrap_err().to_string();
    assert!(e.contains("writable by group or others"), "{e}");
    assert!(e.contains("--cache-dir"), "{e}");

    // A private directory, but the file belongs to another user (as root, chown to nobody):
    // ignored with a problem, the bundled list used.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("cloudflare.json");
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).expect("the suite runs as root");
    let r = load(&p, &o).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert!(
        r.problems.iter().any(|x| x.contains("owned by uid 65534")),
        "{:?}",
        r.problems
    );
    // A symlinked cache file is not followed either.
    std::fs::remove_file(&f).unwrap();
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, planted).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &f).unwrap();
    let r = load(&p, &o).unwrap();
    assert_eq!(r.source, RangeSource::Bundled);
    assert!(
        r.problems.iter().any(|x| x.contains("symbolic link")),
        "{:?}",
        r.problems
    );
}
