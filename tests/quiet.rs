//! Cron/timer mode against a real kernel: `check --quiet` is silent with exit 0 on a clean
//! origin and prints the findings and what to do (exit 2) on a broken one; two runs never
//! overlap (the second waits, or gives up with exit 3 naming the holder); a hung `nft` is
//! reported within the configured timeout. Each test builds its own network namespace and is
//! skipped with a printed reason when that is impossible (not root, tools missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip() -> bool {
    if let Some(why) = netns_unavailable() {
        eprintln!("SKIPPED: {why}");
        return true;
    }
    false
}

/// `ip netns exec NS origin-audit check --quiet ...` with a fresh range list and a private lock.
fn check(ns: &Netns, dir: &Path, extra: &[&str]) -> Command {
    let ranges = fresh_ranges(dir);
    let mut c = ns.cmd(BIN);
    c.args(["check", "--quiet", "--color", "never", "--ranges-file"])
        .arg(&ranges)
        .arg("--lock-file")
        .arg(dir.join("lock"))
        .args(extra);
    c
}

/// A stub `tool` first on PATH running `body` (a shell script).
fn tool_stub(dir: &Path, tool: &str, body: &str) -> String {
    let bin = dir.join("stub-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let nft = bin.join(tool);
    std::fs::write(&nft, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn quiet_is_silent_when_clean_and_prints_findings_and_fix_when_broken() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::web_origin("quiet");
    let o = run_bounded(&mut check(&ns, dir.path(), &[]), 60);
    assert_eq!(
        (o.status.code(), text(&o.stdout), text(&o.stderr)),
        (Some(0), String::new(), String::new()),
        "clean origin must be silent"
    );

    ns.iptables(&[
        "-A",
        "INPUT",
        "-s",
        "173.245.48.0/20",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "DROP",
    ]);
    let o = run_bounded(&mut check(&ns, dir.path(), &[]), 60);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}{}", text(&o.stderr));
    assert!(out.contains("CRITICAL range-dropped"), "{out}");
    assert!(out.contains("173.245.48.0/20 on port 443"), "{out}");
    // The findings come first, then what to do, naming the fix for the culprit rule.
    let what = out.find("What to do").expect("a 'What to do' section");
    assert!(out.find("Findings").unwrap() < what, "{out}");
    assert!(
        out[what..].contains("-s 173.245.48.0/20 -p tcp --dport 443")
            && out[what..].contains("-j ACCEPT"),
        "{out}"
    );
}

#[test]
fn two_runs_do_not_overlap() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::web_origin("lock");
    let log = dir.path().join("ipset.log");
    // Each run's `ipset save` (a tool every run calls) takes 2 s and logs when it starts and
    // ends.
    let path = tool_stub(
        dir.path(),
        "ipset",
        &format!(
            "echo start $(date +%s.%N) >> {log}\nsleep 2\necho end $(date +%s.%N) >> {log}\nexec /usr/sbin/ipset \"$@\"",
            log = log.display()
        ),
    );
    let mut first = check(&ns, dir.path(), &[]);
    let first = first
        .env("PATH", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first_pid = first.id();
    // Let the first run take the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "first run never started ipset");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second run that will not wait long enough gives up: exit 3, naming the holder.
    let t = Instant::now();
    let o = run_bounded(
        check(&ns, dir.path(), &["--lock-wait", "0"]).env("PATH", &path),
        30,
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("another origin-audit run"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "did not give up promptly"
    );
    // `ip netns exec` execs, so the pid in the lock file is the first run's.
    assert!(err.contains(&format!("(pid {first_pid})")), "{err}");
    // A patient second run waits for the first, then runs: their ipset calls never interleave.
    let o = run_bounded(
        check(&ns, dir.path(), &["--lock-wait", "30"]).env("PATH", &path),
        60,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let events: Vec<(String, f64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["start", "end", "start", "end"], "runs overlapped");
    assert!(events[2].1 >= events[1].1, "{events:?}");
}

#[test]
fn hung_nft_is_reported_within_the_configured_timeout() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::web_origin("hung");
    // A native nft table: `nft` is read only when nf_tables holds a table no iptables-nft
    // dump shows.
    let st = ns
        .cmd("nft")
        .args(["add", "table", "inet", "native"])
        .status()
        .unwrap();
    assert!(st.success());
    let path = tool_stub(dir.path(), "nft", "exec sleep 300");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[audit]\ncommand_timeout_secs = 2\n").unwrap();
    let t = Instant::now();
    // --config is a global flag: it may follow the subcommand.
    let cfg = cfg.display().to_string();
    let mut c = check(&ns, dir.path(), &["--config", &cfg]);
    c.env("PATH", &path);
    let o = run_bounded(&mut c, 60);
    let elapsed = t.elapsed();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("nft -j -t list ruleset` did not finish within 2 s and was killed"),
        "{out}"
    );
    // 2 s for nft, the other tools are quick; far below the 10 s default.
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}
