//! `collect::routing::read_routing` against a real kernel: a private network namespace (via
//! package_support's `Netns`, deleted on drop even when the test fails) with a veth pair, a
//! blackhole route, a policy rule and an rp_filter setting; the test binary re-runs itself
//! under `ip netns exec` so the reader runs inside that namespace, prints the dumps as JSON, and
//! the parent parses and checks them with the routing model. Needs root and iproute2; skipped
//! with a printed reason otherwise. Never touches the root namespace's routes, rules or sysctls.

#![allow(clippy::unwrap_used)] // a test unwraps its own fixtures

mod package_support;

use origin_audit::firewall::Family;
use origin_audit::firewall::addr::addr_to_int;
use origin_audit::routing::{self, Decision, Flow, RoutingDumps, RpResult};
use package_support::{Netns, find_in_path, is_root, run_bounded};

const CHILD_ENV: &str = "ORIGIN_AUDIT_ROUTING_CHILD";
const TEST_NAME: &str = "reads_blackhole_route_in_private_namespace";

fn v(a: &str) -> u128 {
    addr_to_int(a.parse().unwrap()).1
}

#[test]
fn reads_blackhole_route_in_private_namespace() {
    // Child side: inside the namespace, read and print.
    if std::env::var_os(CHILD_ENV).is_some() {
        let (dumps, errors) = origin_audit::collect::routing::read_routing(&["oa0".to_string()]);
        for e in &errors {
            eprintln!("read error: {} ({}): {}", e.what, e.source, e.message);
        }
        println!("ROUTING-DUMPS {}", serde_json::to_string(&dumps).unwrap());
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED collect_routing_netns: needs root (creates network namespaces)");
        return;
    }
    if find_in_path("ip").is_none() {
        eprintln!("SKIPPED collect_routing_netns: `ip` not installed");
        return;
    }
    let ns = Netns::new("route");
    ns.ip(&["link", "add", "oa0", "type", "veth", "peer", "name", "oa1"]);
    ns.ip(&["addr", "add", "192.0.2.2/24", "dev", "oa0"]);
    ns.ip(&["link", "set", "oa1", "up"]);
    ns.ip(&["link", "set", "oa0", "up"]);
    ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "oa0"]);
    ns.ip(&["route", "add", "blackhole", "173.245.48.0/20"]);
    ns.ip(&["route", "add", "unreachable", "default", "table", "100"]);
    ns.ip(&[
        "rule",
        "add",
        "to",
        "104.16.0.0/13",
        "lookup",
        "100",
        "pref",
        "100",
    ]);
    ns.ip(&["-6", "route", "add", "prohibit", "2400:cb00::/32"]);
    package_support::run_ok(
        ns.cmd("sysctl")
            .args(["-qw", "net.ipv4.conf.oa0.rp_filter=1"]),
    );

    let exe = std::env::current_exe().unwrap();
    let out = run_bounded(
        ns.cmd(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1"),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}{stderr}");
    assert!(!stderr.contains("read error"), "{stderr}");
    let json = stdout
        .lines()
        // The test harness prints `test NAME ... ` on the same line first.
        .find_map(|l| l.split_once("ROUTING-DUMPS ").map(|(_, j)| j))
        .unwrap_or_else(|| panic!("no dumps in child output: {stdout}{stderr}"));
    let dumps: RoutingDumps = serde_json::from_str(json).unwrap();
    assert_eq!(dumps.sysctls["net.ipv4.conf.oa0.rp_filter"], "1");
    assert!(
        dumps
            .sysctls
            .contains_key("net.ipv4.conf.all.src_valid_mark")
    );

    let r = routing::parse(&dumps).unwrap();
    let flow = |dst: &str| Flow {
        family: Family::V4,
        dst: v(dst),
        src: Some(v("192.0.2.2")),
        iif: Some("lo".into()),
        oif: None,
        mark: 0,
        tos: 0,
    };
    match r.lookup(&flow("173.245.48.1")) {
        Decision::Blackhole(rr) => assert_eq!(rr.text, "blackhole 173.245.48.0/20"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.lookup(&flow("104.16.0.1")),
        Decision::Unreachable(_)
    ));
    let v6 = Flow {
        family: Family::V6,
        dst: v("2400:cb00::1"),
        src: None,
        ..flow("1.1.1.1")
    };
    assert!(matches!(r.lookup(&v6), Decision::Prohibit(_)));
    // A SYN from the blackholed range fails strict rp_filter on oa0; one from elsewhere passes.
    assert!(matches!(
        r.rp_filter(Family::V4, "oa0", v("173.245.48.1"), v("192.0.2.2"), 0),
        RpResult::Drop { .. }
    ));
    assert_eq!(
        r.rp_filter(Family::V4, "oa0", v("8.8.8.8"), v("192.0.2.2"), 0),
        RpResult::Pass
    );
}
