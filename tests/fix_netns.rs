//! `fix --apply` against the real kernel, in private network namespaces.
//!
//! For every kernel scenario (`tests/scenarios/*.scn`, read-only, via the kernel suite's own lab
//! modules) and a few of this file's own: build the lab, probe with real SYNs (before) — from
//! the scenario's sources and, as the kernel suite does, from the boundaries of origin-audit's
//! `check` rows, with a burst inside every rate-limited row — run `origin-audit fix --apply` in
//! the origin, probe again (after; bursts from a fresh neighbouring address, since a limit keeps
//! per-source state), and check that
//! - every Cloudflare source now connects on every audited port, every connect of a burst too
//!   (refused where nothing serves the port: no listener where a REDIRECT lands, no container
//!   where a DNAT sends it — the kernel suite's `serves`),
//! - every control source behaves exactly as before,
//! - a second `fix --apply` changes nothing (same dumps),
//! - the dumps after equal the dumps before once origin-audit's own lines are taken out
//!   (counters, element `expires` countdowns and the elements of `flags dynamic` sets are
//!   traffic state and normalised away; everything else is compared).
//!
//! A scenario where no Cloudflare probe (single or burst) is blocked must leave the ruleset as
//! it was.
//!
//! Then the injected faults, each of which must leave the original ruleset in place: a restore
//! tool failing half-way, the process killed during the confirm wait (the next run restores),
//! an unwritable backup directory (nothing applied), a re-read disagreeing with the proof
//! (automatic rollback), and no confirmation in time.
//!
//! `harness = false` (the lab re-executes this binary as its listener/probe helper).
//! Usage: `cargo test --test fix_netns [-- NAME…]`; needs root, `ip`, `nft`. Without them it
//! fails saying it was not run. Must not touch the root namespace's firewall.

#[allow(dead_code)]
#[path = "kernel/audit.rs"]
mod audit;
#[allow(dead_code)]
#[path = "kernel/kernel.rs"]
mod kernel;
#[allow(dead_code)]
#[path = "kernel/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "kernel/roles.rs"]
mod roles;
#[allow(dead_code)]
#[path = "kernel/scenario.rs"]
mod scenario;
#[path = "kernel/volatile.rs"]
#[allow(dead_code)] // shared with the kernel suite: each uses the parts it compares
mod volatile;

use kernel::{Outcome, Probe};
use scenario::{Scenario, Verdict};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// First argument that turns this binary into a helper inside a namespace (used by the lab).
pub const ROLE_ARG: &str = "__oa_role";
const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");

/// Scenarios of this file: situations the kernel suite has no scenario for.
const OWN: &[(&str, &str)] = &[
    (
        "fix-f2b-ipset-ban",
        "# what: fail2ban-style ipset ban list holding a Cloudflare /24, plus a ban of a control\n\
[ipset]\n\
create f2b-nginx hash:ip family inet hashsize 1024 maxelem 65536\n\
add f2b-nginx 173.245.48.1\n\
add f2b-nginx 198.51.100.7\n\
[iptables]\n\
*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
:f2b-nginx - [0:0]\n\
-A INPUT -p tcp -m multiport --dports 80,443 -j f2b-nginx\n\
-A f2b-nginx -m set --match-set f2b-nginx src -j REJECT --reject-with icmp-port-unreachable\n\
-A f2b-nginx -j RETURN\n\
COMMIT\n\
[expect]\n\
* 173.245.48.1/32 reject\n\
* 198.51.100.7/32 reject\n\
* * accept\n",
    ),
    (
        "fix-nft-and-ip6tables-policy",
        "# what: nft input policy drop with only ssh open, ip6tables-nft drops a v6 range\n\
[nft]\n\
table ip fw {\n\
  chain input {\n\
    type filter hook input priority 0; policy drop;\n\
    ct state established,related accept\n\
    tcp dport 22 accept\n\
    ip saddr 198.51.100.0/24 tcp dport 80 accept\n\
  }\n\
}\n\
[ip6tables]\n\
*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
-A INPUT -s 2400:cb00::/32 -p tcp -j DROP\n\
COMMIT\n\
[expect]\n\
* 0.0.0.0/0 drop\n\
80 198.51.100.0/24 accept\n\
* 2400:cb00::/32 drop\n\
* * accept\n",
    ),
];

/// Expectations for the ufw case; the rules come from the ufw commands in [`UFW_SETUP`].
const UFW_SCN: &str = "# what: ufw: default deny, ssh open, 80 open to 198.51.100.0/24 only, deny from a Cloudflare /20\n\
[expect]\n\
* 0.0.0.0/0 drop\n\
* ::/0 drop\n\
80 198.51.100.0/24 accept\n\
* 173.245.48.0/20 drop\n";

const UFW_SETUP: &[&str] = &[
    "ufw default deny incoming",
    "ufw allow 22/tcp",
    "ufw allow from 198.51.100.0/24 to any port 80 proto tcp",
    "ufw deny from 173.245.48.0/20",
    "ufw --force enable",
];

/// `/etc/netns/NS/{ufw,default}`: `ip netns exec` bind-mounts them over /etc (ip-netns(8)), so
/// ufw's configuration and user rules stay inside the namespace. Removed on drop.
struct UfwConf(PathBuf);
impl Drop for UfwConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("cp -a {} {} failed", from.display(), to.display()))
    }
}

/// The ufw host: the emitted ufw form pasted (`apply` false) or `fix --apply` (true), then
/// `ufw reload`; Cloudflare must get through, and `fix --revert` must give back ufw's files.
fn ufw_case(
    n: usize,
    path: &Path,
    exe: &str,
    state: &Path,
    apply: bool,
) -> Result<String, Vec<String>> {
    if !Path::new("/usr/sbin/ufw").exists() {
        return Err(vec![
            "ufw is not installed: the ufw case was NOT run".into(),
        ]);
    }
    let sc = Scenario::load(path).map_err(|e| vec![e])?;
    let base = format!("oa-k-{}-{}-o", std::process::id(), 200 + n);
    let conf = UfwConf(PathBuf::from("/etc/netns").join(&base));
    std::fs::create_dir_all(&conf.0).map_err(|e| vec![e.to_string()])?;
    copy_dir(Path::new("/etc/ufw"), &conf.0.join("ufw")).map_err(|e| vec![e])?;
    copy_dir(Path::new("/etc/default"), &conf.0.join("default")).map_err(|e| vec![e])?;
    let sh = |lab: &netns::Lab, cmd: &str| -> Result<netns::Output, String> {
        let mut c = lab.in_origin("sh");
        c.args(["-c", cmd]);
        netns::must(&mut c, None)
    };
    let (lab, before) = setup_with(200 + n, &sc, exe, &|lab| {
        if lab.origin != base {
            return Err(format!("lab namespace {} is not {base}", lab.origin));
        }
        for c in UFW_SETUP {
            sh(lab, c)?;
        }
        Ok(())
    })?;
    let user_rules = || sh(&lab, "cat /etc/ufw/user.rules /etc/ufw/user6.rules").map(|o| o.stdout);
    let files0 = user_rules().map_err(|e| vec![e])?;
    let n_cmds = if apply {
        // `fix --apply` itself, through ufw: what `ufw reload` below must keep.
        let out = fix(&lab, state, &["--apply"], None).map_err(|e| vec![e])?;
        if out.code != Some(0) || !out.stdout.contains("through ufw") {
            return Err(vec![format!(
                "fix --apply on a ufw host: exit {:?}: {}{}",
                out.code, out.stdout, out.stderr
            )]);
        }
        user_rules()
            .map_err(|e| vec![e])?
            .lines()
            .filter(|l| l.starts_with("### tuple ###") && l.contains("comment="))
            .count()
    } else {
        let mut c = lab.in_origin(BIN);
        c.args(["fix", "--offline", "--emit", "ufw"]);
        let out = netns::run(&mut c, None, Duration::from_secs(120)).map_err(|e| vec![e])?;
        if out.code != Some(1) || !out.stdout.contains("ufw ") {
            return Err(vec![format!(
                "fix --emit ufw: exit {:?}: {}{}",
                out.code, out.stdout, out.stderr
            )]);
        }
        let cmds: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("ufw "))
            .collect();
        for c in &cmds {
            sh(&lab, c).map_err(|e| vec![e])?;
        }
        cmds.len()
    };
    // What a reload keeps: ufw rewrites the kernel rules from its own files.
    sh(&lab, "ufw reload").map_err(|e| vec![e])?;
    let after = reprobe(&lab, exe, &before).map_err(|e| vec![e])?;
    let fails = compare_probes(&sc, &before, &after);
    if !fails.is_empty() {
        return Err(fails);
    }
    // And origin-audit agrees: nothing left to fix.
    let mut c = lab.in_origin(BIN);
    c.args(["fix", "--offline"]);
    let out = netns::run(&mut c, None, Duration::from_secs(120)).map_err(|e| vec![e])?;
    if out.code != Some(0) {
        return Err(vec![format!(
            "after the ufw form, fix still proposes: {}",
            out.stdout
        )]);
    }
    // `fix --revert` takes exactly origin-audit's ufw rules out again, through ufw.
    let out = fix(&lab, state, &["--revert"], None).map_err(|e| vec![e])?;
    let files1 = user_rules().map_err(|e| vec![e])?;
    let strip = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("# Last modified") && !l.starts_with("# Generated"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if out.code != Some(0) || strip(&files1) != strip(&files0) {
        return Err(vec![format!(
            "fix --revert on the ufw host (exit {:?}: {}) left ufw's files:\n--- before\n{files0}\n--- after\n{files1}",
            out.code,
            out.stderr.trim()
        )]);
    }
    Ok(format!(
        " ({n_cmds} ufw rules, survived `ufw reload`; --revert restored ufw's files)"
    ))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(ROLE_ARG) {
        return ExitCode::from(u8::try_from(roles::main(&args[1..])).unwrap_or(2));
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !is_root() {
        eprintln!("fix_netns: not root — the namespace tests were NOT run");
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => {
            eprintln!("cannot find this binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cases: Vec<(String, Case)> = vec![];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "scn"));
    files.sort();
    for (name, text) in OWN {
        let p = tmp.path().join(format!("{name}.scn"));
        if std::fs::write(&p, text).is_ok() {
            files.push(p);
        }
    }
    for p in files {
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        cases.push((name.clone(), Case::Apply(p.clone())));
    }
    cases.push((
        "remove-banned-f2b".into(),
        Case::RemoveBanned(tmp.path().join("fix-f2b-ipset-ban.scn")),
    ));
    // Real fail2ban's own nft sets (no `flags interval`: a /32 element is refused there).
    cases.push((
        "remove-banned-f2b-nft".into(),
        Case::RemoveBanned(dir.join("76-fail2ban-nftables.scn")),
    ));
    let ufw_scn = tmp.path().join("ufw-emitted-form.scn");
    if std::fs::write(&ufw_scn, UFW_SCN).is_ok() {
        cases.push(("ufw-emitted-form".into(), Case::Ufw(ufw_scn.clone(), false)));
        cases.push(("ufw-apply-survives-reload".into(), Case::Ufw(ufw_scn, true)));
    }
    let s01 = dir.join("01-nft-drop-one-range.scn");
    let s18 = dir.join("18-mixed-backends.scn");
    for (name, f) in [
        ("fault-restore-fails-halfway", Fault::HalfWay),
        ("fault-killed-in-confirm-wait", Fault::Killed),
        ("fault-unwritable-backup", Fault::NoBackup),
        ("fault-reread-disagrees", Fault::Disagree),
        ("fault-not-confirmed", Fault::NotConfirmed),
        ("revert-removes-only-ours", Fault::Revert),
        ("two-applies-at-once", Fault::Concurrent),
        ("check-during-confirm-wait", Fault::CheckDuringWait),
        (
            "confirm-and-revert-find-the-state-dir",
            Fault::RecordedStateDir,
        ),
    ] {
        let sc = if f == Fault::HalfWay { &s18 } else { &s01 };
        cases.push((name.into(), Case::Fault(sc.clone(), f)));
    }
    cases.retain(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())));
    // Bounded: the whole run may not exceed this, whatever hangs. Every step inside a case
    // has its own bound (commands 120 s, waits 30 s); this catches what they miss. Scaled by
    // the number of cases (a case takes 1–50 s uncontended; a loaded 2-core CI machine takes
    // up to three times that), so a slow machine is not mistaken for a hang.
    let budget = Duration::from_secs(300 + 150 * cases.len() as u64);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!(
            "fix_netns: WATCHDOG: {} s passed; cleaning up and failing",
            budget.as_secs()
        );
        netns::cleanup_all();
        std::process::exit(3);
    });
    let mut failed = vec![];
    for (i, (name, case)) in cases.iter().enumerate() {
        let t = std::time::Instant::now();
        let state = tmp.path().join(format!("state-{i}"));
        let r = std::thread::scope(|s| {
            s.spawn(|| run_case(i, case, &exe, &state, tmp.path()))
                .join()
                .unwrap_or_else(|_| Err(vec!["harness panicked".into()]))
        });
        match r {
            Ok(note) => eprintln!("  {name:<40} ok ({:.1} s){note}", t.elapsed().as_secs_f64()),
            Err(f) => {
                eprintln!("  {name:<40} FAILED ({:.1} s)", t.elapsed().as_secs_f64());
                for x in &f {
                    eprintln!("      - {x}");
                }
                failed.push(name.clone());
            }
        }
    }
    if failed.is_empty() {
        eprintln!("fix_netns: {} case(s) passed", cases.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("fix_netns: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    HalfWay,
    Killed,
    NoBackup,
    Disagree,
    NotConfirmed,
    Revert,
    /// Two `fix --apply` started together: the run lock serialises them, the second finds
    /// nothing left to do, and the accept rule is there once.
    Concurrent,
    /// `check` while an `--apply --confirm-timeout` waits: the finding and the metrics say a
    /// rollback is pending and when.
    CheckDuringWait,
    /// `--apply --confirm-timeout --state-dir X`, then `--confirm` and `--revert` without the
    /// flag: both find X through the note the apply left in the default state directory.
    RecordedStateDir,
}

/// The variable that moves origin-audit's default state directory.
const STATE_ENV: &str = "ORIGIN_AUDIT_STATE_DIR";

enum Case {
    Apply(PathBuf),
    /// `fix --apply --remove-banned` on a ban list holding a Cloudflare address.
    RemoveBanned(PathBuf),
    /// The real ufw (config isolated per namespace): the emitted form pasted, or (true)
    /// `fix --apply` through ufw.
    Ufw(PathBuf, bool),
    Fault(PathBuf, Fault),
}

fn cloudflare() -> Vec<ipnet::IpNet> {
    match origin_audit::ranges::cloudflare().bundled_ranges() {
        Ok(r) => r
            .ipv4
            .iter()
            .map(|n| ipnet::IpNet::V4(*n))
            .chain(r.ipv6.iter().map(|n| ipnet::IpNet::V6(*n)))
            .collect(),
        Err(_) => vec![],
    }
}

fn is_cf(a: IpAddr) -> bool {
    cloudflare().iter().any(|n| n.contains(&a))
}

/// Everything the firewall holds, as the tools print it, normalised for comparison: counters
/// zeroed, `#` header lines (timestamps) dropped.
fn dumps(lab: &netns::Lab) -> String {
    let mut s = String::new();
    let mut texts = vec![];
    for (prog, args) in [
        ("nft", &["list", "ruleset"][..]),
        ("iptables-nft-save", &[][..]),
        ("ip6tables-nft-save", &[][..]),
        ("iptables-legacy-save", &[][..]),
        ("ip6tables-legacy-save", &[][..]),
        ("ipset", &["save"][..]),
    ] {
        let mut c = lab.in_origin(prog);
        c.args(args);
        let out = netns::run(&mut c, None, Duration::from_secs(20))
            .map(|o| o.stdout)
            .unwrap_or_else(|e| format!("<{e}>"));
        texts.push((prog, out));
    }
    // iptables-nft's tables appear in `nft list ruleset` too, with opaque `xt` matches that hide
    // comments: they are compared through iptables-nft-save only.
    // A native nft table that only shares its name with an iptables table (`table ip filter`
    // written by hand) is shown by iptables-nft-save as a warning ("# Table `filter' contains
    // incompatible base-chains, use 'nft' tool to list them.") over an empty skeleton: its rules
    // are only in nft's dump, so it stays there.
    let mut owned = vec![];
    for (prog, text) in &texts {
        let fam = match *prog {
            "iptables-nft-save" => "ip",
            "ip6tables-nft-save" => "ip6",
            _ => continue,
        };
        let foreign: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("incompatible"))
            .filter_map(|l| l.strip_prefix("# Table `")?.split('\'').next())
            .collect();
        for l in text.lines() {
            if let Some(t) = l.strip_prefix('*')
                && !foreign.contains(&t)
            {
                owned.push(format!("table {fam} {t} {{"));
            }
        }
    }
    for (prog, out) in texts {
        s.push_str(&format!("=== {prog}\n"));
        let out = if prog == "nft" {
            volatile::without_dynamic_elements(&out)
        } else {
            out
        };
        let mut skip = false;
        for l in out.lines() {
            if prog == "nft" {
                if owned.iter().any(|o| o == l) {
                    skip = true;
                }
                if skip {
                    if l == "}" {
                        skip = false;
                    }
                    continue;
                }
            }
            // Comment lines carry timestamps; nft's blank lines only separate blocks.
            if l.trim_start().starts_with('#') || l.trim().is_empty() {
                continue;
            }
            s.push_str(&volatile::normalise_line(l));
            s.push('\n');
        }
    }
    s
}

/// The dumps with origin-audit's own additions taken out: rules with its comment, the
/// `cloudflare_v4/v6` nft set blocks and ipset lines.
fn without_ours(d: &str) -> String {
    let mut out = String::new();
    let mut skip_depth = 0usize;
    for l in d.lines() {
        let t = l.trim();
        if skip_depth > 0 {
            skip_depth += t.matches('{').count();
            skip_depth -= t.matches('}').count().min(skip_depth);
            continue;
        }
        if t.starts_with("set cloudflare_v4 {") || t.starts_with("set cloudflare_v6 {") {
            skip_depth =
                t.matches('{').count() - t.matches('}').count().min(t.matches('{').count());
            continue;
        }
        if t.contains("origin-audit")
            || t.starts_with("create cloudflare_v")
            || t.starts_with("add cloudflare_v")
        {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn fix(
    lab: &netns::Lab,
    state: &Path,
    extra: &[&str],
    path_prefix: Option<&Path>,
) -> Result<netns::Output, String> {
    let mut c = lab.in_origin(BIN);
    c.args([
        "fix",
        "--offline",
        "--ports",
        &ports_arg(lab),
        "--state-dir",
    ])
    .arg(state)
    .args(extra)
    // The default state directory is the case's own (never the host's /var/lib/origin-audit).
    .env(STATE_ENV, state);
    if let Some(p) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", p.display()));
    }
    netns::run(&mut c, None, Duration::from_secs(120))
}

thread_local! {
    /// The audited ports of the scenario this thread runs (every case runs on its own thread).
    static PORTS: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The scenario this thread runs (for the probes after the fix).
    static SCENARIO: std::cell::RefCell<Option<Scenario>> = const { std::cell::RefCell::new(None) };
}

fn ports_arg(_lab: &netns::Lab) -> String {
    PORTS.with(|p| p.borrow().clone())
}

fn setup(n: usize, sc: &Scenario, exe: &str) -> Result<(netns::Lab, Vec<Probe>), Vec<String>> {
    setup_with(n, sc, exe, &|_| Ok(()))
}

/// Builds the lab; `pre` runs after the scenario's rules are loaded and before the probes.
fn setup_with(
    n: usize,
    sc: &Scenario,
    exe: &str,
    pre: &dyn Fn(&netns::Lab) -> Result<(), String>,
) -> Result<(netns::Lab, Vec<Probe>), Vec<String>> {
    SCENARIO.with(|s| *s.borrow_mut() = Some(sc.clone()));
    PORTS.with(|p| {
        *p.borrow_mut() = sc
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    let (mut probes, blocks) = kernel::plan(sc);
    let mut lab = netns::Lab::new(n, sc, &blocks).map_err(|e| vec![format!("lab: {e}")])?;
    kernel::wait_link(&lab, exe).map_err(|e| vec![format!("lab: {e}")])?;
    pin_neighbours(&lab, sc).map_err(|e| vec![format!("lab: {e}")])?;
    lab.start_listeners(sc, exe)
        .map_err(|e| vec![format!("listeners: {e}")])?;
    lab.load_rules(sc).map_err(|e| vec![e])?;
    pre(&lab).map_err(|e| vec![e])?;
    // Sources from origin-audit's own rows, as the kernel suite adds them: every boundary it
    // draws, and a burst from inside each rate-limited Cloudflare row. Without those, a limit
    // that only a catch-all expectation names is probed only from a control, and single
    // connects from Cloudflare would wrongly say "nothing blocks Cloudflare". The rows only
    // pick sources; what counts is what the kernel does with them.
    let chk = audit::run_check(sc, &lab, BIN).map_err(|e| vec![e])?;
    let reqs = audit::row_sources(&chk, &probes);
    let fresh = kernel::add_probes(sc, &mut probes, &reqs);
    kernel::route_sources(&lab, &fresh).map_err(|e| vec![format!("client routes: {e}")])?;
    kernel::run_probes(&lab, exe, &mut probes).map_err(|e| vec![format!("probing: {e}")])?;
    // The scenario must be kernel truth before anything is concluded from it.
    let mut flagged = vec![false; probes.len()];
    let bad = kernel::check(sc, &probes, &mut flagged);
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok((lab, probes))
}

/// The same probes again. A burst is sent from a fresh address next to the first one, in the
/// same expectation: rate limits keep per-source state (tokens, `recent` lists, dynamic set
/// elements, connection counts) that the burst before has used up, and the burst after must
/// start from the state the one before started from.
/// Makes both ends of the link remember each other's MAC address for good (`nud permanent`).
/// An IPv6 neighbour entry goes stale after 15–45 s (ip-neighbour(8), base_reachable_time) and
/// is then re-confirmed with ICMPv6 neighbour solicitations — which a scenario's `policy drop`
/// that never accepts ICMPv6 drops, so IPv6 stops working mid-test: every IPv6 probe after the
/// fix would time out for a reason neither the fix nor the scenario is about. The kernel suite
/// probes once, right after the link came up, and never meets this.
fn pin_neighbours(lab: &netns::Lab, sc: &Scenario) -> Result<(), String> {
    let mac = |ns: &str, dev: &str| -> Result<String, String> {
        let mut c = Command::new("ip");
        c.args(["-n", ns, "-j", "link", "show", "dev", dev]);
        let out = netns::must(&mut c, None)?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("ip -j link show dev {dev} in {ns}: {e}"))?;
        v.get(0)
            .and_then(|l| l.get("address"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no MAC address for {dev} in {ns}"))
    };
    let origin_mac = mac(&lab.origin, &sc.iface)?;
    let client_mac = mac(&lab.client, "peer0")?;
    for (ns, addr, mac, dev) in [
        (
            &lab.origin,
            netns::CLIENT_V4,
            &client_mac,
            sc.iface.as_str(),
        ),
        (
            &lab.origin,
            netns::CLIENT_V6,
            &client_mac,
            sc.iface.as_str(),
        ),
        (&lab.client, netns::ORIGIN_V4, &origin_mac, "peer0"),
        (&lab.client, netns::ORIGIN_V6, &origin_mac, "peer0"),
    ] {
        let mut c = Command::new("ip");
        c.args([
            "-n",
            ns,
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
        netns::must(&mut c, None)?;
    }
    Ok(())
}

fn reprobe(lab: &netns::Lab, exe: &str, before: &[Probe]) -> Result<Vec<Probe>, String> {
    let sc = SCENARIO.with(|s| s.borrow().clone());
    let used: Vec<IpAddr> = before.iter().map(|p| p.src).collect();
    let mut fresh = vec![];
    let mut after: Vec<Probe> = before
        .iter()
        .map(|p| {
            let mut q = Probe {
                outcomes: vec![],
                retried: false,
                ..p.clone()
            };
            if p.burst
                && let Some(sc) = &sc
                && let Some(a) = neighbour(sc, p, &used)
            {
                q.src = a;
                fresh.push(a);
            }
            q
        })
        .collect();
    kernel::route_sources(lab, &fresh)?;
    kernel::run_probes(lab, exe, &mut after)?;
    Ok(after)
}

/// An address next to `p.src` that no probe uses, with the same expectation on `p.port` and
/// on the same side of the Cloudflare ranges.
fn neighbour(sc: &Scenario, p: &Probe, used: &[IpAddr]) -> Option<IpAddr> {
    let step = |a: IpAddr, up: bool| -> Option<IpAddr> {
        match a {
            IpAddr::V4(v) => {
                let x = u32::from(v);
                Some(IpAddr::from(std::net::Ipv4Addr::from(if up {
                    x.checked_add(1)?
                } else {
                    x.checked_sub(1)?
                })))
            }
            IpAddr::V6(v) => {
                let x = u128::from(v);
                Some(IpAddr::from(std::net::Ipv6Addr::from(if up {
                    x.checked_add(1)?
                } else {
                    x.checked_sub(1)?
                })))
            }
        }
    };
    let (want, e) = sc.expected(p.port, p.src);
    let line = e.map(|e| e.line);
    [true, false].into_iter().find_map(|up| {
        let a = step(p.src, up)?;
        let (v, e2) = sc.expected(p.port, a);
        (v == want && e2.map(|e| e.line) == line && is_cf(a) == is_cf(p.src) && !used.contains(&a))
            .then_some(a)
    })
}

/// Whether an accepted connection to `p.port` from `p.src` reaches a socket: the listener
/// where it lands after a REDIRECT (`lands`), or the container a DNAT sends it to — the same
/// rule the kernel suite judges its expectations by.
fn listening(sc: &Scenario, p: &Probe) -> bool {
    sc.serves(p.port, p.src.is_ipv6())
}

/// Starts `fix --apply --confirm-timeout SECS` in the origin namespace and returns once the
/// change is loaded and the pending-rollback marker is written (the confirm wait has begun).
fn apply_awaiting_confirm(
    lab: &netns::Lab,
    state: &Path,
    secs: u32,
) -> Result<KillOnDrop, Vec<String>> {
    apply_awaiting_confirm_in(lab, state, state, secs)
}

/// The same, with `default` as origin-audit's default state directory (`--state-dir` stays
/// `state`).
fn apply_awaiting_confirm_in(
    lab: &netns::Lab,
    state: &Path,
    default: &Path,
    secs: u32,
) -> Result<KillOnDrop, Vec<String>> {
    let mut c = lab.in_origin(BIN);
    c.args([
        "fix",
        "--offline",
        "--ports",
        &ports_arg(lab),
        "--state-dir",
    ])
    .arg(state)
    .args(["--apply", "--confirm-timeout", &secs.to_string()])
    .env(STATE_ENV, default);
    let child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| vec![e.to_string()])?;
    let child = KillOnDrop(child);
    wait_for(|| {
        state.join("pending-rollback.json").exists() && dumps(lab).contains("origin-audit")
    })
    .map_err(|e| vec![e])?;
    Ok(child)
}

/// [`Fault::RecordedStateDir`].
fn recorded_state_dir(
    lab: &netns::Lab,
    state: &Path,
    tmp: &Path,
    n: usize,
) -> Result<String, Vec<String>> {
    let default = tmp.join(format!("default-state-{n}"));
    let oa = |args: &[&str]| {
        let mut c = lab.in_origin(BIN);
        c.args(args).env(STATE_ENV, &default);
        c
    };
    let mut child = apply_awaiting_confirm_in(lab, state, &default, 120)?;
    let mut fails = vec![];
    let out = netns::run(
        &mut oa(&["fix", "--confirm"]),
        None,
        Duration::from_secs(60),
    )
    .map_err(|e| vec![e])?;
    if out.code != Some(0) || !out.stdout.contains("confirmed") {
        fails.push(format!(
            "fix --confirm without --state-dir (exit {:?}): {}{}",
            out.code,
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }
    let st = wait_child(&mut child.0, Duration::from_secs(30)).map_err(|e| vec![e])?;
    if st != Some(0) {
        fails.push(format!("the waiting apply exited {st:?} after the confirm"));
    }
    let recorded = std::fs::read_to_string(default.join("last-state-dir")).unwrap_or_default();
    if recorded.trim() != state.to_string_lossy() {
        fails.push(format!(
            "recorded state directory {recorded:?}, not {}",
            state.display()
        ));
    }
    let out = netns::run(
        &mut oa(&["fix", "--offline", "--revert"]),
        None,
        Duration::from_secs(120),
    )
    .map_err(|e| vec![e])?;
    if out.code != Some(0)
        || !out
            .stderr
            .contains("using the last apply's state directory")
    {
        fails.push(format!(
            "fix --revert without --state-dir (exit {:?}): {}{}",
            out.code,
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }
    if !fails.is_empty() {
        return Err(fails);
    }
    Ok(format!(" ({})", out.stdout.trim()))
}

/// Whether the kernel did with `p` what an unblocked Cloudflare probe gets.
fn listening_ok(sc: &Scenario, p: &Probe) -> bool {
    let want = if listening(sc, p) {
        Outcome::Connected
    } else {
        Outcome::Refused
    };
    p.outcomes.iter().all(|o| *o == want)
}

/// Cloudflare now through everywhere; controls exactly as before.
fn compare_probes(sc: &Scenario, before: &[Probe], after: &[Probe]) -> Vec<String> {
    let mut fails = vec![];
    for (b, a) in before.iter().zip(after) {
        if is_cf(a.src) {
            let want = if listening(sc, a) {
                Outcome::Connected
            } else {
                Outcome::Refused
            };
            if a.outcomes.iter().any(|o| *o != want) {
                fails.push(format!(
                    "Cloudflare {} port {}: after fix {} (before {})",
                    a.src,
                    a.port,
                    a.kernel_summary(),
                    b.kernel_summary()
                ));
            }
        } else if b.expected == Verdict::Conditional {
            // The scenario declares this cell nondeterministic (e.g. `-m statistic --mode
            // random` splitting connections between the node and a pod): the kernel's answer
            // to one probe differs between runs, so "unchanged" cannot be judged probe by
            // probe. Cloudflare probes above are still required to connect after the fix.
        } else if b.burst {
            let some = |p: &Probe| p.outcomes.contains(&Outcome::Connected);
            if some(a) != some(b) {
                fails.push(format!(
                    "control {} port {} changed: before {}, after {}",
                    a.src,
                    a.port,
                    b.kernel_summary(),
                    a.kernel_summary()
                ));
            }
        } else if a.outcomes != b.outcomes {
            fails.push(format!(
                "control {} port {} changed: before {}, after {}",
                a.src,
                a.port,
                b.kernel_summary(),
                a.kernel_summary()
            ));
        }
    }
    fails
}

fn run_case(
    n: usize,
    case: &Case,
    exe: &str,
    state: &Path,
    tmp: &Path,
) -> Result<String, Vec<String>> {
    match case {
        Case::Apply(p) => apply_case(n, p, exe, state),
        Case::Ufw(p, apply) => ufw_case(n, p, exe, state, *apply),
        Case::RemoveBanned(p) => remove_banned_case(n, p, exe, state),
        Case::Fault(p, f) => fault_case(n, p, *f, exe, state, tmp),
    }
}

fn apply_case(n: usize, path: &Path, exe: &str, state: &Path) -> Result<String, Vec<String>> {
    let sc = Scenario::load(path).map_err(|e| vec![e])?;
    let (lab, before) = setup(n, &sc, exe)?;
    // Bursts count like singles: a burst from inside a rate-limited Cloudflare row that does
    // not get through every time is a block the fix must remove.
    let blocked: Vec<&Probe> = before
        .iter()
        .filter(|p| {
            is_cf(p.src)
                && p.outcomes.iter().any(|o| {
                    *o != if listening(&sc, p) {
                        Outcome::Connected
                    } else {
                        Outcome::Refused
                    }
                })
        })
        .collect();
    let cf_blocked = !blocked.is_empty();
    let outside = non_firewall_culprits(&lab).map_err(|e| vec![e])?;
    let d0 = dumps(&lab);
    let out = fix(&lab, state, &["--apply"], None).map_err(|e| vec![e])?;
    let d1 = dumps(&lab);
    if cf_blocked && !outside.is_empty() {
        // A route, tc filter, XDP program, socket or sysctl decides: `fix` never applies
        // those; it must refuse, change nothing, and print the exact command for each.
        let mut fails = vec![];
        if out.code == Some(0) || d1 != d0 {
            fails.push(format!(
                "a culprit outside the firewall ({}) but fix --apply exited {:?} with the ruleset {}",
                outside.join(", "),
                out.code,
                if d1 == d0 { "unchanged" } else { "CHANGED" }
            ));
        }
        if !out.stdout.contains("changes only firewall rules") {
            fails.push(format!(
                "no suggested command for the culprits outside the firewall:\n{}",
                out.stdout
            ));
        }
        return if fails.is_empty() {
            Ok(format!(
                " (culprit outside the firewall: {}; not applied, command suggested)",
                outside.join(", ")
            ))
        } else {
            Err(fails)
        };
    }
    if !cf_blocked {
        // Nothing blocks Cloudflare in the kernel: fix must not change anything.
        if d1 != d0 {
            return Err(vec![format!(
                "nothing blocked Cloudflare, yet fix --apply changed the ruleset (exit {:?}): {}",
                out.code,
                out.stderr.trim()
            )]);
        }
        return Ok(format!(
            " (no Cloudflare block; exit {:?}, unchanged)",
            out.code
        ));
    }
    if out.code == Some(2) && out.stderr.contains("origin-audit fix --emit firewalld") {
        // firewalld's own table blocks: a rule added there would not outlive a reload, so fix
        // refuses and points to the firewalld form; nothing may have changed.
        if d1 != d0 {
            return Err(vec![format!(
                "fix --apply refused on firewalld's table but CHANGED the ruleset:\n{}",
                out.stderr.trim()
            )]);
        }
        let blocked: Vec<Probe> = blocked.into_iter().cloned().collect();
        let pasted = paste_hints(&sc, &lab, exe, &blocked, &d0, state)?;
        return Ok(format!(
            " (firewalld's table: not applied, the firewalld form pointed to; {pasted} hint(s) checked by firewall-offline-cmd)"
        ));
    }
    if out.code != Some(0) {
        let still = d1 == d0;
        return Err(vec![format!(
            "fix --apply exited {:?} (ruleset {}): {}\n{}",
            out.code,
            if still { "unchanged" } else { "CHANGED" },
            out.stderr.trim(),
            out.stdout
        )]);
    }
    let mut fails = vec![];
    let after = reprobe(&lab, exe, &before).map_err(|e| vec![e])?;
    fails.extend(compare_probes(&sc, &before, &after));
    // Through ufw, ufw rewrites its user chains (its kernel rules carry no comment; the
    // comment is in its files): the revert below must still give back the original exactly.
    let via_ufw = out.stdout.contains("through ufw");
    if via_ufw {
        let mut c = lab.in_origin("sh");
        c.args(["-c", "cat /etc/ufw/user.rules /etc/ufw/user6.rules"]);
        let files = netns::must(&mut c, None).map_err(|e| vec![e])?.stdout;
        if !files.contains("comment=6f726967696e2d6175646974") {
            fails.push(format!("no ufw rule with origin-audit's comment:\n{files}"));
        }
    } else if without_ours(&d1) != without_ours(&d0) {
        fails.push(format!(
            "untouched rules differ after fix:\n--- before\n{}\n--- after (without origin-audit's lines)\n{}",
            without_ours(&d0),
            without_ours(&d1)
        ));
    }
    if !via_ufw && !d1.contains("origin-audit") {
        fails.push("no rule with the origin-audit comment was loaded".into());
    }
    let out2 = fix(&lab, state, &["--apply"], None).map_err(|e| vec![e])?;
    let d2 = dumps(&lab);
    if out2.code != Some(0) || d2 != d1 {
        fails.push(format!(
            "second fix --apply was not a no-op (exit {:?}, ruleset {}): {}",
            out2.code,
            if d2 == d1 { "same" } else { "CHANGED" },
            out2.stdout.trim()
        ));
    }
    // Revert restores the original ruleset exactly.
    let out3 = fix(&lab, state, &["--revert"], None).map_err(|e| vec![e])?;
    let d3 = dumps(&lab);
    if out3.code != Some(0) || d3 != d0 {
        fails.push(format!(
            "fix --revert (exit {:?}) did not give back the original ruleset:\n--- original\n{d0}\n--- after revert\n{d3}\n{}",
            out3.code,
            out3.stderr.trim()
        ));
    }
    if !fails.is_empty() {
        return Err(fails);
    }
    // The hints `check` prints, pasted as an admin would, on the original ruleset.
    let blocked: Vec<Probe> = blocked.into_iter().cloned().collect();
    let pasted = paste_hints(&sc, &lab, exe, &blocked, &d0, state)?;
    Ok(format!(
        " ({} Cloudflare probe(s) blocked before, {} of them burst(s); all through after; {pasted} hint(s) pasted)",
        blocked.len(),
        blocked.iter().filter(|p| p.burst).count()
    ))
}

/// Whether a `check` fix hint is a firewall command (the other hints are advice: a sysctl to
/// weigh, a server to restart), which must work pasted into a root shell as it is.
fn is_firewall_command(fix: &str) -> bool {
    [
        "nft ",
        "iptables-nft ",
        "iptables-legacy ",
        "ip6tables-nft ",
        "ip6tables-legacy ",
        "ufw ",
        "firewall-cmd ",
        "origin-audit ",
    ]
    .iter()
    .any(|t| fix.starts_with(t))
}

/// A hint that drives firewalld (`firewall-cmd …`, or the firewalld form of `fix` piped to sh).
fn is_firewalld_hint(h: &str) -> bool {
    h.starts_with("firewall-cmd ") || h.starts_with("origin-audit fix --emit firewalld")
}

/// firewalld needs D-Bus and systemd, which this machine does not run: a firewalld hint is
/// checked by firewalld's own offline tool instead (same option parser, same permanent
/// configuration writer), on a private copy of /etc/firewalld, then `--check-config`.
fn offline_firewalld(h: &str) -> String {
    let code = h.split("  # ").next().unwrap_or(h);
    let sed = "sed -e 's/firewall-cmd --permanent /firewall-offline-cmd /g' \
               -e 's/firewall-cmd --reload/firewall-offline-cmd --check-config/g'";
    if let Some(emit) = code.strip_suffix(" | sh") {
        // The emitted form, one command per line; without network, on the bundled list.
        format!("{} --offline | grep -v '^#' | {sed} | sh -e", emit)
    } else {
        code.replace("firewall-cmd --permanent ", "firewall-offline-cmd ")
            .replace(
                "firewall-cmd --reload",
                "firewall-offline-cmd --check-config",
            )
    }
}

/// A private /etc/firewalld for the origin namespace (`ip netns exec` bind-mounts
/// /etc/netns/NS/firewalld over it, ip-netns(8)), removed when dropped.
struct FirewalldOverlay {
    dir: PathBuf,
}

impl FirewalldOverlay {
    fn new(ns: &str) -> Result<Self, String> {
        let dir = Path::new("/etc/netns").join(ns).join("firewalld");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let me = FirewalldOverlay { dir };
        if Path::new("/etc/firewalld").is_dir() {
            let mut c = std::process::Command::new("cp");
            c.arg("-a").arg("/etc/firewalld/.").arg(&me.dir);
            let o = netns::run(&mut c, None, Duration::from_secs(30))?;
            if o.code != Some(0) {
                return Err(format!("cp /etc/firewalld: {}", o.stderr.trim()));
            }
        }
        Ok(me)
    }
}

impl Drop for FirewalldOverlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs every firewall hint of `check` through `sh -c` in the origin namespace (each must
/// exit 0), then the Cloudflare probes that were blocked must get through, and `fix --revert`
/// (the hints carry origin-audit's comment) must give back the original ruleset. Returns how
/// many hints were pasted.
fn paste_hints(
    sc: &Scenario,
    lab: &netns::Lab,
    exe: &str,
    blocked: &[Probe],
    original: &str,
    state: &Path,
) -> Result<usize, Vec<String>> {
    // As an admin does: paste, run `check` again, paste what it says now. A culprit can hide
    // another (a REJECT whose reset the OUTPUT policy drops shows as the drop first), so up
    // to three rounds; each hint must work as pasted.
    let mut hints: Vec<String> = vec![];
    let mut fails = vec![];
    let mut firewalld = None;
    // Sources whose hint is a ban tool's own command (csf, cscli, fail2ban-client): right
    // for the admin, but the tool is not what put the rule here, so it cannot run; those
    // probes are not expected through.
    let mut ban_tool_sources: Vec<ipnet::IpNet> = vec![];
    for _round in 0..3 {
        let chk = audit::run_check(sc, lab, BIN).map_err(|e| vec![e])?;
        for f in chk.report["findings"].as_array().into_iter().flatten() {
            let fix = f["fix"].as_str().unwrap_or("");
            if ["csf ", "cscli ", "fail2ban-client "]
                .iter()
                .any(|t| fix.starts_with(t))
            {
                ban_tool_sources.extend(
                    f["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str()?.parse::<ipnet::IpNet>().ok()),
                );
            }
        }
        let new: Vec<String> = chk.report["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["fix"].as_str())
            .filter(|f| is_firewall_command(f))
            .map(str::to_string)
            .collect();
        if new.is_empty() {
            break;
        }
        for h in &new {
            if is_firewalld_hint(h) {
                if firewalld.is_none() {
                    firewalld = Some(FirewalldOverlay::new(&lab.origin).map_err(|e| vec![e])?);
                }
                let mut c = lab.in_origin("sh");
                c.args(["-ec", &offline_firewalld(h)]);
                let path = std::env::var("PATH").unwrap_or_default();
                let bin_dir = Path::new(BIN).parent().unwrap_or(Path::new("/"));
                c.env("PATH", format!("{}:{path}", bin_dir.display()));
                match netns::run(&mut c, None, Duration::from_secs(120)) {
                    Ok(o) if o.code == Some(0) => {}
                    Ok(o) => fails.push(format!(
                        "firewalld hint refused by firewall-offline-cmd (exit {:?}): {h}\n{}{}",
                        o.code,
                        o.stdout.trim(),
                        o.stderr.trim()
                    )),
                    Err(e) => fails.push(format!("firewalld hint: {e}")),
                }
                continue;
            }
            let mut c = lab.in_origin("sh");
            c.args(["-c", h]).env(STATE_ENV, state);
            // `origin-audit …` hints run this build's binary, as if installed.
            let bin_dir = Path::new(BIN).parent().unwrap_or(Path::new("/"));
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", bin_dir.display()));
            // `origin-audit fix --apply` reads, plans, proves and re-reads a ruleset of
            // thousands of rules in a debug build, after trying the ranges API (no network
            // here): the budget of the test's own `fix` runs.
            let budget = if h.starts_with("origin-audit ") {
                120
            } else {
                60
            };
            match netns::run(&mut c, None, Duration::from_secs(budget)) {
                Ok(o) if o.code == Some(0) => {}
                Ok(o) => fails.push(format!(
                    "pasted hint failed (exit {:?}): {h}\n{}",
                    o.code,
                    o.stderr.trim()
                )),
                Err(e) => fails.push(format!("pasted hint: {e}")),
            }
        }
        hints.extend(new);
        // firewalld's hints change its permanent configuration, not this kernel: the next
        // round would print them again.
        if !fails.is_empty() || firewalld.is_some() {
            break;
        }
    }
    if hints.is_empty() {
        return Ok(0);
    }
    if fails.is_empty() && firewalld.is_none() {
        let after = reprobe(lab, exe, blocked).map_err(|e| vec![e])?;
        for a in after
            .iter()
            .filter(|a| !ban_tool_sources.iter().any(|n| n.contains(&a.src)))
        {
            let want = if listening(sc, a) {
                Outcome::Connected
            } else {
                Outcome::Refused
            };
            if a.outcomes.iter().any(|o| *o != want) {
                fails.push(format!(
                    "after pasting the hints {:?}: Cloudflare {} port {} still {}",
                    hints,
                    a.src,
                    a.port,
                    a.kernel_summary()
                ));
            }
        }
    }
    let out = fix(lab, state, &["--revert"], None).map_err(|e| vec![e])?;
    let d = dumps(lab);
    if out.code != Some(0) || d != original {
        fails.push(format!(
            "fix --revert after the pasted hints (exit {:?}) did not give back the original:\n--- original\n{original}\n--- now\n{d}",
            out.code
        ));
    }
    if fails.is_empty() {
        Ok(hints.len())
    } else {
        Err(fails)
    }
}

/// The backends of the deciding rules of the rows origin-audit does not accept, when they are
/// not firewall rules (route, tc, xdp, socket, kernel), from `check --format json`; rows only
/// the socket layer refuses (nothing listens) do not count.
fn non_firewall_culprits(lab: &netns::Lab) -> Result<Vec<String>, String> {
    let mut c = lab.in_origin(BIN);
    c.args(["check", "--offline", "--format", "json", "--ports"])
        .arg(ports_arg(lab));
    let out = netns::run(&mut c, None, Duration::from_secs(120))?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("check --format json: {e}: {}", out.stderr.trim()))?;
    let mut found: Vec<String> = v["reachability"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["verdict"] != "accept")
        // A SYN no socket takes (nothing listens) is past the firewall: not the fix's.
        .filter(|r| !(r["verdict"] == "reject" && r["rule"]["backend"] == "socket"))
        .filter_map(|r| r["rule"]["backend"].as_str())
        .filter(|b| !matches!(*b, "nft" | "iptables-nft" | "iptables-legacy"))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

fn remove_banned_case(
    n: usize,
    path: &Path,
    exe: &str,
    state: &Path,
) -> Result<String, Vec<String>> {
    let sc = Scenario::load(path).map_err(|e| vec![e])?;
    let (lab, before) = setup(300 + n, &sc, exe)?;
    let d0 = dumps(&lab);
    let out = fix(&lab, state, &["--apply", "--remove-banned"], None).map_err(|e| vec![e])?;
    if out.code != Some(0) {
        return Err(vec![format!("exit {:?}: {}", out.code, out.stderr.trim())]);
    }
    let mut fails = compare_probes(&sc, &before, &after_probes(&lab, exe, &before)?);
    let d1 = dumps(&lab);
    // The Cloudflare entries left the ban sets; a control's ban stays; no accept rule was
    // needed.
    if d1.contains("add f2b-nginx 173.245.48.1")
        || (d0.contains("add f2b-nginx 198.51.100.7") && !d1.contains("add f2b-nginx 198.51.100.7"))
    {
        fails.push(format!("ban set not as expected:\n{d1}"));
    }
    for p in before
        .iter()
        .filter(|p| is_cf(p.src) && !listening_ok(&sc, p))
    {
        let a = p.src.to_string();
        if d1
            .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
            .any(|w| w == a)
        {
            fails.push(format!(
                "the banned Cloudflare address {a} is still in a set:\n{d1}"
            ));
        }
    }
    if d1.contains("origin-audit") {
        fails.push(format!(
            "an accept was added although removing the ban suffices:\n{d1}"
        ));
    }
    if d0.contains("f2b-table")
        && !out
            .stdout
            .contains("fail2ban-client set web unbanip 162.158.0.9")
    {
        fails.push(format!(
            "no fail2ban-client unban command in the output:\n{}",
            out.stdout
        ));
    }
    if !out.stdout.contains("ignoreip") {
        fails.push(format!("no fail2ban advice in the output:\n{}", out.stdout));
    }
    if fails.is_empty() {
        Ok(String::new())
    } else {
        Err(fails)
    }
}

fn after_probes(lab: &netns::Lab, exe: &str, before: &[Probe]) -> Result<Vec<Probe>, Vec<String>> {
    reprobe(lab, exe, before).map_err(|e| vec![e])
}

fn stub(dir: &Path, name: &str, body: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

fn real(tool: &str) -> String {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = format!("{d}/{tool}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    tool.into()
}

fn fault_case(
    n: usize,
    path: &Path,
    f: Fault,
    exe: &str,
    state: &Path,
    tmp: &Path,
) -> Result<String, Vec<String>> {
    let sc = Scenario::load(path).map_err(|e| vec![e])?;
    let (lab, before) = setup(100 + n, &sc, exe)?;
    let d0 = dumps(&lab);
    let stubs = tmp.join(format!("stubs-{n}"));
    let mut note = String::new();
    match f {
        Fault::HalfWay => {
            // iptables-nft's transaction runs first and succeeds; legacy's then fails.
            stub(
                &stubs,
                "iptables-legacy-restore",
                &format!(
                    "for a in \"$@\"; do [ \"$a\" = --noflush ] && {{ echo 'stub: injected failure' >&2; exit 1; }}; done\nexec {} \"$@\"",
                    real("iptables-legacy-restore")
                ),
            )
            .map_err(|e| vec![e])?;
            let out = fix(&lab, state, &["--apply"], Some(&stubs)).map_err(|e| vec![e])?;
            if out.code == Some(0) {
                return Err(vec![
                    "fix --apply succeeded despite the failing restore".into(),
                ]);
            }
            note = format!(" ({})", out.stderr.trim().lines().last().unwrap_or(""));
        }
        Fault::NoBackup => {
            let file = tmp.join(format!("not-a-dir-{n}"));
            std::fs::write(&file, "x").map_err(|e| vec![e.to_string()])?;
            let out = fix(&lab, &file.join("state"), &["--apply"], None).map_err(|e| vec![e])?;
            if out.code == Some(0) || !out.stderr.contains("nothing was applied") {
                return Err(vec![format!(
                    "fix --apply without a writable backup: exit {:?}: {}",
                    out.code,
                    out.stderr.trim()
                )]);
            }
            note = format!(" ({})", out.stderr.trim());
        }
        Fault::Disagree => {
            // The kernel ends up other than the proof said: `nft -f` applies the fix and,
            // behind origin-audit's back, a drop of another Cloudflare range is added.
            stub(
                &stubs,
                "nft",
                &format!(
                    "if [ \"$1\" = -f ] && grep -q origin-audit \"$2\" && ! grep -q 'delete table' \"$2\"; then {n} \"$@\" || exit 1; exec {n} insert rule inet filter input ip saddr 104.16.0.0/13 drop; fi\nexec {n} \"$@\"",
                    n = real("nft")
                ),
            )
            .map_err(|e| vec![e])?;
            let out = fix(&lab, state, &["--apply"], Some(&stubs)).map_err(|e| vec![e])?;
            if out.code == Some(0) || !out.stderr.contains("disagrees") {
                return Err(vec![format!(
                    "re-read disagreement not detected (exit {:?}): {}",
                    out.code,
                    out.stderr.trim()
                )]);
            }
        }
        Fault::NotConfirmed => {
            let out = fix(&lab, state, &["--apply", "--confirm-timeout", "2"], None)
                .map_err(|e| vec![e])?;
            if out.code == Some(0) || !out.stderr.contains("not confirmed") {
                return Err(vec![format!(
                    "unconfirmed change kept (exit {:?}): {}",
                    out.code,
                    out.stderr.trim()
                )]);
            }
            // And with confirmation it stays.
            let mut child = apply_awaiting_confirm(&lab, state, 20)?;
            let out = fix(&lab, state, &["--confirm"], None).map_err(|e| vec![e])?;
            let st = wait_child(&mut child.0, Duration::from_secs(30)).map_err(|e| vec![e])?;
            if out.code != Some(0) || st != Some(0) || !dumps(&lab).contains("origin-audit") {
                return Err(vec![format!(
                    "confirmed change not kept (confirm exit {:?}, apply exit {st:?})",
                    out.code
                )]);
            }
            let after = reprobe(&lab, exe, &before).map_err(|e| vec![e])?;
            let fails = compare_probes(&sc, &before, &after);
            if !fails.is_empty() {
                return Err(fails);
            }
            let _ = fix(&lab, state, &["--revert"], None);
        }
        Fault::Killed => {
            let mut child = apply_awaiting_confirm(&lab, state, 120)?;
            // SIGKILL: no chance to clean up. `ip netns exec` execs the program, same pid.
            let _ = child.0.kill();
            let _ = child.0.wait();
            if !dumps(&lab).contains("origin-audit") {
                return Err(vec!["the change vanished before the next run".into()]);
            }
            // The next run — any `fix`, here a plain dry run — restores first.
            let out = fix(&lab, state, &[], None).map_err(|e| vec![e])?;
            note = format!(" ({})", out.stderr.trim());
        }
        Fault::Concurrent => note = concurrent_applies(&lab, state)?,
        Fault::CheckDuringWait => note = check_during_wait(&lab, state, tmp, n)?,
        Fault::RecordedStateDir => note = recorded_state_dir(&lab, state, tmp, n)?,
        Fault::Revert => {
            let out = fix(&lab, state, &["--apply"], None).map_err(|e| vec![e])?;
            if out.code != Some(0) {
                return Err(vec![format!("apply failed: {}", out.stderr.trim())]);
            }
            // The admin adds a rule of their own after origin-audit's: revert must keep it.
            let mut c = lab.in_origin("nft");
            c.args([
                "add", "rule", "inet", "filter", "input", "tcp", "dport", "8080", "drop",
            ]);
            netns::must(&mut c, None).map_err(|e| vec![e])?;
            let with_admin = without_ours(&dumps(&lab));
            let out = fix(&lab, state, &["--revert"], None).map_err(|e| vec![e])?;
            let d = dumps(&lab);
            if out.code != Some(0) || d != with_admin {
                return Err(vec![format!(
                    "revert removed more or less than origin-audit's additions:\n--- expected\n{with_admin}\n--- got\n{d}"
                )]);
            }
            return Ok(String::new());
        }
    }
    let d1 = dumps(&lab);
    if d1 != d0 {
        return Err(vec![format!(
            "the original ruleset is not in place:\n--- original\n{d0}\n--- now\n{d1}"
        )]);
    }
    let after = reprobe(&lab, exe, &before).map_err(|e| vec![e])?;
    for (b, a) in before.iter().zip(&after) {
        if !b.burst && a.outcomes != b.outcomes {
            return Err(vec![format!(
                "{} port {}: before {}, now {}",
                a.src,
                a.port,
                b.kernel_summary(),
                a.kernel_summary()
            )]);
        }
    }
    Ok(note)
}

/// Lines of origin-audit's own (its comment) in the dumps.
fn ours(lab: &netns::Lab) -> usize {
    dumps(lab)
        .lines()
        .filter(|l| l.contains("origin-audit"))
        .count()
}

/// [`Fault::Concurrent`]: both applies succeed, and what they leave is exactly what one
/// apply alone leaves (measured after a revert on the same namespace).
fn concurrent_applies(lab: &netns::Lab, state: &Path) -> Result<String, Vec<String>> {
    // The audited ports live in this thread's PORTS; each apply runs on a thread of its own.
    let ports = ports_arg(lab);
    let apply = |st: PathBuf| {
        let ports = ports.clone();
        move || {
            PORTS.with(|p| *p.borrow_mut() = ports);
            fix(lab, &st, &["--apply"], None)
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(apply(state.to_path_buf()));
        let b = s.spawn(apply(PathBuf::from(format!("{}-second", state.display()))));
        let j = |h: std::thread::ScopedJoinHandle<'_, Result<netns::Output, String>>| {
            h.join()
                .unwrap_or_else(|_| Err("apply thread panicked".into()))
        };
        (j(a), j(b))
    });
    let (a, b) = (a.map_err(|e| vec![e])?, b.map_err(|e| vec![e])?);
    if a.code != Some(0) || b.code != Some(0) {
        return Err(vec![format!(
            "concurrent applies: exit {:?} ({}) and {:?} ({})",
            a.code,
            a.stderr.trim(),
            b.code,
            b.stderr.trim()
        )]);
    }
    let both = ours(lab);
    let out = fix(lab, state, &["--revert"], None).map_err(|e| vec![e])?;
    if out.code != Some(0) || ours(lab) != 0 {
        return Err(vec![format!(
            "revert after the concurrent applies: {}",
            out.stderr.trim()
        )]);
    }
    let out = fix(lab, state, &["--apply"], None).map_err(|e| vec![e])?;
    let one = ours(lab);
    if out.code != Some(0) || one == 0 || both != one {
        return Err(vec![format!(
            "two concurrent applies left {both} line(s) of origin-audit's, one apply alone {one} (exit {:?}: {})",
            out.code,
            out.stderr.trim()
        )]);
    }
    let out = fix(lab, state, &["--revert"], None).map_err(|e| vec![e])?;
    if out.code != Some(0) {
        return Err(vec![format!("final revert: {}", out.stderr.trim())]);
    }
    Ok(format!(" ({one} line(s) of ours after both)"))
}

/// [`Fault::CheckDuringWait`]: a live `check` during the confirm wait reports `fix-pending`
/// with the deadline, in the JSON and the textfile; after the waiting run is killed,
/// `--rollback-pending` restores the original (checked by the caller).
fn check_during_wait(
    lab: &netns::Lab,
    state: &Path,
    tmp: &Path,
    n: usize,
) -> Result<String, Vec<String>> {
    let mut child = apply_awaiting_confirm(lab, state, 120)?;
    let tf = tmp.join(format!("pending-{n}.prom"));
    let mut c = lab.in_origin(BIN);
    c.args([
        "check",
        "--offline",
        "--format",
        "json",
        "--ports",
        &ports_arg(lab),
    ])
    .arg("--state-dir")
    .arg(state)
    .arg("--prometheus-textfile")
    .arg(&tf);
    let out = netns::run(&mut c, None, Duration::from_secs(120)).map_err(|e| vec![e])?;
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| vec![format!("check JSON: {e}: {}", out.stderr.trim())])?;
    let pending = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["code"] == "fix-pending")
        .and_then(|f| f["message"].as_str())
        .map(str::to_string);
    let prom = std::fs::read_to_string(&tf).unwrap_or_default();
    let _ = child.0.kill();
    let _ = child.0.wait();
    let Some(msg) = pending else {
        return Err(vec![format!(
            "check during the confirm wait reports no fix-pending (status {}, exit {:?})",
            report["status"], out.code
        )]);
    };
    if out.code == Some(0) || !msg.contains("rolls back at") {
        return Err(vec![format!(
            "check during the wait: exit {:?}, {msg}",
            out.code
        )]);
    }
    if !prom.contains("\norigin_audit_fix_pending 1\n")
        || !prom.contains("\norigin_audit_fix_rollback_timestamp_seconds ")
    {
        return Err(vec![format!("textfile during the wait:\n{prom}")]);
    }
    let out = fix(lab, state, &["--rollback-pending"], None).map_err(|e| vec![e])?;
    if out.code != Some(0) {
        return Err(vec![format!("--rollback-pending: {}", out.stderr.trim())]);
    }
    Ok(format!(" ({msg})"))
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(mut f: impl FnMut() -> bool) -> Result<(), String> {
    for _ in 0..300 {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("timed out waiting for the change to be applied".into())
}

fn wait_child(c: &mut std::process::Child, t: Duration) -> Result<Option<i32>, String> {
    let end = std::time::Instant::now() + t;
    while std::time::Instant::now() < end {
        if let Ok(Some(st)) = c.try_wait() {
            return Ok(st.code());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("apply did not finish after --confirm".into())
}
