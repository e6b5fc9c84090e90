//! The live readers against a real kernel: a private network namespace with a veth pair,
//! addresses, default routes, a native nft table, an iptables-legacy rule and a real listener,
//! read by `origin-audit snapshot --offline` run inside it. Needs root and iproute2, nft,
//! iptables-legacy, python3, setpriv; skipped with a printed reason otherwise. Never touches the
//! root namespace's firewall: every firewall command runs under `ip netns exec`.

mod package_support;

use origin_audit::snapshot::Snapshot;
use package_support::{find_in_path, is_root};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");

/// Deletes the namespaces and kills the processes this test started, even when it fails.
struct Guard {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Exactly the processes we spawned, through their Child handle (their own pid).
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Run to completion within `secs`, killed otherwise; returns (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, secs: u64) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&o).expect("out file"))
        .stderr(File::create(&e).expect("err file"))
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {cmd:?}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.success(), read(&o), read(&e))
}

fn sh(args: &[&str]) {
    let (ok, _, err) = run_bounded(Command::new(args[0]).args(&args[1..]), 20);
    assert!(ok, "{args:?} failed: {err}");
}

fn snapshot_in(ns: &str, prefix: &[&str], env_path: Option<&Path>, cache: &Path) -> Snapshot {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(prefix)
        .arg(BIN)
        .args(["snapshot", "--offline", "--cache-dir"])
        .arg(cache);
    if let Some(p) = env_path {
        cmd.env("PATH", p);
    }
    let (ok, out, err) = run_bounded(&mut cmd, 60);
    assert!(ok, "origin-audit snapshot failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("snapshot JSON: {e}\n{out}"))
}

#[test]
fn live_host_in_private_namespace() {
    if !is_root() {
        eprintln!("SKIPPED collect_netns: needs root (creates network namespaces)");
        return;
    }
    for tool in ["ip", "nft", "iptables-legacy", "python3", "setpriv"] {
        if find_in_path(tool).is_none() {
            eprintln!("SKIPPED collect_netns: `{tool}` not installed");
            return;
        }
    }
    let ns = format!("oa-col-{}", std::process::id());
    let peer = format!("{ns}-peer");
    let mut guard = Guard {
        namespaces: Vec::new(),
        children: Vec::new(),
    };
    for n in [&ns, &peer] {
        sh(&["ip", "netns", "add", n]);
        guard.namespaces.push(n.clone());
    }
    let ip_n = |n: &str, rest: &[&str]| {
        let mut v = vec!["ip", "-n", n];
        v.extend_from_slice(rest);
        sh(&v);
    };
    ip_n(&ns, &["link", "set", "lo", "up"]);
    ip_n(
        &ns,
        &[
            "link", "add", "oa0", "type", "veth", "peer", "name", "oa1", "netns", &peer,
        ],
    );
    ip_n(&ns, &["addr", "add", "198.51.100.2/24", "dev", "oa0"]);
    ip_n(
        &ns,
        &["addr", "add", "2001:db8::2/64", "dev", "oa0", "nodad"],
    );
    ip_n(&peer, &["addr", "add", "198.51.100.1/24", "dev", "oa1"]);
    ip_n(&ns, &["link", "set", "oa0", "up"]);
    ip_n(&peer, &["link", "set", "oa1", "up"]);
    ip_n(&ns, &["route", "add", "default", "via", "198.51.100.1"]);
    ip_n(
        &ns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8::1",
            "dev",
            "oa0",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("oa.nft");
    std::fs::write(
        &rules,
        "table inet oa_test {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 8443 accept\n  }\n}\n",
    )
    .expect("write nft rules");
    let rules = rules.to_str().expect("utf8 path");
    sh(&["ip", "netns", "exec", &ns, "nft", "-f", rules]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DROP",
    ]);

    // `ip netns exec` execs its command, so the child's pid is the listener's pid.
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c"])
        .arg(
            "import socket,time\n\
             a=socket.socket(); a.bind(('127.0.0.1',8443)); a.listen()\n\
             b=socket.socket(socket.AF_INET6); b.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,1)\n\
             b.bind(('::',443)); b.listen()\n\
             print('ready',flush=True); time.sleep(120)\n",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn listener");
    let stdout = listener.stdout.take().expect("piped stdout");
    let pid = listener.id();
    guard.children.push(listener);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("listener ready within 15 s");
    assert_eq!(ready.trim(), "ready");

    let cache = tempfile::tempdir().expect("cache dir");
    let snap = snapshot_in(&ns, &[], None, cache.path());

    let listeners = snap.listeners.as_ref().expect("listeners read");
    let l = listeners
        .iter()
        .find(|l| l.port == 8443)
        .unwrap_or_else(|| panic!("no listener on 8443: {listeners:?}"));
    assert_eq!(l.address.to_string(), "127.0.0.1");
    assert_eq!(l.pid, Some(pid));
    assert_eq!(l.process.as_deref(), Some("python3"));
    let l6 = listeners
        .iter()
        .find(|l| l.port == 443)
        .expect("listener on 443");
    assert_eq!(l6.address.to_string(), "::");
    assert_eq!(l6.v6only, Some(true), "IPV6_V6ONLY from sock_diag");

    let oa0 = snap
        .interfaces
        .iter()
        .find(|i| i.name == "oa0")
        .expect("oa0");
    assert!(oa0.up);
    let addrs: Vec<String> = oa0
        .addrs
        .iter()
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    assert!(addrs.contains(&"198.51.100.2/24".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"2001:db8::2/64".to_string()), "{addrs:?}");
    let routes: Vec<String> = snap
        .default_routes
        .iter()
        .map(|r| format!("{} {} {:?}", r.family, r.iface, r.gateway))
        .collect();
    assert!(
        routes.contains(&"ipv4 oa0 Some(198.51.100.1)".to_string()),
        "{routes:?}"
    );
    assert!(
        routes.contains(&"ipv6 oa0 Some(2001:db8::1)".to_string()),
        "{routes:?}"
    );

    assert_eq!(snap.dumps.nft_json.len(), 1);
    assert!(snap.dumps.nft_json[0].contains("oa_test"));
    let legacy = snap
        .dumps
        .iptables_legacy_save
        .as_deref()
        .expect("legacy dump");
    assert!(legacy.contains("--dport 80 -j DROP"), "{legacy}");
    assert_eq!(snap.dumps.iptables_nft_save, None);
    assert_eq!(snap.dumps.ip6tables_legacy_save, None);
    assert!(snap.read_errors.is_empty(), "{:?}", snap.read_errors);

    // Without root: every firewall reader reports "needs root", nothing crashes.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let cache_nobody = tempfile::tempdir().expect("cache dir");
    // The unprivileged user's own cache directory (one others can write is refused).
    sh(&[
        "chown",
        "65534:65534",
        cache_nobody.path().to_str().expect("utf8 path"),
    ]);
    let snap = snapshot_in(&ns, &nobody, None, cache_nobody.path());
    let err = |source: &str| {
        snap.read_errors
            .iter()
            .find(|e| e.source == source)
            .unwrap_or_else(|| panic!("no read error for {source}: {:?}", snap.read_errors))
    };
    for source in [
        "nft -j -t list ruleset",
        "iptables-nft-save",
        "/proc/net/ip_tables_names",
    ] {
        let e = err(source);
        assert!(e.firewall, "{e:?}");
        assert!(e.message.contains("needs root"), "{e:?}");
    }
    assert!(snap.dumps.is_empty());
    // Listeners stay visible to an unprivileged user; their owner does not.
    let owner = snap
        .listeners
        .as_ref()
        .expect("listeners")
        .iter()
        .find(|l| l.port == 8443)
        .map(|l| l.pid);
    assert_eq!(owner, Some(None));

    // Without the nft binary: the native table is found over netlink and reported as unread.
    let bin = tempfile::tempdir().expect("bin dir");
    for tool in [
        "ip",
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-save",
        "ip6tables-save",
        "ipset",
    ] {
        if let Some(p) = find_in_path(tool) {
            std::os::unix::fs::symlink(p, bin.path().join(tool)).expect("symlink");
        }
    }
    let snap = snapshot_in(&ns, &[], Some(bin.path()), cache.path());
    let e = snap
        .read_errors
        .iter()
        .find(|e| e.what == "native nftables")
        .unwrap_or_else(|| panic!("missing nft not reported: {:?}", snap.read_errors));
    assert!(e.firewall);
    assert!(e.message.contains("inet oa_test"), "{e:?}");
    assert!(snap.dumps.iptables_legacy_save.is_some());
    drop(guard);
}
