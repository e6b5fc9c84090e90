//! Tests of the routing model against real `ip -j` dumps and the kernel's own answers.
//!
//! Scenario A (`A_*`) was built in a throwaway namespace (`ip netns add rt-test-$$`, deleted by a
//! trap) with iproute2-6.1.0 on kernel 6.18:
//!   veth eth0/p0, eth1/p1 up; eth2/p2 with p2 down (linkdown); 192.0.2.2/24 eth0,
//!   198.51.100.2/24 eth1, 203.0.113.2/24 eth2, 2001:db8:1::2/64 eth0;
//!   route add default via 192.0.2.1 dev eth0; route add blackhole 173.245.48.0/20;
//!   route add 173.245.49.0/24 via 198.51.100.1 dev eth1; route add 10.9.0.0/16 via 203.0.113.1
//!   dev eth2; route add 10.8.0.0/16 dev eth1 tos 0x10; -6 route add prohibit 2400:cb00::/32;
//!   -6 route add default via 2001:db8:1::1 dev eth0; route add unreachable default table 100;
//!   route add throw 104.17.0.0/16 table 100; route add default table 200 nexthop via 192.0.2.1
//!   dev eth0 weight 1 nexthop via 198.51.100.1 dev eth1 weight 2; route add 162.158.0.0/15 via
//!   198.51.100.1 dev eth1 table 300; rule add to 104.16.0.0/13 lookup 100 pref 100;
//!   rule add fwmark 0x10/0xff lookup 200 pref 200; rule add lookup main suppress_prefixlength 0
//!   pref 300; rule add fwmark 0x20 goto 32766 pref 400; rule add lookup 300 pref 32000.
//! Each `kernel:` comment is the answer of `ip -n NS -o route get …` in that namespace (output
//! lookups; with `iif eth0` an input lookup that runs fib_validate_source).
//!
//! Scenario B (`B_*`): the same interfaces with every selector and action iproute2 prints (see
//! `B_RULE_TEXT`, the plain `ip rule show` of the same rules).

#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

use super::*;
use crate::firewall::addr::addr_to_int;

// Scenario A: real output of iproute2-6.1.0 (kernel 6.18) in a private namespace
// `rt-test-$$` made by a script (veth pairs eth0/p0, eth1/p1 up, eth2 with its peer p2 down,
// so its routes are `linkdown`); every route and rule is listed in the module doc of this file.

const A_ROUTES_V4: &str = r#"[{"dst":"162.158.0.0/15","gateway":"198.51.100.1","dev":"eth1","table":"300","flags":[]},{"type":"unreachable","dst":"default","table":"100","flags":[]},{"type":"throw","dst":"104.17.0.0/16","table":"100","flags":[]},{"dst":"default","table":"200","flags":[],"nexthops":[{"gateway":"192.0.2.1","dev":"eth0","weight":1,"flags":[]},{"gateway":"198.51.100.1","dev":"eth1","weight":2,"flags":[]}]},{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},{"dst":"10.8.0.0/16","tos":"0x10","dev":"eth1","scope":"link","flags":[]},{"dst":"10.9.0.0/16","gateway":"203.0.113.1","dev":"eth2","flags":["linkdown"]},{"type":"blackhole","dst":"173.245.48.0/20","flags":[]},{"dst":"173.245.49.0/24","gateway":"198.51.100.1","dev":"eth1","flags":[]},{"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},{"dst":"198.51.100.0/24","dev":"eth1","protocol":"kernel","scope":"link","prefsrc":"198.51.100.2","flags":[]},{"dst":"203.0.113.0/24","dev":"eth2","protocol":"kernel","scope":"link","prefsrc":"203.0.113.2","flags":["linkdown"]},{"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"type":"local","dst":"127.0.0.1","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"type":"broadcast","dst":"127.255.255.255","dev":"lo","table":"local","protocol":"kernel","scope":"link","prefsrc":"127.0.0.1","flags":[]},{"type":"local","dst":"192.0.2.2","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"192.0.2.2","flags":[]},{"type":"broadcast","dst":"192.0.2.255","dev":"eth0","table":"local","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},{"type":"local","dst":"198.51.100.2","dev":"eth1","table":"local","protocol":"kernel","scope":"host","prefsrc":"198.51.100.2","flags":[]},{"type":"broadcast","dst":"198.51.100.255","dev":"eth1","table":"local","protocol":"kernel","scope":"link","prefsrc":"198.51.100.2","flags":[]},{"type":"local","dst":"203.0.113.2","dev":"eth2","table":"local","protocol":"kernel","scope":"host","prefsrc":"203.0.113.2","flags":[]},{"type":"broadcast","dst":"203.0.113.255","dev":"eth2","table":"local","protocol":"kernel","scope":"link","prefsrc":"203.0.113.2","flags":["linkdown"]}]"#;

const A_ROUTES_V6: &str = r#"[{"dst":"2001:db8:1::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"prohibit","dst":"2400:cb00::/32","dev":"lo","metric":1024,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"p0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"p1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"default","gateway":"2001:db8:1::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"},{"type":"local","dst":"::1","dev":"lo","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"local","dst":"2001:db8:1::2","dev":"eth0","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"p0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"p1","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth1","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}]"#;

const A_RULES_V4: &str = r#"[{"priority":0,"src":"all","table":"local"},{"priority":100,"src":"all","dst":"104.16.0.0","dstlen":13,"table":"100"},{"priority":200,"src":"all","fwmark":"0x10","fwmask":"0xff","table":"200"},{"priority":300,"src":"all","table":"main","suppress_prefixlen":0},{"priority":400,"src":"all","fwmark":"0x20","goto":32766},{"priority":32000,"src":"all","table":"300"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]"#;

const A_RULES_V6: &str =
    r#"[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"}]"#;

// Scenario B: same interfaces, every rule selector/action iproute2 6.1 prints (see module doc).

const B_ROUTES_V4: &str = r#"[{"dst":"162.158.0.0/15","dev":"eth1","table":"300","protocol":"static","scope":"link","prefsrc":"198.51.100.2","flags":[]},{"type":"anycast","dst":"198.51.100.77","dev":"eth1","table":"300","scope":"link","flags":[]},{"type":"multicast","dst":"224.1.0.0/16","dev":"eth1","table":"300","scope":"link","flags":[]},{"type":"unreachable","dst":"default","table":"100","flags":[]},{"type":"throw","dst":"104.16.0.0/13","table":"100","flags":[]},{"dst":"108.162.192.0/18","gateway":"198.51.100.1","dev":"eth1","table":"100","flags":[]},{"dst":"default","table":"200","flags":[],"nexthops":[{"gateway":"192.0.2.1","dev":"eth0","weight":1,"flags":[]},{"gateway":"198.51.100.1","dev":"eth1","weight":2,"flags":[]}]},{"type":"prohibit","dst":"141.101.64.0/18","table":"200","flags":[]},{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},{"dst":"10.8.0.0/16","tos":"0x10","dev":"eth1","scope":"link","metric":5,"flags":[]},{"dst":"10.9.0.0/16","gateway":"203.0.113.1","dev":"eth2","flags":["linkdown"]},{"type":"blackhole","dst":"173.245.48.0/20","flags":[]},{"dst":"173.245.49.0/24","gateway":"198.51.100.1","dev":"eth1","flags":[]},{"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},{"dst":"198.51.100.0/24","dev":"eth1","protocol":"kernel","scope":"link","prefsrc":"198.51.100.2","flags":[]},{"dst":"203.0.113.0/24","dev":"eth2","protocol":"kernel","scope":"link","prefsrc":"203.0.113.2","flags":["linkdown"]},{"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"type":"local","dst":"127.0.0.1","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"type":"broadcast","dst":"127.255.255.255","dev":"lo","table":"local","protocol":"kernel","scope":"link","prefsrc":"127.0.0.1","flags":[]},{"type":"local","dst":"192.0.2.2","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"192.0.2.2","flags":[]},{"type":"broadcast","dst":"192.0.2.255","dev":"eth0","table":"local","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},{"type":"local","dst":"198.51.100.2","dev":"eth1","table":"local","protocol":"kernel","scope":"host","prefsrc":"198.51.100.2","flags":[]},{"type":"broadcast","dst":"198.51.100.255","dev":"eth1","table":"local","protocol":"kernel","scope":"link","prefsrc":"198.51.100.2","flags":[]},{"type":"local","dst":"203.0.113.2","dev":"eth2","table":"local","protocol":"kernel","scope":"host","prefsrc":"203.0.113.2","flags":[]},{"type":"broadcast","dst":"203.0.113.255","dev":"eth2","table":"local","protocol":"kernel","scope":"link","prefsrc":"203.0.113.2","flags":["linkdown"]}]"#;

const B_ROUTES_V6: &str = r#"[{"type":"unreachable","dst":"default","dev":"lo","table":"100","metric":1024,"flags":[],"pref":"medium"},{"dst":"2001:db8:1::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"2001:db8::/32","dev":"eth0","metric":1024,"flags":[],"pref":"medium"},{"type":"prohibit","dst":"2400:cb00::/32","dev":"lo","metric":1024,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"p0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"p1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"fe80::/64","dev":"eth1","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"dst":"default","gateway":"2001:db8:1::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"},{"type":"local","dst":"::1","dev":"lo","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"local","dst":"2001:db8:1::2","dev":"eth0","table":"local","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"p0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth0","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"p1","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},{"type":"multicast","dst":"ff00::/8","dev":"eth1","table":"local","protocol":"kernel","metric":256,"flags":[],"pref":"medium"}]"#;

const B_RULES_V4: &str = r#"[{"priority":0,"src":"all","table":"local"},{"priority":100,"src":"all","dst":"173.245.48.0","dstlen":20,"table":"100"},{"priority":200,"src":"all","table":"main","suppress_prefixlen":0},{"priority":300,"src":"all","fwmark":"0x10","fwmask":"0xff","table":"200"},{"priority":400,"not":null,"src":"10.0.0.0","srclen":8,"iif":"eth1","goto":32000},{"priority":500,"src":"all","iif":"eth2","action":"blackhole"},{"priority":510,"src":"all","oif":"eth1","action":"unreachable"},{"priority":520,"src":"all","tos":"0x10","action":"prohibit"},{"priority":530,"src":"all","fwmark":"0x5","nop":null},{"priority":540,"src":"all","uid_start":1000,"uid_end":2000,"table":"300"},{"priority":550,"src":"all","ipproto":"tcp","dport":443,"table":"300"},{"priority":560,"src":"all","sport_start":1000,"sport_end":2000,"table":"300"},{"priority":1000,"src":"all","l3mdev":null},{"priority":32000,"src":"10.1.0.0","srclen":16,"table":"300"},{"priority":32001,"src":"all","table":"main","suppress_ifgroup":"5"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]"#;

const B_RULE_TEXT: &str = r#"0:	from all lookup local
100:	from all to 173.245.48.0/20 lookup 100
200:	from all lookup main suppress_prefixlength 0
300:	from all fwmark 0x10/0xff lookup 200
400:	not from 10.0.0.0/8 iif eth1 goto 32000
500:	from all iif eth2 blackhole
510:	from all oif eth1 unreachable
520:	from all tos 0x10 prohibit
530:	from all fwmark 0x5 nop
540:	from all uidrange 1000-2000 lookup 300
550:	from all ipproto tcp dport 443 lookup 300
560:	from all sport 1000-2000 lookup 300
1000:	from all lookup [l3mdev-table]
32000:	from 10.1.0.0/16 lookup 300
32001:	from all lookup main suppress_ifgroup 5
32766:	from all lookup main
32767:	from all lookup default"#;

const B_ROUTE_TEXT: &str = r#"162.158.0.0/15 dev eth1 table 300 proto static scope link src 198.51.100.2 
anycast 198.51.100.77 dev eth1 table 300 scope link 
multicast 224.1.0.0/16 dev eth1 table 300 scope link 
unreachable default table 100 
throw 104.16.0.0/13 table 100 
108.162.192.0/18 via 198.51.100.1 dev eth1 table 100 
default table 200 
	nexthop via 192.0.2.1 dev eth0 weight 1 
	nexthop via 198.51.100.1 dev eth1 weight 2 
prohibit 141.101.64.0/18 table 200 
default via 192.0.2.1 dev eth0 
10.8.0.0/16 tos 0x10 dev eth1 scope link metric 5 
10.9.0.0/16 via 203.0.113.1 dev eth2 linkdown 
blackhole 173.245.48.0/20 
173.245.49.0/24 via 198.51.100.1 dev eth1 
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2 
198.51.100.0/24 dev eth1 proto kernel scope link src 198.51.100.2 
203.0.113.0/24 dev eth2 proto kernel scope link src 203.0.113.2 linkdown 
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1 
local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 
broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1 
local 192.0.2.2 dev eth0 table local proto kernel scope host src 192.0.2.2 
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.2 
local 198.51.100.2 dev eth1 table local proto kernel scope host src 198.51.100.2 
broadcast 198.51.100.255 dev eth1 table local proto kernel scope link src 198.51.100.2 
local 203.0.113.2 dev eth2 table local proto kernel scope host src 203.0.113.2 
broadcast 203.0.113.255 dev eth2 table local proto kernel scope link src 203.0.113.2 linkdown"#;

fn v(a: &str) -> u128 {
    addr_to_int(a.parse().unwrap()).1
}

fn sysctls(rp_all: u8, valid_mark: u8, linkdown_eth2: u8) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for i in ["all", "eth0", "eth1", "eth2", "lo"] {
        let rp = if i == "all" { rp_all } else { 0 };
        let vm = if i == "all" { valid_mark } else { 0 };
        let ld = if i == "eth2" { linkdown_eth2 } else { 0 };
        for (k, val) in [
            ("rp_filter", rp),
            ("src_valid_mark", vm),
            ("accept_local", 0),
            ("ignore_routes_with_linkdown", ld),
        ] {
            m.insert(format!("net.ipv4.conf.{i}.{k}"), val.to_string());
        }
    }
    m
}

fn scenario_a(rp_all: u8, valid_mark: u8, linkdown_eth2: u8) -> Routing {
    parse(&RoutingDumps {
        routes_v4: Some(A_ROUTES_V4.into()),
        routes_v6: Some(A_ROUTES_V6.into()),
        rules_v4: Some(A_RULES_V4.into()),
        rules_v6: Some(A_RULES_V6.into()),
        sysctls: sysctls(rp_all, valid_mark, linkdown_eth2),
    })
    .unwrap()
}

/// An output lookup (locally generated: iif lo), as `ip route get DST [mark M] [tos T]`.
fn out4(dst: &str, mark: u32, tos: u8) -> Flow {
    Flow {
        family: Family::V4,
        dst: v(dst),
        src: None,
        iif: Some("lo".into()),
        oif: None,
        mark,
        tos,
    }
}

/// (dev, gateway, table, rule priority) of a unicast decision.
fn unicast(d: &Decision) -> (String, String, String, u32) {
    match d {
        Decision::Unicast {
            dev,
            gateway,
            route,
            ..
        } => (
            dev.clone().unwrap_or_default(),
            gateway.map(|g| g.to_string()).unwrap_or_default(),
            route.table.clone(),
            route.rule_priority.unwrap_or(0),
        ),
        other => panic!("expected unicast, got {other:?}"),
    }
}

#[test]
fn blackhole_20_in_main_is_not_suppressed() {
    // kernel: `ip route get 173.245.48.5` → "RTNETLINK answers: Invalid argument" (blackhole).
    let r = scenario_a(0, 0, 0);
    match r.lookup(&out4("173.245.48.5", 0, 0)) {
        Decision::Blackhole(rr) => {
            assert_eq!(rr.table, "main");
            assert_eq!(rr.text, "blackhole 173.245.48.0/20");
            // Found by rule 300 (`lookup main suppress_prefixlength 0`): an error route is
            // returned before suppression applies.
            assert_eq!(rr.rule_priority, Some(300));
        }
        other => panic!("{other:?}"),
    }
    // kernel: `173.245.49.5 via 198.51.100.1 dev eth1` (the more specific /24).
    assert_eq!(
        unicast(&r.lookup(&out4("173.245.49.5", 0, 0))),
        ("eth1".into(), "198.51.100.1".into(), "main".into(), 300)
    );
}

#[test]
fn rule_to_cf_lookup_100_unreachable_default_and_throw() {
    let r = scenario_a(0, 0, 0);
    // kernel: `ip route get 104.16.0.1` → "RTNETLINK answers: No route to host".
    match r.lookup(&out4("104.16.0.1", 0, 0)) {
        Decision::Unreachable(rr) => {
            assert_eq!(rr.text, "unreachable default table 100");
            assert_eq!(rr.table, "100");
            assert_eq!(rr.rule_priority, Some(100));
        }
        other => panic!("{other:?}"),
    }
    // kernel: `104.17.0.1 via 192.0.2.1 dev eth0`: throw → next rules; rule 300 suppresses
    // main's default (/0 <= 0), table 300 has nothing, rule 32766 finds the default.
    assert_eq!(
        unicast(&r.lookup(&out4("104.17.0.1", 0, 0))),
        ("eth0".into(), "192.0.2.1".into(), "main".into(), 32766)
    );
}

#[test]
fn fwmark_rule_and_multipath_default() {
    let r = scenario_a(0, 0, 0);
    // kernel: `ip route get 8.8.8.8 mark 0x10` → `via 198.51.100.1 dev eth1 table 200` (one
    // nexthop, chosen by hash; the model lists both).
    match r.lookup(&out4("8.8.8.8", 0x10, 0)) {
        Decision::Unicast {
            nexthops, route, ..
        } => {
            let devs: Vec<_> = nexthops.iter().map(|h| h.dev.clone().unwrap()).collect();
            assert_eq!(devs, ["eth0", "eth1"]);
            assert_eq!(route.table, "200");
            assert_eq!(
                route.text,
                "default table 200 nexthop via 192.0.2.1 dev eth0 weight 1 nexthop via 198.51.100.1 dev eth1 weight 2"
            );
        }
        other => panic!("{other:?}"),
    }
    // mark 0x110 & 0xff = 0x10 matches too; 0x11 does not.
    assert_eq!(unicast(&r.lookup(&out4("8.8.8.8", 0x110, 0))).2, "200");
    assert_eq!(unicast(&r.lookup(&out4("8.8.8.8", 0x11, 0))).2, "main");
}

#[test]
fn goto_skips_table_300() {
    let r = scenario_a(0, 0, 0);
    // kernel: `162.158.1.1 via 198.51.100.1 dev eth1 table 300`.
    assert_eq!(
        unicast(&r.lookup(&out4("162.158.1.1", 0, 0))),
        ("eth1".into(), "198.51.100.1".into(), "300".into(), 32000)
    );
    // kernel: `ip route get 162.158.1.1 mark 0x20` → `via 192.0.2.1 dev eth0` (goto 32766).
    assert_eq!(
        unicast(&r.lookup(&out4("162.158.1.1", 0x20, 0))),
        ("eth0".into(), "192.0.2.1".into(), "main".into(), 32766)
    );
}

#[test]
fn linkdown_is_used_unless_ignored() {
    // kernel: `10.9.1.1 via 203.0.113.1 dev eth2` although eth2 is linkdown; after
    // `sysctl net.ipv4.conf.eth2.ignore_routes_with_linkdown=1`: `via 192.0.2.1 dev eth0`.
    let r = scenario_a(0, 0, 0);
    assert_eq!(unicast(&r.lookup(&out4("10.9.1.1", 0, 0))).0, "eth2");
    let r = scenario_a(0, 0, 1);
    assert_eq!(unicast(&r.lookup(&out4("10.9.1.1", 0, 0))).0, "eth0");
    // Without the sysctl the answer is not guessed.
    let mut r = scenario_a(0, 0, 0);
    r.sysctls.clear();
    assert!(matches!(
        r.lookup(&out4("10.9.1.1", 0, 0)),
        Decision::Undecided(_)
    ));
}

#[test]
fn route_tos() {
    let r = scenario_a(0, 0, 0);
    // kernel: `ip route get 10.8.0.1 tos 0x10` → `dev eth1`; without tos → `via 192.0.2.1 dev eth0`.
    assert_eq!(unicast(&r.lookup(&out4("10.8.0.1", 0, 0x10))).0, "eth1");
    assert_eq!(unicast(&r.lookup(&out4("10.8.0.1", 0, 0))).0, "eth0");
}

#[test]
fn bound_device_makes_failed_lookups_on_link() {
    // kernel: `ip route get 104.16.0.1 oif eth1` → `dev eth1` and `ip route get 173.245.48.5 oif
    // eth1` → `dev eth1`: with an oif, a failed IPv4 output lookup is assumed on-link.
    let r = scenario_a(0, 0, 0);
    for dst in ["104.16.0.1", "173.245.48.5"] {
        let mut f = out4(dst, 0, 0);
        f.oif = Some("eth1".into());
        assert_eq!(unicast(&r.lookup(&f)).0, "eth1", "{dst}");
    }
}

#[test]
fn v6_prohibit_and_default() {
    let r = scenario_a(0, 0, 0);
    let f = |dst: &str| Flow {
        family: Family::V6,
        dst: v(dst),
        src: Some(v("2001:db8:1::2")),
        iif: Some("lo".into()),
        oif: None,
        mark: 0,
        tos: 0,
    };
    // kernel: `ip -6 route get 2400:cb00::1` → "RTNETLINK answers: Permission denied".
    match r.lookup(&f("2400:cb00::1")) {
        Decision::Prohibit(rr) => {
            assert_eq!(
                rr.text,
                "prohibit 2400:cb00::/32 dev lo metric 1024 pref medium"
            )
        }
        other => panic!("{other:?}"),
    }
    // kernel: `2001:db8:99::1 via 2001:db8:1::1 dev eth0`.
    assert_eq!(unicast(&r.lookup(&f("2001:db8:99::1"))).0, "eth0");
    // A local address.
    assert!(matches!(r.lookup(&f("2001:db8:1::2")), Decision::Local(_)));
    assert_eq!(
        r.rp_filter(Family::V6, "eth0", v("2400:cb00::1"), v("2001:db8:1::2"), 0),
        RpResult::Pass
    );
}

/// rp_filter of a SYN to 192.0.2.2 arriving on eth0.
fn rp(r: &Routing, src: &str, mark: u32) -> RpResult {
    r.rp_filter(Family::V4, "eth0", v(src), v("192.0.2.2"), mark)
}

fn is_drop(x: &RpResult) -> bool {
    matches!(x, RpResult::Drop { .. })
}

#[test]
fn rp_filter_off_strict_loose() {
    // kernel, `ip route get 192.0.2.2 from SRC iif eth0 [mark M]` with all.rp_filter = 0/1/2:
    //   SRC 173.245.49.5 (back via eth1):        local / EINVAL / local
    //   SRC 173.245.48.5 (back to a blackhole):  local / EINVAL / EINVAL
    //   SRC 8.8.8.8 (back via eth0):             local / local  / local
    //   SRC 162.158.1.1 (table 300 via eth1):    local / EINVAL / local
    //   SRC 162.158.1.1 mark 0x20:               local / EINVAL / local
    let cases: [(&str, u32, [bool; 3]); 5] = [
        ("173.245.49.5", 0, [false, true, false]),
        ("173.245.48.5", 0, [false, true, true]),
        ("8.8.8.8", 0, [false, false, false]),
        ("162.158.1.1", 0, [false, true, false]),
        ("162.158.1.1", 0x20, [false, true, false]),
    ];
    for mode in 0..3u8 {
        let r = scenario_a(mode, 0, 0);
        for (src, mark, want) in cases {
            let got = rp(&r, src, mark);
            assert_eq!(
                is_drop(&got),
                want[mode as usize],
                "rp_filter={mode} {src}: {got:?}"
            );
        }
    }
    let r = scenario_a(1, 0, 0);
    match rp(&r, "173.245.48.5", 0) {
        RpResult::Drop { by: Some(b), .. } => assert_eq!(b.text, "blackhole 173.245.48.0/20"),
        other => panic!("{other:?}"),
    }
    match rp(&r, "173.245.49.5", 0) {
        RpResult::Drop {
            reason,
            by: Some(b),
        } => {
            assert!(reason.contains("strict"), "{reason}");
            assert_eq!(b.text, "173.245.49.0/24 via 198.51.100.1 dev eth1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rp_filter_src_valid_mark() {
    // kernel, rp_filter=1 and src_valid_mark=1: `from 162.158.1.1 iif eth0 mark 0x20` → local
    // (the mark sends the reverse lookup to main, via eth0); without the mark → EINVAL.
    let r = scenario_a(1, 1, 0);
    assert_eq!(rp(&r, "162.158.1.1", 0x20), RpResult::Pass);
    assert!(is_drop(&rp(&r, "162.158.1.1", 0)));
    // Missing sysctls are not guessed.
    let mut r = scenario_a(1, 0, 0);
    r.sysctls.remove("net.ipv4.conf.eth0.rp_filter");
    assert!(matches!(rp(&r, "8.8.8.8", 0), RpResult::Undecided(_)));
}

#[test]
fn default_rules_when_not_dumped() {
    let r = parse(&RoutingDumps {
        routes_v4: Some(A_ROUTES_V4.into()),
        ..Default::default()
    })
    .unwrap();
    assert!(r.v4.default_rules);
    let prios: Vec<u32> = r.v4.rules.iter().map(|x| x.priority).collect();
    assert_eq!(prios, [0, 32766, 32767]);
    // Without rule 100, 104.16.0.1 takes main's default.
    assert_eq!(unicast(&r.lookup(&out4("104.16.0.1", 0, 0))).0, "eth0");
    // IPv6 routes were not read: undecided, never "no route".
    let f = Flow {
        family: Family::V6,
        dst: v("2400:cb00::1"),
        ..out4("1.1.1.1", 0, 0)
    };
    assert!(matches!(r.lookup(&f), Decision::Undecided(_)));
}

fn scenario_b() -> Routing {
    parse(&RoutingDumps {
        routes_v4: Some(B_ROUTES_V4.into()),
        routes_v6: Some(B_ROUTES_V6.into()),
        rules_v4: Some(B_RULES_V4.into()),
        rules_v6: None,
        sysctls: sysctls(0, 0, 0),
    })
    .unwrap()
}

#[test]
fn texts_are_what_ip_prints() {
    let r = scenario_b();
    let want: Vec<String> = B_RULE_TEXT
        .lines()
        .map(|l| l.replace(":\t", ": "))
        .collect();
    let got: Vec<String> =
        r.v4.rules
            .iter()
            .map(|x| format!("{}: {}", x.priority, x.text))
            .collect();
    assert_eq!(got, want);
    // `ip route show table all`, one route a line (multipath nexthops joined).
    let plain = B_ROUTE_TEXT.replace("\n\tnexthop", " nexthop");
    let mut want: Vec<String> = plain
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut got: Vec<String> = r.v4.all_routes().map(|x| x.text.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn scenario_b_selectors() {
    let r = scenario_b();
    let rule = |p: u32| r.v4.rules.iter().find(|x| x.priority == p).unwrap();
    assert!(rule(400).not);
    assert_eq!(rule(400).src, Some((v("10.0.0.0"), 8)));
    assert_eq!(
        rule(400).action,
        RuleAction::Goto {
            target: Some(32000),
            unresolved: false
        }
    );
    assert_eq!(rule(530).action, RuleAction::Nop);
    assert_eq!((rule(530).fwmark, rule(530).fwmask), (5, u32::MAX));
    assert_eq!((rule(300).fwmark, rule(300).fwmask), (0x10, 0xff));
    assert_eq!(rule(520).tos, 0x10);
    assert_eq!(rule(1000).action, RuleAction::L3mdev);
    assert_eq!(rule(550).ipproto_tcp, Some(true));
    assert!(!rule(540).unsupported.is_empty()); // uidrange
    assert!(!rule(550).unsupported.is_empty()); // dport
    assert!(!rule(560).unsupported.is_empty()); // sport range
    // Rules 500/510/520: iif eth2 blackhole, oif eth1 unreachable, tos 0x10 prohibit. A
    // forwarded destination: for a local one rule 0 (`lookup local`) answers first.
    assert!(matches!(
        r.lookup(&Flow {
            dst: v("192.0.2.2"),
            iif: Some("eth2".into()),
            ..out4("0.0.0.0", 0, 0)
        }),
        Decision::Local(_)
    ));
    let input = |src: &str, iif: &str, tos: u8| Flow {
        family: Family::V4,
        dst: v("8.8.4.4"),
        src: Some(v(src)),
        iif: Some(iif.into()),
        oif: None,
        mark: 0,
        tos,
    };
    // Rule 400 `not from 10.0.0.0/8 iif eth1 goto 32000` jumps over 500..560 unless the packet
    // is from 10/8 on eth1; 32000 (from 10.1.0.0/16) does not match 8.8.8.8; 32001 `lookup main
    // suppress_ifgroup 5` finds the default via eth0, whose group is unknown → undecided.
    for (src, iif) in [
        ("8.8.8.8", "eth2"),
        ("10.2.3.4", "eth2"),
        ("8.8.8.8", "eth1"),
    ] {
        match r.lookup(&input(src, iif, 0)) {
            Decision::Undecided(why) => assert!(why.contains("suppress_ifgroup"), "{why}"),
            other => panic!("{src} {iif}: {other:?}"),
        }
    }
    // From 10/8 on eth1: no jump; 500 (iif eth2) and 510 (oif eth1) do not match; 520 `tos 0x10
    // prohibit` does for tos 0x10.
    assert!(matches!(
        r.lookup(&input("10.2.3.4", "eth1", 0x10)),
        Decision::Prohibit(_)
    ));
    // Tos 0: past 530 (`fwmark 0x5 nop`) to 540 (uidrange): undecided, not "does not match".
    match r.lookup(&input("10.2.3.4", "eth1", 0)) {
        Decision::Undecided(why) => assert!(why.contains("uidrange"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Mark 5 takes the `nop` and continues to the same place.
    let mut f = input("10.2.3.4", "eth1", 0);
    f.mark = 5;
    assert!(matches!(r.lookup(&f), Decision::Undecided(_)));
}

#[test]
fn rule_actions_blackhole_unreachable() {
    // Scenario B's rules without 400 (the `not … goto` that jumps over them).
    let rules: Vec<serde_json::Value> = serde_json::from_str(B_RULES_V4).unwrap();
    let kept: Vec<_> = rules.into_iter().filter(|r| r["priority"] != 400).collect();
    let r = parse(&RoutingDumps {
        routes_v4: Some(B_ROUTES_V4.into()),
        rules_v4: Some(serde_json::to_string(&kept).unwrap()),
        ..Default::default()
    })
    .unwrap();
    let f = Flow {
        dst: v("8.8.4.4"),
        src: Some(v("8.8.8.8")),
        iif: Some("eth2".into()),
        ..out4("0.0.0.0", 0, 0)
    };
    match r.lookup(&f) {
        Decision::Blackhole(rr) => {
            assert_eq!(rr.table, "rule");
            assert_eq!(rr.text, "500: from all iif eth2 blackhole");
        }
        other => panic!("{other:?}"),
    }
    // Output (iif lo) bound to eth1 hits `510: from all oif eth1 unreachable`, which the
    // IPv4 output path turns into on-link via eth1; unbound it goes on to 540 (uidrange).
    let mut out = out4("8.8.4.4", 0, 0);
    assert!(matches!(r.lookup(&out), Decision::Undecided(_)));
    out.oif = Some("eth1".into());
    match r.lookup(&out) {
        Decision::Unicast { route, .. } => assert!(
            route.text.contains("510: from all oif eth1 unreachable"),
            "{}",
            route.text
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parse_errors_name_command_and_entry() {
    let e = parse(&RoutingDumps {
        routes_v4: Some(r#"[{"dst":"300.1.2.0/24","dev":"eth0"}]"#.into()),
        ..Default::default()
    })
    .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("ip -j -4 route show table all") && s.contains("300.1.2.0"),
        "{s}"
    );
    let e = parse(&RoutingDumps {
        rules_v6: Some("Object \"rule\" is unknown".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("ip -j -6 rule show"), "{e}");
    // An IPv6 prefix in the IPv4 dump is an error, not a silent mismatch.
    assert!(
        parse(&RoutingDumps {
            routes_v4: Some(r#"[{"dst":"2001:db8::/32","dev":"eth0"}]"#.into()),
            ..Default::default()
        })
        .is_err()
    );
    // Empty output (some iproute2 versions print nothing) is no routes.
    let r = parse(&RoutingDumps {
        routes_v4: Some(String::new()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.lookup(&out4("1.1.1.1", 0, 0)), Decision::NoRoute);
}

#[test]
fn cuts_cover_routes_and_rules() {
    let r = scenario_a(0, 0, 0);
    let c = r.cuts();
    let has = |s: &str| c.contains(&crate::firewall::addr::AddrRange::parse(s).unwrap());
    assert!(has("173.245.48.0/20") && has("104.16.0.0/13") && has("104.17.0.0/16"));
    assert!(has("2400:cb00::/32") && has("0.0.0.0/0"));
}

#[test]
fn big_table_lookup_is_indexed() {
    // 20k routes: lookups go through the (prefix, len) index, not a scan.
    let mut rows = Vec::new();
    for i in 0..20_000u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
        rows.push(format!(r#"{{"dst":"{a}/24","dev":"eth0","flags":[]}}"#));
    }
    rows.push(r#"{"type":"blackhole","dst":"10.0.5.0/24","table":"7","flags":[]}"#.into());
    let r = parse(&RoutingDumps {
        routes_v4: Some(format!("[{}]", rows.join(","))),
        ..Default::default()
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    for i in 0..20_000u32 {
        let d = r.lookup(&out4(
            &std::net::Ipv4Addr::from(0x0a00_0001 + (i << 8)).to_string(),
            0,
            0,
        ));
        assert!(matches!(d, Decision::Unicast { .. }));
    }
    // Generous bound for a debug build on a shared machine; a scan would be 4e8 steps.
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(r.v4.tables[&TableId::Num(7)].routes.len(), 1);
}
