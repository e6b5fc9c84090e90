//! The lab: a pair of private network namespaces (origin + client) joined by a veth pair, the
//! listeners in the origin, the scenario's ruleset loaded with the real tools, and the cleanup.
//!
//! Owns: every command the harness runs (with a time limit), the registry of namespaces and
//! processes this run created, and their removal — by the [`Lab`] Drop guard, by the watchdog,
//! and for leftovers of dead earlier runs.
//! Must not: touch the root namespace's firewall or addresses (every firewall tool runs under
//! `ip netns exec`), or remove anything it did not create (`oa-k-<pid>-…` names only).

use crate::scenario::{ListenMode, Scenario};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ORIGIN_V4: &str = "203.0.113.2";
pub const ORIGIN_V6: &str = "2001:db8:1::2";
pub const CLIENT_V4: &str = "203.0.113.1";
pub const CLIENT_V6: &str = "2001:db8:1::1";

/// What this run created, so the watchdog can clean up when a scenario thread is stuck.
struct Registry {
    namespaces: BTreeSet<String>,
    pids: BTreeSet<u32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    pids: BTreeSet::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock poisons it; the data (names, pids) stays valid.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn del_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Kill every process and delete every namespace still registered (watchdog path).
pub fn cleanup_all() {
    let (pids, nss) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
        )
    };
    for pid in pids {
        kill_pid(pid);
    }
    for ns in nss {
        del_netns(&ns);
    }
}

/// Delete `oa-k-<pid>-…` namespaces left by runs whose process is gone (a killed earlier run).
pub fn cleanup_stale() {
    let Ok(out) = run(
        Command::new("ip").args(["netns", "list"]),
        None,
        Duration::from_secs(10),
    ) else {
        return;
    };
    for line in out.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("oa-k-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("kernel: removing stale namespace {name} (its run, pid {pid}, is gone)");
            del_netns(name);
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command with `stdin` fed to it, killing it after `timeout`. Err only when it could not
/// run or timed out; a non-zero exit is in [`Output::code`].
pub fn run(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<Output, String> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{what}`: cannot start: {e}"))?;
    let pid = child.id();
    registry().pids.insert(pid);
    let writer = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_string();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out_t = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err_t = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("`{what}`: timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("`{what}`: wait failed: {e}")),
        }
    };
    registry().pids.remove(&pid);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let status = status?;
    Ok(Output {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Run and require exit 0.
pub fn must(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, String> {
    let what = describe(cmd);
    let out = run(cmd, stdin, Duration::from_secs(20))?;
    if out.ok() {
        Ok(out)
    } else {
        Err(format!(
            "`{what}` exited {:?}: {}",
            out.code,
            out.stderr.trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<Output, String> {
    must(Command::new("ip").args(args), None)
}

/// A background helper (this binary in a role) running inside a namespace.
struct Helper {
    child: Child,
    /// Held open: the helper exits when it reads EOF, so it dies with us even on SIGKILL.
    _stdin: Option<ChildStdin>,
}

/// One scenario's namespaces and helpers. Dropping it kills the helpers and deletes the
/// namespaces, also while a panic unwinds.
pub struct Lab {
    pub origin: String,
    pub client: String,
    helpers: Vec<Helper>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let pid = h.child.id();
            let _ = h.child.kill();
            let _ = h.child.wait();
            registry().pids.remove(&pid);
        }
        for ns in [&self.origin, &self.client] {
            del_netns(ns);
            registry().namespaces.remove(ns.as_str());
        }
    }
}

impl Lab {
    /// Build both namespaces and the link. `client_blocks` are the source blocks the client must
    /// be able to send from (AnyIP local routes).
    pub fn new(n: usize, sc: &Scenario, client_blocks: &[IpNet]) -> Result<Lab, String> {
        let base = format!("oa-k-{}-{n}", std::process::id());
        let lab = Lab {
            origin: format!("{base}-o"),
            client: format!("{base}-c"),
            helpers: vec![],
        };
        {
            let mut r = registry();
            r.namespaces.insert(lab.origin.clone());
            r.namespaces.insert(lab.client.clone());
        }
        let (o, c) = (lab.origin.as_str(), lab.client.as_str());
        ip(&["netns", "add", o])?;
        ip(&["netns", "add", c])?;
        // DAD off before any interface exists, so v6 addresses are usable at once; no ICMP
        // rate limit in the origin, or REJECT's replies would look like drops in bursts.
        must(
            Command::new("ip").args([
                "netns",
                "exec",
                o,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]),
            None,
        )?;
        // The client binds to addresses it only has through `local` routes (AnyIP); IPv6
        // needs ip_nonlocal_bind for that.
        must(
            Command::new("ip").args([
                "netns",
                "exec",
                c,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.ip_nonlocal_bind=1",
                "net.ipv6.ip_nonlocal_bind=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]),
            None,
        )?;
        let ifc = sc.iface.as_str();
        ip(&["-n", o, "link", "set", "lo", "up"])?;
        ip(&["-n", c, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", o, "link", "add", ifc, "type", "veth", "peer", "name", "peer0", "netns", c,
        ])?;
        ip(&["-n", o, "addr", "add", "203.0.113.2/24", "dev", ifc])?;
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            ifc,
            "nodad",
        ])?;
        ip(&["-n", o, "link", "set", ifc, "up"])?;
        ip(&["-n", c, "addr", "add", "203.0.113.1/24", "dev", "peer0"])?;
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "peer0",
            "nodad",
        ])?;
        ip(&["-n", c, "link", "set", "peer0", "up"])?;
        ip(&["-n", o, "route", "add", "default", "via", CLIENT_V4])?;
        ip(&["-n", o, "-6", "route", "add", "default", "via", CLIENT_V6])?;
        // Extra "LAN" interfaces: a veth pair inside the origin (the `dummy` link type is not
        // built into every kernel this runs on).
        for (i, d) in sc.dummies.iter().enumerate() {
            let peer = format!("oapeer{i}");
            ip(&[
                "-n", o, "link", "add", d, "type", "veth", "peer", "name", &peer,
            ])?;
            let a = format!("192.168.{}.1/24", 100 + i);
            ip(&["-n", o, "addr", "add", &a, "dev", d])?;
            ip(&["-n", o, "link", "set", &peer, "up"])?;
            ip(&["-n", o, "link", "set", d, "up"])?;
        }
        for b in client_blocks {
            let s = b.to_string();
            let fam = if matches!(b, IpNet::V6(_)) {
                "-6"
            } else {
                "-4"
            };
            ip(&["-n", c, fam, "route", "add", "local", &s, "dev", "lo"])?;
        }
        Ok(lab)
    }

    /// `ip netns exec <origin> program…`
    pub fn in_origin(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.origin, program]);
        c
    }

    pub fn in_client(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client, program]);
        c
    }

    /// Start the scenario's listeners in the origin and wait until they are bound.
    pub fn start_listeners(&mut self, sc: &Scenario, exe: &str) -> Result<(), String> {
        let mut addrs = vec![];
        for &p in &sc.ports {
            match sc.listen_mode(p) {
                ListenMode::All => {
                    addrs.push(format!("0.0.0.0:{p}"));
                    addrs.push(format!("[::]:{p}"));
                }
                ListenMode::Loopback => addrs.push(format!("127.0.0.1:{p}")),
                ListenMode::None => {}
            }
        }
        if addrs.is_empty() {
            return Ok(());
        }
        let mut cmd = self.in_origin(exe);
        cmd.arg(crate::ROLE_ARG).arg("listen").args(&addrs);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start listener helper: {e}"))?;
        registry().pids.insert(child.id());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        self.helpers.push(Helper {
            child,
            _stdin: stdin,
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.trim() == "ready" => Ok(()),
            Ok(l) => Err(format!("listener helper failed: {:?}", l.trim())),
            Err(_) => Err("listener helper did not get ready within 10 s".into()),
        }
    }

    /// Load every ruleset section with its real tool inside the origin namespace.
    pub fn load_rules(&self, sc: &Scenario) -> Result<(), String> {
        for rs in &sc.rulesets {
            let (prog, args) = rs.loader.command();
            let mut cmd = self.in_origin(prog);
            cmd.args(args);
            must(&mut cmd, Some(&rs.text)).map_err(|e| format!("loading rules: {e}"))?;
        }
        Ok(())
    }
}
