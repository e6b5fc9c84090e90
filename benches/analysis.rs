//! Parse + analysis time on generated rulesets: 10k iptables rules (kube-proxy-like fan-out of
//! user chains), a 100k-element ipset ban list (1% of it inside Cloudflare's ranges), a 10k-rule
//! restrictive OUTPUT chain (every answer walks it: the reply path), and 10k routes (the SYN's
//! route, the reverse-path check and the answer's route).
//! Run: `cargo bench --bench analysis`. `scripts/bench-dumps` times the kernel's own dump tools
//! (`iptables-nft-save`, `ip -j route show table all`) on the same generated state, for ratios.

use criterion::{Criterion, criterion_group, criterion_main};
mod common;

use common::snapshot;
use origin_audit::analysis::{self, Options};
use origin_audit::snapshot::Snapshot;
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

/// OUTPUT DROP with ~10k rules: 100 egress user chains by destination /16 of 98 rules each
/// (every 50th drops a /24 inside 104.16.0.0/13: an outbound blocklist), then the web ports'
/// answers allowed by source port. INPUT accepts the web ports.
pub fn output_10k() -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n");
    for c in 0..100 {
        let _ = writeln!(s, ":EGR-{c} - [0:0]");
    }
    s.push_str("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    s.push_str("-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\n");
    s.push_str("-A OUTPUT -o lo -j ACCEPT\n");
    for c in 0..100 {
        let _ = writeln!(s, "-A OUTPUT -d 10.{c}.0.0/16 -j EGR-{c}");
    }
    for c in 0..100 {
        let _ = writeln!(s, "-A OUTPUT -d 104.{}.0.0/16 -j EGR-{c}", 16 + c % 8);
    }
    for c in 0..100 {
        for r in 0..98 {
            let i = c * 98 + r;
            if i % 50 == 0 {
                let _ = writeln!(s, "-A EGR-{c} -d 104.{}.{}.0/24 -j DROP", 16 + c % 8, r);
            } else {
                let _ = writeln!(
                    s,
                    "-A EGR-{c} -d 10.{c}.{r}.0/24 -p tcp -m tcp --dport {} -j ACCEPT",
                    5000 + r
                );
            }
        }
        let _ = writeln!(s, "-A EGR-{c} -j RETURN");
    }
    s.push_str("-A OUTPUT -p tcp -m multiport --sports 80,443 -j ACCEPT\nCOMMIT\n");
    s
}

/// `ip -j -4 route show table all` with 10k routes: /24s via the gateway, every 100th inside
/// 104.16.0.0/13 through a second interface (asymmetric) or a blackhole, plus the kernel's own.
pub fn routes_10k() -> String {
    let mut v = vec![
        r#"{"dst":"default","gateway":"203.0.113.1","dev":"eth0","flags":[]}"#.to_string(),
        r#"{"dst":"203.0.113.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"203.0.113.2","flags":[]}"#.to_string(),
        r#"{"dst":"192.0.2.0/24","dev":"lan0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]}"#.to_string(),
        r#"{"type":"local","dst":"203.0.113.2","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"203.0.113.2","flags":[]}"#.to_string(),
        r#"{"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]}"#.to_string(),
    ];
    for i in 0u32..10_000 {
        if i % 100 == 0 {
            let k = i / 100;
            if k % 2 == 0 {
                v.push(format!(
                    r#"{{"dst":"104.{}.{}.0/24","gateway":"192.0.2.1","dev":"lan0","flags":[]}}"#,
                    16 + k % 8,
                    k
                ));
            } else {
                v.push(format!(
                    r#"{{"type":"blackhole","dst":"104.{}.{}.0/24","flags":[]}}"#,
                    16 + k % 8,
                    k
                ));
            }
        } else {
            v.push(format!(
                r#"{{"dst":"10.{}.{}.0/24","gateway":"203.0.113.1","dev":"eth0","flags":[]}}"#,
                i / 256,
                i % 256
            ));
        }
    }
    format!("[{}]", v.join(","))
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

fn with_routes(mut snap: Snapshot, routes: String) -> Snapshot {
    let mut sysctls = std::collections::BTreeMap::new();
    sysctls.insert("net.ipv4.conf.all.rp_filter".to_string(), "1".to_string());
    sysctls.insert("net.ipv4.conf.eth0.rp_filter".to_string(), "1".to_string());
    snap.routing = Some(origin_audit::routing::RoutingDumps {
        routes_v4: Some(routes),
        rules_v4: Some(
            r#"[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]"#
                .into(),
        ),
        sysctls,
        ..Default::default()
    });
    snap
}

/// `ip -batch` lines that build the routes [`routes_10k`] describes (for `scripts/bench-dumps`).
fn routes_10k_batch() -> String {
    let mut s = String::new();
    for i in 0u32..10_000 {
        if i % 100 == 0 {
            let k = i / 100;
            if k % 2 == 0 {
                let _ = writeln!(
                    s,
                    "route add 104.{}.{}.0/24 via 192.0.2.1 dev lan0",
                    16 + k % 8,
                    k
                );
            } else {
                let _ = writeln!(s, "route add blackhole 104.{}.{}.0/24", 16 + k % 8, k);
            }
        } else {
            let _ = writeln!(
                s,
                "route add 10.{}.{}.0/24 via 203.0.113.1",
                i / 256,
                i % 256
            );
        }
    }
    s
}

fn bench_round_trip(c: &mut Criterion) {
    let opts = Options::new(time::OffsetDateTime::now_utc());
    // `scripts/bench-dumps` loads the very state measured here into a namespace and times the
    // kernel's dump tools on it.
    if let Some(dir) = std::env::var_os("OA_BENCH_WRITE") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::write(dir.join("output-10k.rules"), output_10k()).expect("write rules");
        std::fs::write(dir.join("routes-10k.batch"), routes_10k_batch()).expect("write routes");
    }
    let out = snapshot(output_10k(), None);
    let p = analysis::prepare(&out);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.ruleset.rule_count() >= 10_000);
    // The outbound blocklist must decide some rows on the reply path, or this measures nothing.
    let r = analysis::analyze_prepared(&out, &p, &opts);
    assert!(
        r.reachability
            .iter()
            .any(|row| row.rule.as_ref().is_some_and(|x| x.direction
                == origin_audit::firewall::Direction::Reply
                && x.position > 0)),
        "no reply-path culprit"
    );
    let mut g = c.benchmark_group("output-10k-rules");
    g.sample_size(10);
    g.bench_function("parse", |b| b.iter(|| black_box(analysis::prepare(&out))));
    g.bench_function("analyse", |b| {
        b.iter(|| black_box(analysis::analyze_prepared(&out, &p, &opts)))
    });
    g.finish();

    let routed = with_routes(
        snapshot(
            "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".into(),
            None,
        ),
        routes_10k(),
    );
    let p = analysis::prepare(&routed);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let r = analysis::analyze_prepared(&routed, &p, &opts);
    assert!(
        r.reachability
            .iter()
            .any(|row| row.rule.as_ref().is_some_and(|x| matches!(
                x.backend,
                origin_audit::firewall::Backend::Route | origin_audit::firewall::Backend::Kernel
            ))),
        "no route or reverse-path check decided anything"
    );
    let mut g = c.benchmark_group("routes-10k");
    g.sample_size(10);
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&routed, &opts)))
    });
    g.finish();
}

fn bench_conditional(c: &mut Criterion) {
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let snap = snapshot(common::rules_5k(true), None);
    let p = analysis::prepare(&snap);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let r = analysis::analyze_prepared(&snap, &p, &opts);
    // Five conditions, each decided once per branch: never the evaluation cap.
    assert!(
        r.reachability
            .iter()
            .all(|row| row.verdict == analysis::VerdictKind::Conditional
                && !row.conditions.iter().any(|c| c.contains("combinations")))
    );
    let mut g = c.benchmark_group("conditional-5k-rules");
    g.sample_size(10);
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&snap, &opts)))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_round_trip, bench_conditional);
criterion_main!(benches);
