//! Running one external command with a timeout, capturing its output.
//!
//! Owns: [`run`] / [`run_with_timeout`] and [`CmdError`], which turns "not installed",
//! "needs root" and "timed out" into distinct, typed errors that name the command.
//! Must not: interpret the output (the callers in this module do), or retry.

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long any one tool may run. `nft -j list ruleset` on a host with large sets takes well
/// under a second; ten seconds means something hangs (a stuck netlink socket, a slow NSS lookup).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a command printed, when it exited successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Error)]
pub enum CmdError {
    #[error("`{cmd}` is not installed (not found in PATH)")]
    NotInstalled { cmd: String },
    #[error("`{cmd}` needs root (CAP_NET_ADMIN): {stderr}")]
    PermissionDenied { cmd: String, stderr: String },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("`{cmd}` did not finish within {} s and was killed", timeout.as_secs_f64())]
    TimedOut { cmd: String, timeout: Duration },
    #[error("`{cmd}`: {source}")]
    Io {
        cmd: String,
        #[source]
        source: io::Error,
    },
}

impl CmdError {
    /// True when the tool is simply absent (callers decide whether that matters).
    pub fn is_not_installed(&self) -> bool {
        matches!(self, CmdError::NotInstalled { .. })
    }
}

/// The timeout [`run`] uses, in milliseconds: [`DEFAULT_TIMEOUT`] unless the configuration
/// (`audit.command_timeout_secs`) set another with [`set_timeout`]. Process-wide, because every
/// reader runs its tools through [`run`] and one run has one setting.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);

/// Sets the timeout of every later [`run`].
pub fn set_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The timeout [`run`] currently uses.
pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Run `program args…` with the configured timeout ([`DEFAULT_TIMEOUT`] unless set).
pub fn run(program: &str, args: &[&str]) -> Result<Output, CmdError> {
    run_with_timeout(program, args, timeout())
}

/// Run `program args…`, killing it after `timeout`. stdin is closed so a tool that unexpectedly
/// prompts cannot hang us; `LC_ALL=C` keeps the messages we match on in English.
pub fn run_with_timeout(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Output, CmdError> {
    let cmd = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = match Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CmdError::NotInstalled { cmd });
        }
        Err(source) => return Err(CmdError::Io { cmd, source }),
    };
    // The pipes are drained on their own threads while we wait: a tool that prints more than a
    // pipe buffer (64 KiB; `nft -j` of a real ruleset does) would otherwise block forever.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_bounded(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            // Kill and reap, so no zombie is left behind; errors here change nothing for the
            // caller, who gets TimedOut either way.
            let _ = child.kill();
            let _ = child.wait();
            return Err(CmdError::TimedOut { cmd, timeout });
        }
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CmdError::Io { cmd, source });
        }
    };
    let stdout = join(out);
    let stderr = join(err);
    if status.success() {
        return Ok(Output { stdout, stderr });
    }
    let stderr_trim = stderr.trim().to_string();
    if is_permission_denied(&stderr_trim) {
        return Err(CmdError::PermissionDenied {
            cmd,
            stderr: stderr_trim,
        });
    }
    Err(CmdError::Failed {
        cmd,
        status: status.to_string(),
        stderr: stderr_trim,
    })
}

/// The messages the netfilter tools print when run without CAP_NET_ADMIN (observed here with
/// nft 1.0.6, iptables 1.8.9 and ipset 7.17 under `setpriv --reuid=65534`):
/// `Operation not permitted (you must be root)` (nft),
/// `Could not fetch rule set generation id: Permission denied (you must be root)` (iptables-nft),
/// `Failed to list table names in /proc/net/ip_tables_names: Permission denied` (iptables-legacy),
/// `Kernel error received: Operation not permitted` (ipset). All exit 1 or 4, so the exit status
/// alone cannot tell EPERM from other failures.
fn is_permission_denied(stderr: &str) -> bool {
    stderr.contains("Permission denied")
        || stderr.contains("Operation not permitted")
        || stderr.contains("you must be root")
}

/// Waits for `child` until `timeout`; `Ok(None)` when it is still running then.
///
/// A blocking wait: the child's pidfd (Linux ≥ 5.3) becomes readable when it exits, and `poll`
/// sleeps until then or the deadline — no wake-ups, no latency added to every tool. The pidfd
/// is taken while we still own the unreaped child, so its pid cannot have been reused. Where
/// pidfds are unavailable (older kernels, a seccomp filter), a bounded back-off poll.
fn wait_bounded(
    child: &mut Child,
    timeout: Duration,
) -> io::Result<Option<std::process::ExitStatus>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let deadline = Instant::now() + timeout;
    let pidfd = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        return wait_polling(child, deadline);
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) if left.is_zero() => return child.try_wait(),
            // Woken early (or the deadline reached with a last look): ask the child.
            Ok(_) => {
                if let Some(status) = child.try_wait()? {
                    return Ok(Some(status));
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return wait_polling(child, deadline),
        }
    }
}

fn wait_polling(
    child: &mut Child,
    deadline: Instant,
) -> io::Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error mid-way keeps what was read; the exit status decides success.
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(h: Option<thread::JoinHandle<Vec<u8>>>) -> String {
    let bytes = h.and_then(|h| h.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_not_installed() {
        let e = run("origin-audit-no-such-tool", &[]).unwrap_err();
        assert!(e.is_not_installed(), "{e}");
        assert!(e.to_string().contains("origin-audit-no-such-tool"));
    }

    #[test]
    fn captures_stdout_and_stderr() {
        let o = run("sh", &["-c", "echo out; echo err >&2"]).unwrap();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
    }

    #[test]
    fn large_output_does_not_deadlock() {
        // 1 MiB, far more than a pipe buffer.
        let o = run("sh", &["-c", "head -c 1048576 /dev/zero"]).unwrap();
        assert_eq!(o.stdout.len(), 1 << 20);
    }

    #[test]
    fn nonzero_exit_is_failed_with_stderr() {
        let e = run("sh", &["-c", "echo boom >&2; exit 3"]).unwrap_err();
        match e {
            CmdError::Failed { status, stderr, .. } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn eperm_message_is_needs_root() {
        let e = run(
            "sh",
            &[
                "-c",
                "echo 'Operation not permitted (you must be root)' >&2; exit 1",
            ],
        )
        .unwrap_err();
        assert!(matches!(e, CmdError::PermissionDenied { .. }));
        assert!(e.to_string().contains("needs root (CAP_NET_ADMIN)"), "{e}");
    }

    #[test]
    fn hung_command_is_killed() {
        let start = Instant::now();
        let e = run_with_timeout("sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, CmdError::TimedOut { .. }), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
