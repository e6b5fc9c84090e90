//! Entry point: parse arguments, run one command, map the outcome to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let _cli = origin_audit::cli::Cli::parse();
    ExitCode::SUCCESS
}
