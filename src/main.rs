//! Entry point: parse arguments, run one command, map the outcome to an exit code.

use clap::Parser;
use origin_audit::cli::{Cli, Command};
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
            let snap = origin_audit::collect::snapshot(&args.input)?;
            let json = serde_json::to_string_pretty(&snap)?;
            match args.output {
                Some(path) => std::fs::write(&path, json + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                None => println!("{json}"),
            }
            Ok(0)
        }
        Command::Check(_) | Command::Explain(_) => anyhow::bail!("not written yet"),
    }
}
