//! The configuration file end to end: `config check` / `config show`, errors naming file, line
//! and key (exit 3), `[[accept]]` exceptions (shown as accepted, not counted; expired ones
//! stop applying), listener expectations, and command-line flags overriding the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_origin-audit");

fn manifest(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run origin-audit")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `check` on the ufw fixture (all IPv4 ranges dropped on 80, 443 open) with `extra` flags.
fn ufw(extra: &[&str]) -> Output {
    let v4 = manifest("tests/fixtures/iptables/ufw-v4.nft.rules")
        .display()
        .to_string();
    let mut args = vec![
        "check",
        "--offline",
        "--color",
        "never",
        "--iptables-save",
        &v4,
        "--iface",
        "eth0",
        "--dest",
        "203.0.113.2",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn shipped_example_is_valid() {
    let p = manifest("packaging/config.toml").display().to_string();
    let o = run(&["config", "check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("valid"), "{}", out(&o));
}

#[test]
fn errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // (file text, line, key)
        (
            "[audit]\nports = [443]\nlock_wiat = 3\n",
            3,
            "audit.lock_wiat",
        ),
        (
            "# hi\n[ranges]\nmax_age_days = \"thirty\"\n",
            3,
            "ranges.max_age_days",
        ),
        ("[audit]\n\nports = [443, 22]\n", 3, "audit.ports"),
        (
            "[[accept]]\ncode = \"range-dropped\"\nreason = \"\"\n",
            3,
            "accept[1].reason",
        ),
        (
            "[[accept]]\ncode = \"range-dropped\"\nreason = \"x\"\nuntil = 2026-02-30\n",
            4,
            "accept[1].until",
        ),
        ("[listener]\n443 = \"sometimes\"\n", 2, "listener.443"),
    ];
    for (text, line, key) in cases {
        let p = write(dir.path(), "c.toml", text);
        // Both `config check` and a run using the file refuse it, the same way.
        for o in [run(&["config", "check", &p]), ufw(&["--config", &p])] {
            assert_eq!(o.status.code(), Some(3), "{text}");
            let e = err(&o);
            assert!(
                e.contains(&format!("{p}:{line}: {key}: ")),
                "want {p}:{line}: {key}, got {e}"
            );
        }
    }
    // An explicitly named file that does not exist is an error, not silently the defaults.
    let o = run(&["config", "show", "--config", "/nonexistent/oa.toml"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("/nonexistent/oa.toml"), "{}", err(&o));
}

#[test]
fn show_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.toml",
        "[audit]\nports = [443]\n[listener]\n443 = \"optional\"\n",
    );
    let o = run(&["config", "show", "--config", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let shown = out(&o);
    assert!(shown.contains("ports = [443]"), "{shown}");
    // Defaults the file did not set are shown too.
    assert!(shown.contains("lock_wait_secs = 30"), "{shown}");
    assert!(shown.contains("443 = \"optional\""), "{shown}");
    // What `show` prints is itself a valid configuration with the same content.
    let again = write(dir.path(), "again.toml", &shown);
    let o2 = run(&["config", "show", "--config", &again]);
    assert_eq!(
        out(&o2).lines().skip(1).collect::<Vec<_>>(),
        shown.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn accepted_findings_are_shown_and_do_not_raise_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.toml",
        "[severity]\nranges-stale = \"info\"\n\n\
         [[accept]]\ncode = \"range-dropped\"\nport = 80\n\
         reason = \"HTTP is not proxied (CHG-1)\"\nuntil = 2999-12-31\n",
    );
    let base = ufw(&[]);
    assert_eq!(base.status.code(), Some(2));

    let o = ufw(&["--config", &p]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(
        text.contains("Accepted (exceptions in the configuration)"),
        "{text}"
    );
    assert!(text.contains("accepted range-dropped"), "{text}");
    assert!(
        text.contains(&format!(
            "reason: HTTP is not proxied (CHG-1) (until 2999-12-31)  [{p}:4]"
        )),
        "{text}"
    );
    // JSON: the finding moved to "accepted", with its reason; status ok.
    let o = ufw(&["--config", &p, "--format", "json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["status"], "ok");
    let acc = j["accepted"].as_array().unwrap();
    assert!(!acc.is_empty());
    assert!(acc.iter().all(|a| a["finding"]["code"] == "range-dropped"
        && a["finding"]["severity"] == "critical"
        && a["reason"] == "HTTP is not proxied (CHG-1)"));
    assert!(
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["code"] != "range-dropped")
    );
}

#[test]
fn an_exception_covers_only_its_port_and_range() {
    let dir = tempfile::tempdir().unwrap();
    // Only 173.245.48.0/20 is accepted; the policy drop of every other range stays open.
    let p = write(
        dir.path(),
        "c.toml",
        "[[accept]]\ncode = \"range-dropped\"\nrange = \"173.245.48.0/20\"\nreason = \"known\"\n",
    );
    let o = ufw(&["--config", &p, "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let acc = j["accepted"].as_array().unwrap();
    assert_eq!(acc.len(), 1, "{acc:?}");
    assert_eq!(
        acc[0]["finding"]["sources"],
        serde_json::json!(["173.245.48.0/20"])
    );
    assert!(
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "range-dropped")
    );
    // The wrong port covers nothing.
    let p = write(
        dir.path(),
        "c2.toml",
        "[[accept]]\ncode = \"range-dropped\"\nport = 443\nreason = \"x\"\n",
    );
    let o = ufw(&["--config", &p, "--format", "json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["accepted"], serde_json::json!([]));
}

#[test]
fn expired_exceptions_stop_applying() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.toml",
        "[[accept]]\ncode = \"range-dropped\"\nport = 80\nreason = \"temporary\"\nuntil = 2001-01-31\n",
    );
    let o = ufw(&["--config", &p]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.contains(&format!("[exception at {p}:1 expired on 2001-01-31]")),
        "{text}"
    );
    assert!(!text.contains("Accepted (exceptions"), "{text}");
    let o = run(&["config", "check", &p]);
    assert_eq!(o.status.code(), Some(0));
    assert!(out(&o).contains("expired on 2001-01-31"), "{}", out(&o));
}

#[test]
fn command_line_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "c.toml", "[audit]\nports = [443]\n");
    let o = ufw(&["--config", &p, "--format", "json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ports"], serde_json::json!([443]));
    // Port 443 is open in the fixture: only the stale bundled list is left (warning).
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let o = ufw(&["--config", &p, "--format", "json", "--ports", "80"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ports"], serde_json::json!([80]));
    assert_eq!(o.status.code(), Some(2));
}
