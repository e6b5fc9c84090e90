//! Entry point: parse arguments, run one command, map the outcome to an exit code.
//! Exit codes (Nagios style): 0 ok, 1 warning, 2 critical, 3 unknown — also for a usage error
//! (Nagios reads 2 as CRITICAL) and for output that cannot be written (closed pipe, full disk).

use anyhow::Context;
use clap::Parser;
use origin_audit::cli::{Cli, Command};
use origin_audit::commands::{check, config_command, explain, setup, snapshot};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; a usage error is "unknown".
            let ok = !e.use_stderr();
            if e.print().is_err() && ok {
                return ExitCode::from(3);
            }
            return ExitCode::from(if ok { 0 } else { 3 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("origin-audit: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let config_path = cli.config;
    match cli.command {
        Command::Config(c) => config_command(c, config_path.as_deref()),
        Command::Snapshot(mut args) => {
            let cfg = setup(config_path.as_deref(), &mut args.input)?;
            let mut snap = snapshot(&args.input)?;
            // With the zone's hostnames configured, the TLS handshakes are part of the
            // snapshot, so `check --snapshot` judges them anywhere, in any mode.
            origin_audit::commands::snapshot_tls(&cfg, &args.input, &mut snap)?;
            let json = serde_json::to_string_pretty(&snap)?;
            match args.output {
                Some(path) => std::fs::write(&path, json + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => origin_audit::outln!("{json}"),
            }
            Ok(0)
        }
        Command::Check(args) => check(args, config_path.as_deref()),
        Command::Codes { code } => origin_audit::commands::codes(code.as_deref()),
        Command::Explain(mut args) => {
            let cfg = setup(config_path.as_deref(), &mut args.input)?;
            explain(args, &cfg)
        }
        Command::Fix(mut args) => {
            let cfg = setup(config_path.as_deref(), &mut args.input)?;
            origin_audit::fix::command::run(args, &cfg)
        }
    }
}
