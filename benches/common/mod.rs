//! What the benchmarks share: the snapshot of a host (one interface, 203.0.113.2/24 on eth0,
//! a default route, no listeners) around generated dumps, and the generators whose output
//! `scripts/bench-dumps` loads into a namespace to time the kernel's own dump tools on the
//! same state.
#![allow(dead_code)] // each bench binary uses its own part

use origin_audit::snapshot::{DefaultRoute, Dumps, IfAddr, Interface, SNAPSHOT_SCHEMA, Snapshot};
use std::fmt::Write;

pub fn snapshot(ipt: String, ipset: Option<String>) -> Snapshot {
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        taken_at: "2026-11-26T00:00:00Z".into(),
        hostname: None,
        listeners: Some(vec![]),
        interfaces: vec![Interface {
            name: "eth0".into(),
            up: true,
            addrs: vec![IfAddr {
                addr: "203.0.113.2".parse().expect("addr"),
                prefix_len: 24,
                scope: "global".into(),
            }],
        }],
        default_routes: vec![DefaultRoute {
            family: origin_audit::firewall::Family::V4,
            iface: "eth0".into(),
            gateway: None,
        }],
        bindv6only: Some(false),
        forwarding: Default::default(),
        routing: None,
        netdev: None,
        conntrack: None,
        counters: None,
        dumps: Dumps {
            iptables_nft_save: Some(ipt),
            ipset_save: ipset,
            ..Default::default()
        },
        ranges: origin_audit::ranges::cloudflare()
            .bundled_ranges()
            .expect("bundled ranges"),
        read_errors: vec![],
        tls: None,
    }
}

/// An iptables-restore ruleset shaped like kube-proxy's iptables mode (the layout of
/// `tests/scenarios/tools/kube-proxy-rules.py`: KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with
/// `-m statistic` and DNAT, KUBE-NODEPORTS/KUBE-EXT-* for every tenth service, the filter
/// table's KUBE-PROXY-FIREWALL with a loadBalancerSourceRanges chain on 443 of the node).
/// About 7.3 rules per service: `services = 13_700` gives 100k rules.
pub fn kube_proxy(services: usize) -> String {
    let (mut nat_chains, mut nat) = (Vec::new(), String::new());
    let name = |kind: &str, key: &str| format!("KUBE-{kind}-{:016X}", fnv(key));
    for i in 0..services {
        let key = format!("team{}/svc-{i}:http", i % 37);
        let svc = name("SVC", &key);
        nat_chains.push(svc.clone());
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES -d 10.96.{}.{}/32 -p tcp -m comment --comment \"{key} cluster IP\" -m tcp --dport 80 -j {svc}",
            (i / 250) % 256,
            i % 250 + 1
        );
        let eps = 1 + i % 3;
        for k in 0..eps {
            let ip = format!("10.244.{}.{}", (i + k) % 200, (i * 7 + k) % 250 + 2);
            let sep = name("SEP", &format!("{key}{ip}"));
            nat_chains.push(sep.clone());
            let left = eps - k;
            if left > 1 {
                let _ = writeln!(
                    nat,
                    "-A {svc} -m comment --comment \"{key} -> {ip}:8080\" -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(
                    nat,
                    "-A {svc} -m comment --comment \"{key} -> {ip}:8080\" -j {sep}"
                );
            }
            let _ = writeln!(
                nat,
                "-A {sep} -s {ip}/32 -m comment --comment \"{key}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                nat,
                "-A {sep} -p tcp -m comment --comment \"{key}\" -m tcp -j DNAT --to-destination {ip}:8080"
            );
        }
        if i % 10 == 0 {
            let ext = name("EXT", &key);
            nat_chains.push(ext.clone());
            let _ = writeln!(
                nat,
                "-A KUBE-NODEPORTS -p tcp -m comment --comment \"{key}\" -m tcp --dport {} -j {ext}",
                30000 + i % 2768
            );
            let _ = writeln!(nat, "-A {ext} -j KUBE-MARK-MASQ\n-A {ext} -j {svc}");
        }
    }
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-SERVICES - [0:0]\n",
    );
    nat_chains.sort();
    nat_chains.dedup();
    for c in &nat_chains {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    s.push_str(&nat);
    s.push_str(
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :KUBE-FIREWALL - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-FW-INGRESS - [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -j KUBE-FIREWALL\n\
         -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
         -A KUBE-PROXY-FIREWALL -d 203.0.113.2/32 -p tcp -m tcp --dport 443 -j KUBE-FW-INGRESS\n",
    );
    // A stale loadBalancerSourceRanges list: Cloudflare's IPv4 ranges without 131.0.72.0/22.
    let cf = origin_audit::ranges::cloudflare()
        .bundled_ranges()
        .expect("bundled ranges");
    for cidr in cf.ipv4.iter().filter(|n| n.to_string() != "131.0.72.0/22") {
        let _ = writeln!(s, "-A KUBE-FW-INGRESS -s {cidr} -j RETURN");
    }
    s.push_str("-A KUBE-FW-INGRESS -j DROP\nCOMMIT\n");
    s
}

/// FNV-1a: stable chain-name hashes without a dependency (kube-proxy uses sha256 → base32;
/// only uniqueness and length matter here).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `ipset save` of one hash:net set of `n` entries, `inside` of them /32s inside Cloudflare's
/// 104.16.0.0/13 (distinct, spread), the rest outside any provider range.
pub fn ipset(name: &str, n: u32, inside: u32) -> String {
    let mut s = format!(
        "create {name} hash:net family inet hashsize 65536 maxelem {}\n",
        n.next_power_of_two().max(65536)
    );
    let stride = n / inside.max(1);
    for i in 0..n {
        let a = if inside > 0 && i % stride == 0 && i / stride < inside {
            (104u32 << 24 | 16 << 16) + (i / stride) * 5
        } else {
            0x0b00_0000u32 + i * 3
        };
        let _ = writeln!(
            s,
            "add {name} {}.{}.{}.{}",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255
        );
    }
    s
}

/// 5,000 rules before the web ports' accept, none matching Cloudflare's SYN: decidable
/// (source /24s elsewhere) or not (DSCP, TTL, MAC, time, string: 1,000 of each, in turn).
pub fn rules_5k(undecidable: bool) -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let kinds = [
        "-m dscp --dscp 0x0a",
        "-m ttl --ttl-lt 5",
        "-m mac --mac-source 02:00:00:00:00:01",
        "-m time --timestart 01:00 --timestop 02:00",
        "-m string --algo bm --string evil",
    ];
    for i in 0..5000 {
        if undecidable {
            let _ = writeln!(s, "-A INPUT -p tcp {} -j DROP", kinds[i % kinds.len()]);
        } else {
            let _ = writeln!(
                s,
                "-A INPUT -p tcp -s 10.{}.{}.0/24 -j DROP",
                i / 256,
                i % 256
            );
        }
    }
    s.push_str("-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n");
    s
}
