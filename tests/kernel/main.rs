//! Kernel test suite: proves origin-audit's verdicts against the real Linux kernel.
//!
//! For every `tests/scenarios/*.scn` (format: `tests/scenarios/README.md`) it builds a private
//! origin + client namespace pair, starts real listeners, loads the ruleset with the real tools,
//! then (a) probes with real connects from Cloudflare and control addresses, (b) checks the
//! scenario's expectations against what the kernel did — so expectations are kernel truth — and
//! (c) compares origin-audit with the kernel: `check` runs in the origin before probing and the
//! boundaries of its rows become extra probe sources; every probe is compared with the row
//! covering it; `explain` runs live and offline (on a `snapshot`) for a bounded sample. The end
//! line gives scenarios run/passed, probes sent, `N of M probes agree` and the wall time.
//!
//! `harness = false`: this `main` is the runner. Usage: `cargo test --test kernel [-- NAME…]`
//! (NAME = substring of a scenario file name). Needs root, `ip` and `nft`; without them it says
//! why and fails — a skipped kernel suite must never look green. `OA_KERNEL_ONLY=1` (development
//! only, never in CI) skips step c. `OA_KERNEL_JOBS` (default 3) scenarios run at once;
//! `OA_KERNEL_WATCHDOG_S` (default 600) bounds the whole run; `OA_KERNEL_VERBOSE=1` prints
//! every probe and what the kernel did.
//!
//! Must not: touch the root namespace's firewall, or leave namespaces or processes behind.

mod audit;
mod kernel;
mod netns;
mod roles;
mod scenario;
// Shared with tests/fix_netns.rs: each uses the parts its comparisons need.
#[allow(dead_code)]
mod volatile;

use scenario::Scenario;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First argument that turns this binary into a helper inside a namespace.
pub const ROLE_ARG: &str = "__oa_role";

const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(ROLE_ARG) {
        return ExitCode::from(u8::try_from(roles::main(&args[1..])).unwrap_or(2));
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    match run(&filters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nkernel suite FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn is_root() -> bool {
    // Effective uid is the second field of `Uid:` in /proc/self/status (proc(5)).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        // Same lookup as `Command::new(tool)`: PATH only.
        std::env::split_paths(&p).any(|d| d.join(tool).is_file())
    })
}

fn scenario_files() -> Result<Vec<PathBuf>, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    v.sort();
    Ok(v)
}

struct Outcome {
    name: String,
    what: String,
    secs: f64,
    failures: Vec<String>,
    tally: Tally,
}

/// Probe counts of one scenario (summed for the final line).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Connects sent (a burst counts each of its connects).
    connects: usize,
    /// Probes: one per single connect or burst.
    probes: usize,
    /// Probes some comparison judged.
    compared: usize,
    /// Compared probes with no disagreement.
    agree: usize,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.connects += o.connects;
        self.probes += o.probes;
        self.compared += o.compared;
        self.agree += o.agree;
    }
}

fn run(filters: &[&String]) -> Result<(), String> {
    let start = Instant::now();
    if !is_root() {
        return Err(
            "not root: the kernel suite needs root (network namespaces, firewall \
                    tools). It was NOT run."
                .into(),
        );
    }
    let missing: Vec<&str> = ["ip", "nft"].into_iter().filter(|t| !in_path(t)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing tools {missing:?}: the kernel suite was NOT run"
        ));
    }
    let kernel_only = std::env::var("OA_KERNEL_ONLY").is_ok_and(|v| v == "1");
    if kernel_only {
        eprintln!("{}", banner());
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this test binary: {e}"))?
        .to_string_lossy()
        .into_owned();

    netns::cleanup_stale();
    let watchdog = Duration::from_secs(env_num("OA_KERNEL_WATCHDOG_S", 600));
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!("\nkernel suite: WATCHDOG after {watchdog:?}: cleaning up and failing");
        netns::cleanup_all();
        std::process::exit(3);
    });

    let mut failures_total: Vec<Outcome> = vec![];
    let mut scenarios = vec![];
    for path in scenario_files()? {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match Scenario::load(&path) {
            Ok(sc) => scenarios.push(sc),
            Err(e) => failures_total.push(Outcome {
                name,
                what: "scenario file".into(),
                secs: 0.0,
                failures: vec![e],
                tally: Tally::default(),
            }),
        }
    }
    if scenarios.is_empty() && failures_total.is_empty() {
        return Err(format!("no scenario matches {filters:?}"));
    }
    let count = scenarios.len();
    eprintln!("kernel suite: {count} scenario(s)");

    let jobs = env_num("OA_KERNEL_JOBS", 3).clamp(1, 8) as usize;
    // Workers pop from the end: reverse so scenarios start in file order.
    scenarios.reverse();
    let queue = Arc::new(Mutex::new(scenarios));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(vec![]));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut workers = vec![];
    for _ in 0..jobs {
        let queue = Arc::clone(&queue);
        let results = Arc::clone(&results);
        let counter = Arc::clone(&counter);
        let exe = exe.clone();
        workers.push(std::thread::spawn(move || {
            // Bounded: each iteration takes one scenario off a finite queue.
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(sc) = next else { break };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                let (name, what) = (sc.name.clone(), sc.what.clone());
                let exe = exe.clone();
                // Own thread, so a panic is caught here while the Lab guard cleans up.
                let (failures, tally) =
                    std::thread::spawn(move || run_scenario(n, &sc, &exe, kernel_only))
                        .join()
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            (vec![format!("harness panicked: {msg}")], Tally::default())
                        });
                let secs = t.elapsed().as_secs_f64();
                eprintln!(
                    "  {:<40} {} ({secs:.1} s, {} of {} probes agree)",
                    name,
                    if failures.is_empty() { "ok" } else { "FAILED" },
                    tally.agree,
                    tally.compared
                );
                if let Ok(mut r) = results.lock() {
                    r.push(Outcome {
                        name,
                        what,
                        secs,
                        failures,
                        tally,
                    });
                }
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    let mut results = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    results.append(&mut failures_total);
    results.sort_by(|a, b| a.name.cmp(&b.name));
    let failed: Vec<&Outcome> = results.iter().filter(|r| !r.failures.is_empty()).collect();
    for r in &failed {
        eprintln!("\n=== {} — {} ({:.1} s)", r.name, r.what, r.secs);
        for f in &r.failures {
            eprintln!("  - {f}");
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for r in &results {
        total.add(r.tally);
    }
    eprintln!(
        "\nkernel suite: {} scenario(s) run, {} passed; {} probes ({} connects) sent; \
         {} of {} probes agree ({} inside rate-limited rows judged by their burst instead); \
         wall time {wall:.1} s",
        results.len(),
        results.len() - failed.len(),
        total.probes,
        total.connects,
        total.agree,
        total.compared,
        total.probes - total.compared,
    );
    if kernel_only {
        eprintln!("{}", banner());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} scenario(s) failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn banner() -> String {
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
     !! OA_KERNEL_ONLY=1: step c (origin-audit vs kernel) is SKIPPED.          !!\n\
     !! Only the scenarios' expectations were checked against the kernel.      !!\n\
     !! This run says NOTHING about origin-audit. Never set this in CI.        !!\n\
     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        .to_string()
}

/// One scenario, steps a–c. Returns every disagreement found and the probe counts.
fn run_scenario(n: usize, sc: &Scenario, exe: &str, kernel_only: bool) -> (Vec<String>, Tally) {
    let none = Tally::default();
    let (mut probes, blocks) = kernel::plan(sc);
    let mut lab = match netns::Lab::new(n, sc, &blocks) {
        Ok(l) => l,
        Err(e) => return (vec![format!("lab setup: {e}")], none),
    };
    if let Err(e) = kernel::wait_link(&lab, exe) {
        return (vec![format!("lab setup: {e}")], none);
    }
    if let Err(e) = lab.start_listeners(sc, exe) {
        return (vec![format!("listeners: {e}")], none);
    }
    if let Err(e) = lab.load_rules(sc) {
        return (vec![e], none);
    }
    // origin-audit's own rows before any probe: every boundary it draws is probed both sides.
    let chk = audit::run_check(sc, &lab, BIN);
    let mut fails = vec![];
    match &chk {
        Ok(c) => {
            let reqs = audit::row_sources(c, &probes);
            let fresh = kernel::add_probes(sc, &mut probes, &reqs);
            if let Err(e) = kernel::route_sources(&lab, &fresh) {
                return (vec![format!("client routes: {e}")], none);
            }
        }
        Err(e) if !kernel_only => fails.push(e.clone()),
        Err(_) => {}
    }
    if let Err(e) = kernel::run_probes(&lab, exe, &mut probes) {
        return (vec![format!("probing: {e}")], none);
    }
    if std::env::var("OA_KERNEL_VERBOSE").is_ok_and(|v| v == "1") {
        let lines: Vec<String> = probes
            .iter()
            .map(|p| {
                format!(
                    "    {} port {} from {}: expected {}, kernel: {}{}",
                    sc.name,
                    p.port,
                    p.src,
                    p.expected,
                    p.kernel_summary(),
                    if p.retried { " (second try)" } else { "" }
                )
            })
            .collect();
        eprintln!("{}", lines.join("\n"));
    }
    let mut bad = vec![false; probes.len()];
    let mut uncompared = vec![false; probes.len()];
    let kfails = kernel::check(sc, &probes, &mut bad);
    let skip_c = !kfails.is_empty();
    fails.extend(kfails);
    if skip_c {
        // Expectations that are not kernel truth prove nothing about origin-audit.
        fails.push("(step c skipped: fix the scenario first)".into());
    } else if !kernel_only && let Ok(c) = &chk {
        let j = audit::check(sc, &lab, BIN, &probes, c);
        fails.extend(j.fails);
        for i in 0..probes.len() {
            bad[i] |= j.bad[i];
            uncompared[i] = j.uncompared[i] && !bad[i];
        }
    }
    let compared = uncompared.iter().filter(|u| !**u).count();
    let tally = Tally {
        connects: probes.iter().map(|p| p.outcomes.len()).sum(),
        probes: probes.len(),
        compared,
        agree: (0..probes.len())
            .filter(|&i| !uncompared[i] && !bad[i])
            .count(),
    };
    (fails, tally)
}
