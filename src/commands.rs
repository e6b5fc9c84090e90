//! The commands `check`, `explain`, `snapshot` and `config`: each loads the configuration,
//! reads the snapshot (collect), analyses, renders, and returns the exit code (0 ok, 1 warning,
//! 2 critical, 3 unknown). `fix` lives in `fix::command`. `main.rs` only dispatches.
//!
//! Owns: wiring the configuration into the inputs, the run lock, the Prometheus textfile write,
//! colour choice. Must not: decide verdicts (analysis) or format reports (render).

use crate::analysis::tls::{SslMode, TlsOptions};
use crate::analysis::{self, Options, VerdictKind};
use crate::cli::{CheckArgs, ColorChoice, ConfigCommand, ExplainArgs, Format, InputArgs};
use crate::config::{self, Config};
use crate::snapshot::Snapshot;
use crate::{collect, lock, ranges, render};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Loads the configuration, fills unset flags from it, applies the command timeout.
pub fn setup(config_path: Option<&Path>, input: &mut InputArgs) -> anyhow::Result<Config> {
    let cfg = config::load_for_run(config_path)?;
    cfg.merge_input(input);
    collect::cmd::set_timeout(Duration::from_secs(cfg.audit.command_timeout_secs));
    Ok(cfg)
}

pub fn config_command(c: ConfigCommand, config_path: Option<&Path>) -> anyhow::Result<u8> {
    let today = time::OffsetDateTime::now_utc().date();
    let cfg = match &c {
        ConfigCommand::Check { file } => {
            let path = file
                .as_deref()
                .or(config_path)
                .unwrap_or(Path::new(config::DEFAULT_PATH));
            config::load(path)?
        }
        ConfigCommand::Show => config::load_for_run(config_path)?,
    };
    let origin = cfg
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("defaults (no {})", config::DEFAULT_PATH));
    match c {
        ConfigCommand::Check { .. } => crate::outln!(
            "{origin}: valid ({} accepted exception{})",
            cfg.accept.len(),
            if cfg.accept.len() == 1 { "" } else { "s" }
        ),
        ConfigCommand::Show => {
            crate::outln!("# effective configuration: {origin}; command-line flags override it");
            let t = cfg.to_toml();
            crate::out!("{t}");
            if !t.ends_with('\n') {
                crate::outln!();
            }
        }
    }
    for a in cfg.expired(today) {
        crate::outln!(
            "# note: the exception at {} ({}) expired on {}: it no longer applies",
            a.origin,
            a.code.id(),
            a.until.map(|d| d.to_string()).unwrap_or_default()
        );
    }
    Ok(0)
}

/// The snapshot to audit; with `--with-host`, the candidate dumps plus this host's listeners,
/// interfaces and routes (the live firewall read alongside is ignored: the candidate replaces
/// it).
pub fn snapshot(input: &InputArgs) -> anyhow::Result<Snapshot> {
    if input.with_host && (!input.has_offline_dumps() || input.snapshot.is_some()) {
        anyhow::bail!(
            "--with-host needs a candidate ruleset (--iptables-save, --ip6tables-save, \
             --nft-json or --ipset-save) and no --snapshot"
        );
    }
    let mut snap = collect::snapshot(input)?;
    if input.with_host {
        let host = collect::read_host();
        snap.hostname = host.hostname;
        snap.listeners = host.listeners;
        snap.interfaces = host.interfaces;
        snap.default_routes = host.default_routes;
        snap.bindv6only = host.bindv6only;
        snap.forwarding = host.forwarding;
        snap.read_errors
            .extend(host.read_errors.into_iter().filter(|e| !e.firewall));
    }
    Ok(snap)
}

fn options(ports: &[u16], input: &crate::cli::InputArgs) -> anyhow::Result<Options> {
    let mut o = Options::new(time::OffsetDateTime::now_utc());
    if !ports.is_empty() {
        let provider = ranges::cloudflare();
        let proxied = provider.proxied_ports();
        for p in ports {
            if !proxied.contains(p) {
                anyhow::bail!(
                    "--ports: {p} is not a port {} proxies (HTTP {:?}, HTTPS {:?})",
                    provider.name,
                    provider.http_ports,
                    provider.https_ports
                );
            }
        }
        o.ports = ports.to_vec();
    }
    o.ifaces = input.iface.clone();
    o.dests = input.dest.clone();
    Ok(o)
}

fn color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

/// Debian's prometheus-node-exporter reads textfiles here (`--collector.textfile.directory`).
pub const NODE_EXPORTER_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The textfile `check --prometheus` writes.
pub fn default_textfile() -> std::path::PathBuf {
    let dir = Path::new(NODE_EXPORTER_TEXTFILE_DIR);
    if dir.is_dir() {
        dir.join("origin-audit.prom")
    } else {
        crate::fix::state::default_dir().join("origin-audit.prom")
    }
}

pub fn check(mut args: CheckArgs, config_path: Option<&Path>) -> anyhow::Result<u8> {
    let started = Instant::now();
    if args.prometheus {
        args.prometheus_textfile = Some(default_textfile());
    }
    if let Some(secs) = args.timeout {
        watchdog(secs, args.nagios, args.prometheus_textfile.clone(), started);
    }
    let result = check_run(&args, config_path, started);
    if let Err(e) = &result {
        if let Some(path) = &args.prometheus_textfile {
            failure_metrics(path, started);
        }
        if args.nagios {
            // A plugin's first line is what the monitoring shows: the reason, not silence.
            eprintln!("origin-audit: {e:#}");
            crate::out!("{}", render::nagios::failure(&format!("{e:#}")));
            return Ok(3);
        }
    }
    result
}

/// The fleet must see "not audited", not the last run's all clear.
fn failure_metrics(path: &Path, started: Instant) {
    let text = render::prometheus::failure(run_times(started));
    if let Err(e) = write_atomic(path, &text) {
        eprintln!("origin-audit: {e:#}");
    }
}

/// `--timeout`: after `secs`, the run ends with exit 3 whatever it waits on. The lock is an
/// flock (released with the process) and files are written by rename, so nothing is left
/// half-done; readers' children are bounded by their own timeouts.
fn watchdog(secs: u64, nagios: bool, textfile: Option<std::path::PathBuf>, started: Instant) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(secs));
        let why = format!("origin-audit check timed out after {secs} s (--timeout)");
        if let Some(p) = &textfile {
            failure_metrics(p, started);
        }
        eprintln!("origin-audit: {why}");
        if nagios {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(render::nagios::failure(&why).as_bytes());
            let _ = out.flush();
        }
        std::process::exit(3);
    });
}

fn run_times(started: Instant) -> render::prometheus::RunTimes {
    let now = time::OffsetDateTime::now_utc();
    render::prometheus::RunTimes {
        finished: now.unix_timestamp_nanos() as f64 / 1e9,
        duration: started.elapsed().as_secs_f64(),
    }
}

/// Whether this run reads the live host (its own listeners), not only files.
fn is_live(input: &InputArgs) -> bool {
    input.snapshot.is_none() && (!input.has_offline_dumps() || input.with_host)
}

/// The TLS check's options: mode and hostnames (flags over the file), the Origin CA roots
/// (the configured PEM file, else the bundled ones).
pub fn tls_options(cfg: &Config, input: &InputArgs) -> anyhow::Result<TlsOptions> {
    let origin_ca = match &input.origin_ca {
        Some(p) => {
            let pem = std::fs::read(p)
                .with_context(|| format!("cannot read the Origin CA roots {}", p.display()))?;
            analysis::tls::pem_certs(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => analysis::tls::bundled_origin_ca(),
    };
    Ok(TlsOptions {
        mode: input.ssl_mode.as_deref().and_then(SslMode::parse),
        hostnames: input.hostname.clone(),
        expiry_warning_days: cfg.tls.expiry_warning_days,
        origin_ca,
    })
}

/// Handshakes with this host's own HTTPS listeners on its public addresses (as the analysis
/// finds them), one per hostname, into the snapshot.
pub fn capture_tls(snap: &mut Snapshot, opts: &Options, timeout: Duration) {
    let t = analysis::target(snap, opts);
    let dests: Vec<std::net::IpAddr> = t.dest_v4.into_iter().chain(t.dest_v6).collect();
    let listeners = snap.listeners.clone().unwrap_or_default();
    let https = ranges::cloudflare().https_ports.clone();
    let eps = analysis::tls::endpoints(
        &listeners,
        &dests,
        &opts.ports,
        &https,
        snap.bindv6only.unwrap_or(false),
    );
    let mut probes = vec![];
    for (addr, port) in eps {
        for h in &opts.tls.hostnames {
            probes.push(collect::tls::probe(addr, port, h, timeout));
        }
    }
    snap.tls = Some(probes);
}

/// `origin-audit snapshot`: the handshakes of every hostname on the HTTPS ports, whatever the
/// mode, when hostnames are configured and the host is read live.
pub fn snapshot_tls(cfg: &Config, input: &InputArgs, snap: &mut Snapshot) -> anyhow::Result<()> {
    if input.hostname.is_empty() || !is_live(input) {
        return Ok(());
    }
    let mut opts = options(&cfg.audit.ports, input)?;
    opts.tls = tls_options(cfg, input)?;
    if !opts
        .ports
        .iter()
        .any(|p| ranges::cloudflare().https_ports.contains(p))
    {
        opts.ports.push(443);
    }
    capture_tls(snap, &opts, Duration::from_secs(cfg.tls.timeout_secs));
    Ok(())
}

fn check_run(args: &CheckArgs, config_path: Option<&Path>, started: Instant) -> anyhow::Result<u8> {
    let mut input = args.input.clone();
    let cfg = setup(config_path, &mut input)?;
    let _lock = take_lock(args, &input, &cfg)?;
    let tls = tls_options(&cfg, &input)?;
    let ports = if !args.ports.is_empty() {
        args.ports.clone()
    } else if let (false, Some(m)) = (cfg.audit.ports_set, tls.mode) {
        // The ports Cloudflare connects to in this mode (flexible: 80; full/strict: 443).
        m.default_ports()
    } else {
        cfg.audit.ports.clone()
    };
    let mut opts = options(&ports, &input)?;
    opts.max_age_days = cfg.ranges.max_age_days;
    opts.trusted_xdp = cfg.audit.trusted_xdp.clone();
    opts.tls = tls;
    let mut snap = snapshot(&input)?;
    if is_live(&input) && opts.tls.mode.is_some_and(|m| m != SslMode::Flexible) {
        capture_tls(&mut snap, &opts, Duration::from_secs(cfg.tls.timeout_secs));
    }
    let mut report = analysis::analyze(&snap, &opts);
    let mut rollback = None;
    let live = input.snapshot.is_none() && !input.has_offline_dumps();
    if live || args.state_dir.is_some() {
        // As `fix` finds it: the flag, else the last apply's recorded directory, else the
        // default (a note about an ignored record is not check's to print).
        let dir = crate::fix::state::resolve(args.state_dir.as_deref())
            .map(|(d, _)| d)
            .unwrap_or_else(|_| crate::fix::state::default_dir());
        let (finding, deadline) = pending_fix(&dir);
        rollback = deadline;
        report.findings.extend(finding);
        report.recompute_status();
    }
    cfg.apply(&mut report, opts.now.date());
    if let Some(path) = &args.prometheus_textfile {
        let text = render::prometheus::report(
            &report,
            time::OffsetDateTime::now_utc(),
            run_times(started),
            rollback,
        );
        write_atomic(path, &text)?;
    }
    if args.nagios {
        crate::out!(
            "{}",
            render::nagios::report(
                &report,
                cfg.ranges.max_age_days,
                cfg.tls.expiry_warning_days,
                args.quiet
            )
        );
        return Ok(report.status.exit_code());
    }
    if args.quiet && report.status == analysis::Status::Ok {
        return Ok(0);
    }
    match args.format {
        Format::Json => crate::out::write_json(&render::json::report(&report))?,
        Format::Human => {
            crate::out!("{}", render::human::report(&report, color(args.color)));
            if args.quiet {
                // Cron/timer mail: the `fix` dry run (plan, proof, and the change in the
                // detected firewall manager's terms), then the other findings' hints.
                let prepared = analysis::prepare(&snap);
                let plan = crate::fix::plan_ruleset(&snap, &prepared.ruleset, &opts, false);
                if !plan.is_noop() {
                    let v4: Vec<String> = snap.ranges.ipv4.iter().map(|n| n.to_string()).collect();
                    let v6: Vec<String> = snap.ranges.ipv6.iter().map(|n| n.to_string()).collect();
                    crate::out!("\n{}", crate::fix::emit::human(&plan, &v4, &v6));
                }
                crate::out!("{}", suggested_fixes(&report));
            }
        }
    }
    Ok(report.status.exit_code())
}

/// A change `fix --apply --confirm-timeout` made and that rolls back unless confirmed: the
/// audit describes a firewall that may change under it. Returns the finding and the Unix time
/// of the rollback.
fn pending_fix(state_dir: &Path) -> (Option<crate::findings::Finding>, Option<u64>) {
    use crate::findings::{Code, Finding};
    let dir_arg = if state_dir == crate::fix::state::default_dir() {
        String::new()
    } else {
        format!(
            " --state-dir {}",
            crate::fix::emit::shell_word(&state_dir.to_string_lossy())
        )
    };
    let mut deadline = None;
    let (message, fix) = match crate::fix::apply::pending_change(state_dir) {
        Ok(Some(p)) => {
            deadline = Some(p.deadline);
            (
                format!(
                    "an unconfirmed firewall change (fix --apply, pid {}) rolls back at {} unless confirmed (backup {})",
                    p.pid,
                    crate::fix::apply::deadline_text(p.deadline),
                    p.backup.display()
                ),
                format!("origin-audit fix --confirm{dir_arg} (keep it), or let it roll back"),
            )
        }
        Ok(None) => return (None, None),
        Err(e) => (
            format!("a pending firewall change could not be read: {e}"),
            format!(
                "check the state directory; `origin-audit fix --rollback-pending{dir_arg}` restores the backup"
            ),
        ),
    };
    let finding = Finding {
        code: Code::FixPending,
        severity: Code::FixPending.default_severity(),
        message,
        ports: Vec::new(),
        sources: Vec::new(),
        cf_error: None,
        rules: Vec::new(),
        fix: Some(fix),
    };
    (Some(finding), deadline)
}

/// The fix hints of the open findings, numbered, for `check --quiet` mail.
fn suggested_fixes(report: &analysis::Report) -> String {
    let fixes: Vec<String> = report
        .findings
        .iter()
        .filter_map(|f| f.fix.as_ref().map(|x| format!("[{}] {x}", f.code.id())))
        .collect();
    if fixes.is_empty() {
        return String::new();
    }
    let mut o = String::from("\nWhat to do\n");
    for (i, f) in fixes.iter().enumerate() {
        o.push_str(&format!("  {}. {f}\n", i + 1));
    }
    o
}

/// Takes the run lock when this run reads the live host or writes metrics, or when a lock
/// file is named explicitly. Audits of files alone (a snapshot, dumps) touch nothing shared
/// and run unlocked, so they may run in parallel (CI, pre-apply hooks). When the default lock
/// file cannot be created (not root), the run goes on unlocked: only root's runs can collide
/// on the firewall and the textfile.
fn take_lock(
    args: &CheckArgs,
    input: &InputArgs,
    cfg: &Config,
) -> anyhow::Result<Option<lock::RunLock>> {
    let default = PathBuf::from(config::DEFAULT_LOCK_FILE);
    let explicit = args.lock_file.is_some() || cfg.audit.lock_file != default;
    let live = input.snapshot.is_none() && (!input.has_offline_dumps() || input.with_host);
    if !(explicit || live || args.prometheus_textfile.is_some()) {
        return Ok(None);
    }
    let path = args
        .lock_file
        .clone()
        .unwrap_or(cfg.audit.lock_file.clone());
    let wait = Duration::from_secs(args.lock_wait.unwrap_or(cfg.audit.lock_wait_secs));
    Ok(lock::acquire_for_run(&path, wait, explicit)?)
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so a reader
/// (node_exporter) never sees half a file. The temporary name does not end in `.prom`, which
/// the textfile collector would pick up.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::safefs::write_atomic(path, text.as_bytes(), 0o644)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

pub fn explain(args: ExplainArgs, cfg: &crate::config::Config) -> anyhow::Result<u8> {
    let mut opts = options(&[], &args.input)?;
    opts.trusted_xdp = cfg.audit.trusted_xdp.clone();
    let snap = snapshot(&args.input)?;
    let (e, errors) = analysis::explain(&snap, &opts, args.address, args.port, args.established);
    for err in &errors {
        eprintln!("origin-audit: could not parse {err}");
    }
    match args.format {
        Format::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(&render::json::explanation(&e))?
        ),
        Format::Human => crate::out!(
            "{}",
            render::human::explanation(&e, color(ColorChoice::Auto))
        ),
    }
    if !errors.is_empty() || snap.read_errors.iter().any(|r| r.firewall) {
        return Ok(3);
    }
    Ok(match e.verdict {
        VerdictKind::Accept => 0,
        VerdictKind::RateLimited | VerdictKind::Conditional => 1,
        VerdictKind::Drop | VerdictKind::Reject => 2,
    })
}

/// `origin-audit codes [CODE]`: the finding catalogue (the same text the README's table and
/// the JSON `findings[].code` refer to). An unknown code is an error naming the known ones.
pub fn codes(code: Option<&str>) -> anyhow::Result<u8> {
    use crate::findings::Code;
    let cf = |c: Code| {
        c.cf_error()
            .map(|e| format!("Cloudflare {e}"))
            .unwrap_or_else(|| "—".into())
    };
    match code {
        None => {
            for c in Code::ALL {
                crate::outln!(
                    "{:<24} {:<8} {:<15} {}",
                    c.id(),
                    c.default_severity().as_str(),
                    cf(*c),
                    c.title()
                );
            }
            Ok(0)
        }
        Some(id) => {
            let Some(c) = Code::ALL.iter().find(|c| c.id() == id) else {
                let known: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
                anyhow::bail!(
                    "unknown finding code {id:?}; the codes are: {}",
                    known.join(", ")
                );
            };
            crate::outln!(
                "{} — {}\nseverity: {} (the default; [severity] in the configuration can change it)\nvisitors see: {}\n\n{}",
                c.id(),
                c.title(),
                c.default_severity().as_str(),
                cf(*c),
                c.description()
            );
            Ok(0)
        }
    }
}
