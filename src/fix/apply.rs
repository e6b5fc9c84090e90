//! The only code in origin-audit that changes the host's firewall.
//!
//! Owns: backups (`<state-dir>/backups/<timestamp>/`, written completely before anything is
//! changed), applying a [`Plan`] as one atomic transaction per backend (`ipset restore` first so
//! the sets exist, then `nft -f`, then `iptables-restore -w --noflush` per backend), verification
//! through a caller-supplied re-read, restoring a backup, the iptables-apply style confirm wait
//! with its pending-rollback marker, and `--revert` (delete exactly the rules and sets that carry
//! origin-audit's comment / names).
//! Must not: decide what to change (the plan did), or delete, reorder or alter a rule it did not
//! write — except when restoring a backup it took itself seconds earlier.
//!
//! Every command goes through [`crate::collect::cmd`] with a timeout. Atomicity: `nft -f` applies
//! a file as one transaction (nft(8): "the whole file is applied atomically"); iptables-restore
//! commits each table with one COMMIT (iptables-restore(8)); ipset restore is not transactional,
//! which is why sets are built under a temporary name and swapped in (ipset(8) `swap`).

use super::emit::{self, restore_bin, save_bin};
use super::{COMMENT, Plan, SetHome, set_name};
use crate::collect::cmd::{self, CmdError};
use crate::firewall::{Backend, Family, Ruleset, TableFamily};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Default state directory (backups, pending-rollback marker).
pub use super::state::DEFAULT_STATE_DIR;
const PENDING: &str = "pending-rollback.json";
const CONFIRMED: &str = "confirmed";
/// Tools may take a while on big rulesets; restoring must not be cut short by a tight bound.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds to wait for the xtables lock. Always given explicitly: `-w` takes an optional number
/// and would otherwise swallow the file name that follows (iptables-restore(8) `--wait`).
const WAIT: &str = "10";

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("cannot write the backup {path}: {source} — nothing was applied")]
    BackupWrite { path: PathBuf, source: io::Error },
    #[error("cannot take the backup: {0} — nothing was applied")]
    BackupCmd(CmdError),
    #[error("{what} failed: {err}; {rollback}")]
    Transaction {
        what: String,
        err: String,
        rollback: String,
    },
    #[error("the kernel disagrees with the proof after applying: {reason}; {rollback}")]
    Disagrees { reason: String, rollback: String },
    #[error("not confirmed within {secs} s (`origin-audit fix --confirm`); {rollback}")]
    NotConfirmed { secs: u64, rollback: String },
    #[error("state directory {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Other(String),
}

/// A backend the plan touches, and so backs up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Touched {
    NftTable {
        family: TableFamily,
        table: String,
    },
    Iptables {
        backend: Backend,
        family: TableFamily,
    },
    Ipset,
    /// ufw's user rule files (/etc/ufw/user.rules, user6.rules), when the change goes
    /// through ufw ([`super::ufw`]).
    UfwRules,
}

impl Touched {
    fn file(&self) -> String {
        match self {
            Touched::NftTable { family, table } => format!("nft-{family}-{table}.nft"),
            Touched::Iptables { backend, family } => {
                format!("{}.rules", save_bin(*backend, *family))
            }
            Touched::Ipset => "ipset.save".into(),
            Touched::UfwRules => "ufw-user.rules".into(),
        }
    }
}

/// What a backup holds (`manifest.json` beside the dumps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub touched: Vec<Touched>,
    /// ipsets that did not exist before (destroyed on restore).
    pub new_ipsets: Vec<String>,
    /// Why the backup was taken (`apply`, `revert`).
    pub reason: String,
}

/// The rollback marker: an applied change waiting for `fix --confirm` — its backup (absolute),
/// who applied it, and when it rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub backup: PathBuf,
    pub pid: u32,
    /// Unix seconds after which the rollback is due.
    pub deadline: u64,
}

pub struct Config {
    pub state_dir: PathBuf,
    pub confirm_timeout: Option<Duration>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        std::process::id()
    )
}

fn run(prog: &str, args: &[&str]) -> Result<cmd::Output, CmdError> {
    cmd::run_with_timeout(prog, args, TIMEOUT)
}

/// Backups and state are root's alone: 0600, through `safefs` (no planted symlink followed).
fn write(path: &Path, text: &str) -> Result<(), ApplyError> {
    crate::safefs::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
        ApplyError::BackupWrite {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// What a plan touches.
pub fn touched(plan: &Plan) -> Vec<Touched> {
    let mut v = Vec::new();
    if super::ufw::applies(plan) {
        // ufw writes its chains in the iptables tables it manages, and its files.
        v.push(Touched::UfwRules);
        for a in &plan.additions {
            v.push(Touched::Iptables {
                backend: a.backend,
                family: a.table_family,
            });
        }
        v.sort();
        v.dedup();
        return v;
    }
    for a in &plan.additions {
        v.push(match a.backend {
            Backend::Nft => Touched::NftTable {
                family: a.table_family,
                table: a.table.clone(),
            },
            b => Touched::Iptables {
                backend: b,
                family: a.table_family,
            },
        });
    }
    for s in &plan.sets {
        v.push(match &s.home {
            SetHome::Nft { family, table } => Touched::NftTable {
                family: *family,
                table: table.clone(),
            },
            SetHome::Ipset => Touched::Ipset,
        });
    }
    if plan.remove_banned {
        for b in plan.bans.iter().filter(|b| !b.provider_elements.is_empty()) {
            match &b.set {
                Some((SetHome::Nft { family, table }, _)) => v.push(Touched::NftTable {
                    family: *family,
                    table: table.clone(),
                }),
                Some((SetHome::Ipset, _)) => v.push(Touched::Ipset),
                None => {}
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn existing_ipsets() -> Result<Vec<String>, CmdError> {
    let out = run("ipset", &["list", "-n"])?;
    Ok(out.stdout.lines().map(|l| l.trim().to_string()).collect())
}

/// Takes the backup of everything in `touched`. Fails (and nothing may be applied) if any dump
/// cannot be taken or written.
pub fn backup(state_dir: &Path, touched: &[Touched], reason: &str) -> Result<PathBuf, ApplyError> {
    // Absolute: the rollback marker must name the backup from any working directory.
    let state_dir = std::path::absolute(state_dir).map_err(|source| ApplyError::BackupWrite {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let dir = state_dir.join("backups").join(timestamp());
    for d in [state_dir.clone(), state_dir.join("backups"), dir.clone()] {
        crate::safefs::private_dir(&d).map_err(|reason| ApplyError::BackupWrite {
            path: d.clone(),
            source: io::Error::other(reason),
        })?;
    }
    let mut new_ipsets = Vec::new();
    for t in touched {
        let text = match t {
            Touched::NftTable { family, table } => {
                run("nft", &["list", "table", &family.to_string(), table])
                    .map_err(ApplyError::BackupCmd)?
                    .stdout
            }
            Touched::Iptables { backend, family } => {
                run(save_bin(*backend, *family), &[])
                    .map_err(ApplyError::BackupCmd)?
                    .stdout
            }
            Touched::UfwRules => {
                super::ufw::backup_files(&dir).map_err(|reason| ApplyError::BackupWrite {
                    path: dir.clone(),
                    source: io::Error::other(reason),
                })?;
                continue;
            }
            Touched::Ipset => {
                let have = existing_ipsets().map_err(ApplyError::BackupCmd)?;
                for f in [Family::V4, Family::V6] {
                    for n in [set_name(f).to_string(), format!("{}.new", set_name(f))] {
                        if !have.contains(&n) {
                            new_ipsets.push(n);
                        }
                    }
                }
                run("ipset", &["save"])
                    .map_err(ApplyError::BackupCmd)?
                    .stdout
            }
        };
        write(&dir.join(t.file()), &text)?;
    }
    let m = Manifest {
        touched: touched.to_vec(),
        new_ipsets,
        reason: reason.into(),
    };
    let json = serde_json::to_string_pretty(&m).map_err(|e| ApplyError::Other(e.to_string()))?;
    write(&dir.join("manifest.json"), &json)?;
    // Read it back: a full disk can accept a create and lose the data.
    match fs::read_to_string(dir.join("manifest.json")) {
        Ok(s) if s == json => Ok(dir),
        Ok(_) => Err(ApplyError::BackupWrite {
            path: dir.join("manifest.json"),
            source: io::Error::other("read back differs"),
        }),
        Err(source) => Err(ApplyError::BackupWrite {
            path: dir.join("manifest.json"),
            source,
        }),
    }
}

/// Restores a backup taken by [`backup`]: iptables tables first (they reference the ipsets), then
/// nft tables (delete + recreate in one transaction), then ipsets (missing entries re-added, sets
/// origin-audit created destroyed).
pub fn restore(dir: &Path) -> Result<(), String> {
    // Restored as root: only a backup no other user could have written is trusted.
    let mpath = dir.join("manifest.json");
    let m: Manifest = match crate::safefs::trusted_file(&mpath)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", mpath.display()))?,
        None => return Err(format!("{}: No such file", mpath.display())),
    };
    crate::safefs::private_dir(dir)?;
    let mut errors = Vec::new();
    for t in &m.touched {
        let file = dir.join(t.file());
        let f = file.to_string_lossy().into_owned();
        let r = match t {
            Touched::Iptables { backend, family } => {
                // Without --noflush: each table in the dump is flushed and reloaded as it was.
                run(restore_bin(*backend, *family), &["-w", WAIT, &f]).map(|_| ())
            }
            _ => continue,
        };
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    }
    if m.touched.contains(&Touched::UfwRules)
        && let Err(e) = super::ufw::restore_files(dir)
    {
        errors.push(e);
    }
    for t in &m.touched {
        if let Touched::NftTable { family, table } = t {
            let file = dir.join(t.file());
            let saved = match crate::safefs::trusted_file(&file) {
                Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(None) => {
                    errors.push(format!("{}: No such file", file.display()));
                    continue;
                }
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            // `table X` first so the delete cannot fail on a table that vanished; all in one
            // transaction, so the table is never seen half-restored.
            let text = format!("table {family} {table}\ndelete table {family} {table}\n{saved}");
            let rf = dir.join(format!("restore-{}", t.file()));
            if let Err(e) = crate::safefs::write_atomic(&rf, text.as_bytes(), 0o600) {
                errors.push(format!("{}: {e}", rf.display()));
                continue;
            }
            if let Err(e) = run("nft", &["-f", &rf.to_string_lossy()]) {
                errors.push(e.to_string());
            }
        }
    }
    if m.touched.contains(&Touched::Ipset) {
        let f = dir.join(Touched::Ipset.file());
        if let Err(e) = run(
            "ipset",
            &["restore", "-exist", "-file", &f.to_string_lossy()],
        ) {
            errors.push(e.to_string());
        }
        for n in &m.new_ipsets {
            if let Ok(have) = existing_ipsets()
                && have.contains(n)
                && let Err(e) = run("ipset", &["destroy", n])
            {
                errors.push(e.to_string());
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn rollback_note(dir: &Path) -> String {
    match restore(dir) {
        Ok(()) => format!("the backup {} was restored", dir.display()),
        Err(e) => format!(
            "RESTORING THE BACKUP {} FAILED ({e}); restore it by hand",
            dir.display()
        ),
    }
}

/// Writes the plan's transaction files into `dir` and runs them. On failure restores `backup`.
fn transact(plan: &Plan, dir: &Path, backup: &Path) -> Result<(), ApplyError> {
    let fail = |what: String, err: String| ApplyError::Transaction {
        what,
        err,
        rollback: rollback_note(backup),
    };
    if super::ufw::applies(plan) {
        return super::ufw::transact(plan).map_err(|e| fail("ufw".into(), e));
    }
    let ipset = emit::ipset_restore(plan);
    if !ipset.is_empty() {
        let f = dir.join("apply-ipset.restore");
        write(&f, &ipset)?;
        if let Err(e) = run("ipset", &["restore", "-file", &f.to_string_lossy()]) {
            return Err(fail("ipset restore".into(), e.to_string()));
        }
    }
    let nft = emit::nft_file(plan);
    if !nft.is_empty() {
        let f = dir.join("apply.nft");
        write(&f, &nft)?;
        if let Err(e) = run("nft", &["-f", &f.to_string_lossy()]) {
            return Err(fail("nft -f".into(), e.to_string()));
        }
    }
    for ((b, tf), text) in emit::iptables_files(plan) {
        let f = dir.join(format!("apply-{}.rules", restore_bin(b, tf)));
        write(&f, &text)?;
        let bin = restore_bin(b, tf);
        if let Err(e) = run(bin, &["-w", WAIT, "--noflush", &f.to_string_lossy()]) {
            return Err(fail(format!("{bin} --noflush"), e.to_string()));
        }
    }
    Ok(())
}

fn state_err(path: &Path) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Applies an offerable plan: backup, `precheck` (the rules are still those planned on),
/// transaction, `verify` (re-read the kernel and re-analyse;
/// `Err(reason)` when the result is not what the proof promised), then the optional confirm wait.
/// Any failure after the backup restores it. Returns the backup directory. `run_lock` is held
/// through the change and released for the confirm wait, so `check` (which then reports the
/// pending change) and `fix --confirm` are not kept waiting; another `fix --apply` refuses
/// while the change is pending.
pub fn apply(
    plan: &Plan,
    cfg: &Config,
    precheck: &dyn Fn() -> Result<(), String>,
    verify: &dyn Fn() -> Result<(), String>,
    run_lock: Option<crate::lock::RunLock>,
) -> Result<PathBuf, ApplyError> {
    if !plan.offerable() {
        return Err(ApplyError::Other(
            "the fix is not offered (its proof does not hold); nothing was applied".into(),
        ));
    }
    let dir = backup(&cfg.state_dir, &touched(plan), "apply")?;
    // The plan's positions are only right for the ruleset it was made on: a rule added since
    // (fail2ban, an admin) would shift them. Checked after the backup, right before writing.
    if let Err(reason) = precheck() {
        return Err(ApplyError::Other(format!(
            "the ruleset changed since it was read ({reason}); nothing was applied — run again"
        )));
    }
    let pending = cfg.state_dir.join(PENDING);
    let confirmed = cfg.state_dir.join(CONFIRMED);
    if let Some(t) = cfg.confirm_timeout {
        // Written before the change: if this process dies anywhere after the transaction, the
        // next run (or `fix --rollback-pending` from a timer) finds it and restores.
        let p = Pending {
            backup: dir.clone(),
            pid: std::process::id(),
            deadline: now_secs() + t.as_secs(),
        };
        let _ = fs::remove_file(&confirmed);
        let json = serde_json::to_string(&p).map_err(|e| ApplyError::Other(e.to_string()))?;
        write(&pending, &json)?;
    }
    let clear = || {
        let _ = fs::remove_file(&pending);
        let _ = fs::remove_file(&confirmed);
    };
    if let Err(e) = transact(plan, &dir, &dir) {
        clear();
        return Err(e);
    }
    if let Err(reason) = verify() {
        let rollback = rollback_note(&dir);
        clear();
        return Err(ApplyError::Disagrees { reason, rollback });
    }
    if let Some(t) = cfg.confirm_timeout {
        eprintln!(
            "origin-audit: applied; run `origin-audit fix --confirm{}` within {} s or it is rolled back",
            if cfg.state_dir == super::state::default_dir() {
                String::new()
            } else {
                format!(
                    " --state-dir {}",
                    super::emit::shell_word(&cfg.state_dir.to_string_lossy())
                )
            },
            t.as_secs()
        );
        drop(run_lock);
        let end = std::time::Instant::now() + t;
        // Bounded by the timeout; polls the marker `fix --confirm` writes.
        while std::time::Instant::now() < end {
            if confirmed.exists() {
                clear();
                return Ok(dir);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let rollback = rollback_note(&dir);
        clear();
        return Err(ApplyError::NotConfirmed {
            secs: t.as_secs(),
            rollback,
        });
    }
    Ok(dir)
}

/// `fix --confirm`: tells a waiting `fix --apply --confirm-timeout` to keep the change.
pub fn confirm(state_dir: &Path) -> Result<bool, ApplyError> {
    let pending = state_dir.join(PENDING);
    if !pending.exists() {
        return Ok(false);
    }
    let c = state_dir.join(CONFIRMED);
    crate::safefs::write_atomic(&c, b"confirmed\n", 0o600).map_err(state_err(&c))?;
    Ok(true)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Restores a pending change whose confirming process is gone or whose deadline passed (`force`:
/// regardless). Returns what was done, `None` when nothing was pending or it is still waiting.
pub fn rollback_pending(state_dir: &Path, force: bool) -> Result<Option<String>, ApplyError> {
    let Some(p) = pending_change(state_dir)? else {
        return Ok(None);
    };
    let pending = state_dir.join(PENDING);
    let waiting = p.pid != std::process::id() && pid_alive(p.pid) && now_secs() <= p.deadline;
    if waiting && !force {
        return Ok(None);
    }
    if state_dir.join(CONFIRMED).exists() && !force {
        // Confirmed, but the applier died before clearing: the change stays.
        let _ = fs::remove_file(&pending);
        let _ = fs::remove_file(state_dir.join(CONFIRMED));
        return Ok(Some("the pending change had been confirmed; kept".into()));
    }
    // The marker goes only once the restore succeeded: a failed rollback stays due, and the
    // next run (or the timer) tries again instead of reporting success doing nothing.
    match restore(&p.backup) {
        Ok(()) => {
            let _ = fs::remove_file(&pending);
            let _ = fs::remove_file(state_dir.join(CONFIRMED));
            Ok(Some(format!(
                "an unconfirmed change was rolled back (backup {})",
                p.backup.display()
            )))
        }
        Err(e) => Err(ApplyError::Other(format!(
            "rolling back the unconfirmed change from {} failed: {e}; the rollback stays pending \
             ({} kept)",
            p.backup.display(),
            pending.display()
        ))),
    }
}

/// A rollback deadline as RFC 3339 UTC (or the raw seconds when out of range).
pub fn deadline_text(deadline: u64) -> String {
    i64::try_from(deadline)
        .ok()
        .and_then(|d| time::OffsetDateTime::from_unix_timestamp(d).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {deadline}"))
}

/// The pending change recorded in `state_dir`, if any. The marker is trusted only when no other
/// user could have written it (`safefs::trusted_file`).
pub fn pending_change(state_dir: &Path) -> Result<Option<Pending>, ApplyError> {
    let pending = state_dir.join(PENDING);
    let bytes = match crate::safefs::trusted_file(&pending) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        // No state directory (or not a directory): nothing can be pending there.
        Err(_) if !state_dir.is_dir() => return Ok(None),
        Err(e) => return Err(ApplyError::Other(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApplyError::Other(format!("{}: {e}", pending.display())))
}

/// What `--revert` removes: every rule carrying origin-audit's comment, and the provider sets
/// once nothing references them.
#[derive(Debug, Clone, Default)]
pub struct RevertPlan {
    pub nft: String,
    pub iptables: Vec<((Backend, TableFamily), String)>,
    pub ipset: String,
    pub touched: Vec<Touched>,
    pub count: usize,
    /// `ufw delete …` argument lists for origin-audit's ufw rules ([`super::ufw::revert_plan`]).
    pub ufw: Vec<Vec<String>>,
}

fn is_ours(text: &str) -> bool {
    text.contains(&format!("comment \"{COMMENT}\""))
        || text.contains(&format!("--comment {COMMENT}"))
}

/// Builds the revert transaction from the live ruleset. Pure.
pub fn revert_plan(rs: &Ruleset) -> RevertPlan {
    let mut rp = RevertPlan::default();
    let set_names = [set_name(Family::V4), set_name(Family::V6)];
    let mut ipt_refs = false;
    for t in &rs.tables {
        let mut lines = String::new();
        let mut per_table = String::new();
        for c in &t.chains {
            for r in c.rules.iter().filter(|r| is_ours(&r.source.text)) {
                rp.count += 1;
                match t.backend {
                    Backend::Nft => {
                        if let Some(h) = r.source.handle {
                            lines.push_str(&format!(
                                "delete rule {} {} {} handle {h}\n",
                                t.family, t.name, c.name
                            ));
                        }
                    }
                    _ => {
                        // `-A CHAIN spec` → `-D CHAIN spec`: deletes exactly that rule.
                        if let Some(rest) = r.source.text.strip_prefix("-A ") {
                            per_table.push_str(&format!("-D {rest}\n"));
                        }
                    }
                }
            }
        }
        match t.backend {
            Backend::Nft => {
                let others: Vec<&str> = t
                    .chains
                    .iter()
                    .flat_map(|c| &c.rules)
                    .filter(|r| !is_ours(&r.source.text))
                    .map(|r| r.source.text.as_str())
                    .collect();
                for n in set_names {
                    if t.set(n).is_some() && !others.iter().any(|x| x.contains(&format!("@{n}"))) {
                        lines.push_str(&format!("delete set {} {} {n}\n", t.family, t.name));
                    }
                }
                if !lines.is_empty() {
                    rp.nft.push_str(&lines);
                    rp.touched.push(Touched::NftTable {
                        family: t.family,
                        table: t.name.clone(),
                    });
                }
            }
            b => {
                if t.chains.iter().flat_map(|c| &c.rules).any(|r| {
                    !is_ours(&r.source.text)
                        && set_names
                            .iter()
                            .any(|n| r.source.text.contains(&format!("--match-set {n} ")))
                }) {
                    ipt_refs = true;
                }
                if !per_table.is_empty() {
                    let key = (b, t.family);
                    let text = format!("*{}\n{per_table}COMMIT\n", t.name);
                    match rp.iptables.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, s)) => s.push_str(&text),
                        None => rp.iptables.push((key, text)),
                    }
                    rp.touched.push(Touched::Iptables {
                        backend: b,
                        family: t.family,
                    });
                }
            }
        }
    }
    if !ipt_refs {
        for n in set_names {
            if rs.ipset(n).is_some() {
                rp.ipset.push_str(&format!("destroy {n}\n"));
            }
        }
        if !rp.ipset.is_empty() {
            rp.touched.push(Touched::Ipset);
        }
    }
    rp.touched.sort();
    rp.touched.dedup();
    rp
}

/// Runs a revert: backup, iptables deletions, nft deletions, then the ipsets (unreferenced now).
pub fn revert(rp: &RevertPlan, state_dir: &Path) -> Result<Option<PathBuf>, ApplyError> {
    if rp.touched.is_empty() {
        return Ok(None);
    }
    let dir = backup(state_dir, &rp.touched, "revert")?;
    let fail = |what: String, err: String| ApplyError::Transaction {
        what,
        err,
        rollback: rollback_note(&dir),
    };
    if let Err(e) = super::ufw::revert(&rp.ufw) {
        return Err(fail("ufw delete".into(), e));
    }
    for ((b, tf), text) in &rp.iptables {
        let f = dir.join(format!("revert-{}.rules", restore_bin(*b, *tf)));
        write(&f, text)?;
        let bin = restore_bin(*b, *tf);
        if let Err(e) = run(bin, &["-w", WAIT, "--noflush", &f.to_string_lossy()]) {
            return Err(fail(format!("{bin} --noflush"), e.to_string()));
        }
    }
    if !rp.nft.is_empty() {
        let f = dir.join("revert.nft");
        write(&f, &rp.nft)?;
        if let Err(e) = run("nft", &["-f", &f.to_string_lossy()]) {
            return Err(fail("nft -f".into(), e.to_string()));
        }
    }
    if !rp.ipset.is_empty() {
        let f = dir.join("revert-ipset.restore");
        write(&f, &rp.ipset)?;
        if let Err(e) = run("ipset", &["restore", "-file", &f.to_string_lossy()]) {
            return Err(fail("ipset restore".into(), e.to_string()));
        }
    }
    Ok(Some(dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn marker(state: &Path, backup: &Path) {
        let p = Pending {
            backup: backup.to_path_buf(),
            // No such process: the change is due for rollback.
            pid: u32::MAX,
            deadline: 0,
        };
        write(&state.join(PENDING), &serde_json::to_string(&p).unwrap()).unwrap();
    }

    #[test]
    fn a_failed_rollback_keeps_its_marker_and_a_good_one_clears_it() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        crate::safefs::private_dir(&state).unwrap();
        marker(&state, &d.path().join("gone"));
        let e = rollback_pending(&state, false).unwrap_err().to_string();
        assert!(e.contains("stays pending"), "{e}");
        assert!(
            state.join(PENDING).exists(),
            "marker deleted after a failed restore"
        );
        assert!(pending_change(&state).unwrap().is_some());

        // An empty backup restores trivially (no command runs): then the marker goes.
        let b = backup(&state, &[], "test").unwrap();
        marker(&state, &b);
        let msg = rollback_pending(&state, false).unwrap().unwrap();
        assert!(msg.contains("rolled back"), "{msg}");
        assert!(!state.join(PENDING).exists());
    }

    #[test]
    fn backups_are_private_and_named_absolutely_from_a_relative_state_dir() {
        let d = tempfile::tempdir().unwrap();
        // The same directory, spelled relative to the working directory.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count().saturating_sub(1));
        let rel = PathBuf::from(format!(
            "{up}{}",
            d.path()
                .join("st")
                .to_string_lossy()
                .trim_start_matches('/')
        ));
        assert!(rel.is_relative());
        let b = backup(&rel, &[], "test").unwrap();
        assert!(b.is_absolute(), "{}", b.display());
        assert!(
            b.canonicalize()
                .unwrap()
                .starts_with(d.path().canonicalize().unwrap())
        );
        for p in [d.path().join("st"), d.path().join("st/backups"), b.clone()] {
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let m = fs::metadata(b.join("manifest.json")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = backup(&state, &[], "test").unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        // A planted marker there is not trusted either.
        fs::write(
            state.join(PENDING),
            r#"{"backup":"/x","pid":1,"deadline":0}"#,
        )
        .unwrap();
        fs::set_permissions(state.join(PENDING), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(pending_change(&state).is_err());
    }
}
