//! Files written as root, written so another local user cannot redirect them.
//!
//! Owns: [`write_atomic`] (a temporary file with an unpredictable name created with
//! `O_CREAT | O_EXCL` in the target's directory — `tempfile` — then renamed over the target:
//! `rename(2)` replaces a planted symlink instead of following it), [`open_lock`] (`O_NOFOLLOW`,
//! a regular file with one link, mode 0600), [`private_dir`] (create 0700 or check an existing
//! directory) and [`trusted_file`] (a file read back as trusted data).
//!
//! The trust rule for directories and files origin-audit reads back (cache, state, backups):
//! owned by root or by the user running origin-audit, and not writable by group or others. A
//! directory another user can write lets that user replace what is read back as root.
//! Must not: decide what is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The effective uid (`Uid:` real, effective, … in /proc/self/status); root if unreadable, so
/// only root-owned paths are trusted then.
fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0)
}

/// Why a path is not safe to trust, or `None`.
fn untrusted(meta: &std::fs::Metadata) -> Option<String> {
    let uid = meta.uid();
    if uid != 0 && uid != euid() {
        return Some(format!(
            "owned by uid {uid}, not by root or this user (uid {})",
            euid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!("writable by group or others (mode {mode:04o})"));
    }
    None
}

/// Writes `text` to `path` atomically with `mode`. The temporary file's name starts with `.`
/// and ends in `.tmp` (node_exporter's textfile collector reads only `*.prom`).
pub fn write_atomic(path: &Path, text: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "origin-audit".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(text)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Opens (creating, 0600) the lock file without following a symlink; refuses anything but a
/// regular file with a single link (a hard link planted to another file).
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("it is a symbolic link"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    if meta.nlink() > 1 {
        return Err(std::io::Error::other(format!(
            "it has {} hard links",
            meta.nlink()
        )));
    }
    Ok(file)
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an existing one is a
/// real directory (not a symlink) that only root or this user can write.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} is a symbolic link; origin-audit writes only into real directories",
            dir.display()
        )),
        Ok(m) if !m.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(m) => match untrusted(&m) {
            Some(why) => Err(format!(
                "{} is {why}: another user could replace what origin-audit reads back; \
                 fix its owner and mode (chown root: {0}; chmod 700 {0}) or choose another directory",
                dir.display()
            )),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Checks an existing directory whose files are read back as trusted data (not a symlink, owned
/// by root or this user, not writable by group or others). A missing one is fine.
pub fn trusted_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        _ => private_dir(dir),
    }
}

/// Reads a file origin-audit wrote earlier and will trust (cache, state): not a symlink,
/// owned by root or this user, not writable by group or others. `Ok(None)`: it does not exist.
pub fn trusted_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{} is a symbolic link", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if let Some(why) = untrusted(&meta) {
        return Err(format!("{} is {why}", path.display()));
    }
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Some(buf))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn atomic_write_replaces_a_planted_symlink_and_never_writes_its_target() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = d.path().join("m.prom");
        symlink(&victim, &target).unwrap();
        // The old predictable temporary name, planted too.
        symlink(
            &victim,
            d.path().join(format!(".m.prom.{}.tmp", std::process::id())),
        )
        .unwrap();
        write_atomic(&target, b"metrics\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let m = std::fs::symlink_metadata(&target).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "metrics\n");
    }

    #[test]
    fn a_symlinked_or_hard_linked_lock_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let l = d.path().join("lock");
        symlink(&victim, &l).unwrap();
        let e = open_lock(&l).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let h = d.path().join("lock2");
        std::fs::hard_link(&victim, &h).unwrap();
        assert!(
            open_lock(&h)
                .unwrap_err()
                .to_string()
                .contains("hard links")
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let fresh = d.path().join("lock3");
        open_lock(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn directories_others_can_write_are_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join("a/b");
        private_dir(&new).unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&new).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        let link = d.path().join("link");
        symlink(&new, &link).unwrap();
        assert!(private_dir(&link).unwrap_err().contains("symbolic link"));
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(trusted_file(&f).unwrap_err().contains("writable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(trusted_file(&f).unwrap().unwrap(), b"x");
        assert_eq!(trusted_file(&d.path().join("none")).unwrap(), None);
    }

    #[test]
    fn files_of_another_user_are_not_trusted() {
        if euid() != 0 {
            return; // chown needs root; the suite runs as root (scripts/test)
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cache.json");
        std::fs::write(&f, "{}").unwrap();
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        let e = trusted_file(&f).unwrap_err();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        assert!(
            private_dir(&dir)
                .unwrap_err()
                .contains("owned by uid 65534")
        );
    }
}
