//! Reading tc qdiscs/filters and XDP attachments of this network namespace.
//!
//! Owns: [`read_netdev`] (`ip -j -d link show`, `tc -j qdisc show`, and
//! `tc -j filter show dev D ingress|egress` only for devices with a clsact or ingress qdisc, so a
//! host with hundreds of devices without one runs two commands) and [`qdisc_hooks`], the pure
//! choice of which filter dumps to take.
//! Must not: parse filters or decide anything (crate::tc does); a failure becomes a
//! [`ReadError`] (`firewall: false`) that names the command, never a panic.

use super::cmd::{self, CmdError, Output};
use crate::snapshot::ReadError;
use crate::tc::{NetdevDumps, TcDump};
use serde::Deserialize;

#[derive(Deserialize)]
struct RawQdisc {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    dev: String,
}

/// (device, direction) pairs to dump: `ingress` for an ingress or clsact qdisc, `egress` for
/// clsact only (tc(8): the ingress qdisc has no egress hook). Unparsable text yields nothing.
pub fn qdisc_hooks(qdiscs_json: &str) -> Result<Vec<(String, &'static str)>, serde_json::Error> {
    if qdiscs_json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let q: Vec<RawQdisc> = serde_json::from_str(qdiscs_json)?;
    let mut out = Vec::new();
    for q in q.into_iter().filter(|q| !q.dev.is_empty()) {
        match q.kind.as_str() {
            "clsact" => {
                out.push((q.dev.clone(), "ingress"));
                out.push((q.dev, "egress"));
            }
            "ingress" => out.push((q.dev, "ingress")),
            _ => {}
        }
    }
    out.dedup();
    Ok(out)
}

fn err(what: &str, source: &str, message: String) -> ReadError {
    ReadError {
        what: what.into(),
        source: source.into(),
        message,
        firewall: false,
    }
}

/// Runs one tool: [`cmd::run`] live, `ip netns exec …` in tests.
pub type Runner<'a> = &'a dyn Fn(&str, &[&str]) -> Result<Output, CmdError>;

/// Read this namespace's links, qdiscs and tc filters.
pub fn read_netdev() -> (NetdevDumps, Vec<ReadError>) {
    read_netdev_with(&|p, a| cmd::run(p, a))
}

/// [`read_netdev`] with another command runner (tests run the tools in a namespace).
pub fn read_netdev_with(run: Runner) -> (NetdevDumps, Vec<ReadError>) {
    let mut dumps = NetdevDumps::default();
    let mut errors = Vec::new();
    match run("ip", &["-j", "-d", "link", "show"]) {
        Ok(o) => dumps.links = Some(o.stdout),
        Err(e) => errors.push(err("XDP attachments", "ip -j -d link show", e.to_string())),
    }
    let qdiscs = match run("tc", &["-j", "qdisc", "show"]) {
        Ok(o) => o.stdout,
        Err(e) => {
            errors.push(err(
                "tc qdiscs and filters",
                "tc -j qdisc show",
                e.to_string(),
            ));
            return (dumps, errors);
        }
    };
    let hooks = match qdisc_hooks(&qdiscs) {
        Ok(h) => h,
        Err(e) => {
            errors.push(err(
                "tc qdiscs and filters",
                "tc -j qdisc show",
                format!("output is not the expected JSON: {e}"),
            ));
            Vec::new()
        }
    };
    dumps.qdiscs = Some(qdiscs);
    for (dev, dir) in hooks {
        let source = format!("tc -j filter show dev {dev} {dir}");
        match run("tc", &["-j", "filter", "show", "dev", &dev, dir]) {
            Ok(o) => dumps.filters.push(TcDump {
                dev,
                direction: dir.to_string(),
                json: o.stdout,
            }),
            // A device that vanished between the two commands is not an error worth a line.
            Err(CmdError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => {}
            Err(e) => errors.push(err("tc filters", &source, e.to_string())),
        }
    }
    (dumps, errors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    /// `tc -j qdisc show` in a private namespace (iproute2-6.1.0, kernel 6.18): v0 and v1 with
    /// clsact, v2 with ingress, the rest noqueue/noop.
    const QDISCS: &str = r#"[{"kind":"noqueue","handle":"0:","dev":"v1","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","dev":"v1","parent":"ffff:fff1","options":{}},{"kind":"noqueue","handle":"0:","dev":"v0","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","dev":"v0","parent":"ffff:fff1","options":{}},{"kind":"noqueue","handle":"0:","dev":"v2","root":true,"refcnt":2,"options":{}},{"kind":"ingress","handle":"ffff:","dev":"v2","parent":"ffff:fff1","options":{}}]"#;

    #[test]
    fn only_devices_with_clsact_or_ingress_are_dumped() {
        let h = qdisc_hooks(QDISCS).unwrap();
        assert_eq!(
            h,
            vec![
                ("v1".to_string(), "ingress"),
                ("v1".to_string(), "egress"),
                ("v0".to_string(), "ingress"),
                ("v0".to_string(), "egress"),
                ("v2".to_string(), "ingress"),
            ]
        );
    }

    #[test]
    fn missing_tc_is_a_read_error_naming_it() {
        let run = |p: &str, _: &[&str]| -> Result<Output, CmdError> {
            match p {
                "ip" => Ok(Output {
                    stdout: "[]".into(),
                    stderr: String::new(),
                }),
                _ => Err(CmdError::NotInstalled { cmd: p.into() }),
            }
        };
        let (d, e) = read_netdev_with(&run);
        assert_eq!(d.links.as_deref(), Some("[]"));
        assert_eq!(e.len(), 1);
        assert!(!e[0].firewall);
        assert_eq!(e[0].source, "tc -j qdisc show");
        assert!(e[0].message.contains("not installed"), "{}", e[0].message);
    }

    #[test]
    fn two_commands_without_qdiscs() {
        let calls = std::cell::RefCell::new(0);
        let run = |_: &str, _: &[&str]| -> Result<Output, CmdError> {
            *calls.borrow_mut() += 1;
            Ok(Output {
                stdout: r#"[{"kind":"noqueue","handle":"0:","dev":"veth1","root":true,"refcnt":2,"options":{}}]"#.into(),
                stderr: String::new(),
            })
        };
        let (d, e) = read_netdev_with(&run);
        assert!(e.is_empty());
        assert!(d.filters.is_empty());
        assert_eq!(*calls.borrow(), 2);
    }
}
