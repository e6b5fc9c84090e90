//! Parse + analysis time on generated rulesets: 10k iptables rules (kube-proxy-like fan-out of
//! user chains) and a 100k-element ipset ban list, 1% of it inside Cloudflare's ranges.
//! Run: `cargo bench --bench analysis`.

use criterion::{Criterion, criterion_group, criterion_main};
use origin_audit::analysis::{self, Options};
use origin_audit::snapshot::{DefaultRoute, Dumps, IfAddr, Interface, SNAPSHOT_SCHEMA, Snapshot};
use std::fmt::Write;
use std::hint::black_box;

/// 10k rules: 100 user chains of 99 rules each, jumped to by port, plus CF-range drops on an
/// unusual port so blocks get split.
fn rules_10k() -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in 0..100 {
        let _ = writeln!(s, ":SVC-{c} - [0:0]");
    }
    s.push_str("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    for c in 0..100 {
        let _ = writeln!(s, "-A INPUT -p tcp -m tcp --dport {} -j SVC-{c}", 30000 + c);
    }
    for c in 0..100 {
        for r in 0..98 {
            let i = c * 98 + r;
            if i % 50 == 0 {
                let _ = writeln!(
                    s,
                    "-A SVC-{c} -s 104.16.{}.0/24 -p tcp -m tcp --dport 443 -j DROP",
                    i % 256
                );
            } else {
                let _ = writeln!(s, "-A SVC-{c} -s 10.{}.{}.0/24 -j ACCEPT", i / 256, i % 256);
            }
        }
        let _ = writeln!(s, "-A SVC-{c} -j RETURN");
    }
    s.push_str("-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n");
    s
}

/// 100k-element hash:net ban list; every 100th element inside 162.158.0.0/15.
fn ipset_100k() -> String {
    let mut s = String::from("create bans hash:net family inet hashsize 65536 maxelem 262144\n");
    for i in 0u32..100_000 {
        if i % 100 == 0 {
            let k = i / 100;
            let _ = writeln!(s, "add bans 162.158.{}.{}", k / 256, k % 256);
        } else {
            let a = 0x0b00_0000u32 + i * 7;
            let _ = writeln!(
                s,
                "add bans {}.{}.{}.{}",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            );
        }
    }
    s
}

fn snapshot(ipt: String, ipset: Option<String>) -> Snapshot {
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
        dumps: Dumps {
            iptables_nft_save: Some(ipt),
            ipset_save: ipset,
            ..Default::default()
        },
        ranges: origin_audit::ranges::cloudflare()
            .bundled_ranges()
            .expect("bundled ranges"),
        read_errors: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let big = snapshot(rules_10k(), None);
    let mut g = c.benchmark_group("ruleset-10k-rules");
    g.sample_size(10);
    g.bench_function("parse", |b| b.iter(|| black_box(analysis::prepare(&big))));
    let p = analysis::prepare(&big);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.ruleset.rule_count() >= 10_000);
    g.bench_function("analyse", |b| {
        b.iter(|| black_box(analysis::analyze_prepared(&big, &p, &opts)))
    });
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&big, &opts)))
    });
    g.finish();

    let set = snapshot(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set bans src -j DROP\nCOMMIT\n"
            .into(),
        Some(ipset_100k()),
    );
    let mut g = c.benchmark_group("ipset-100k-elements");
    g.sample_size(10);
    g.bench_function("parse", |b| b.iter(|| black_box(analysis::prepare(&set))));
    let p = analysis::prepare(&set);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    g.bench_function("analyse", |b| {
        b.iter(|| black_box(analysis::analyze_prepared(&set, &p, &opts)))
    });
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&set, &opts)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
