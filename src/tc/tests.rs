//! Tests of the tc model against real dumps.
//!
//! Every constant below was captured on this project's build machine (kernel 6.18.44,
//! iproute2-6.1.0 `tc`/`ip`, libbpf 1.1.2) inside a private namespace (`ip netns add
//! tc-test-$$`), from these commands (act_gact, flower, matchall and police are not built into
//! that kernel, so drops are `mirred egress mirror dev v2 drop`, which returns TC_ACT_SHOT):
//!
//! ```text
//! ip link add v0 type veth peer name v1; ip link add v2 type veth peer name v3
//! ip link add v8 type veth peer name v9          # v8 stays down
//! tc qdisc add dev v0 clsact; tc qdisc add dev v1 clsact; tc qdisc add dev v2 ingress
//! tc filter add dev v0 ingress pref 10 protocol ip u32 match ip src 173.245.48.0/20 action mirred egress mirror dev v2 drop
//! tc filter add dev v0 ingress pref 20 protocol ipv6 u32 match ip6 src 2400:cb00::/32 action mirred egress mirror dev v2 drop
//! tc filter add dev v0 ingress pref 30 protocol ip u32 match ip dport 443 0xffff action mirred egress redirect dev v8
//! tc filter add dev v0 ingress pref 40 protocol ip u32 match tcp dst 80 0xffff action mirred egress mirror dev v2 drop
//! tc filter add dev v0 egress pref 5 protocol ip u32 match ip dst 173.245.48.0/20 action mirred egress mirror dev v2 drop
//! tc filter add dev v1 ingress pref 1 handle 1: protocol ip u32 divisor 1
//! tc filter add dev v1 ingress pref 1 protocol ip u32 ht 1: match tcp dst 8443 0xffff action mirred egress mirror dev v2 drop
//! tc filter add dev v1 ingress pref 1 protocol ip u32 ht 800: match ip protocol 6 0xff link 1: offset at 0 mask 0f00 shift 6
//! tc filter add dev v1 egress pref 3 bpf da obj prog.o sec classifier   # prog assembled with llvm-mc 14
//! tc filter add dev v2 ingress pref 1 protocol ip u32 match ip dport 443 0xffff action mirred egress mirror dev v3 goto chain 5
//! tc filter add dev v2 ingress chain 5 pref 2 protocol ip u32 match ip src 173.245.48.0/20 action mirred egress mirror dev v3 drop
//! ip link set dev v1 xdpgeneric obj prog.o sec xdp
//! ```

#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

use super::*;
use crate::firewall::Family;
use crate::firewall::addr::{AddrRange, addr_to_int};
use std::net::IpAddr;

/// `tc -j filter show dev v0 ingress`
const V0_INGRESS: &str = r#"[{"protocol":"ip","pref":10,"kind":"u32","chain":0},{"protocol":"ip","pref":10,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":10,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"adf53000","mask":"fffff000","offmask":"","off":12},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v2","control_action":{"type":"drop"},"index":1,"ref":1,"bind":1}]}},{"protocol":"ipv6","pref":20,"kind":"u32","chain":0},{"protocol":"ipv6","pref":20,"kind":"u32","chain":0,"options":{"fh":"801:","ht_divisor":1}},{"protocol":"ipv6","pref":20,"kind":"u32","chain":0,"options":{"fh":"801::800","order":2048,"key_ht":"801","bkt":"0","not_in_hw":true,"match":{"value":"2400cb00","mask":"ffffffff","offmask":"","off":8},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v2","control_action":{"type":"drop"},"index":2,"ref":1,"bind":1}]}},{"protocol":"ip","pref":30,"kind":"u32","chain":0},{"protocol":"ip","pref":30,"kind":"u32","chain":0,"options":{"fh":"802:","ht_divisor":1}},{"protocol":"ip","pref":30,"kind":"u32","chain":0,"options":{"fh":"802::800","order":2048,"key_ht":"802","bkt":"0","not_in_hw":true,"match":{"value":"1bb","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"v8","control_action":{"type":"stolen"},"index":3,"ref":1,"bind":1}]}},{"protocol":"ip","pref":40,"kind":"u32","chain":0},{"protocol":"ip","pref":40,"kind":"u32","chain":0,"options":{"fh":"803:","ht_divisor":1}},{"protocol":"ip","pref":40,"kind":"u32","chain":0,"options":{"fh":"803::800","order":2048,"key_ht":"803","bkt":"0","not_in_hw":true,"match":{"value":"50","mask":"ffff","offmask":"nexthdr+","off":0},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v2","control_action":{"type":"drop"},"index":4,"ref":1,"bind":1}]}}]"#;

/// `tc -j filter show dev v0 egress`
const V0_EGRESS: &str = r#"[{"protocol":"ip","pref":5,"kind":"u32","chain":0},{"protocol":"ip","pref":5,"kind":"u32","chain":0,"options":{"fh":"804:","ht_divisor":1}},{"protocol":"ip","pref":5,"kind":"u32","chain":0,"options":{"fh":"804::800","order":2048,"key_ht":"804","bkt":"0","not_in_hw":true,"match":{"value":"adf53000","mask":"fffff000","offmask":"","off":16},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v2","control_action":{"type":"drop"},"index":5,"ref":1,"bind":1}]}}]"#;

/// `tc -j filter show dev v1 ingress`
const V1_INGRESS: &str = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":0},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"1:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"1::800","order":2048,"key_ht":"1","bkt":"0","not_in_hw":true,"match":{"value":"20fb","mask":"ffff","offmask":"nexthdr+","off":0},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v2","control_action":{"type":"drop"},"index":6,"ref":1,"bind":1}]}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","link":"1:","not_in_hw":true,"match":{"value":"60000","mask":"ff0000","offmask":"","off":8},"    offset ","offset_mask":"f00","offset_shift":6,"offset_off":0}}]"#;

/// `tc -j filter show dev v1 egress`
const V1_EGRESS: &str = r#"[{"protocol":"all","pref":3,"kind":"bpf","chain":0},{"protocol":"all","pref":3,"kind":"bpf","chain":0,"options":{"handle":"0x1","bpf_name":"prog.o:[classifier]","direct-action":true,"not_in_hw":true,"prog":{"id":29,"name":"cls_drop","tag":"614b434cd8324ecc","jited":1}}}]"#;

/// `tc -j filter show dev v2 ingress`
const V2_INGRESS: &str = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":0},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"1bb","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v3","control_action":{"type":"goto","chain":5},"index":7,"ref":1,"bind":1}]}},{"protocol":"ip","pref":2,"kind":"u32","chain":5},{"protocol":"ip","pref":2,"kind":"u32","chain":5,"options":{"fh":"801:","ht_divisor":1}},{"protocol":"ip","pref":2,"kind":"u32","chain":5,"options":{"fh":"801::800","order":2048,"key_ht":"801","bkt":"0","not_in_hw":true,"match":{"value":"adf53000","mask":"fffff000","offmask":"","off":12},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"v3","control_action":{"type":"drop"},"index":8,"ref":1,"bind":1}]}}]"#;

/// `tc -j qdisc show`
const QDISCS: &str = r#"[{"kind":"noqueue","handle":"0:","dev":"v1","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","dev":"v1","parent":"ffff:fff1","options":{}},{"kind":"noqueue","handle":"0:","dev":"v0","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","dev":"v0","parent":"ffff:fff1","options":{}},{"kind":"noqueue","handle":"0:","dev":"v2","root":true,"refcnt":2,"options":{}},{"kind":"ingress","handle":"ffff:","dev":"v2","parent":"ffff:fff1","options":{}}]"#;

/// `ip -j -d link show`
const LINKS: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","promiscuity":0,"allmulti":0,"min_mtu":0,"max_mtu":0,"inet6_addr_gen_mode":"eui64","num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":2,"link":"v0","ifname":"v1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"xdp":{"mode":2,"prog":{"id":34,"name":"xdp_pass","tag":"614b434cd8324ecc","jited":1,"load_time":3619272979168,"created_by_uid":0},"attached":[{"mode":2,"prog":{"id":34,"name":"xdp_pass","tag":"614b434cd8324ecc","jited":1,"load_time":3619272979168,"created_by_uid":0}}]},"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"8a:e9:03:38:a4:b2","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":3,"link":"v1","ifname":"v0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"fe:b0:b1:cd:53:76","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":4,"link":"v2","ifname":"v3","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"e2:7b:9a:7b:a7:d7","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":5,"link":"v3","ifname":"v2","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"ae:65:33:cf:39:23","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":6,"link":"v8","ifname":"v9","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"82:05:81:6c:77:30","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536},{"ifindex":7,"link":"v9","ifname":"v8","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"f6:00:db:ea:50:95","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"inet6_addr_gen_mode":"eui64","num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536}]"#;

fn dumps() -> NetdevDumps {
    let f = |dev: &str, dir: &str, json: &str| TcDump {
        dev: dev.into(),
        direction: dir.into(),
        json: json.into(),
    };
    NetdevDumps {
        links: Some(LINKS.into()),
        qdiscs: Some(QDISCS.into()),
        filters: vec![
            f("v0", "ingress", V0_INGRESS),
            f("v0", "egress", V0_EGRESS),
            f("v1", "ingress", V1_INGRESS),
            f("v1", "egress", V1_EGRESS),
            f("v2", "ingress", V2_INGRESS),
        ],
    }
}

fn ip(s: &str) -> (Family, u128) {
    addr_to_int(s.parse::<IpAddr>().unwrap())
}

/// A SYN from `src` to `dst`:`dport` from an ephemeral port.
fn syn(src: &str, dst: &str, dport: u16) -> TcPacket {
    let (family, s) = ip(src);
    TcPacket {
        family,
        src: Some(s),
        dst: Some(ip(dst).1),
        proto: 6,
        sport: None,
        dport: Some(dport),
        tcp_flags: Some(0x02),
    }
}

/// The SYN-ACK answering `syn`.
fn synack(src: &str, sport: u16, dst: &str) -> TcPacket {
    let (family, s) = ip(src);
    TcPacket {
        family,
        src: Some(s),
        dst: Some(ip(dst).1),
        proto: 6,
        sport: Some(sport),
        dport: None,
        tcp_flags: Some(0x12),
    }
}

/// pref 40 (`match tcp dst 80` without a link) reads the IPv4 total length: every IPv4 packet
/// that gets past prefs 10-30 of v0 ingress ends there, conditional.
fn reaches_pref_40(v: &TcVerdict) -> bool {
    matches!(v, TcVerdict::Conditional { by, desc } if by.pref == 40 && desc.contains("otherwise it passes"))
}

fn dropped_by(v: &TcVerdict) -> Option<u32> {
    match v {
        TcVerdict::Drop { by, .. } => Some(by.pref),
        _ => None,
    }
}

#[test]
fn ingress_u32_drops_cloudflare_source_prefix() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v0",
        TcDir::Ingress,
        &syn("173.245.48.10", "192.0.2.1", 8080),
    );
    assert_eq!(dropped_by(&v), Some(10), "{v:?}");
    if let TcVerdict::Drop { by, why } = &v {
        assert_eq!(by.handle, "800::800");
        assert!(
            by.text.contains("match adf53000/fffff000 at 12"),
            "{}",
            by.text
        );
        assert!(why.contains("drop"), "{why}");
    }
    // Just outside the /20.
    let v = nd.decide(
        "v0",
        TcDir::Ingress,
        &syn("173.245.64.1", "192.0.2.1", 8080),
    );
    assert!(reaches_pref_40(&v), "{v:?}");
}

#[test]
fn egress_u32_drops_answers_to_cloudflare() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v0",
        TcDir::Egress,
        &synack("192.0.2.1", 443, "173.245.50.1"),
    );
    assert_eq!(dropped_by(&v), Some(5), "{v:?}");
    // The SYN itself is not judged by egress filters of another device.
    assert!(!nd.has_filters("v2", TcDir::Egress));
    assert!(nd.has_filters("v0", TcDir::Egress));
}

#[test]
fn ipv6_source_prefix_and_ipv6_filter_ignores_ipv4() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v0",
        TcDir::Ingress,
        &syn("2400:cb00:1::5", "2001:db8::1", 8080),
    );
    assert_eq!(dropped_by(&v), Some(20), "{v:?}");
    // Outside the /32: the IPv4 filters (`protocol ip`, prefs 10, 30, 40) do not see IPv6.
    let v = nd.decide(
        "v0",
        TcDir::Ingress,
        &syn("2400:cb01::5", "2001:db8::1", 443),
    );
    assert_eq!(v, TcVerdict::Pass);
    // pref 20 is `protocol ipv6`: an IPv4 packet skips it and goes on to 40.
    let v = nd.decide("v0", TcDir::Ingress, &syn("10.0.0.1", "192.0.2.1", 8080));
    assert!(reaches_pref_40(&v), "{v:?}");
}

#[test]
fn dport_match_and_redirect_to_down_device() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide("v0", TcDir::Ingress, &syn("198.51.100.7", "192.0.2.1", 443));
    match &v {
        TcVerdict::Drop { by, why } => {
            assert_eq!(by.pref, 30);
            assert!(why.contains("v8"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flat_nexthdr_key_reads_the_ip_header_not_the_port() {
    // pref 40 `match tcp dst 80` in a filter without a link: the kernel reads offset 0
    // (verified in a namespace: such a filter did not drop a SYN to that port). Bytes 2-3 are
    // the IPv4 total length, which the packet class does not fix.
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide("v0", TcDir::Ingress, &syn("198.51.100.7", "192.0.2.1", 80));
    match &v {
        TcVerdict::Conditional { desc, by } => {
            assert_eq!(by.pref, 40);
            assert!(desc.contains("IPv4 total length"), "{desc}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn linked_table_with_ihl_offset_matches_the_tcp_port() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v1",
        TcDir::Ingress,
        &syn("198.51.100.7", "192.0.2.1", 8443),
    );
    match &v {
        TcVerdict::Drop { by, .. } => {
            assert_eq!(by.handle, "1::800");
            assert!(by.text.contains("at nexthdr+0"), "{}", by.text);
        }
        other => panic!("{other:?}"),
    }
    let v = nd.decide(
        "v1",
        TcDir::Ingress,
        &syn("198.51.100.7", "192.0.2.1", 8444),
    );
    assert_eq!(v, TcVerdict::Pass);
    // ICMP: protocol 1 fails `match ip protocol 6`.
    let mut icmp = syn("198.51.100.7", "192.0.2.1", 8443);
    icmp.proto = 1;
    icmp.dport = None;
    assert_eq!(nd.decide("v1", TcDir::Ingress, &icmp), TcVerdict::Pass);
}

#[test]
fn bpf_direct_action_is_conditional() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v1",
        TcDir::Egress,
        &synack("192.0.2.1", 443, "173.245.50.1"),
    );
    match &v {
        TcVerdict::Conditional { desc, by } => {
            assert_eq!(by.kind, "bpf");
            assert!(
                desc.contains("cls_drop") && desc.contains("direct-action"),
                "{desc}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn goto_chain_continues_in_that_chain() {
    let nd = parse(&dumps()).unwrap();
    let v = nd.decide(
        "v2",
        TcDir::Ingress,
        &syn("173.245.48.10", "192.0.2.1", 443),
    );
    assert_eq!(dropped_by(&v), Some(2), "{v:?}");
    // Not port 443: pref 1 does not match; chain 5 is never reached.
    let v = nd.decide("v2", TcDir::Ingress, &syn("173.245.48.10", "192.0.2.1", 80));
    assert_eq!(v, TcVerdict::Pass);
}

#[test]
fn xdp_attachment_is_exposed() {
    let nd = parse(&dumps()).unwrap();
    let x = nd.xdp("v1");
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(x[0].mode, XdpMode::Generic);
    assert_eq!(x[0].name.as_deref(), Some("xdp_pass"));
    assert_eq!(x[0].tag.as_deref(), Some("614b434cd8324ecc"));
    assert!(nd.xdp("v0").is_empty());
}

#[test]
fn cuts_are_the_address_prefixes() {
    let nd = parse(&dumps()).unwrap();
    let cuts = nd.cuts();
    let r = |s: &str| AddrRange::from_net(s.parse().unwrap());
    assert!(cuts.contains(&r("173.245.48.0/20")), "{cuts:?}");
    assert!(cuts.contains(&r("2400:cb00::/32")), "{cuts:?}");
    assert_eq!(cuts.len(), 2, "{cuts:?}");
}

#[test]
fn ephemeral_source_port_key() {
    // Synthetic (derived from the captured pref 30 shape, key moved to the source port at 20):
    // `match ip sport 80 0xffff` can never match a port of 1024-65535; `match ip sport 0x8000
    // 0x8000` matches half of them.
    let low = V0_INGRESS.replace(
        "\"value\":\"1bb\",\"mask\":\"ffff\",\"offmask\":\"\",\"off\":20",
        "\"value\":\"500000\",\"mask\":\"ffff0000\",\"offmask\":\"\",\"off\":20",
    );
    assert_ne!(low, V0_INGRESS);
    let block = parse::parse_filters(&low, "test").unwrap();
    let nd = Netdev {
        blocks: [(("v0".to_string(), TcDir::Ingress), block)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let v = nd.decide("v0", TcDir::Ingress, &syn("198.51.100.7", "192.0.2.1", 443));
    assert!(reaches_pref_40(&v), "{v:?}");
    let half = V0_INGRESS.replace(
        "\"value\":\"1bb\",\"mask\":\"ffff\",\"offmask\":\"\",\"off\":20",
        "\"value\":\"80000000\",\"mask\":\"80000000\",\"offmask\":\"\",\"off\":20",
    );
    let block = parse::parse_filters(&half, "test").unwrap();
    let nd = Netdev {
        blocks: [(("v0".to_string(), TcDir::Ingress), block)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    match nd.decide("v0", TcDir::Ingress, &syn("198.51.100.7", "192.0.2.1", 443)) {
        TcVerdict::Conditional { desc, by } => {
            assert_eq!(by.pref, 30);
            assert!(desc.contains("ephemeral"), "{desc}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn offset_and_eat_json_of_iproute2_6_1_is_repaired() {
    let nd = parse(&dumps()).unwrap();
    assert!(nd.has_filters("v1", TcDir::Ingress));
    let bad = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","key_ht":"800","link":"1:","match":{"value":"60000","mask":"ff0000","offmask":"","off":8}," eat "}}]"#;
    let b = parse::parse_filters(bad, "test").unwrap();
    let TpBody::U32(u) = &b.chains[&0][0].body else {
        panic!()
    };
    assert!(u.knodes[0].eat);
}

#[test]
fn bad_json_names_the_command() {
    let mut d = dumps();
    d.filters[0].json = "[{".into();
    let e = parse(&d).unwrap_err().to_string();
    assert!(e.contains("tc -j filter show dev v0 ingress"), "{e}");
}

#[test]
fn shared_u32_prio_across_chains_is_conditional() {
    // Captured too (same machine, see the report): chain 5 pref 1 and chain 0 pref 1 share
    // their u32 tables, and each is listed under both.
    let json = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":5},{"protocol":"ip","pref":1,"kind":"u32","chain":5,"options":{"fh":"801:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":5,"options":{"fh":"801::800","order":2048,"key_ht":"801","bkt":"0","not_in_hw":true,"match":{"value":"20fb","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"lo","control_action":{"type":"goto","chain":5},"index":3,"ref":1,"bind":1}]}},{"protocol":"ip","pref":1,"kind":"u32","chain":5,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":5,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"0","mask":"0","offmask":"","off":0},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"lo","control_action":{"type":"drop"},"index":2,"ref":1,"bind":1}]}},{"protocol":"ip","pref":1,"kind":"u32","chain":0},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"801:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"801::800","order":2048,"key_ht":"801","bkt":"0","not_in_hw":true,"match":{"value":"20fb","mask":"ffff","offmask":"","off":20},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"lo","control_action":{"type":"goto","chain":5},"index":3,"ref":1,"bind":1}]}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"0","mask":"0","offmask":"","off":0},"actions":[{"order":1,"kind":"mirred","mirred_action":"mirror","direction":"egress","to_dev":"lo","control_action":{"type":"drop"},"index":2,"ref":1,"bind":1}]}}]"#;
    let block = parse::parse_filters(json, "test").unwrap();
    let nd = Netdev {
        blocks: [(("v1".to_string(), TcDir::Ingress), block)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    match nd.decide("v1", TcDir::Ingress, &syn("10.9.0.1", "10.9.0.2", 8443)) {
        TcVerdict::Conditional { desc, .. } => assert!(desc.contains("share"), "{desc}"),
        other => panic!("{other:?}"),
    }
}
