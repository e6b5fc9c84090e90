//! Command-line surface (clap derive). Flags only: no I/O, no decisions.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "origin-audit",
    version,
    about = "Finds what on this origin makes Cloudflare show 521/522: firewall rules that drop, \
             reject or rate-limit Cloudflare's ranges, and missing or loopback-only listeners.",
    after_help = "Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown (the firewall could not be read)."
)]
pub struct Cli {
    /// Configuration file (default /etc/origin-audit/config.toml; optional there, required when
    /// given). Command-line flags override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Audit this host (or a snapshot / saved dumps): listeners, firewall verdicts per range and port.
    Check(CheckArgs),
    /// The verdict for one source address and port, with every chain and rule on the path.
    Explain(ExplainArgs),
    /// Write everything `check` reads (listeners, interfaces, raw dumps, ranges) as JSON.
    Snapshot(SnapshotArgs),
    /// Plan (default: dry run), prove, emit or apply the rules that let Cloudflare through.
    Fix(FixArgs),
    /// Validate or print the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The finding codes: all of them with severity and Cloudflare error, or one explained.
    Codes {
        /// A finding code (e.g. range-dropped) to explain.
        #[arg(value_name = "CODE")]
        code: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (default: --config or /etc/origin-audit/config.toml).
    /// Errors name the file, the line and the key; exit 0 when valid, 3 otherwise.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the effective configuration (the file's values over the defaults) as TOML.
    Show,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// Where the host state comes from, and what to audit.
#[derive(Debug, Clone, Args, Default)]
pub struct InputArgs {
    /// Analyse a snapshot written by `origin-audit snapshot` instead of the live host.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// An IPv4 `iptables-save` dump (backend taken from its header; repeatable).
    #[arg(long = "iptables-save", value_name = "FILE")]
    pub iptables_save: Vec<PathBuf>,
    /// An IPv6 `ip6tables-save` dump (repeatable).
    #[arg(long = "ip6tables-save", value_name = "FILE")]
    pub ip6tables_save: Vec<PathBuf>,
    /// An `nft -j list ruleset` dump (repeatable).
    #[arg(long = "nft-json", value_name = "FILE")]
    pub nft_json: Vec<PathBuf>,
    /// An `ipset save` dump (repeatable).
    #[arg(long = "ipset-save", value_name = "FILE")]
    pub ipset_save: Vec<PathBuf>,
    /// Interface where Cloudflare's packets arrive (default: the default-route interfaces).
    #[arg(long = "iface", value_name = "NAME")]
    pub iface: Vec<String>,
    /// This host's public address the packets are sent to (default: the addresses of --iface).
    #[arg(long = "dest", value_name = "ADDR")]
    pub dest: Vec<IpAddr>,
    /// Use the cached or bundled ranges; never touch the network.
    #[arg(long)]
    pub offline: bool,
    /// Read the provider's ranges from this file (JSON as the API returns it, or one CIDR a line).
    #[arg(long = "ranges-file", value_name = "FILE")]
    pub ranges_file: Option<PathBuf>,
    /// Fetch the ranges from this https:// URL instead of the provider's (a mirror). Plain
    /// http:// is refused; redirects must stay https and on the same host.
    #[arg(long = "ranges-url", value_name = "URL", value_parser = https_url)]
    pub ranges_url: Option<String>,
    /// Also trust the CA certificate(s) in this PEM file for the ranges fetch (a mirror with a
    /// private CA); the system roots stay trusted.
    #[arg(long = "ranges-ca", value_name = "FILE")]
    pub ranges_ca: Option<PathBuf>,
    /// The zone's SSL/TLS mode at Cloudflare: flexible (plain HTTP to the origin: port 80 is
    /// audited), full or strict (TLS: 443 is audited and its certificate checked). Default
    /// ports follow the mode when none are configured; without a mode TLS is not checked.
    #[arg(long = "ssl-mode", value_name = "MODE", value_parser = ["flexible", "full", "strict"])]
    pub ssl_mode: Option<String>,
    /// A hostname of the zone (SNI of the TLS check; repeatable).
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Vec<String>,
    /// The Cloudflare Origin CA roots to trust (PEM), instead of the bundled ones
    /// (rules/cloudflare-origin-ca.pem).
    #[arg(long = "origin-ca", value_name = "FILE")]
    pub origin_ca: Option<PathBuf>,
    /// Directory for the ranges cache (default /var/cache/origin-audit, or the user's cache dir).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With --iptables-save/--nft-json/...: take listeners, interfaces and routes from the live
    /// host, so a candidate ruleset is audited as if it were loaded here (pre-apply hooks).
    #[arg(long = "with-host")]
    pub with_host: bool,
}

/// `--ranges-url` must be https: the list decides what the audit trusts, and over plain HTTP
/// anyone on the path can rewrite it.
pub fn https_url(s: &str) -> Result<String, String> {
    let scheme = s.get(..8).filter(|p| p.eq_ignore_ascii_case("https://"));
    if scheme.is_some() && s.len() > 8 {
        Ok(s.to_string())
    } else {
        Err(
            "only https:// URLs are fetched (over plain HTTP anyone on the path can rewrite \
             the list); use an https:// mirror, --ranges-ca FILE for its private CA, or \
             --ranges-file"
                .to_string(),
        )
    }
}

impl InputArgs {
    pub fn has_offline_dumps(&self) -> bool {
        !(self.iptables_save.is_empty()
            && self.ip6tables_save.is_empty()
            && self.nft_json.is_empty()
            && self.ipset_save.is_empty())
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Ports to audit, comma separated (default 80,443).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub ports: Vec<u16>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Colour: auto (only on a terminal), always, never.
    #[arg(long, value_enum, default_value_t)]
    pub color: ColorChoice,
    /// For cron and timers: print nothing and exit 0 when all is well; otherwise print the
    /// findings and what to do.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write Prometheus metrics to this file (node_exporter textfile collector), atomically.
    #[arg(long = "prometheus-textfile", value_name = "PATH")]
    pub prometheus_textfile: Option<PathBuf>,
    /// Write the metrics where node_exporter reads them: origin-audit.prom in
    /// /var/lib/prometheus/node-exporter (Debian's prometheus-node-exporter) when that
    /// directory exists, else in /var/lib/origin-audit.
    #[arg(long, conflicts_with = "prometheus_textfile")]
    pub prometheus: bool,
    /// Lock file that keeps two runs from overlapping (default /run/origin-audit.lock).
    #[arg(long = "lock-file", value_name = "FILE")]
    pub lock_file: Option<PathBuf>,
    /// Seconds to wait for another run's lock before giving up with exit 3 (default 30).
    #[arg(long = "lock-wait", value_name = "SECS")]
    pub lock_wait: Option<u64>,
    /// Nagios / monitoring-plugins output: one status line `STATUS - summary | perfdata`
    /// (at most 200 characters), then one line per finding; with --quiet the status line only,
    /// printed whatever the status. Errors are `UNKNOWN - why`, exit 3.
    #[arg(long, conflicts_with = "format")]
    pub nagios: bool,
    /// Give up after SECS seconds for the whole run: exit 3 (UNKNOWN), the textfile says so.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Where `fix` keeps its pending-rollback marker (default: the last `fix --apply`'s
    /// --state-dir, else $ORIGIN_AUDIT_STATE_DIR, else /var/lib/origin-audit): a change
    /// awaiting `fix --confirm` there is reported (finding fix-pending, metric
    /// origin_audit_fix_pending). Read on live runs, or whenever this is given.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Source address (e.g. a Cloudflare address).
    pub address: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Explain a packet of an established connection instead of a new one (SYN).
    #[arg(long)]
    pub established: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The forms `fix --emit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitForm {
    Nft,
    Iptables,
    Ufw,
    Firewalld,
}

#[derive(Debug, Clone, Args)]
pub struct FixArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Ports to audit, comma separated (default 80,443).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub ports: Vec<u16>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print only this form of the fix on standard output (for configuration management).
    #[arg(long, value_enum, value_name = "FORM")]
    pub emit: Option<EmitForm>,
    /// Apply the fix: backup, one transaction per backend, re-read, roll back on disagreement.
    #[arg(long, conflicts_with_all = ["emit", "revert", "confirm"])]
    pub apply: bool,
    /// Also remove Cloudflare's entries from ban sets (ipset del / nft delete element).
    #[arg(long)]
    pub remove_banned: bool,
    /// With --apply: roll back unless `origin-audit fix --confirm` arrives within SECS.
    #[arg(long, value_name = "SECS", requires = "apply")]
    pub confirm_timeout: Option<u64>,
    /// Keep a change applied with --confirm-timeout.
    #[arg(long)]
    pub confirm: bool,
    /// Restore a change whose --confirm-timeout wait was interrupted (for a systemd timer).
    #[arg(long)]
    pub rollback_pending: bool,
    /// Remove exactly the rules and sets origin-audit added.
    #[arg(long, conflicts_with_all = ["emit", "confirm"])]
    pub revert: bool,
    /// Backups and the pending-rollback marker (default /var/lib/origin-audit, or
    /// $ORIGIN_AUDIT_STATE_DIR). An --apply elsewhere is recorded there, so --confirm, --revert,
    /// --rollback-pending and `check` find it without repeating this.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}
