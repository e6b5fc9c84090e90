//! The tc reader and model against a real kernel: a private network namespace with a veth
//! pair, a clsact qdisc and a u32 filter dropping 173.245.48.0/20 on ingress, read back through
//! `collect::tc::read_netdev_with` (every tool run under `ip netns exec`) + `tc::parse` +
//! `Netdev::decide`. Needs root, iproute2 and a kernel with sch_ingress, cls_u32 and act_mirred
//! (act_gact is not assumed: the drop is `mirred egress mirror dev lo drop`); skipped with a
//! printed reason otherwise. Never touches the root namespace's devices or qdiscs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use origin_audit::collect::cmd::{self, CmdError, Output};
use origin_audit::firewall::Family;
use origin_audit::tc::{self, TcDir, TcPacket, TcVerdict};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

/// Deletes the namespace even when the test fails.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// `ip netns exec NS program args…`, bounded to 20 s.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<Output, CmdError> {
    let mut a = vec!["netns", "exec", ns, program];
    a.extend_from_slice(args);
    cmd::run_with_timeout("ip", &a, Duration::from_secs(20))
}

fn sh(ns: &str, line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    in_ns(ns, words[0], &words[1..])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn syn(src: Ipv4Addr) -> TcPacket {
    TcPacket {
        family: Family::V4,
        src: Some(u128::from(u32::from(src))),
        dst: Some(u128::from(u32::from(Ipv4Addr::new(203, 0, 113, 10)))),
        proto: 6,
        sport: None,
        dport: Some(443),
        tcp_flags: Some(0x02),
    }
}

#[test]
fn clsact_u32_drop_is_read_back_and_decided() {
    if !is_root() {
        eprintln!("skipped: not root (network namespaces need CAP_SYS_ADMIN)");
        return;
    }
    let ns = format!("tc-test-{}", std::process::id());
    if let Err(e) = cmd::run_with_timeout("ip", &["netns", "add", &ns], Duration::from_secs(20)) {
        eprintln!("skipped: cannot create a network namespace: {e}");
        return;
    }
    let _guard = Guard(ns.clone());
    for line in [
        "ip link add v0 type veth peer name v1",
        "ip link set lo up",
        "ip link set v0 up",
        "tc qdisc add dev v0 clsact",
    ] {
        sh(&ns, line).unwrap();
    }
    let filter = "tc filter add dev v0 ingress pref 10 protocol ip u32 match ip src \
                  173.245.48.0/20 action mirred egress mirror dev lo drop";
    if let Err(e) = sh(&ns, filter) {
        eprintln!("skipped: this kernel cannot attach the u32 + mirred filter: {e}");
        return;
    }

    let run = |p: &str, a: &[&str]| in_ns(&ns, p, a);
    let (dumps, errors) = origin_audit::collect::tc::read_netdev_with(&run);
    assert!(errors.is_empty(), "{errors:?}");
    // Only v0 has a clsact qdisc: exactly its two directions were dumped.
    let dumped: Vec<(&str, &str)> = dumps
        .filters
        .iter()
        .map(|d| (d.dev.as_str(), d.direction.as_str()))
        .collect();
    assert_eq!(dumped, vec![("v0", "ingress"), ("v0", "egress")]);

    let nd = tc::parse(&dumps).unwrap();
    assert!(nd.has_filters("v0", TcDir::Ingress));
    assert!(!nd.has_filters("v0", TcDir::Egress));
    assert!(!nd.has_filters("v1", TcDir::Ingress));
    match nd.decide("v0", TcDir::Ingress, &syn(Ipv4Addr::new(173, 245, 48, 1))) {
        TcVerdict::Drop { by, .. } => {
            assert_eq!((by.dev.as_str(), by.pref), ("v0", 10));
        }
        other => panic!("expected a drop by pref 10, got {other:?}"),
    }
    assert_eq!(
        nd.decide("v0", TcDir::Ingress, &syn(Ipv4Addr::new(198, 51, 100, 1))),
        TcVerdict::Pass
    );
    assert_eq!(
        nd.decide("v1", TcDir::Ingress, &syn(Ipv4Addr::new(173, 245, 48, 1))),
        TcVerdict::Pass
    );
    assert!(nd.xdp("v0").is_empty());
}
