//! Readers of the host: the only code that runs commands or reads /proc to build a Snapshot.

use crate::cli::InputArgs;
use crate::snapshot::Snapshot;

/// Build the snapshot `check`/`explain`/`snapshot` work on: a snapshot file, offline dumps, or
/// the live host (the network namespace this process runs in).
pub fn snapshot(input: &InputArgs) -> anyhow::Result<Snapshot> {
    let _ = input;
    todo!("collect helper")
}
