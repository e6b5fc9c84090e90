//! Where `fix` (and `check`, for a pending rollback) keep their state: the default state
//! directory (`/var/lib/origin-audit`, or `$ORIGIN_AUDIT_STATE_DIR`), and the note an
//! `--apply` with another `--state-dir` leaves in the default one, so `--revert`, `--confirm`,
//! `--rollback-pending` and `check` find that directory without repeating the flag.
//!
//! Owns: the resolution order — `--state-dir` given, else the last apply's directory recorded
//! in the default one (when it is still a trusted directory), else the default — and the note
//! file. Must not: read or write anything else there (apply owns backups and markers).

use std::path::{Path, PathBuf};

/// The state directory when nothing else says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/origin-audit";
/// The environment variable that moves the default (containers, tests).
pub const STATE_DIR_ENV: &str = "ORIGIN_AUDIT_STATE_DIR";
/// In the default directory: the absolute path of the last apply's `--state-dir`.
const LAST: &str = "last-state-dir";

/// The default state directory: `$ORIGIN_AUDIT_STATE_DIR` when set to an absolute path.
pub fn default_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The state directory to use, absolute, and a note to print when it was not the flag's nor
/// the default (or when a recorded one was ignored).
pub fn resolve(explicit: Option<&Path>) -> Result<(PathBuf, Option<String>), String> {
    if let Some(d) = explicit {
        let abs =
            std::path::absolute(d).map_err(|e| format!("state directory {}: {e}", d.display()))?;
        return Ok((abs, None));
    }
    let default = default_dir();
    let note_file = default.join(LAST);
    let recorded = match crate::safefs::trusted_file(&note_file) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Ok(None) => return Ok((default, None)),
        Err(e) => {
            return Ok((
                default.clone(),
                Some(format!("ignored {e}; using {}", default.display())),
            ));
        }
    };
    let p = PathBuf::from(&recorded);
    if !p.is_absolute() || !p.is_dir() {
        return Ok((
            default.clone(),
            Some(format!(
                "the last apply's state directory {recorded:?} (recorded in {}) is gone; using {}",
                note_file.display(),
                default.display()
            )),
        ));
    }
    if let Err(e) = crate::safefs::private_dir(&p) {
        return Ok((
            default.clone(),
            Some(format!(
                "ignored the last apply's state directory: {e}; using {}",
                default.display()
            )),
        ));
    }
    let note = format!(
        "using the last apply's state directory {} (recorded in {}; --state-dir overrides)",
        p.display(),
        note_file.display()
    );
    Ok((p, Some(note)))
}

/// After an apply with `state_dir`: records it in the default directory when it is another
/// one, and forgets a recorded one when it is the default.
pub fn remember(state_dir: &Path) -> Result<(), String> {
    let default = default_dir();
    let note_file = default.join(LAST);
    if state_dir == default {
        return match std::fs::remove_file(&note_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", note_file.display()))
            }
            _ => Ok(()),
        };
    }
    crate::safefs::private_dir(&default)?;
    let text = format!("{}\n", state_dir.display());
    crate::safefs::write_atomic(&note_file, text.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", note_file.display()))
}
