//! `ranges::fetch::load` against a real HTTP server on loopback (std `TcpListener` in a thread,
//! started by each test): fresh fetch, ETag revalidation, refused lists, server down, offline,
//! `--ranges-file`, a corrupted cache.
//!
//! Every server answers a fixed script of responses and then stops; it also stops when the test
//! calls `finish()` or after a deadline, and its thread is joined, so no test can hang on it.

// A failed unwrap here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

use origin_audit::ranges::fetch::{LoadOptions, load};
use origin_audit::ranges::{Provider, ProviderRanges, RangeSource, RangesError, cloudflare};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.to_string(),
    }
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
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `script` in order, one connection each (`Connection: close`), then stop.
    fn start(script: Vec<Reply>) -> Server {
        Server::start_with(script, None)
    }

    /// As [`Server::start`], over TLS when `tls` is given.
    fn start_with(script: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
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
                    None => serve_one(tcp, next.as_ref().unwrap()),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        serve_one(rustls::StreamOwned::new(conn, tcp), next.as_ref().unwrap())
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
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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
fn serve_one<S: std::io::Read + Write>(stream: S, r: &Reply) -> Option<Seen> {
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
    if r.status != 304 {
        out.push_str(&r.body);
    }
    let mut stream = reader.into_inner();
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
    Some(Seen { path, headers })
}

/// A loopback address nobody listens on: bind, read the port, close.
fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/client/v4/ips")
}

/// Cloudflare's provider with every URL on our server (or a closed port).
fn provider_at(api: &str, v4: &str, v6: &str) -> Provider {
    let mut p = cloudflare();
    p.api_url = api.to_string();
    p.text_url_v4 = v4.to_string();
    p.text_url_v6 = v6.to_string();
    p
}

/// The API's JSON shape, with a list that differs from the bundled one so a test can tell
/// which source it got.
fn api_body(v4: &[&str], v6: &[&str], etag: &str) -> String {
    serde_json::json!({
        "result": {"ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": etag},
        "success": true, "errors": [], "messages": []
    })
    .to_string()
}

const V4: [&str; 2] = ["173.245.48.0/20", "198.51.100.0/24"];
const V6: [&str; 1] = ["2001:db8::/32"];

fn good_api() -> Reply {
    with_etag(
        reply(200, &api_body(&V4, &V6, "bodyetag1")),
        "\"httpetag1\"",
    )
}

fn opts(cache: &Path) -> LoadOptions {
    LoadOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

fn nets(r: &ProviderRanges) -> (Vec<String>, Vec<String>) {
    (
        r.ipv4.iter().map(|n| n.to_string()).collect(),
        r.ipv6.iter().map(|n| n.to_string()).collect(),
    )
}

fn expected_fetched() -> (Vec<String>, Vec<String>) {
    (
        V4.iter().map(|s| s.to_string()).collect(),
        V6.iter().map(|s| s.to_string()).collect(),
    )
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
    assert_eq!(written["ipv4"], serde_json::json!(V4));
    assert_eq!(written["ipv6"], serde_json::json!(V6));
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
        reply(200, "173.245.48.0/20\r\n103.21.244.0/22\r\n"),
        reply(200, "2400:cb00::/32\n\n2606:4700::/32"),
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
    assert_eq!(
        nets(&r),
        (
            vec!["103.21.244.0/22".to_string(), "173.245.48.0/20".to_string()],
            vec!["2400:cb00::/32".to_string(), "2606:4700::/32".to_string()]
        )
    );
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

    let text = dir.path().join("ips.txt");
    std::fs::write(
        &text,
        "173.245.48.0/20\r\n2400:cb00::/32\r\n\r\n198.51.100.0/24",
    )
    .unwrap();
    o.file = Some(text.clone());
    let r = load(&cloudflare(), &o).unwrap();
    assert_eq!(r.source, RangeSource::File);
    assert_eq!(r.etag, None);
    assert_eq!(r.problems, Vec::<String>::new());
    assert_eq!(
        nets(&r),
        (
            vec!["173.245.48.0/20".to_string(), "198.51.100.0/24".to_string()],
            vec!["2400:cb00::/32".to_string()]
        )
    );
    let mtime = OffsetDateTime::from(std::fs::metadata(&text).unwrap().modified().unwrap());
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

/// A private CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn private_tls() -> (Arc<rustls::ServerConfig>, reqwest::Certificate) {
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
    (
        Arc::new(cfg),
        reqwest::Certificate::from_der(ca_cert.der()).unwrap(),
    )
}

#[test]
fn https_fetch_through_the_production_client_settings() {
    use origin_audit::ranges::fetch::{client_builder, load_with_client};
    let (cfg, root) = private_tls();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(vec![good_api()], Some(cfg));
    let url = format!("https://127.0.0.1:{}/client/v4/ips", server.addr.port());
    let mut o = opts(dir.path());
    o.url = Some(url);
    // Same builder as production, trusting only the private root.
    let client = client_builder().tls_certs_only([root]).build().unwrap();
    let r = load_with_client(&cloudflare(), &o, &client).unwrap();
    let seen = server.finish();
    assert_eq!(seen.len(), 1);
    assert_eq!(r.source, RangeSource::Fetched, "{:?}", r.problems);
    assert_eq!(nets(&r), expected_fetched());
}

#[test]
fn https_server_with_an_untrusted_certificate_is_refused() {
    let (cfg, _root) = private_tls();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(vec![good_api()], Some(cfg));
    let url = format!("https://127.0.0.1:{}/client/v4/ips", server.addr.port());
    let mut o = opts(dir.path());
    o.url = Some(url.clone());
    // The production client: system trust only, which does not include our private CA.
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
