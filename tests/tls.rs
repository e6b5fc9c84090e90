//! The TLS check against real TLS servers: `openssl s_server` (and, for plain HTTP and a
//! listener that never answers, Python sockets) on 0.0.0.0:443 in a private network namespace
//! that looks like a web origin, with certificates made here by rcgen. `origin-audit check`
//! runs in the namespace as it would on the host, in Full and Full (strict) mode, and each case
//! must give exactly its finding and Cloudflare error; in Flexible mode 443's certificate does
//! not matter (TLS not checked, port 80 audited instead).
//!
//! The stand-in for the Cloudflare Origin CA is a CA made here, passed with `--origin-ca`
//! exactly as an admin would pass another roots file: the trust logic sees roots, never "a
//! test". The same certificate without `--origin-ca` is untrusted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::{ADDR, BIN, Netns, find_in_path, fresh_ranges, netns_unavailable, pem, text};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Stand-in Origin CA");
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: pem("CERTIFICATE", cert.der()),
        params,
        key,
    }
}

/// A leaf for `names`, valid `from`..`to` (days from now), signed by `ca` (None: itself).
/// Writes `NAME.crt` and `NAME.key` in `dir`.
fn leaf(dir: &Path, name: &str, names: &[&str], from: i64, to: i64, ca: Option<&Ca>) -> PathBuf {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    // An hour short of whole days: days_left is then the same however many seconds pass
    // between making the certificate and the check (exactly `to` days would read as `to` in
    // the same second and `to - 1` in the next).
    p.not_after = now + time::Duration::days(to) - time::Duration::hours(1);
    let cert = match ca {
        Some(ca) => p
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    let crt = dir.join(format!("{name}.crt"));
    std::fs::write(&crt, pem("CERTIFICATE", cert.der())).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        pem("PRIVATE KEY", &key.serialize_der()),
    )
    .unwrap();
    crt
}

/// A server process, killed (by its own handle) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(ns: &Netns, cmd: &mut Command) -> Server {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let s = Server(child);
    ns.wait_listening(&[443]);
    s
}

fn s_server(ns: &Netns, dir: &Path, name: &str, extra: &[&str]) -> Server {
    let mut c = ns.cmd("openssl");
    c.args(["s_server", "-quiet", "-accept", "443", "-cert"])
        .arg(dir.join(format!("{name}.crt")))
        .arg("-key")
        .arg(dir.join(format!("{name}.key")))
        .args(extra);
    start(ns, &mut c)
}

fn python(ns: &Netns, code: &str) -> Server {
    let mut c = ns.cmd("/usr/bin/python3");
    c.args(["-c", code]);
    start(ns, &mut c)
}

/// `origin-audit --config DIR/origin-audit.toml SUBCOMMAND MODE-FLAGS --hostname example.com
/// --ranges-file … --lock-file DIR/lock` in the namespace (`check` only takes the lock).
fn oa(ns: &Netns, dir: &Path, sub: &[&str]) -> Command {
    let mut c = ns.cmd(BIN);
    c.arg("--config")
        .arg(dir.join("origin-audit.toml"))
        .args(sub)
        .args(["--hostname", "example.com", "--ranges-file"])
        .arg(fresh_ranges(dir));
    if sub.first() == Some(&"check") {
        c.arg("--lock-file").arg(dir.join("lock"));
    }
    c
}

/// A TLS finding as (code, severity, cf_error).
type Found = (String, String, Option<u64>);

/// `check --format json` in the namespace: (exit code, TLS findings as (code, severity,
/// cf_error), the `tls` rows).
fn check(
    ns: &Netns,
    dir: &Path,
    mode: &str,
    origin_ca: Option<&Path>,
) -> (i32, Vec<Found>, serde_json::Value) {
    let mut c = oa(ns, dir, &["check", "--format", "json", "--ssl-mode", mode]);
    if let Some(ca) = origin_ca {
        c.arg("--origin-ca").arg(ca);
    }
    let o = package_support::run_bounded(&mut c, 120);
    let v: serde_json::Value = serde_json::from_str(&text(&o.stdout))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&o.stdout), text(&o.stderr)));
    let found = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            let c = f["code"].as_str().unwrap_or("");
            c.starts_with("tls-") || c == "http-on-https-port"
        })
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["cf_error"].as_u64(),
            )
        })
        .collect();
    (o.status.code().unwrap_or(-1), found, v["tls"].clone())
}

fn expect(
    ns: &Netns,
    dir: &Path,
    case: &str,
    origin_ca: Option<&Path>,
    strict: &[(&str, &str, Option<u64>)],
    full: &[(&str, &str, Option<u64>)],
) {
    for (mode, want) in [("strict", strict), ("full", full)] {
        let (_, got, rows) = check(ns, dir, mode, origin_ca);
        let want: Vec<Found> = want
            .iter()
            .map(|(c, s, e)| (c.to_string(), s.to_string(), *e))
            .collect();
        assert_eq!(got, want, "{case}, {mode} mode; tls rows: {rows:#}");
        let row = &rows[0];
        assert_eq!(row["address"], ADDR, "{case}: {rows:#}");
        assert_eq!(row["hostname"], "example.com", "{case}: {rows:#}");
    }
}

#[test]
fn tls_findings_against_real_servers() {
    if let Some(why) = netns_unavailable() {
        panic!("needs network namespaces: {why}");
    }
    assert!(
        find_in_path("openssl").is_some(),
        "needs openssl (Debian package openssl; ./scripts/test installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Short handshake bound for the listener that never answers.
    std::fs::write(dir.join("origin-audit.toml"), "[tls]\ntimeout_secs = 2\n").unwrap();
    let ca = ca();
    let ca_file = dir.join("stand-in-origin-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let ns = Netns::origin("tls");
    let ok: &[(&str, &str, Option<u64>)] = &[];

    // Valid for the name, signed by the Origin CA (stand-in): nothing to say in either mode.
    leaf(
        dir,
        "good",
        &["example.com", "www.example.com"],
        -1,
        365,
        Some(&ca),
    );
    {
        let _s = s_server(&ns, dir, "good", &[]);
        expect(&ns, dir, "valid", Some(&ca_file), ok, ok);
        let (_, _, rows) = check(&ns, dir, "strict", Some(&ca_file));
        assert_eq!(rows[0]["trust"], "origin-ca", "{rows:#}");
        assert_eq!(rows[0]["handshake"], "ok", "{rows:#}");
        // The same certificate without those roots: nothing special-cases the test CA.
        expect(
            &ns,
            dir,
            "valid, CA not given",
            None,
            &[("tls-cert-untrusted", "critical", Some(526))],
            &[("tls-cert-untrusted", "info", None)],
        );
    }
    leaf(dir, "expired", &["example.com"], -400, -2, Some(&ca));
    {
        let _s = s_server(&ns, dir, "expired", &[]);
        expect(
            &ns,
            dir,
            "expired",
            Some(&ca_file),
            &[("tls-cert-expired", "critical", Some(526))],
            &[("tls-cert-expired", "warning", None)],
        );
        // Flexible: Cloudflare speaks plain HTTP to port 80, so 443's certificate does not
        // matter and port 80 is what is audited — where nothing listens here (521).
        let mut c = oa(
            &ns,
            dir,
            &["check", "--format", "json", "--ssl-mode", "flexible"],
        );
        let o = package_support::run_bounded(&mut c, 120);
        let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
        assert_eq!(v["ports"], serde_json::json!([80]), "{v:#}");
        assert!(v["tls"].is_null(), "{v:#}");
        assert!(
            v["tls_note"].as_str().unwrap_or("").contains("Flexible"),
            "{v:#}"
        );
        let codes: Vec<(&str, Option<u64>)> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["code"].as_str().unwrap(), f["cf_error"].as_u64()))
            .collect();
        assert_eq!(codes, [("no-listener", Some(521))], "{v:#}");
        // A snapshot carries the captured chain: judged later, with no server, the same.
        let snap = dir.join("snapshot.json");
        let mut c = oa(&ns, dir, &["snapshot"]);
        c.arg("-o").arg(&snap);
        let o = package_support::run_bounded(&mut c, 120);
        assert!(o.status.success(), "snapshot: {}", text(&o.stderr));
        drop(_s);
        let o = package_support::run_bounded(
            Command::new(BIN)
                .args(["check", "--format", "json", "--ssl-mode", "strict"])
                .args(["--hostname", "example.com", "--origin-ca"])
                .arg(&ca_file)
                .arg("--snapshot")
                .arg(&snap),
            60,
        );
        let v: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
        let codes: Vec<&str> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["code"].as_str())
            .filter(|c| c.starts_with("tls-"))
            .collect();
        assert_eq!(codes, ["tls-cert-expired"], "{v:#}");
    }
    leaf(dir, "future", &["example.com"], 3, 300, Some(&ca));
    {
        let _s = s_server(&ns, dir, "future", &[]);
        expect(
            &ns,
            dir,
            "not yet valid",
            Some(&ca_file),
            &[("tls-cert-expired", "critical", Some(526))],
            &[("tls-cert-expired", "warning", None)],
        );
    }
    leaf(dir, "soon", &["example.com"], -80, 5, Some(&ca));
    {
        let _s = s_server(&ns, dir, "soon", &[]);
        expect(
            &ns,
            dir,
            "expiring",
            Some(&ca_file),
            &[("tls-cert-expiring", "warning", None)],
            &[("tls-cert-expiring", "warning", None)],
        );
        // Nagios perfdata and the Prometheus series.
        let prom = dir.join("m.prom");
        let mut c = oa(&ns, dir, &["check", "--nagios", "--ssl-mode", "strict"]);
        c.arg("--origin-ca")
            .arg(&ca_file)
            .arg("--prometheus-textfile")
            .arg(&prom);
        let o = package_support::run_bounded(&mut c, 120);
        let first = text(&o.stdout).lines().next().unwrap_or("").to_string();
        assert!(first.contains(" cert_days_left=4;14:;0:"), "{first}");
        let m = std::fs::read_to_string(&prom).unwrap();
        let label = format!("{{address=\"{ADDR}\",port=\"443\",hostname=\"example.com\"}}");
        assert!(
            m.contains(&format!("origin_audit_tls_handshake_ok{label} 1")),
            "{m}"
        );
        let secs: i64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&format!("origin_audit_tls_cert_expiry_seconds{label} ")))
            .unwrap_or_else(|| panic!("{m}"))
            .parse()
            .unwrap();
        assert!((4 * 86_400..5 * 86_400).contains(&secs), "{secs}");
    }
    leaf(dir, "other", &["other.example.net"], -1, 365, Some(&ca));
    {
        let _s = s_server(&ns, dir, "other", &[]);
        expect(
            &ns,
            dir,
            "wrong name",
            Some(&ca_file),
            &[("tls-cert-name-mismatch", "critical", Some(526))],
            &[("tls-cert-name-mismatch", "info", None)],
        );
    }
    leaf(dir, "selfsigned", &["example.com"], -1, 365, None);
    {
        let _s = s_server(&ns, dir, "selfsigned", &[]);
        expect(
            &ns,
            dir,
            "self-signed",
            Some(&ca_file),
            &[("tls-cert-untrusted", "critical", Some(526))],
            &[("tls-cert-untrusted", "info", None)],
        );
        let (_, _, rows) = check(&ns, dir, "strict", Some(&ca_file));
        assert_eq!(rows[0]["trust"], "self-signed", "{rows:#}");
    }
    // Authenticated Origin Pulls: the server requires (`-Verify`) or only asks for (`-verify`)
    // a client certificate.
    let ca_arg = ca_file.to_str().unwrap();
    for (flag, ask) in [("-Verify", "required"), ("-verify", "requested")] {
        let _s = s_server(&ns, dir, "good", &[flag, "1", "-CAfile", ca_arg]);
        let (_, _, rows) = check(&ns, dir, "strict", Some(&ca_file));
        assert_eq!(rows[0]["client_cert"], ask, "{rows:#}");
        expect(
            &ns,
            dir,
            &format!("client certificate {ask}"),
            Some(&ca_file),
            &[("tls-client-cert-requested", "info", None)],
            &[("tls-client-cert-requested", "info", None)],
        );
    }
    {
        // Only a suite Cloudflare offers and this check does not (RSA key exchange, CBC):
        // not a 525 on this evidence, a warning that says how to tell.
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args([
                "-subj",
                "/CN=example.com",
                "-addext",
                "subjectAltName=DNS:example.com",
            ])
            .arg("-keyout")
            .arg(dir.join("rsa.key"))
            .arg("-out")
            .arg(dir.join("rsa.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let _s = s_server(
            &ns,
            dir,
            "rsa",
            &["-no_tls1_3", "-cipher", "AES128-SHA:@SECLEVEL=0"],
        );
        expect(
            &ns,
            dir,
            "legacy suites only",
            Some(&ca_file),
            &[("tls-handshake-failed", "warning", None)],
            &[("tls-handshake-failed", "warning", None)],
        );
    }
    {
        // Plain HTTP on 443.
        let _s = python(
            &ns,
            "import http.server\nhttp.server.HTTPServer(('0.0.0.0', 443), http.server.BaseHTTPRequestHandler).serve_forever()\n",
        );
        expect(
            &ns,
            dir,
            "plain HTTP",
            Some(&ca_file),
            &[("http-on-https-port", "critical", Some(525))],
            &[("http-on-https-port", "critical", Some(525))],
        );
    }
    {
        // Accepts (the kernel does) and never answers: bounded by timeout_secs.
        let _s = python(
            &ns,
            "import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 443)); s.listen(64)\ntime.sleep(600)\n",
        );
        let t = std::time::Instant::now();
        expect(
            &ns,
            dir,
            "never answers",
            Some(&ca_file),
            &[("tls-handshake-failed", "critical", Some(525))],
            &[("tls-handshake-failed", "critical", Some(525))],
        );
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    }
}
