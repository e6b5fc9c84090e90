//! Entry point: parse arguments, run one command, map the outcome to an exit code.
//! Exit codes (Nagios style): 0 ok, 1 warning, 2 critical, 3 unknown.

use anyhow::Context;
use clap::Parser;
use origin_audit::cli::{Cli, Command};
use origin_audit::commands::{check, config_command, explain, setup, snapshot};
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
    let config_path = cli.config;
    match cli.command {
        Command::Config(c) => config_command(c, config_path.as_deref()),
        Command::Snapshot(mut args) => {
            setup(config_path.as_deref(), &mut args.input)?;
            let snap = snapshot(&args.input)?;
            let json = serde_json::to_string_pretty(&snap)?;
            match args.output {
                Some(path) => std::fs::write(&path, json + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{json}"),
            }
            Ok(0)
        }
        Command::Check(args) => check(args, config_path.as_deref()),
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
