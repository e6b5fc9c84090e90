//! The scale figures of the README's Performance section, each beside what the kernel's own
//! dump tool takes for the same state (`scripts/bench-dumps` loads these very inputs into a
//! private namespace and times `iptables-nft-save`, `ipset save`; the ratio is the figure):
//! - `kube-proxy/{1k,10k,100k}`: parse + analysis of a kube-proxy-like ruleset (cost linear
//!   in the rules);
//! - `rules-5k/{plain,undecidable}`: 5,000 rules the model decides vs 5,000 it cannot
//!   (DSCP, TTL, MAC, time, string);
//! - `ipset-1m`: a 1M-entry ban list (1 % inside Cloudflare's ranges) behind one drop rule;
//! - `boundaries-100k-json`: 100k distinct /32s inside one Cloudflare range, analysed and
//!   written as `--format json` (to a sink);
//! - `real-chair-2016`: the largest real ruleset we know (diekmann/net-network,
//!   configs_chair_for_Network_Architectures_and_Services, 2016-06-27: 5.6k IPv4 + 6.2k IPv6
//!   rules; CC BY-NC-SA, so not in this repository): run only when `OA_BENCH_REAL_DIR` holds
//!   `v4.rules` and `v6.rules` with the censored MACs replaced (`scripts/bench-dumps` does it).
//!
//! Run: `cargo bench --bench scale`. With `OA_BENCH_WRITE=DIR` the generated inputs are also
//! written to DIR.

mod common;

use common::{ipset, kube_proxy, rules_5k, snapshot};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use origin_audit::analysis::{self, Options};
use std::hint::black_box;

const KUBE: [(&str, usize); 3] = [("1k", 137), ("10k", 1_370), ("100k", 13_700)];

fn write_inputs() {
    let Some(dir) = std::env::var_os("OA_BENCH_WRITE") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for (label, services) in KUBE {
        std::fs::write(
            dir.join(format!("kube-{label}.rules")),
            kube_proxy(services),
        )
        .expect("write kube rules");
    }
    std::fs::write(dir.join("ipset-1m.ipset"), ipset("bans", 1_000_000, 10_000))
        .expect("write ipset");
    std::fs::write(
        dir.join("ipset-100k-cf.ipset"),
        ipset("bans", 100_000, 100_000),
    )
    .expect("write ipset");
    std::fs::write(dir.join("ban-rule.rules"), BAN_RULE).expect("write ban rule");
}

const BAN_RULE: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -m set --match-set bans src -j DROP\nCOMMIT\n";

fn bench_kube(c: &mut Criterion) {
    write_inputs();
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let mut g = c.benchmark_group("kube-proxy");
    g.sample_size(10);
    for (label, services) in KUBE {
        let snap = snapshot(kube_proxy(services), None);
        let p = analysis::prepare(&snap);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let n = p.ruleset.rule_count();
        assert!(
            (services * 7..services * 8).contains(&n),
            "{label}: {n} rules"
        );
        // The stale loadBalancerSourceRanges list drops 131.0.72.0/22 on 443: the walk
        // through KUBE-PROXY-FIREWALL must find it, or this measures a shortcut.
        let r = analysis::analyze_prepared(&snap, &p, &opts);
        assert!(
            r.reachability.iter().any(|row| row.port == 443
                && row.source.starts_with("131.0.72.")
                && row.verdict == analysis::VerdictKind::Drop),
            "{label}: the stale allowlist's drop was not found"
        );
        g.bench_function(BenchmarkId::new("parse+analyse", label), |b| {
            b.iter(|| black_box(analysis::analyze(&snap, &opts)))
        });
    }
    g.finish();
}

fn bench_undecidable(c: &mut Criterion) {
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let mut g = c.benchmark_group("rules-5k");
    g.sample_size(10);
    for (label, undecidable) in [("plain", false), ("undecidable", true)] {
        let snap = snapshot(rules_5k(undecidable), None);
        let r = analysis::analyze(&snap, &opts);
        // No listener in the bench snapshot: a decided SYN passes the firewall and meets the
        // socket layer's refusal; an undecided one is conditional.
        assert!(
            r.reachability.iter().all(|row| if undecidable {
                row.verdict == analysis::VerdictKind::Conditional
            } else {
                row.past_the_firewall()
            }),
            "{label}"
        );
        g.bench_function(label, |b| {
            b.iter(|| black_box(analysis::analyze(&snap, &opts)))
        });
    }
    g.finish();
}

fn bench_sets(c: &mut Criterion) {
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let mut g = c.benchmark_group("ipset-1m");
    g.sample_size(10);
    let snap = snapshot(BAN_RULE.into(), Some(ipset("bans", 1_000_000, 10_000)));
    let r = analysis::analyze(&snap, &opts);
    assert!(
        r.reachability
            .iter()
            .any(|row| row.verdict == analysis::VerdictKind::Drop)
    );
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&snap, &opts)))
    });
    g.finish();

    let mut g = c.benchmark_group("boundaries-100k-json");
    g.sample_size(10);
    let snap = snapshot(BAN_RULE.into(), Some(ipset("bans", 100_000, 100_000)));
    let r = analysis::analyze(&snap, &opts);
    assert!(
        r.reachability.len() > 100_000,
        "{} rows",
        r.reachability.len()
    );
    g.bench_function("parse+analyse+json", |b| {
        b.iter(|| {
            let r = analysis::analyze(&snap, &opts);
            serde_json::to_writer_pretty(std::io::sink(), &origin_audit::render::json::report(&r))
                .expect("json");
        })
    });
    g.finish();
}

fn bench_real(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("OA_BENCH_REAL_DIR") else {
        eprintln!("real-chair-2016: skipped (set OA_BENCH_REAL_DIR; see scripts/bench-dumps)");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("OA_BENCH_REAL_DIR file");
    let mut snap = snapshot(read("v4.rules"), None);
    snap.dumps.ip6tables_nft_save = Some(read("v6.rules"));
    // Both families analysed, as on a dual-stack host.
    snap.interfaces[0]
        .addrs
        .push(origin_audit::snapshot::IfAddr {
            addr: "2001:db8::2".parse().expect("addr"),
            prefix_len: 64,
            scope: "global".into(),
        });
    snap.default_routes
        .push(origin_audit::snapshot::DefaultRoute {
            family: origin_audit::firewall::Family::V6,
            iface: "eth0".into(),
            gateway: None,
        });
    let opts = Options::new(time::OffsetDateTime::now_utc());
    let p = analysis::prepare(&snap);
    assert!(
        p.ruleset.rule_count() > 11_000,
        "{}",
        p.ruleset.rule_count()
    );
    let mut g = c.benchmark_group("real-chair-2016");
    g.sample_size(20);
    g.bench_function("parse+analyse", |b| {
        b.iter(|| black_box(analysis::analyze(&snap, &opts)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_kube,
    bench_undecidable,
    bench_sets,
    bench_real
);
criterion_main!(benches);
