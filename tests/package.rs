//! Packaging end to end: the systemd units pass `systemd-analyze verify`; the Ansible example
//! passes `ansible-playbook --syntax-check`; the pre-apply hook refuses a candidate ruleset that
//! cuts Cloudflare off and accepts a clean one (in a network namespace); and the `.deb` built by
//! cargo-deb has the right contents and maintainer scripts, installs with `dpkg -i`, audits a
//! namespace with a blocked Cloudflare range (directly and through the service unit's
//! ExecStart, writing a textfile the Prometheus parser accepts), and purges cleanly.
//!
//! Each test runs in `cargo test`; one that cannot run here (not root, a tool missing and not
//! installable) says why on stderr, loudly, and passes without asserting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn manifest(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn skipped(why: &str) {
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

#[test]
fn systemd_units_pass_verify() {
    let Some(sa) = find_in_path("systemd-analyze") else {
        skipped("systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    // `verify` checks that ExecStart's binary exists and loads the units' dependencies
    // (sysinit.target...): give it a root with the system's units, our units and our binary.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["usr/bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    if std::fs::hard_link(BIN, r.join("usr/bin/origin-audit")).is_err() {
        std::fs::copy(BIN, r.join("usr/bin/origin-audit")).unwrap();
    }
    run_ok(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(r.join("usr/lib/systemd/")),
    );
    for u in ["origin-audit.service", "origin-audit.timer"] {
        std::fs::copy(
            manifest("packaging/systemd").join(u),
            r.join("etc/systemd/system").join(u),
        )
        .unwrap();
    }
    let o = Command::new(&sa)
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", r.display()))
        .args(["origin-audit.service", "origin-audit.timer"])
        .output()
        .unwrap();
    // verify exits 0 on unknown keys too, with a warning: any output is a failure.
    assert!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = Command::new(&sa)
        .args(["security", "--offline=yes", "--man=no"])
        .arg(manifest("packaging/systemd/origin-audit.service"))
        .output()
        .unwrap();
    let t = text(&o.stdout);
    if let Some(l) = t.lines().find(|l| l.contains("Overall exposure level")) {
        eprintln!("systemd-analyze security: {l}");
    }
}

#[test]
fn ansible_playbook_passes_syntax_check() {
    let Some(ap) = find_in_path("ansible-playbook") else {
        skipped("ansible-playbook is not installed (pip install ansible-core)");
        return;
    };
    let o = Command::new(ap)
        .args(["--syntax-check", "-i", "localhost,"])
        .arg(manifest("packaging/examples/ansible-origin-audit.yml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

#[test]
fn pre_apply_hook_refuses_a_candidate_that_cuts_cloudflare_off() {
    if let Some(why) = netns_unavailable() {
        skipped(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::web_origin("hook");
    let ranges = fresh_ranges(d);
    let hook = manifest("packaging/examples/origin-audit-pre-apply");
    let candidates = [
        // (file, contents, accepted?)
        (
            "drop.rules",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -s 173.245.48.0/20 -p tcp --dport 443 -j DROP\nCOMMIT\n",
            false,
        ),
        (
            "clean.rules",
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -i lo -j ACCEPT\n\
             -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n",
            true,
        ),
        (
            "drop.nft",
            "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    \
             ip saddr 104.16.0.0/13 tcp dport { 80, 443 } reject with tcp reset\n  }\n}\n",
            false,
        ),
        (
            "clean.nft",
            "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
             ct state established,related accept\n    iif lo accept\n    \
             tcp dport { 80, 443 } accept\n  }\n}\n",
            true,
        ),
        (
            "broken.nft",
            "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
             tcp dport { 80, 443 } acept\n  }\n}\n",
            false,
        ),
    ];
    for (name, body, ok) in candidates {
        let cand = d.join(name);
        std::fs::write(&cand, body).unwrap();
        let o = run_bounded(
            ns.cmd("sh")
                .arg(&hook)
                .arg(&cand)
                .arg("--")
                .arg("--ranges-file")
                .arg(&ranges)
                .arg("--lock-file")
                .arg(d.join("lock"))
                .env("ORIGIN_AUDIT", BIN),
            90,
        );
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        if ok {
            assert_eq!(o.status.code(), Some(0), "{name}: {out}{err}");
            assert!(out.contains("accepted"), "{name}: {out}");
        } else {
            assert_eq!(o.status.code(), Some(1), "{name}: {out}{err}");
            assert!(err.contains("REFUSED"), "{name}: {err}");
        }
        match name {
            "drop.rules" => assert!(err.contains("173.245.48.0/20 on port 443 dropped"), "{err}"),
            "drop.nft" => assert!(err.contains("rejected"), "{err}"),
            "broken.nft" => assert!(err.contains("does not load"), "{err}"),
            _ => {}
        }
    }
    // The hook's scratch namespaces are gone.
    let o = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(
        !text(&o.stdout).contains("oa-pre-apply-"),
        "{}",
        text(&o.stdout)
    );
}

/// cargo-deb on PATH or in ~/.cargo/bin, installed from crates.io when missing.
fn cargo_deb() -> Result<PathBuf, String> {
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/cargo-deb"));
    let found = || find_in_path("cargo-deb").or(home_bin.clone().filter(|p| p.is_file()));
    if let Some(p) = found() {
        return Ok(p);
    }
    eprintln!("cargo-deb missing: cargo install cargo-deb --locked ...");
    let o = Command::new(env!("CARGO"))
        .args(["install", "cargo-deb", "--locked"])
        .output()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "cargo install cargo-deb failed: {}",
            text(&o.stderr).lines().last().unwrap_or_default()
        ));
    }
    found().ok_or_else(|| "cargo-deb installed but not found".into())
}

/// Purges the package on drop, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "origin-audit"])
            .output();
    }
}

/// dpkg allows one writer: serialize with any other package test on this machine.
fn dpkg_lock() -> origin_audit::lock::RunLock {
    origin_audit::lock::acquire(
        Path::new("/tmp/origin-audit-package-test.lock"),
        Duration::from_secs(900),
    )
    .expect("package test lock")
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn deb_builds_installs_audits_and_purges() {
    if !is_root() {
        skipped("not root: dpkg -i needs root");
        return;
    }
    if find_in_path("dpkg").is_none() {
        skipped("not a dpkg system");
        return;
    }
    if let Some(why) = netns_unavailable() {
        skipped(&why);
        return;
    }
    let cargo_deb = match cargo_deb() {
        Ok(p) => p,
        Err(why) => {
            skipped(&format!("cargo-deb unavailable: {why}"));
            return;
        }
    };
    let _serial = dpkg_lock();
    if Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "origin-audit"])
        .output()
        .is_ok_and(|o| text(&o.stdout).contains("installed"))
    {
        skipped("origin-audit is already installed on this machine; not replacing it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Build. The deb-test profile (release-like, light optimisation) keeps this test's build
    // time reasonable; its target/deb-test dir has its own cargo lock, so this nested cargo
    // does not wait for the `cargo test` that runs it.
    let o = Command::new(&cargo_deb)
        .args(["deb", "--profile", "deb-test", "--fast", "--output"])
        .arg(d)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo deb: {}", text(&o.stderr));
    let deb = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    eprintln!("built {}", deb.display());

    // Contents.
    let listing = text(&run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    for path in [
        "./usr/bin/origin-audit",
        "./usr/share/man/man1/origin-audit.1",
        "./usr/share/man/man1/origin-audit-check.1",
        "./usr/share/man/man5/origin-audit-json.5",
        "./usr/share/man/man7/origin-audit-metrics.7",
        "./usr/share/bash-completion/completions/origin-audit",
        "./usr/share/zsh/vendor-completions/_origin-audit",
        "./usr/share/fish/vendor_completions.d/origin-audit.fish",
        "./etc/origin-audit/config.toml",
        "./etc/cron.d/origin-audit",
        "./usr/lib/tmpfiles.d/origin-audit.conf",
        "/systemd/system/origin-audit.service",
        "/systemd/system/origin-audit.timer",
        "./usr/share/doc/origin-audit/examples/origin-audit-pre-apply",
        "./usr/share/doc/origin-audit/examples/prometheus-alerts.yml",
    ] {
        assert!(
            listing.lines().any(|l| l.contains(path)),
            "{path} missing from the package:\n{listing}"
        );
    }
    for exe in ["./usr/bin/origin-audit", "examples/origin-audit-pre-apply"] {
        let l = listing.lines().find(|l| l.ends_with(exe)).unwrap();
        assert!(l.starts_with("-rwxr-xr-x"), "{l}");
    }
    // Completion as bash runs it from the package: options and values after the subcommand.
    let x = d.join("x");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let script = x.join("usr/share/bash-completion/completions/origin-audit");
    let complete = |words: &[&str]| -> String {
        // COMP_WORDS as bash fills it; the function gets (command, current word, previous).
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let n = words.len() - 1;
        let prog = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={n}; _origin__audit origin-audit '{}' '{}'; echo \"${{COMPREPLY[*]}}\"",
            script.display(),
            quoted.join(" "),
            words[n],
            words[n - 1]
        );
        text(&run_ok(Command::new("bash").args(["--norc", "-c", &prog])).stdout)
    };
    assert_eq!(complete(&["origin-audit", "fix", "--em"]).trim(), "--emit");
    let forms = complete(&["origin-audit", "fix", "--emit", ""]);
    for f in ["nft", "iptables", "ufw", "firewalld"] {
        assert!(
            forms.split_whitespace().any(|w| w == f),
            "fix --emit <TAB>: {forms}"
        );
    }
    assert!(
        complete(&["origin-audit", "check", "--na"]).contains("--nagios"),
        "check --na<TAB>"
    );
    assert!(
        complete(&["origin-audit", "config", "sh"]).contains("show"),
        "config sh<TAB>"
    );
    // zsh, typed into a real interactive zsh on a pty (package_support/complete.zsh), and fish
    // (`complete -C`, fish's own "what would TAB offer"), from the package's files.
    let zsh_dir = x.join("usr/share/zsh/vendor-completions");
    let zsh_script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/package_support/complete.zsh");
    let zsh = |line: &str| -> String {
        text(
            &run_ok(
                Command::new("timeout")
                    .args(["30", "zsh", "-f"])
                    .arg(&zsh_script)
                    .arg(&zsh_dir)
                    .arg(line),
            )
            .stdout,
        )
    };
    let fish_file = x.join("usr/share/fish/vendor_completions.d/origin-audit.fish");
    let fish = |line: &str| -> String {
        let prog = format!("source '{}'; complete -C '{line}'", fish_file.display());
        // `complete -C` prints `MATCH<TAB>description`.
        text(
            &run_ok(Command::new("timeout").args(["30", "fish", "--no-config", "-c", &prog]))
                .stdout,
        )
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
    };
    for (shell, complete) in [("zsh", &zsh as &dyn Fn(&str) -> String), ("fish", &fish)] {
        let has = |line: &str, want: &str| {
            let got = complete(line);
            assert!(
                got.lines().any(|w| w.trim() == want),
                "{shell}: `{line}<TAB>` does not offer {want}: {got:?}"
            );
        };
        has("origin-audit fix --em", "--emit");
        for f in ["nft", "iptables", "ufw", "firewalld"] {
            has("origin-audit fix --emit ", f);
        }
        has("origin-audit check --na", "--nagios");
        has("origin-audit config sh", "show");
    }

    // Control: dependencies, conffiles, maintainer scripts.
    let ctl = d.join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
    let control = std::fs::read_to_string(ctl.join("control")).unwrap();
    let field = |k: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(field("Depends").contains("iproute2"), "{control}");
    assert!(field("Recommends").contains("nftables"), "{control}");
    assert!(field("Recommends").contains("iptables"), "{control}");
    assert!(field("Suggests").contains("ipset"), "{control}");
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/origin-audit/config.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles.contains("/etc/cron.d/origin-audit"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("install -d -m 0755 /var/cache/origin-audit /var/lib/origin-audit"));
    // The timer is installed, never enabled or started by the package: the only `enable` is
    // the re-enable of a unit the admin had enabled before (was-enabled).
    for l in postinst
        .lines()
        .filter(|l| l.contains("enable") && !l.trim_start().starts_with('#'))
    {
        let l = l.trim();
        assert!(
            l.contains("was-enabled")
                || l.starts_with("deb-systemd-helper enable")
                || l.contains("unmask"),
            "unexpected enable in postinst: {l}\n{postinst}"
        );
    }
    assert!(postinst.contains("was-enabled"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    let postrm = std::fs::read_to_string(ctl.join("postrm")).unwrap();
    assert!(postrm.contains("rm -rf /var/cache/origin-audit /var/lib/origin-audit"));
    for s in ["postinst", "postrm"] {
        run_ok(Command::new("sh").arg("-n").arg(ctl.join(s)));
    }

    // Install.
    let _installed = Installed;
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    let v = run_ok(Command::new("/usr/bin/origin-audit").arg("--version"));
    assert_eq!(
        text(&v.stdout).trim(),
        format!("origin-audit {}", env!("CARGO_PKG_VERSION"))
    );
    let man = run_ok(Command::new("man").args(["-w", "origin-audit"]));
    assert!(
        text(&man.stdout).contains("/usr/share/man/man1/origin-audit.1"),
        "{}",
        text(&man.stdout)
    );
    run_ok(Command::new("/usr/bin/origin-audit").args(["config", "check"]));
    for p in ["/var/cache/origin-audit", "/var/lib/origin-audit"] {
        assert!(Path::new(p).is_dir(), "{p} not created");
    }
    // Not enabled: no timers.target.wants link.
    assert!(!Path::new("/etc/systemd/system/timers.target.wants/origin-audit.timer").exists());

    // The installed binary against a namespace with a blocked Cloudflare range.
    let ns = Netns::web_origin("deb");
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
    let ranges = fresh_ranges(d);
    let o = run_bounded(
        ns.cmd("/usr/bin/origin-audit")
            .args(["check", "--format", "json", "--ranges-file"])
            .arg(&ranges),
        120,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "range-dropped"
                && f["sources"] == serde_json::json!(["173.245.48.0/20"])),
        "{j}"
    );

    // The service unit's ExecStart, as systemd would run it (systemd is not PID 1 here): its
    // Environment= expanded, its capability bounding set applied with setpriv.
    let unit_path = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join("origin-audit.service"))
        .find(|p| p.is_file())
        .expect("installed service unit");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let mut exec = unit_value(&unit, "ExecStart")[0].to_string();
    for env in unit_value(&unit, "Environment") {
        let (k, v) = env.split_once('=').unwrap();
        exec = exec.replace(&format!("${{{k}}}"), v);
    }
    let caps: Vec<String> = unit_value(&unit, "CapabilityBoundingSet")[0]
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    // --prometheus: node_exporter's Debian directory when it exists, else the state directory.
    assert!(exec.contains("--prometheus"), "{exec}");
    let textfile = if Path::new("/var/lib/prometheus/node-exporter").is_dir() {
        PathBuf::from("/var/lib/prometheus/node-exporter/origin-audit.prom")
    } else {
        PathBuf::from("/var/lib/origin-audit/origin-audit.prom")
    };
    let words: Vec<&str> = exec.split_whitespace().collect();
    eprintln!(
        "running the unit's ExecStart: {exec} (bounding set {})",
        caps.join(",")
    );
    let o = run_bounded(
        ns.cmd("setpriv")
            .arg("--bounding-set")
            .arg(format!("-all,{}", caps.join(",")))
            .args(&words),
        180,
    );
    // --quiet: findings on stdout, exit 2.
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("173.245.48.0/20 on port 443"),
        "{}",
        text(&o.stdout)
    );
    let prom = std::fs::read_to_string(&textfile).unwrap();
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_string())))
        .expect("textfile parses");
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("origin_audit_status", &[]), Some(2.0), "{prom}");
    assert_eq!(
        value(
            "origin_audit_blocked_ranges",
            &[("port", "443"), ("verdict", "drop")]
        ),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        value(
            "origin_audit_listener_up",
            &[("port", "443"), ("family", "ipv4")]
        ),
        Some(1.0),
        "{prom}"
    );
    drop(ns);

    // Purge.
    drop(_installed);
    let st = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "origin-audit"])
        .output()
        .unwrap();
    assert!(
        !text(&st.stdout).contains("installed"),
        "{}",
        text(&st.stdout)
    );
    for p in [
        "/usr/bin/origin-audit",
        "/etc/origin-audit",
        "/etc/cron.d/origin-audit",
        "/var/lib/origin-audit",
        "/var/cache/origin-audit",
    ] {
        assert!(!Path::new(p).exists(), "{p} left after purge");
    }
}
