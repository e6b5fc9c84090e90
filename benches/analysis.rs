//! Parse + analysis time on generated rulesets: 10k iptables rules (kube-proxy-like fan-out of
//! user chains) and a 100k-element ipset ban list, 1% of it inside Cloudflare's ranges.
//! Run: `cargo bench --bench analysis`.

use criterion::{Criterion, criterion_group, criterion_main};
use origin_audit::analysis::{self, Options};
use origin_audit::ranges::{ProviderRanges, RangeSource};
use origin_audit::snapshot::{DefaultRoute, Dumps, IfAddr, Interface, SNAPSHOT_SCHEMA, Snapshot};
use std::fmt::Write;
use std::hint::black_box;

const CF_V4: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
];
const CF_V6: &[&str] = &[
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

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
        dumps: Dumps {
            iptables_nft_save: Some(ipt),
            ipset_save: ipset,
            ..Default::default()
        },
        ranges: ProviderRanges {
            provider: "cloudflare".into(),
            source: RangeSource::Bundled,
            as_of: "2026-11-26".into(),
            ipv4: CF_V4.iter().map(|s| s.parse().expect("v4")).collect(),
            ipv6: CF_V6.iter().map(|s| s.parse().expect("v6")).collect(),
            etag: None,
            problems: vec![],
        },
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
