//! The lab: a pair of private network namespaces (origin + client) joined by a veth pair, an
//! optional third "container" namespace behind the origin (Docker-style), the listeners, the
//! scenario's ruleset loaded with the real tools, its `[run]` script (real firewall managers),
//! and the cleanup.
//!
//! Owns: every command the harness runs (with a time limit), the registry of namespaces,
//! processes and scratch directories this run created, and their removal — by the [`Lab`] Drop
//! guard, by the watchdog, and for leftovers of dead earlier runs.
//! Must not: touch the root namespace's firewall or addresses (every firewall tool runs under
//! `ip netns exec`), or remove anything it did not create (`oa-k-<pid>-…` names only; the only
//! processes it kills are its own children and the processes inside its own namespaces).

use crate::scenario::{ListenMode, Scenario};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Scratch directories (`[run]`'s `$OA_TMP`, `/etc/netns/NS`) to remove.
    dirs: BTreeSet<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    pids: BTreeSet::new(),
    dirs: BTreeSet::new(),
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

/// Where ip-netns(8) keeps a namespace's private `/etc` entries, bind-mounted over `/etc` for
/// every `ip netns exec NAME`.
fn etc_overlay(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

/// Kill every process inside namespace `name` (daemons a `[run]` script started, such as
/// fail2ban-server). The namespace is private to this run, so whatever runs in it is ours; a
/// process there keeps the namespace alive after `ip netns del`.
fn kill_inside(name: &str) {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me)
    {
        kill_pid(pid);
    }
}

fn del_netns(name: &str) {
    kill_inside(name);
    let _ = std::fs::remove_dir_all(etc_overlay(name));
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Set by the watchdog: no new command starts, so nothing new appears while it cleans up.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Kill every process and delete every namespace still registered (watchdog path). Scenario
/// threads keep running meanwhile: commands already started may still create a namespace, so
/// this sweeps a few times, after the shutdown flag has stopped new ones.
pub fn cleanup_all() {
    SHUTDOWN.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let (pids, nss, dirs): (Vec<u32>, Vec<String>, Vec<_>) = {
            let r = registry();
            (
                r.pids.iter().copied().collect(),
                r.namespaces.iter().cloned().collect(),
                r.dirs.iter().cloned().collect(),
            )
        };
        for pid in pids {
            kill_pid(pid);
        }
        for ns in nss {
            del_netns(&ns);
        }
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        std::thread::sleep(Duration::from_millis(500));
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
    // `/etc/netns/oa-k-<pid>-…` overlays whose namespace went with a killed run.
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("oa-k-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
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
    if SHUTDOWN.load(Ordering::SeqCst) {
        return Err(format!(
            "`{what}`: not started, the watchdog is cleaning up"
        ));
    }
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
    /// The Docker-style container namespace, when the scenario has one.
    pub container: Option<String>,
    helpers: Vec<Helper>,
    /// `$OA_TMP` of the `[run]` script.
    scratch: Option<PathBuf>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let pid = h.child.id();
            let _ = h.child.kill();
            let _ = h.child.wait();
            registry().pids.remove(&pid);
        }
        for ns in [
            Some(&self.origin),
            Some(&self.client),
            self.container.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            del_netns(ns);
            registry().namespaces.remove(ns.as_str());
        }
        if let Some(d) = &self.scratch {
            let _ = std::fs::remove_dir_all(d);
            registry().dirs.remove(d);
        }
    }
}

impl Lab {
    /// Build both namespaces and the link. `client_blocks` are the source blocks the client must
    /// be able to send from (AnyIP local routes).
    pub fn new(n: usize, sc: &Scenario, client_blocks: &[IpNet]) -> Result<Lab, String> {
        let base = format!("oa-k-{}-{n}", std::process::id());
        let mut lab = Lab {
            origin: format!("{base}-o"),
            client: format!("{base}-c"),
            container: None,
            helpers: vec![],
            scratch: None,
        };
        if SHUTDOWN.load(Ordering::SeqCst) {
            return Err("not started, the watchdog is cleaning up".into());
        }
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
        if let Some(k) = &sc.container {
            let name = format!("{base}-k");
            registry().namespaces.insert(name.clone());
            lab.container = Some(name.clone());
            lab.add_container(&name, k)?;
        }
        Ok(lab)
    }

    /// The container: its own namespace joined to the origin by a veth pair whose origin end
    /// is `k.iface` with the gateway address (Docker's `docker0` holds 172.17.0.1/16), default
    /// route via the origin, and forwarding on in the origin so DNAT-ed packets reach it.
    fn add_container(&self, name: &str, k: &crate::scenario::Container) -> Result<(), String> {
        let o = self.origin.as_str();
        ip(&["netns", "add", name])?;
        must(
            Command::new("ip").args([
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]),
            None,
        )?;
        must(
            self.in_origin("sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"]),
            None,
        )?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", o, "link", "add", &k.iface, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])?;
        let gw = format!("{}/{}", k.gw, k.addr.prefix_len());
        ip(&["-n", o, "addr", "add", &gw, "dev", &k.iface])?;
        ip(&["-n", o, "link", "set", &k.iface, "up"])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &k.addr.to_string(),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", name, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            name,
            "route",
            "add",
            "default",
            "via",
            &k.gw.to_string(),
        ])?;
        Ok(())
    }

    /// `ip netns exec <origin> program…`
    pub fn in_origin(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.origin, program]);
        c
    }

    fn in_ns(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    pub fn in_client(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client, program]);
        c
    }

    /// Start the scenario's listeners in the origin (audited ports, and extra ports named in
    /// `listeners`, e.g. a REDIRECT target) and in the container, and wait until they are bound.
    pub fn start_listeners(&mut self, sc: &Scenario, exe: &str) -> Result<(), String> {
        let mut addrs = vec![];
        let mut full = vec![];
        let extra = sc.listeners.keys().filter(|p| !sc.ports.contains(p));
        for &p in sc.ports.iter().chain(extra) {
            match sc.listen_mode(p) {
                ListenMode::All => {
                    addrs.push(format!("0.0.0.0:{p}"));
                    addrs.push(format!("[::]:{p}"));
                }
                ListenMode::Loopback => addrs.push(format!("127.0.0.1:{p}")),
                ListenMode::None => {}
                ListenMode::V6Any => addrs.push(format!("[::]:{p}")),
                ListenMode::Device(d) => {
                    addrs.push(format!("0.0.0.0:{p}%dev={d}"));
                    addrs.push(format!("[::]:{p}%dev={d}"));
                }
                ListenMode::Full => {
                    addrs.push(format!("0.0.0.0:{p}%full"));
                    addrs.push(format!("[::]:{p}%full"));
                    full.push(format!("{ORIGIN_V4}:{p}"));
                    full.push(format!("[{ORIGIN_V6}]:{p}"));
                }
                ListenMode::ReuseportFull => {
                    for a in [format!("0.0.0.0:{p}"), format!("[::]:{p}")] {
                        addrs.push(format!("{a}%reuseport"));
                        addrs.push(format!("{a}%reuseport%full"));
                    }
                    full.push(format!("{ORIGIN_V4}:{p}"));
                    full.push(format!("[{ORIGIN_V6}]:{p}"));
                }
            }
        }
        let origin = self.origin.clone();
        self.spawn_listener(&origin, &addrs, exe)?;
        if !full.is_empty() {
            // `full`: connections from inside the origin fill each accept queue (backlog 0, never
            // accepted) until a further connect does not complete; the helper keeps them open.
            self.spawn_helper(&origin, "fill", &full, exe, "filled")?;
        }
        if let (Some(k), Some(ns)) = (&sc.container, self.container.clone()) {
            let addrs: Vec<String> = k.ports.iter().map(|p| format!("0.0.0.0:{p}")).collect();
            self.spawn_listener(&ns, &addrs, exe)?;
            // The origin reaches the container (before any ruleset): the link and the
            // container's listeners work, so a timeout later is the firewall's doing.
            let input: String = k
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{i} {} {} {p}\n", k.gw, k.addr.addr()))
                .collect();
            let mut last = String::new();
            for _ in 0..10 {
                let mut cmd = self.in_origin(exe);
                cmd.arg(crate::ROLE_ARG).args(["probe", "1000", "4"]);
                let out = run(&mut cmd, Some(&input), Duration::from_secs(10))?;
                let ok = out
                    .stdout
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("connected"))
                    .count();
                if ok == k.ports.len() {
                    return Ok(());
                }
                last = out.stdout;
            }
            return Err(format!(
                "the container's listeners are not reachable from the origin: {}",
                last.trim()
            ));
        }
        Ok(())
    }

    fn spawn_listener(&mut self, ns: &str, addrs: &[String], exe: &str) -> Result<(), String> {
        if addrs.is_empty() {
            return Ok(());
        }
        self.spawn_helper(ns, "listen", addrs, exe, "ready")
    }

    /// A helper role in `ns` that prints one line starting with `ready_word` once its work is
    /// done and then holds its sockets until its stdin closes.
    fn spawn_helper(
        &mut self,
        ns: &str,
        role: &str,
        args: &[String],
        exe: &str,
        ready_word: &str,
    ) -> Result<(), String> {
        let mut cmd = Self::in_ns(ns, exe);
        cmd.arg(crate::ROLE_ARG).arg(role).args(args);
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
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.split_whitespace().next() == Some(ready_word) => Ok(()),
            Ok(l) => Err(format!("{role} helper failed: {:?}", l.trim())),
            Err(_) => Err(format!("{role} helper did not get ready within 20 s")),
        }
    }

    /// Load every ruleset section with its real tool inside the origin namespace, then run the
    /// `[run]` script.
    pub fn load_rules(&mut self, sc: &Scenario) -> Result<(), String> {
        for rs in &sc.rulesets {
            let (prog, args) = rs.loader.command();
            let mut cmd = self.in_origin(prog);
            cmd.args(args);
            must(&mut cmd, Some(&rs.text)).map_err(|e| format!("loading rules: {e}"))?;
        }
        if let Some(script) = &sc.run {
            self.run_script(sc, script)?;
        }
        Ok(())
    }

    /// `[run]`: `bash -e` inside the origin namespace, bounded by [`RUN_SCRIPT_LIMIT`], with
    /// `$OA_TMP` (a scratch directory removed afterwards), `$OA_NS` (the origin namespace),
    /// `$OA_IFACE`, `$OA_CONTAINER_NS` and `$OA_TOOLS` (`tests/scenarios/tools`). The `etc` entries are first copied into
    /// `/etc/netns/<origin>/`, which `ip netns exec` bind-mounts over `/etc` (ip-netns(8)), so
    /// ufw & co. change private copies, never the host's. The script's output goes to
    /// `$OA_TMP/run.log`, so daemons it leaves running hold no pipe of ours.
    fn run_script(&mut self, sc: &Scenario, script: &str) -> Result<(), String> {
        let tmp = std::env::temp_dir().join(format!("{}-run", self.origin));
        registry().dirs.insert(tmp.clone());
        self.scratch = Some(tmp.clone());
        std::fs::create_dir_all(&tmp).map_err(|e| format!("[run]: {}: {e}", tmp.display()))?;
        if !sc.etc.is_empty() {
            let overlay = etc_overlay(&self.origin);
            std::fs::create_dir_all(&overlay)
                .map_err(|e| format!("[run]: {}: {e}", overlay.display()))?;
            for name in &sc.etc {
                must(
                    Command::new("cp")
                        .arg("-a")
                        .arg(Path::new("/etc").join(name))
                        .arg(overlay.join(name)),
                    None,
                )
                .map_err(|e| format!("[run]: etc overlay: {e}"))?;
            }
        }
        let log = tmp.join("run.log");
        let full = format!(
            "exec >{} 2>&1 </dev/null\n{script}",
            shell_quote(&log.to_string_lossy())
        );
        let mut cmd = self.in_origin("bash");
        cmd.args(["-e", "-c", &full])
            .env("OA_TMP", &tmp)
            .env("OA_NS", &self.origin)
            .env("OA_IFACE", &sc.iface)
            .env(
                "OA_TOOLS",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/tools"),
            )
            .env("OA_CONTAINER_NS", self.container.as_deref().unwrap_or(""));
        let res = run(&mut cmd, None, RUN_SCRIPT_LIMIT);
        let tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n    ")
        };
        match res {
            Ok(o) if o.ok() => Ok(()),
            Ok(o) => Err(format!(
                "[run] exited {:?}; its output:\n    {}",
                o.code,
                tail()
            )),
            Err(e) => Err(format!("[run]: {e}; its output:\n    {}", tail())),
        }
    }
}

/// Bounds a `[run]` script (fail2ban's start takes a second or two).
const RUN_SCRIPT_LIMIT: Duration = Duration::from_secs(90);

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
