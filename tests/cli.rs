//! The command line end to end: offline dumps, JSON contract, explain, snapshot round trip,
//! bad input (clear message, exit 3, no panic), and running without root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::{Netns, is_root, netns_unavailable};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

use package_support::BIN;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run origin-audit")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn ufw_args() -> Vec<String> {
    vec![
        "--offline".into(),
        "--iptables-save".into(),
        fixture("iptables/ufw-v4.nft.rules").display().to_string(),
        "--ip6tables-save".into(),
        fixture("iptables/ufw-v6.nft.rules").display().to_string(),
        "--iface".into(),
        "eth0".into(),
        "--dest".into(),
        "203.0.113.2".into(),
        "--dest".into(),
        "2001:db8:1::2".into(),
    ]
}

#[test]
fn check_json_follows_the_contract() {
    let mut args = vec!["check", "--format", "json"];
    let u = ufw_args();
    args.extend(u.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["schema"], "origin-audit/1");
    assert_eq!(v["status"], "critical");
    assert_eq!(v["ranges"]["provider"], "cloudflare");
    assert_eq!(v["ranges"]["source"], "bundled");
    assert!(
        v["ranges"]["ipv4"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    assert!(
        v["listeners"].is_null(),
        "listeners are unknown for offline dumps"
    );
    let rows = v["reachability"].as_array().expect("rows");
    let keys = |o: &Value| {
        let mut k: Vec<String> = o.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    for r in rows {
        let k = keys(r);
        for want in ["cf_error", "port", "rule", "source", "verdict"] {
            assert!(k.contains(&want.to_string()), "{k:?}");
        }
    }
    let deny = rows
        .iter()
        .find(|r| r["port"] == 80 && r["source"] == "173.245.48.0/20")
        .expect("row for the denied range");
    assert_eq!(deny["verdict"], "drop");
    assert_eq!(deny["cf_error"], 522);
    assert_eq!(
        keys(&deny["rule"]),
        [
            "backend",
            "chain",
            "direction",
            "family",
            "handle",
            "position",
            "table",
            "text"
        ]
    );
    assert_eq!(deny["rule"]["backend"], "iptables-nft");
    assert_eq!(deny["rule"]["family"], "ip");
    assert_eq!(deny["rule"]["table"], "filter");
    assert_eq!(deny["rule"]["chain"], "ufw-user-input");
    assert_eq!(deny["rule"]["position"], 5);
    assert_eq!(deny["rule"]["direction"], "in");
    let f = &v["findings"][0];
    assert_eq!(
        keys(f),
        [
            "cf_error", "code", "fix", "message", "ports", "rules", "severity", "sources"
        ]
    );
    assert_eq!(f["severity"], "critical");
}

#[test]
fn explain_names_the_rule_and_the_path() {
    let mut args = vec!["explain", "173.245.48.9", "80", "--format", "json"];
    let u = ufw_args();
    args.extend(u.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2));
    let v = json(&o);
    assert_eq!(v["address"], "173.245.48.9");
    assert_eq!(v["port"], 80);
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["cf_error"], 522);
    assert_eq!(
        v["rule"]["text"],
        "-A ufw-user-input -s 173.245.48.0/20 -j DROP"
    );
    let path = v["path"].as_array().expect("path");
    assert_eq!(path.last(), Some(&v["rule"]));
    assert!(
        path.iter()
            .any(|r| r["text"] == "-A ufw-before-input -j ufw-user-input"),
        "{path:?}"
    );
    // Human form, established connection: accepted by ufw's conntrack rule.
    let mut args = vec!["explain", "173.245.48.9", "80", "--established"];
    args.extend(u.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ACCEPT"), "{text}");
    assert!(text.contains("RELATED,ESTABLISHED"), "{text}");
}

#[test]
fn snapshot_round_trip_gives_the_same_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("host.json");
    let u = ufw_args();
    let mut args = vec!["snapshot", "-o", snap.to_str().expect("utf8")];
    args.extend(u.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut direct = vec!["check", "--format", "json"];
    direct.extend(u.iter().map(String::as_str));
    let a = json(&run(&direct));
    let b = json(&run(&[
        "check",
        "--format",
        "json",
        "--snapshot",
        snap.to_str().expect("utf8"),
        "--iface",
        "eth0",
        "--dest",
        "203.0.113.2",
        "--dest",
        "2001:db8:1::2",
    ]));
    assert_eq!(a, b);
}

#[test]
fn malformed_dump_is_a_clear_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 443 -j\nCOMMIT\n",
    )
    .expect("write");
    let o = run(&[
        "check",
        "--offline",
        "--format",
        "json",
        "--iptables-save",
        bad.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["status"], "unknown");
    let msg = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "dump-unparsable")
        .expect("dump-unparsable")["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn bad_inputs_name_what_and_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ranges = dir.path().join("ranges.txt");
    std::fs::write(&ranges, "173.245.48.0/20\n<html>captive portal</html>\n").expect("write");
    let o = run(&[
        "check",
        "--ranges-file",
        ranges.to_str().expect("utf8"),
        "--iptables-save",
        fixture("iptables/ufw-v4.nft.rules").to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ranges.txt") && err.contains("line 2"),
        "{err}"
    );

    let o = run(&["check", "--snapshot", "/nonexistent/host.json"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/host.json"));

    let o = run(&["check", "--offline", "--ports", "22"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("22 is not a port cloudflare proxies"));

    let garbage = dir.path().join("x.json");
    std::fs::write(&garbage, "{\"nftables\": [ {\"table\": ").expect("write");
    let o = run(&[
        "check",
        "--offline",
        "--nft-json",
        garbage.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

/// Without root the firewall cannot be read: exit 3 with the command named, never a crash or
/// an "all clear".
#[test]
fn without_root_the_verdict_is_unknown() {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(setpriv), true) = (setpriv, is_root()) else {
        eprintln!("skipped: needs root and setpriv to drop to nobody");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "check",
            "--offline",
            "--format",
            "json",
            "--cache-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("setpriv");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["status"], "unknown");
    let msgs: Vec<String> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "read-failed")
        .map(|f| f["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(msgs.iter().any(|m| m.contains("needs root")), "{msgs:?}");
}

/// A snapshot of a host Cloudflare cannot reach (only loopback, no default route: what
/// `ip netns add x; ip netns exec x origin-audit snapshot` records) behind `:INPUT DROP`.
fn unreachable_host_snapshot(dir: &std::path::Path) -> PathBuf {
    let rules = dir.join("drop.rules");
    std::fs::write(&rules, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n").expect("write");
    let snap = dir.join("host.json");
    let o = run(&[
        "snapshot",
        "--offline",
        "--iptables-save",
        rules.to_str().expect("utf8"),
        "-o",
        snap.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&snap).expect("read")).expect("json");
    v["interfaces"] = serde_json::json!([{
        "name": "lo",
        "up": true,
        "addrs": [{"addr": "127.0.0.1", "prefix_len": 8, "scope": "host"}]
    }]);
    v["default_routes"] = serde_json::json!([]);
    std::fs::write(&snap, v.to_string()).expect("write");
    snap
}

/// Nothing analysed (no public address) is an unknown verdict for `fix` as for `check`: exit 3
/// and the reason, never "Nothing to fix: every Cloudflare range is accepted", in every form.
#[test]
fn fix_with_nothing_analysed_is_unknown_not_an_all_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = unreachable_host_snapshot(dir.path());
    let snap = snap.to_str().expect("utf8");
    let o = run(&["check", "--offline", "--snapshot", snap]);
    assert_eq!(o.status.code(), Some(3), "check agrees it is unknown");
    for extra in [
        &[][..],
        &["--format", "json"][..],
        &["--emit", "nft"][..],
        &["--emit", "iptables"][..],
    ] {
        let mut args = vec!["fix", "--offline", "--snapshot", snap];
        args.extend_from_slice(extra);
        let o = run(&args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(3), "{extra:?}\n{out}\n{err}");
        assert!(
            !out.to_lowercase().contains("nothing to fix")
                && !out.contains("every Cloudflare range is accepted"),
            "{extra:?}: {out}"
        );
        assert!(
            err.contains("verdict is unknown") && err.contains("no public address"),
            "{extra:?}: {err}"
        );
    }
}

/// The live form of the same: a namespace with only loopback (`ip netns add x; ip netns exec x
/// origin-audit fix --offline`) behind `iptables -P INPUT DROP`. `fix` and `fix --apply` both
/// exit 3 saying why, and the namespace's ruleset is left exactly as it was.
#[test]
fn live_fix_without_a_public_address_is_unknown_and_applies_nothing() {
    if let Some(why) = netns_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let ns = Netns::new("fix-unknown");
    ns.iptables(&["-P", "INPUT", "DROP"]);
    let save = || {
        let o = ns
            .cmd("iptables-nft-save")
            .output()
            .expect("iptables-nft-save");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = save();
    let dir = tempfile::tempdir().expect("tempdir");
    for apply in [false, true] {
        let mut c = ns.cmd(BIN);
        c.args(["fix", "--offline", "--state-dir"])
            .arg(dir.path())
            .arg("--cache-dir")
            .arg(dir.path());
        if apply {
            c.arg("--apply");
        }
        let o = c.output().expect("fix");
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(3), "apply={apply}\n{out}\n{err}");
        assert!(!out.contains("every Cloudflare range is accepted"), "{out}");
        assert!(err.contains("verdict is unknown"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
    }
    assert_eq!(save(), before, "the namespace's ruleset changed");
}

/// `fix --with-host` audits the candidate dumps as if loaded on this host, as `check --with-host`
/// does: on a loopback-only namespace that is an unknown verdict, not a fix planned for
/// addresses the host does not have.
#[test]
fn fix_with_host_reads_the_host_like_check() {
    if let Some(why) = netns_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let ns = Netns::new("fix-with-host");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("drop.rules");
    std::fs::write(&rules, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n").expect("write");
    for cmd in ["check", "fix"] {
        let o = ns
            .cmd(BIN)
            .args([cmd, "--offline", "--with-host", "--iptables-save"])
            .arg(&rules)
            .arg("--cache-dir")
            .arg(dir.path())
            .output()
            .expect("run");
        assert_eq!(
            o.status.code(),
            Some(3),
            "{cmd}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn output_that_cannot_be_written_is_unknown_not_a_panic() {
    let u = ufw_args();
    let base: Vec<&str> = u.iter().map(String::as_str).collect();
    // A full disk: every command that prints.
    for cmd in [
        vec!["check"],
        vec!["check", "--format", "json"],
        vec!["explain", "173.245.48.1", "443"],
        vec!["fix", "--emit", "iptables"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(BIN)
            .args(&cmd)
            .args(&base)
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{cmd:?} > /dev/full: {err}");
        assert!(err.contains("cannot write the output"), "{cmd:?}: {err}");
        assert!(!err.contains("panicked"), "{cmd:?}: {err}");
    }
    // A pipe whose reader has gone (`| head -c 10` that already exited): EPIPE on the first
    // write, whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(BIN)
        .args(["check", "--format", "json"])
        .args(&base)
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "closed pipe: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn usage_errors_are_unknown_and_help_succeeds() {
    for args in [
        &["check", "--no-such-flag"][..],
        &["no-such-command"],
        &["check", "--ports", "x"],
    ] {
        let o = run(args);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!o.stderr.is_empty());
    }
    for args in [&["--help"][..], &["check", "--help"], &["--version"]] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn fix_takes_the_run_lock_like_check() {
    let d = tempfile::tempdir().unwrap();
    let lock = d.path().join("run.lock");
    let cfg = d.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\nlock_file = \"{}\"\nlock_wait_secs = 0\n",
            lock.display()
        ),
    )
    .unwrap();
    // Another run holds the lock (this test process, like a running `check`).
    let held = origin_audit::lock::acquire(&lock, std::time::Duration::ZERO).unwrap();
    // Read-only forms only: were the lock ever skipped, `--apply` here would change the root
    // namespace's firewall. `fix --apply` takes the same lock on the same path
    // (src/fix/command.rs) — the lock is taken before the mode is looked at.
    for args in [&["fix"][..], &["fix", "--emit", "iptables"]] {
        let o = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("another origin-audit run"), "{args:?}: {err}");
    }
    drop(held);
    // A symlinked lock file is refused, its target untouched.
    let victim = d.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["check", "--lock-file"])
        .arg(&lock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// Every subcommand's man page (generated by build.rs next to the binary) has the sections an
/// admin looks for, and fix(1) says how changes are applied, confirmed and reverted.
#[test]
fn subcommand_man_pages_have_examples_exit_status_and_see_also() {
    let man = std::path::Path::new(env!("CARGO_BIN_EXE_origin-audit"))
        .parent()
        .unwrap()
        .join("assets/man");
    for sub in ["check", "explain", "snapshot", "fix", "config", "codes"] {
        let p = man.join(format!("origin-audit-{sub}.1"));
        let t = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for s in [".SH EXAMPLES", ".SH \"EXIT STATUS\"", ".SH \"SEE ALSO\""] {
            assert!(t.contains(s), "{} lacks {s}", p.display());
        }
        assert!(
            t.contains(&format!("origin\\-audit {sub}")),
            "{}",
            p.display()
        );
    }
    // The wire contracts, carried from the modules that own them.
    let json = std::fs::read_to_string(man.join("origin-audit-json.5")).unwrap();
    assert!(json.contains("origin\\-audit/1") && json.contains("reachability"));
    let metrics = std::fs::read_to_string(man.join("origin-audit-metrics.7")).unwrap();
    assert!(metrics.contains("origin_audit_blocked_addresses_ratio"));
    let fix = std::fs::read_to_string(man.join("origin-audit-fix.1")).unwrap();
    for w in [
        "APPLYING",
        "\\-\\-confirm\\-timeout",
        "\\-\\-revert",
        "backups",
    ] {
        assert!(fix.contains(w), "fix(1) lacks {w}");
    }
}

#[test]
fn codes_lists_and_explains_every_finding_code() {
    let o = run(&["codes"]);
    assert_eq!(o.status.code(), Some(0));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    for c in origin_audit::findings::Code::ALL {
        assert!(
            list.lines().any(|l| l.starts_with(c.id())),
            "{} missing:\n{list}",
            c.id()
        );
        let o = run(&["codes", c.id()]);
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.code() == Some(0) && t.contains(c.description()),
            "{t}"
        );
    }
    let o = run(&["codes", "no-such-code"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("range-dropped"));
}
