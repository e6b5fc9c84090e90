//! The `fix` subcommand: flags → pending-rollback check → plan → output, or apply / revert.
//!
//! Owns: the order of operations and the exit codes of `fix`:
//! 0 nothing to fix / applied / confirmed / reverted, 1 a fix is offered (dry run),
//! 2 no fix can be offered or applying failed (the original ruleset was restored),
//! 3 the host or inputs could not be read, or nothing could be analysed (the verdict is unknown:
//! never "nothing to change", nothing applied).
//! Must not: write to the firewall itself (only [`super::apply`] does) or decide verdicts.

use super::apply::{self, Config};
use super::emit::{self, Form};
use super::{Plan, compare_controls, plan_ruleset};
use crate::analysis::{self, Options};
use crate::cli::{EmitForm, FixArgs, Format};
use crate::collect;
use crate::findings::{Finding, Severity};
use crate::snapshot::Snapshot;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

fn options(args: &FixArgs) -> anyhow::Result<Options> {
    let mut o = Options::new(time::OffsetDateTime::now_utc());
    if !args.ports.is_empty() {
        let provider = crate::ranges::cloudflare();
        let proxied = provider.proxied_ports();
        if let Some(p) = args.ports.iter().find(|p| !proxied.contains(p)) {
            anyhow::bail!("--ports: {p} is not a port {} proxies", provider.name);
        }
        o.ports = args.ports.clone();
    }
    o.ifaces = args.input.iface.clone();
    o.dests = args.input.dest.clone();
    Ok(o)
}

/// ` --ports …` as given on the command line, for the commands printed for the admin.
fn ports_flag(args: &FixArgs) -> String {
    if args.ports.is_empty() {
        return String::new();
    }
    let p: Vec<String> = args.ports.iter().map(u16::to_string).collect();
    format!(" --ports {}", p.join(","))
}

fn cidrs(snap: &Snapshot) -> (Vec<String>, Vec<String>) {
    (
        snap.ranges.ipv4.iter().map(|n| n.to_string()).collect(),
        snap.ranges.ipv6.iter().map(|n| n.to_string()).collect(),
    )
}

/// Runs `origin-audit fix`.
pub fn run(args: FixArgs, cfg: &crate::config::Config) -> anyhow::Result<u8> {
    // Absolute, so the rollback marker and its messages hold from any working directory; the
    // last apply's directory when `--state-dir` is not repeated.
    let (state_dir, note) =
        super::state::resolve(args.state_dir.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(n) = note {
        eprintln!("origin-audit: {n}");
    }
    let live = args.input.snapshot.is_none() && !args.input.has_offline_dumps();
    if args.confirm {
        return Ok(if apply::confirm(&state_dir)? {
            crate::outln!("confirmed: the applied fix stays");
            0
        } else {
            eprintln!("origin-audit: no change is waiting for confirmation");
            2
        });
    }
    // The same run lock as `check` (not for `--confirm`: it must reach a waiting `--apply`).
    let run_lock = if live {
        let default = PathBuf::from(crate::config::DEFAULT_LOCK_FILE);
        let explicit = cfg.audit.lock_file != default;
        crate::lock::acquire_for_run(
            &cfg.audit.lock_file,
            Duration::from_secs(cfg.audit.lock_wait_secs),
            explicit,
        )?
    } else {
        None
    };
    if live {
        // A previous `--apply --confirm-timeout` killed while waiting: restore before anything.
        if let Some(msg) = apply::rollback_pending(&state_dir, args.rollback_pending)? {
            eprintln!("origin-audit: {msg}");
        }
        if args.rollback_pending {
            return Ok(0);
        }
    }
    if (args.apply || args.revert) && !live {
        anyhow::bail!("--apply/--revert work on the live host only (not with --snapshot or dumps)");
    }
    if (args.apply || args.revert)
        && let Some(p) = apply::pending_change(&state_dir)?
    {
        anyhow::bail!(
            "an unconfirmed change (pid {}, backup {}) is pending until {}: confirm it \
             (`origin-audit fix --confirm`) or let it roll back before changing the firewall again; \
             nothing was applied",
            p.pid,
            p.backup.display(),
            crate::fix::apply::deadline_text(p.deadline)
        );
    }
    let mut opts = options(&args)?;
    opts.trusted_xdp = cfg.audit.trusted_xdp.clone();
    // The same reading as `check`: with `--with-host`, the candidate dumps plus this host's
    // listeners, interfaces and routes.
    let snap = crate::commands::snapshot(&args.input)?;
    if snap.read_errors.iter().any(|e| e.firewall) {
        for e in &snap.read_errors {
            eprintln!(
                "origin-audit: could not read {} ({}): {}",
                e.what, e.source, e.message
            );
        }
        anyhow::bail!("the firewall could not be fully read; no fix is planned");
    }
    let prepared = analysis::prepare(&snap);
    if !prepared.errors.is_empty() {
        anyhow::bail!(
            "could not parse {}; no fix is planned",
            prepared.errors.join("; ")
        );
    }
    if args.revert {
        let mut rp = apply::revert_plan(&prepared.ruleset);
        // ufw keeps its rules' comments in its files, not in the kernel's rules.
        rp.ufw = super::ufw::revert_plan().map_err(|e| anyhow::anyhow!("ufw: {e}"))?;
        rp.count += rp.ufw.len();
        if !rp.ufw.is_empty() {
            rp.touched.push(apply::Touched::UfwRules);
        }
        return match apply::revert(&rp, &state_dir)? {
            None => {
                crate::outln!("nothing to revert: no rule or set of origin-audit's is loaded");
                Ok(0)
            }
            Some(dir) => {
                crate::outln!(
                    "reverted: {} rule(s) removed (backup {})",
                    rp.count,
                    dir.display()
                );
                Ok(0)
            }
        };
    }
    // What `check` would call UNKNOWN (no public address to audit, so no family analysed): an
    // empty plan then means "nothing looked at", not "every range accepted". Said before any
    // plan is printed, emitted or applied.
    let report = analysis::analyze_prepared(&snap, &prepared, &opts);
    let unknown: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Unknown)
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "origin-audit: the verdict is unknown, so no fix is planned and nothing was changed:"
        );
        for f in unknown {
            eprintln!("  {}", f.message);
            if let Some(fix) = &f.fix {
                eprintln!("  fix: {fix}");
            }
        }
        return Ok(3);
    }
    let plan = plan_ruleset(&snap, &prepared.ruleset, &opts, args.remove_banned);
    let (v4, v6) = cidrs(&snap);

    if let Some(f) = args.emit {
        let form = match f {
            EmitForm::Nft => Form::Nft,
            EmitForm::Iptables => Form::Iptables,
            EmitForm::Ufw => Form::Ufw,
            EmitForm::Firewalld => Form::Firewalld,
        };
        if !plan.offerable() {
            eprint!("{}", emit::human(&plan, &v4, &v6));
            return Ok(2);
        }
        crate::out!("{}", emit::form(&plan, form));
        return Ok(if plan.is_noop() { 0 } else { 1 });
    }

    if !args.apply {
        print_plan(&plan, args.format, &v4, &v6)?;
        return Ok(if plan.is_noop() && plan.problems.is_empty() {
            0
        } else if plan.offerable() {
            1
        } else {
            2
        });
    }

    // --apply
    if plan.is_noop() && plan.problems.is_empty() {
        crate::outln!(
            "nothing to change: every Cloudflare range is accepted on every audited port"
        );
        return Ok(0);
    }
    // firewalld rebuilds its table at every `firewall-cmd --reload` (and at boot): an nft rule
    // added to it would silently go. Its own permanent configuration is the durable change.
    if plan.manager == super::Manager::Firewalld
        && plan
            .additions
            .iter()
            .any(|a| a.backend == crate::firewall::Backend::Nft && a.table == "firewalld")
    {
        eprintln!(
            "origin-audit: firewalld manages the chains that block, and rebuilds them at every \
             reload: a rule added with nft would not last, so nothing was applied. Apply the \
             firewalld form instead (permanent ipsets and rich rules, then a reload):\n  \
             origin-audit fix --emit firewalld{} | sh",
            ports_flag(&args)
        );
        return Ok(2);
    }
    if !plan.offerable() {
        print_plan(&plan, args.format, &v4, &v6)?;
        eprintln!("origin-audit: the fix's proof does not hold; nothing was applied");
        return Ok(2);
    }
    let cfg = Config {
        state_dir: state_dir.clone(),
        confirm_timeout: args.confirm_timeout.map(Duration::from_secs),
    };
    let before = prepared.ruleset.clone();
    let families = plan_families(&snap, &opts);
    let verify = || -> Result<(), String> {
        let snap2 = collect::snapshot(&args.input).map_err(|e| format!("re-read: {e:#}"))?;
        let p2 = analysis::prepare(&snap2);
        if !p2.errors.is_empty() {
            return Err(format!(
                "re-read could not be parsed: {}",
                p2.errors.join("; ")
            ));
        }
        let report = analysis::analyze_prepared(&snap2, &p2, &opts);
        let bad: Vec<String> = report
            .reachability
            .iter()
            .filter(|r| !r.past_the_firewall())
            .map(|r| format!("{} port {} {:?}", r.source, r.port, r.verdict))
            .collect();
        if !bad.is_empty() {
            return Err(format!("Cloudflare still not accepted: {}", bad.join(", ")));
        }
        let (_, changes) = compare_controls(&snap, &before, &p2.ruleset, &opts, &families);
        if let Some(c) = changes.first() {
            return Err(format!(
                "{} control block(s) changed, e.g. {} port {}: {:?} → {:?}",
                changes.len(),
                c.source,
                c.port,
                c.before,
                c.after
            ));
        }
        Ok(())
    };
    let shape = rule_shape(&prepared.ruleset);
    let precheck = || -> Result<(), String> {
        let snap2 = collect::snapshot(&args.input).map_err(|e| format!("re-read: {e:#}"))?;
        let p2 = analysis::prepare(&snap2);
        if rule_shape(&p2.ruleset) == shape {
            Ok(())
        } else {
            Err("rules were added, removed or moved".into())
        }
    };
    // Before the change: a `--confirm` or `--revert` from another shell must find this
    // directory while the change waits.
    if let Err(e) = super::state::remember(&cfg.state_dir) {
        eprintln!(
            "origin-audit: could not record the state directory ({e}): repeat --state-dir with --confirm and --revert"
        );
    }
    match apply::apply(&plan, &cfg, &precheck, &verify, run_lock) {
        Ok(dir) => {
            print_plan(&plan, args.format, &v4, &v6)?;
            crate::outln!(
                "applied{} and verified against the kernel (backup {}; `origin-audit fix --revert` removes the added rules{})",
                if super::ufw::applies(&plan) {
                    " through ufw (kept by `ufw reload` and at boot)"
                } else {
                    ""
                },
                dir.display(),
                if plan.remove_banned && plan.has_ban_removals() {
                    "; removed ban entries are not re-added by it"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("origin-audit: {e}");
            Ok(2)
        }
    }
}

/// Every chain's rules as (table, chain, position, text): what the plan's positions rest on.
/// Set elements are left out on purpose: ban lists change all the time without moving rules.
fn rule_shape(rs: &crate::firewall::Ruleset) -> Vec<(String, String, usize, String)> {
    rs.tables
        .iter()
        .flat_map(|t| {
            t.chains.iter().flat_map(move |c| {
                c.rules.iter().map(move |r| {
                    (
                        format!("{} {} {}", t.backend, t.family, t.name),
                        c.name.clone(),
                        r.source.position,
                        r.source.text.clone(),
                    )
                })
            })
        })
        .collect()
}

fn plan_families(snap: &Snapshot, opts: &Options) -> Vec<crate::firewall::Family> {
    analysis::target(snap, opts).families
}

fn print_plan(plan: &Plan, format: Format, v4: &[String], v6: &[String]) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let forms: serde_json::Map<String, serde_json::Value> =
                [Form::Nft, Form::Iptables, Form::Ufw, Form::Firewalld]
                    .into_iter()
                    .map(|f| {
                        (
                            emit::form_name(f).to_string(),
                            serde_json::Value::String(if plan.offerable() {
                                emit::form(plan, f)
                            } else {
                                String::new()
                            }),
                        )
                    })
                    .collect();
            let v = serde_json::json!({
                "schema": "origin-audit-fix/1",
                "offerable": plan.offerable(),
                "noop": plan.is_noop(),
                "plan": plan,
                "forms": forms,
                "ban_advice": emit::ban_advice(plan, v4, v6),
            });
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&v).context("serializing the plan")?
            );
        }
        Format::Human => crate::out!("{}", emit::human(plan, v4, v6)),
    }
    Ok(())
}
