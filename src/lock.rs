//! The run lock: two audits (the timer, cron, an admin at the shell) never overlap.
//!
//! Owns: [`acquire`], an exclusive `flock(2)` (std's `File::try_lock`) on a lock file (opened
//! without following a symlink: `safefs::open_lock`), waited on for a bounded time. The lock is released when the [`RunLock`] is dropped or the process
//! dies (the kernel drops flocks with the last descriptor), so a crashed run never leaves a
//! stale lock behind; the file itself may stay.
//! Must not: decide anything about the audit; callers map [`LockError::Busy`] to exit 3.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot open the lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another origin-audit run{holder} holds {path}; gave up after waiting {} s",
        waited.as_secs()
    )]
    Busy {
        path: PathBuf,
        waited: Duration,
        /// " (pid N)" when the holder wrote its pid.
        holder: String,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the duration of a run.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the exclusive lock on `path`, waiting up to `wait` for another run to finish.
/// The holder's pid is written into the file so the next run's message can name it.
pub fn acquire(path: &Path, wait: Duration) -> Result<RunLock, LockError> {
    let mut file = crate::safefs::open_lock(path).map_err(|source| LockError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let mut s = String::new();
                    let _ = file.read_to_string(&mut s);
                    let holder = s
                        .trim()
                        .parse::<u32>()
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default();
                    return Err(LockError::Busy {
                        path: path.to_path_buf(),
                        waited: start.elapsed(),
                        holder,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(source)) => {
                return Err(LockError::Lock {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    // Best effort: the pid only improves the next run's message.
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = writeln!(file, "{}", std::process::id());
    Ok(RunLock { _file: file })
}

/// The run lock for a command: `acquire`, except that when the default lock file (`explicit`
/// false) cannot be created — not root, read-only /run — the run goes on unlocked: only root's
/// runs can collide on the firewall and the textfile.
pub fn acquire_for_run(
    path: &Path,
    wait: Duration,
    explicit: bool,
) -> Result<Option<RunLock>, LockError> {
    match acquire(path, wait) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Open { source, .. })
            if !explicit
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::NotFound
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own temp files
mod tests {
    use super::*;

    #[test]
    fn second_taker_waits_then_gives_up_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = acquire(&p, Duration::ZERO).unwrap();
        let t = Instant::now();
        let e = acquire(&p, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        // Released on drop: the next run gets it at once.
        acquire(&p, Duration::ZERO).unwrap();
    }
}
