//! Generates the man pages (clap_mangen) and the bash/zsh/fish completions (clap_complete) from
//! the same clap definitions the binary uses (`src/cli.rs`, included as a module: it must stay
//! free of `crate::` paths).
//!
//! Output: `$OUT_DIR/man/*.1`, `$OUT_DIR/completions/{origin-audit.bash,_origin-audit,
//! origin-audit.fish}`, and a copy of both under `target/<profile>/assets/`, the stable path
//! the `[package.metadata.deb]` assets name (cargo-deb rewrites `target/release/` to the
//! profile actually built; `$OUT_DIR` has a hash in it no manifest can name).

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(
        std::env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR unset"))?,
    );
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    for d in [&man_dir, &comp_dir] {
        // Start clean: a renamed subcommand must not leave its old page behind.
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d)?;
    }

    // No `help` subcommand pages: `origin-audit help check` is the same as `check --help`.
    let mut cmd = cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    // One page per subcommand (origin-audit-check.1, ...), then the main page with the
    // sections admins look for: EXIT STATUS, FILES.
    clap_mangen::generate_to(cmd.clone(), &man_dir)?;
    fs::write(man_dir.join("origin-audit.1"), main_page(cmd.clone())?)?;
    // The wire contracts, from the module documentation that owns them (one source).
    for (src, page, section, title) in [
        (
            "src/render/json.rs",
            "origin-audit-json",
            "5",
            "the JSON output of origin-audit",
        ),
        (
            "src/render/prometheus.rs",
            "origin-audit-metrics",
            "7",
            "the Prometheus metrics of origin-audit",
        ),
        (
            "src/render/nagios.rs",
            "origin-audit-nagios",
            "7",
            "the Nagios plugin output of origin-audit",
        ),
    ] {
        println!("cargo:rerun-if-changed={src}");
        fs::write(
            man_dir.join(format!("{page}.{section}")),
            contract_page(&fs::read_to_string(src)?, page, section, title),
        )?;
    }
    // The subcommands' pages again, with EXAMPLES, EXIT STATUS and SEE ALSO (and for fix, how
    // changes are applied, confirmed and reverted) after clap's options.
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().to_string();
        let page = format!("origin-audit-{name}");
        let sub = sub
            .clone()
            .display_name(page.clone())
            .bin_name(format!("origin-audit {name}"))
            .version(env!("CARGO_PKG_VERSION"));
        fs::write(man_dir.join(format!("{page}.1")), sub_page(sub, &name)?)?;
    }

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "origin-audit", &comp_dir)?;
        if shell == Shell::Bash {
            // clap_complete writes the subcommands' case labels with the binary's '-' turned
            // into `__subcmd__` (origin__subcmd__audit__subcmd__fix) while its loop builds
            // origin__audit__subcmd__fix, so nothing after the subcommand completed
            // (clap-rs/clap#6421). Labels made like the loop's; tests/package.rs completes
            // `fix --em<TAB>` and `fix --emit <TAB>` through bash.
            let text = fs::read_to_string(&path)?;
            fs::write(
                &path,
                text.replace("origin__subcmd__audit", "origin__audit"),
            )?;
        }
    }

    // target/<profile>/build/origin-audit-HASH/out → target/<profile>/assets
    if let Some(profile_dir) = out.ancestors().nth(3) {
        let assets = profile_dir.join("assets");
        copy_dir(&man_dir, &assets.join("man"))?;
        copy_dir(&comp_dir, &assets.join("completions"))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// A man page holding a module's `//!` documentation verbatim (no filling, so the schema
/// blocks keep their layout). The module text is the contract; this page only carries it.
fn contract_page(source: &str, page: &str, section: &str, title: &str) -> String {
    let mut r = Roff::default();
    r.control("TH", [page, section, "", "origin-audit", ""]);
    r.control("SH", ["NAME"]);
    r.text([roman(format!("{page} - {title}"))]);
    r.control("SH", ["DESCRIPTION"]);
    r.control("nf", [] as [&str; 0]);
    for line in source.lines().take_while(|l| l.starts_with("//!")) {
        let t = line
            .trim_start_matches("//!")
            .strip_prefix(' ')
            .unwrap_or(line.trim_start_matches("//!"));
        if t.starts_with("```") {
            continue;
        }
        r.text([roman(t)]);
        r.control("br", [] as [&str; 0]);
    }
    r.control("fi", [] as [&str; 0]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("origin-audit(1), origin-audit-check(1)")]);
    r.render()
}

/// (example, what it does) per subcommand.
fn examples(sub: &str) -> &'static [(&'static str, &'static str)] {
    match sub {
        "check" => &[
            (
                "sudo origin-audit check",
                "audit this host; findings with the rule, the path and the fix.",
            ),
            (
                "origin-audit check --quiet --prometheus",
                "for a timer: silent when all is well, metrics where node_exporter reads them.",
            ),
            (
                "origin-audit check --nagios --timeout 50",
                "a Nagios/Icinga plugin: one status line with performance data.",
            ),
            (
                "origin-audit check --format json | jq .findings",
                "the findings for configuration management.",
            ),
            (
                "origin-audit check --nft-json candidate.json --with-host",
                "a candidate ruleset with this host's listeners and routes, before loading it.",
            ),
        ],
        "explain" => &[
            (
                "sudo origin-audit explain 173.245.48.1 443",
                "every chain and rule a new connection from that address meets, and its answer.",
            ),
            (
                "origin-audit explain 2400:cb00::1 443 --established",
                "a packet of an established connection instead.",
            ),
        ],
        "snapshot" => &[
            (
                "sudo origin-audit snapshot -o host.json",
                "everything the audit reads, in one file.",
            ),
            (
                "origin-audit check --snapshot host.json",
                "audit that file elsewhere (no root needed).",
            ),
        ],
        "fix" => &[
            (
                "sudo origin-audit fix",
                "the plan: where each accept goes, its proof on the model, in the firewall manager's own form.",
            ),
            (
                "origin-audit fix --emit ufw",
                "the commands for one form (nft, iptables, ufw, firewalld).",
            ),
            (
                "sudo origin-audit fix --apply --confirm-timeout 120",
                "apply, verify against the kernel, and roll back unless fix --confirm arrives within 120 s.",
            ),
            (
                "sudo origin-audit fix --confirm",
                "keep the change waiting for confirmation.",
            ),
            (
                "sudo origin-audit fix --revert",
                "remove exactly the rules and sets origin-audit added.",
            ),
        ],
        "config" => &[
            (
                "origin-audit config check",
                "validate /etc/origin-audit/config.toml (line and key named on error).",
            ),
            (
                "origin-audit config show",
                "the configuration in effect, defaults included.",
            ),
        ],
        "codes" => &[
            (
                "origin-audit codes",
                "every finding code with its default severity and the Cloudflare error visitors see.",
            ),
            (
                "origin-audit codes range-dropped",
                "what one finding means and what to do about it.",
            ),
        ],
        _ => &[],
    }
}

fn sub_page(cmd: clap::Command, name: &str) -> io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd).section("1");
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    man.render_subcommands_section(&mut buf)?;
    let mut r = Roff::default();
    if name == "fix" {
        r.control("SH", ["APPLYING"]);
        r.text([roman(
            "fix prints the plan and changes nothing. With --apply, as root: the tables it touches are saved under --state-dir (default /var/lib/origin-audit/backups/, 0700, files 0600); the rules are re-read and must still be those planned on; the change is loaded in one transaction per backend (nft -f, iptables-restore --noflush, ipset restore; on ufw hosts through ufw itself, so ufw reload keeps it; where firewalld's own table blocks, nothing is applied and fix points to `fix --emit firewalld | sh`, since firewalld rebuilds its table at every reload); the kernel is re-read and re-analysed, and any disagreement with the proof restores the backup. --confirm-timeout SECS then waits for fix --confirm and restores otherwise; a run killed during the wait is restored by the next fix, or by fix --rollback-pending from a timer. check reports a pending change (fix-pending). --revert removes exactly the rules carrying origin-audit's comment (and on ufw hosts its ufw rules). An --apply with another --state-dir records it in the default state directory (/var/lib/origin-audit, or $ORIGIN_AUDIT_STATE_DIR), so --confirm, --revert, --rollback-pending and check find it without repeating the flag.",
        )]);
    }
    r.control("SH", ["EXAMPLES"]);
    for (ex, what) in examples(name) {
        r.control("TP", [] as [&str; 0]);
        r.text([bold(*ex)]);
        r.text([roman(*what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(match name {
        "fix" => "0: nothing to fix, or the change was applied and verified (or reverted); 1: a fix is proposed (dry run); 2: the fix could not be offered or applied (the message says why; anything applied was restored); 3: unknown (unreadable firewall, bad configuration, usage error).",
        "check" => "0 ok, 1 warning, 2 critical, 3 unknown — the Nagios plugin convention; see origin-audit(1) for what each covers.",
        _ => "0 on success, 3 on any error (unreadable input, bad configuration, usage error); see origin-audit(1).",
    })]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "origin-audit(1), origin-audit-check(1), origin-audit-explain(1), origin-audit-fix(1), origin-audit-snapshot(1), origin-audit-config(1), nft(8), iptables(8), ipset(8), ufw(8), firewall-cmd(1); /usr/share/doc/origin-audit/README.md (the JSON and metrics contracts, the finding codes)",
    )]);
    buf.extend_from_slice(r.render().as_bytes());
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

fn main_page(cmd: clap::Command) -> io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    man.render_subcommands_section(&mut buf)?;

    let mut r = Roff::default();
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "The exit status is the contract for cron, systemd and configuration management \
         (Nagios plugin convention). Findings an [[accept]] exception covers do not count.",
    )]);
    for (code, what) in [
        (
            "0",
            "ok: every Cloudflare range reaches every audited port and something listens.",
        ),
        (
            "1",
            "warning: rate limits, verdicts that depend on something undecidable, stale ranges, mixed iptables backends, a non-firewall reader failed.",
        ),
        (
            "2",
            "critical: a Cloudflare range is dropped (Cloudflare 522) or rejected (521), established packets are blocked, or nothing listens where Cloudflare connects (521).",
        ),
        (
            "3",
            "unknown: the firewall could not be read or parsed, the configuration is invalid, another run held the lock longer than lock_wait_secs, the command line is wrong (a usage error), or the output could not be written (closed pipe, full disk).",
        ),
    ] {
        r.control("TP", [] as [&str; 0]);
        r.text([bold(code)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/origin-audit/config.toml",
            "configuration (see origin-audit config show; a commented example is installed there).",
        ),
        (
            "/run/origin-audit.lock",
            "run lock: a second run waits lock_wait_secs, then exits 3.",
        ),
        ("/var/cache/origin-audit/", "cached Cloudflare ranges."),
        (
            "/var/lib/prometheus/node-exporter/origin-audit.prom",
            "metrics written by the packaged systemd service and cron job (--prometheus); in /var/lib/origin-audit/ when node_exporter's directory does not exist.",
        ),
        (
            "/lib/systemd/system/origin-audit.timer",
            "hourly audit, not enabled by the package: systemctl enable --now origin-audit.timer.",
        ),
        (
            "/etc/cron.d/origin-audit",
            "hourly audit on hosts without systemd (skipped when systemd runs).",
        ),
    ] {
        r.control("TP", [] as [&str; 0]);
        r.text([bold(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["EXAMPLES"]);
    for (ex, what) in [
        (
            "origin-audit check",
            "audit this host and print the findings with their fixes.",
        ),
        (
            "origin-audit check --quiet",
            "for cron: silent and exit 0 when all is well.",
        ),
        (
            "origin-audit check --nft-json candidate.json --with-host",
            "audit a candidate ruleset with this host's listeners before loading it.",
        ),
        (
            "origin-audit explain 173.245.48.1 443",
            "every chain and rule a new connection from that address meets.",
        ),
    ] {
        r.control("TP", [] as [&str; 0]);
        r.text([bold(ex)]);
        r.text([roman(what)]);
    }
    buf.extend_from_slice(r.render().as_bytes());
    man.render_version_section(&mut buf)?;
    Ok(buf)
}
