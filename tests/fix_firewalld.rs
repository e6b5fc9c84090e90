//! The `fix --emit firewalld` form, validated by firewalld's own tooling. firewalld needs D-Bus
//! and systemd to run, which this test machine does not have, so each emitted `firewall-cmd
//! --permanent …` command is executed with `firewall-offline-cmd` (the same option parser and
//! the same permanent-configuration writer), then `--check-config` must pass and the ipset and
//! rich rule must be in the configuration. The configuration lives in a private copy of
//! /etc/firewalld: the commands run under `ip netns exec`, which bind-mounts
//! /etc/netns/NS/firewalld over /etc/firewalld (ip-netns(8)), so the host's is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::{BIN, find_in_path, is_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// Deletes the namespace and its /etc overlay even when the test fails.
struct Lab {
    ns: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.ns));
    }
}

fn offline_cmd(ns: &str, args: &[String]) -> Output {
    Command::new("timeout")
        .arg("60")
        .args(["ip", "netns", "exec", ns, "firewall-offline-cmd"])
        .args(args)
        .output()
        .expect("run firewall-offline-cmd")
}

#[test]
fn firewalld_form_is_accepted_by_firewalld_tooling() {
    let (true, Some(_)) = (is_root(), find_in_path("firewall-offline-cmd")) else {
        // scripts/test installs firewalld; running without it must not look like a pass.
        panic!(
            "needs root and firewall-offline-cmd (Debian package firewalld; ./scripts/test installs it)"
        );
    };
    // A firewalld-style host whose public zone rejects Cloudflare on port 80.
    let out = Command::new(BIN)
        .args(["fix", "--offline", "--emit", "firewalld", "--nft-json"])
        .arg(fixture("nft/firewalld.json"))
        .args([
            "--iface",
            "eth0",
            "--dest",
            "203.0.113.2",
            "--dest",
            "2001:db8:1::2",
        ])
        .output()
        .expect("run origin-audit");
    let form = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a fix is offered: {form}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        form.lines()
            .filter(|l| l.starts_with("firewall-cmd "))
            .count()
            > 3,
        "{form}"
    );
    assert!(form.contains("--add-rich-rule="), "{form}");

    let ns = format!("oa-fwd-{}", std::process::id());
    let st = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .expect("ip");
    assert!(st.success());
    let lab = Lab { ns: ns.clone() };
    let overlay = Path::new("/etc/netns").join(&ns).join("firewalld");
    std::fs::create_dir_all(&overlay).expect("overlay");
    if Path::new("/etc/firewalld").is_dir() {
        let st = Command::new("cp")
            .args(["-a", "/etc/firewalld/.", overlay.to_str().expect("utf8")])
            .status()
            .expect("cp");
        assert!(st.success());
    }

    // The form as printed, run by sh (each line must succeed), with firewalld's offline tool
    // in place of firewall-cmd; twice, as an admin pasting it again would: the second run
    // must succeed and change nothing.
    let script: String = form
        .replace("firewall-cmd --permanent ", "firewall-offline-cmd ")
        .replace(
            "firewall-cmd --reload",
            "firewall-offline-cmd --check-config",
        );
    for round in 1..=2 {
        let o = Command::new("timeout")
            .arg("120")
            .args(["ip", "netns", "exec", &lab.ns, "sh", "-ec", &script])
            .output()
            .expect("sh");
        assert!(
            o.status.success(),
            "run {round} of the firewalld form refused: {}{}\n{script}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let check = offline_cmd(&lab.ns, &["--check-config".into()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let ipset = offline_cmd(&lab.ns, &["--info-ipset=cloudflare_v4".into()]);
    let ipset = String::from_utf8_lossy(&ipset.stdout).to_string();
    assert!(
        ipset.contains("173.245.48.0/20") && ipset.contains("hash:net"),
        "{ipset}"
    );
    let rich = offline_cmd(&lab.ns, &["--list-rich-rules".into()]);
    let rich = String::from_utf8_lossy(&rich.stdout).to_string();
    assert!(
        rich.contains("ipset=\"cloudflare_v4\"")
            && rich.contains("port=\"80\"")
            // Ahead of the zone's deny rich rules (the zone's `_pre` chain).
            && rich.contains("priority=\"-32768\"")
            && rich.lines().count() == form.matches("--add-rich-rule=").count(),
        "{rich}"
    );
    // The host's own configuration was not touched.
    assert!(!Path::new("/etc/firewalld/ipsets/cloudflare_v4.xml").exists());
}
