//! Shared by tests/quiet.rs, tests/package.rs and tests/prometheus.rs: a throwaway network
//! namespace that looks like a web origin (a dummy interface with a public-looking address, a
//! default route, listeners on 80 and 443), a fresh copy of the bundled Cloudflare ranges, and
//! bounded process runs. Every firewall command runs under `ip netns exec`; the root
//! namespace's firewall is never touched. Needs root and iproute2; callers skip with a printed
//! reason otherwise.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");
/// The origin's address inside the namespace (TEST-NET-3, so it can never be a real host).
pub const ADDR: &str = "203.0.113.10";

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Why namespace tests cannot run here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for t in ["ip", "iptables-nft", "nft", "ss"] {
        if find_in_path(t).is_none() {
            return Some(format!("{t} is not installed"));
        }
    }
    if !Path::new("/usr/bin/python3").is_file() {
        return Some("/usr/bin/python3 (the test listener) is not installed".into());
    }
    None
}

/// A private network namespace, deleted (and its listener killed) on drop.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("oa-{tag}-{}", std::process::id());
        // A namespace left by a killed earlier run of this pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A web origin: `oa0` with 203.0.113.10/24, a default route, TCP listeners on 0.0.0.0:80
    /// and 0.0.0.0:443. (A veth pair inside the namespace: the dummy module is not available
    /// in every container.)
    pub fn web_origin(tag: &str) -> Netns {
        let mut ns = Netns::origin(tag);
        let child = ns
            .cmd("/usr/bin/python3")
            .args([
                "-c",
                "import socket, time\n\
                 socks = []\n\
                 for p in (80, 443):\n\
                 \x20   s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 \x20   s.bind(('0.0.0.0', p)); s.listen(16); socks.append(s)\n\
                 time.sleep(600)\n",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn listener");
        ns.children.push(child);
        ns.wait_listening(&[80, 443]);
        ns
    }

    /// Waits (bounded, 10 s) until TCP sockets listen on every one of `ports`.
    pub fn wait_listening(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = self.cmd("ss").args(["-Htln"]).output().expect("ss");
            let t = String::from_utf8_lossy(&o.stdout);
            if ports.iter().all(|p| t.contains(&format!(":{p} "))) {
                return;
            }
            assert!(Instant::now() < deadline, "listeners did not come up: {t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The origin without listeners: `oa0` with 203.0.113.10/24 and a default route.
    pub fn origin(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        ns.ip(&["link", "add", "oa0", "type", "veth", "peer", "name", "oa1"]);
        ns.ip(&["addr", "add", &format!("{ADDR}/24"), "dev", "oa0"]);
        ns.ip(&["link", "set", "oa1", "up"]);
        ns.ip(&["link", "set", "oa0", "up"]);
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
            "dev",
            "oa0",
        ]);
        ns
    }

    /// Starts `cmd` (built with [`Netns::cmd`]) in the background; it is killed, by its own
    /// handle, when the namespace is dropped.
    pub fn spawn(&mut self, cmd: &mut Command) {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.children.push(child);
    }

    /// `ip netns exec NAME program`.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// A rule in this namespace's iptables-nft filter table.
    pub fn iptables(&self, args: &[&str]) {
        run_ok(self.cmd("iptables-nft").args(args));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Exactly the processes this test spawned, through their own handles.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Runs to completion within `secs` (killed and failed otherwise).
pub fn run_bounded(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not finish within {secs} s: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bundled Cloudflare ranges in a fresh file (one CIDR a line): `--ranges-file` with it
/// gives a current list, so no `ranges-stale` warning and no network access.
pub fn fresh_ranges(dir: &Path) -> PathBuf {
    let p = origin_audit::ranges::cloudflare();
    let mut text = String::new();
    for c in p.bundled.ipv4.iter().chain(&p.bundled.ipv6) {
        text.push_str(c);
        text.push('\n');
    }
    let path = dir.join("cloudflare-ranges.txt");
    std::fs::write(&path, text).expect("write ranges");
    path
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// PEM armour (RFC 7468): base64 in 64-column lines (rcgen's `pem` feature is off here).
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
