//! Entry point: parse arguments, run one command, map the outcome to an exit code.
//! Exit codes (Nagios style): 0 ok, 1 warning, 2 critical, 3 unknown.

use anyhow::Context;
use clap::Parser;
use origin_audit::analysis::{self, Options, VerdictKind};
use origin_audit::cli::{CheckArgs, Cli, ColorChoice, Command, ExplainArgs, Format};
use origin_audit::{collect, ranges, render};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("origin-audit: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Snapshot(args) => {
            let snap = collect::snapshot(&args.input)?;
            let json = serde_json::to_string_pretty(&snap)?;
            match args.output {
                Some(path) => std::fs::write(&path, json + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{json}"),
            }
            Ok(0)
        }
        Command::Check(args) => check(args),
        Command::Explain(args) => explain(args),
        Command::Fix(args) => origin_audit::fix::command::run(args),
    }
}

fn options(ports: &[u16], input: &origin_audit::cli::InputArgs) -> anyhow::Result<Options> {
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

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let opts = options(&args.ports, &args.input)?;
    let snap = collect::snapshot(&args.input)?;
    let report = analysis::analyze(&snap, &opts);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json::report(&report))?
        ),
        Format::Human => print!("{}", render::human::report(&report, color(args.color))),
    }
    Ok(report.status.exit_code())
}

fn explain(args: ExplainArgs) -> anyhow::Result<u8> {
    let opts = options(&[], &args.input)?;
    let snap = collect::snapshot(&args.input)?;
    let (e, errors) = analysis::explain(&snap, &opts, args.address, args.port, args.established);
    for err in &errors {
        eprintln!("origin-audit: could not parse {err}");
    }
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json::explanation(&e))?
        ),
        Format::Human => print!(
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
