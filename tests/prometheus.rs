//! `check --prometheus-textfile`: the file a node_exporter textfile collector reads, checked
//! with real parsers of the exposition format (the `prometheus-parse` crate, and `promtool
//! check metrics` when installed), and the shipped alert rules checked with `promtool`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use prometheus_parse::{Sample, Scrape, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");

fn manifest(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run origin-audit")
}

fn scrape(path: &Path) -> Scrape {
    let text = std::fs::read_to_string(path).expect("textfile written");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition format parses")
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
        _ => panic!("{} is not a plain value", s.metric),
    }
}

fn get(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
}

fn promtool() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

/// The ufw fixture drops every IPv4 Cloudflare range on port 80 (policy DROP, 80 not allowed)
/// and 173.245.48.0/20 explicitly; 443 is open.
fn ufw_check(textfile: &Path, extra: &[&str]) -> Output {
    let f = |p: &str| {
        manifest("tests/fixtures/iptables")
            .join(p)
            .display()
            .to_string()
    };
    let (v4, v6, tf) = (
        f("ufw-v4.nft.rules"),
        f("ufw-v6.nft.rules"),
        textfile.display().to_string(),
    );
    let mut args = vec![
        "check",
        "--offline",
        "--iptables-save",
        &v4,
        "--ip6tables-save",
        &v6,
        "--iface",
        "eth0",
        "--dest",
        "203.0.113.2",
        "--dest",
        "2001:db8:1::2",
        "--prometheus-textfile",
        &tf,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn textfile_parses_and_counts_blocked_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("origin-audit.prom");
    let o = ufw_check(&tf, &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = scrape(&tf);

    assert_eq!(get(&s, "origin_audit_status", &[]), Some(2.0));
    // The report says every range (IPv4 and IPv6) is dropped on 80 and all accepted on 443;
    // the metric counts each published range once.
    let rows = report["reachability"].as_array().unwrap();
    assert!(
        rows.iter()
            .filter(|r| r["port"] == 80)
            .all(|r| r["verdict"] == "drop")
    );
    assert!(
        rows.iter()
            .filter(|r| r["port"] == 443)
            .all(|r| r["verdict"] == "accept")
    );
    let all = (report["ranges"]["ipv4"].as_array().unwrap().len()
        + report["ranges"]["ipv6"].as_array().unwrap().len()) as f64;
    assert_eq!(
        get(
            &s,
            "origin_audit_blocked_ranges",
            &[("port", "80"), ("verdict", "drop")]
        ),
        Some(all)
    );
    assert_eq!(
        get(
            &s,
            "origin_audit_blocked_ranges",
            &[("port", "443"), ("verdict", "drop")]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &s,
            "origin_audit_blocked_ranges",
            &[("port", "80"), ("verdict", "reject")]
        ),
        Some(0.0)
    );
    // Findings by code and severity match the JSON report.
    let mut want: HashMap<(String, String), f64> = HashMap::new();
    for f in report["findings"].as_array().unwrap() {
        *want
            .entry((
                f["code"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            ))
            .or_default() += 1.0;
    }
    assert!(!want.is_empty());
    for ((code, sev), n) in &want {
        assert_eq!(
            get(
                &s,
                "origin_audit_findings",
                &[("code", code), ("severity", sev)]
            ),
            Some(*n),
            "{code} {sev}"
        );
    }
    // Offline dumps: listeners unknown, so no listener_up samples at all (not a false 0).
    assert!(
        !s.samples
            .iter()
            .any(|x| x.metric == "origin_audit_listener_up")
    );
    // The bundled list's age, and this run's timing.
    let age = get(&s, "origin_audit_ranges_age_seconds", &[]).unwrap();
    assert!(age > 86_400.0, "bundled list is days old: {age}");
    let ts = get(&s, "origin_audit_last_run_timestamp_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 300.0, "{ts} vs {now}");
    assert!(get(&s, "origin_audit_run_duration_seconds", &[]).unwrap() >= 0.0);
    // HELP for every metric family.
    for m in [
        "origin_audit_status",
        "origin_audit_findings",
        "origin_audit_blocked_ranges",
        "origin_audit_ranges_age_seconds",
        "origin_audit_last_run_timestamp_seconds",
        "origin_audit_run_duration_seconds",
    ] {
        assert!(s.docs.contains_key(m), "no HELP for {m}");
    }
    // Written atomically: nothing but the file itself is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("origin-audit.prom")]);

    match promtool() {
        Some(p) => {
            let o = Command::new(p)
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(&tf).unwrap())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        None => eprintln!("promtool not installed: checked with prometheus-parse only"),
    }
}

#[test]
fn accepted_findings_are_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[[accept]]\ncode = \"range-dropped\"\nport = 80\nreason = \"HTTP not proxied\"\n",
    )
    .unwrap();
    let tf = dir.path().join("m.prom");
    let cfgs = cfg.display().to_string();
    let o = ufw_check(&tf, &["--config", &cfgs]);
    let s = scrape(&tf);
    // The port-80 drops are accepted: the status falls to warning (stale bundled ranges).
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(get(&s, "origin_audit_status", &[]), Some(1.0));
    // Not open: the series is there (every code is), at zero.
    assert_eq!(
        get(&s, "origin_audit_findings", &[("code", "range-dropped")]),
        Some(0.0)
    );
    assert!(
        get(
            &s,
            "origin_audit_accepted_findings",
            &[("code", "range-dropped"), ("severity", "critical")]
        )
        .unwrap()
            >= 1.0
    );
    // The blocked ranges are a fact about the firewall: still counted (the alert fires on them).
    assert!(
        get(
            &s,
            "origin_audit_blocked_ranges",
            &[("port", "80"), ("verdict", "drop")]
        )
        .unwrap()
            > 0.0
    );
}

#[test]
fn a_run_that_cannot_audit_writes_status_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[audit]\nports = [22]\n").unwrap();
    let tf = dir.path().join("m.prom");
    let cfgs = cfg.display().to_string();
    let o = ufw_check(&tf, &["--config", &cfgs]);
    assert_eq!(o.status.code(), Some(3));
    let s = scrape(&tf);
    assert_eq!(get(&s, "origin_audit_status", &[]), Some(3.0));
    assert!(get(&s, "origin_audit_last_run_timestamp_seconds", &[]).is_some());
}

#[test]
fn shipped_alert_rules_fire_on_a_blocked_range() {
    let Some(p) = promtool() else {
        eprintln!("SKIPPED: promtool not installed (apt-get install prometheus provides it)");
        return;
    };
    let dir = manifest("packaging/prometheus");
    let o = Command::new(&p)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // alerts_test.yml: a drop count going 0 → 1 fires CloudflareRangeBlocked.
    let o = Command::new(&p)
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A change `fix --apply --confirm-timeout` left waiting (its marker in the state directory):
/// `check` names it and when it rolls back, and the textfile says so (reproducer 6 of issue
/// 10: `check` said OK during the wait). Without a marker the gauge is 0, never absent.
#[test]
fn a_pending_rollback_is_a_finding_and_a_metric() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tf = dir.path().join("m.prom");
    let sd = state.display().to_string();

    let o = ufw_check(&tf, &["--state-dir", &sd]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "fix-pending")
    );
    let s = scrape(&tf);
    assert_eq!(get(&s, "origin_audit_fix_pending", &[]), Some(0.0));
    assert_eq!(
        get(&s, "origin_audit_fix_rollback_timestamp_seconds", &[]),
        None
    );

    let marker = state.join("pending-rollback.json");
    let deadline = 4_102_444_800u64; // 2100-01-01T00:00:00Z
    std::fs::write(
        &marker,
        format!(
            r#"{{"backup":"{}/backups/x","pid":4242,"deadline":{deadline}}}"#,
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = ufw_check(&tf, &["--state-dir", &sd]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "fix-pending")
        .unwrap_or_else(|| panic!("no fix-pending finding: {report}"));
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains("pid 4242") && msg.contains("2100-01-01T00:00:00Z"),
        "{msg}"
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("--state-dir {sd}"))
    );
    let s = scrape(&tf);
    assert_eq!(get(&s, "origin_audit_fix_pending", &[]), Some(1.0));
    assert_eq!(
        get(&s, "origin_audit_fix_rollback_timestamp_seconds", &[]),
        Some(deadline as f64)
    );

    // A marker another user could have written is not believed, and is said so.
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = ufw_check(&tf, &["--state-dir", &sd]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "fix-pending")
        .unwrap();
    assert!(
        f["message"].as_str().unwrap().contains("could not be read"),
        "{f}"
    );
}

/// The real collector: Debian's prometheus-node-exporter, on loopback in a private namespace,
/// with only its textfile collector, reading the directory `check` wrote to. It must report
/// `node_textfile_scrape_error 0` and serve origin-audit's series.
#[test]
fn node_exporter_scrapes_the_textfile_without_error() {
    if let Some(why) = package_support::netns_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let Some(exporter) = package_support::find_in_path("prometheus-node-exporter")
        .or_else(|| package_support::find_in_path("node_exporter"))
    else {
        panic!("prometheus-node-exporter is not installed (./scripts/test installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    let o = ufw_check(&dir.path().join("origin-audit.prom"), &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut ns = package_support::Netns::new("nodeexp");
    ns.spawn(
        ns.cmd(&exporter)
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                dir.path().display()
            ))
            .arg("--web.listen-address=127.0.0.1:9100"),
    );
    let fetch = "import urllib.request,sys\n\
                 sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())";
    let mut body = String::new();
    for _ in 0..100 {
        let o = package_support::run_bounded(ns.cmd("python3").args(["-c", fetch]), 20);
        if o.status.success() {
            body = String::from_utf8_lossy(&o.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !body.is_empty(),
        "node_exporter did not answer on 127.0.0.1:9100"
    );
    let s = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("exporter output parses");
    assert_eq!(
        get(&s, "node_textfile_scrape_error", &[]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(get(&s, "origin_audit_status", &[]), Some(2.0));
    assert_eq!(
        get(&s, "origin_audit_findings", &[("code", "no-listener")]),
        Some(0.0)
    );
    assert_eq!(
        get(
            &s,
            "origin_audit_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}
