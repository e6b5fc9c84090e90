//! The analysis on real dumps (tests/fixtures, each produced by the real tools — see their
//! headers): verdicts, the rule quoted, findings. No root needed: dumps in, report out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use origin_audit::analysis::{self, Options, Report, VerdictKind};
use origin_audit::findings::Code;
use origin_audit::firewall::addr::AddrRange;
use origin_audit::ranges;
use origin_audit::snapshot::{
    DefaultRoute, Dumps, IfAddr, Interface, Listener, SNAPSHOT_SCHEMA, Snapshot,
};
use std::net::IpAddr;

fn fixture(p: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn listener(a: &str, port: u16) -> Listener {
    Listener {
        address: a.parse().unwrap(),
        port,
        process: Some("nginx".into()),
        pid: Some(100),
        v6only: Some(true),
        bound_iface: None,
        accept_queue: None,
        backlog: None,
    }
}

/// A host with eth0 203.0.113.2/24 + 2001:db8:1::2/64 and nginx on 80/443 (v4 and v6).
fn host(dumps: Dumps) -> Snapshot {
    let provider = ranges::cloudflare();
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        taken_at: "2026-11-26T00:00:00Z".into(),
        hostname: Some("origin".into()),
        listeners: Some(
            [80, 443, 8080]
                .iter()
                .flat_map(|p| [listener("0.0.0.0", *p), listener("::", *p)])
                .collect(),
        ),
        interfaces: vec![
            Interface {
                name: "lo".into(),
                up: true,
                addrs: vec![IfAddr {
                    addr: "127.0.0.1".parse().unwrap(),
                    prefix_len: 8,
                    scope: "host".into(),
                }],
            },
            Interface {
                name: "eth0".into(),
                up: true,
                addrs: vec![
                    IfAddr {
                        addr: "203.0.113.2".parse().unwrap(),
                        prefix_len: 24,
                        scope: "global".into(),
                    },
                    IfAddr {
                        addr: "2001:db8:1::2".parse().unwrap(),
                        prefix_len: 64,
                        scope: "global".into(),
                    },
                ],
            },
        ],
        default_routes: vec![
            DefaultRoute {
                family: origin_audit::firewall::Family::V4,
                iface: "eth0".into(),
                gateway: None,
            },
            DefaultRoute {
                family: origin_audit::firewall::Family::V6,
                iface: "eth0".into(),
                gateway: None,
            },
        ],
        bindv6only: Some(false),
        forwarding: Default::default(),
        dumps,
        ranges: provider.bundled_ranges().unwrap(),
        routing: None,
        netdev: None,
        conntrack: None,
        counters: None,
        read_errors: vec![],
        tls: None,
    }
}

fn opts(ports: &[u16]) -> Options {
    let mut o = Options::new(time::OffsetDateTime::now_utc());
    o.ports = ports.to_vec();
    o.max_age_days = 100_000; // staleness has its own test
    o
}

/// Verdicts of every row on `port` overlapping `cidr`.
fn verdicts(r: &Report, port: u16, cidr: &str) -> Vec<VerdictKind> {
    let want = AddrRange::parse(cidr).unwrap();
    let mut v: Vec<VerdictKind> = r
        .reachability
        .iter()
        .filter(|row| row.port == port)
        .filter(|row| {
            let a = AddrRange::parse(&row.source).unwrap();
            a.family == want.family && a.start <= want.end && want.start <= a.end
        })
        .map(|row| row.verdict)
        .collect();
    v.dedup();
    v
}

fn row_rule_text(r: &Report, port: u16, cidr: &str) -> Option<String> {
    r.reachability
        .iter()
        .find(|row| row.port == port && row.source == cidr)
        .and_then(|row| row.rule.as_ref().map(|x| x.text.clone()))
}

fn codes(r: &Report) -> Vec<Code> {
    r.findings.iter().map(|f| f.code).collect()
}

#[test]
fn crowdsec_ban_set_drops_exactly_the_banned_cloudflare_addresses() {
    let r = analysis::analyze(
        &host(Dumps {
            nft_json: vec![fixture("nft/crowdsec.json")],
            ..Default::default()
        }),
        &opts(&[80, 443]),
    );
    for port in [80, 443] {
        assert_eq!(verdicts(&r, port, "173.245.48.1/32"), [VerdictKind::Drop]);
        assert_eq!(verdicts(&r, port, "173.245.48.0/32"), [VerdictKind::Accept]);
        assert_eq!(verdicts(&r, port, "173.245.48.2/31"), [VerdictKind::Accept]);
        assert_eq!(verdicts(&r, port, "2400:cb00::1/128"), [VerdictKind::Drop]);
        assert_eq!(verdicts(&r, port, "104.16.0.0/13"), [VerdictKind::Accept]);
    }
    assert_eq!(
        row_rule_text(&r, 443, "173.245.48.1/32").as_deref(),
        Some("ip saddr @crowdsec-blacklists drop")
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.code == Code::RangeDropped)
        .unwrap();
    assert_eq!(f.cf_error, Some(522));
    assert_eq!(f.ports, [80, 443]);
    assert_eq!(r.status.exit_code(), 2);
}

#[test]
fn firewalld_zone_rejects_port_80_except_the_allowed_range() {
    let s = host(Dumps {
        nft_json: vec![fixture("nft/firewalld.json")],
        ..Default::default()
    });
    let r = analysis::analyze(&s, &opts(&[80, 443]));
    assert_eq!(verdicts(&r, 443, "0.0.0.0/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 443, "::/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 80, "173.245.48.0/20"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 80, "104.16.0.0/13"), [VerdictKind::Reject]);
    let row = r
        .reachability
        .iter()
        .find(|x| x.port == 80 && x.source == "104.16.0.0/13")
        .unwrap();
    assert_eq!(row.cf_error, Some(521));
    let rule = row.rule.as_ref().unwrap();
    assert_eq!(
        (rule.table.as_str(), rule.chain.as_str()),
        ("firewalld", "filter_IN_public")
    );
    assert!(codes(&r).contains(&Code::RangeRejected));
    // Arriving on a trusted interface (wg*), everything is accepted.
    let mut o = opts(&[80, 443]);
    o.ifaces = vec!["wg0".into()];
    o.dests = vec!["203.0.113.2".parse().unwrap()];
    let r = analysis::analyze(&s, &o);
    // The firewall accepts everything from wg0, but the route back to Cloudflare leaves by
    // eth0 (its connected subnet / default route): whether the answer arrives depends on
    // that path — conditional, with the asymmetric route named.
    assert_eq!(verdicts(&r, 80, "0.0.0.0/0"), [VerdictKind::Conditional]);
    let row = r.reachability.iter().find(|x| x.port == 80).unwrap();
    assert!(
        row.conditions
            .iter()
            .any(|c| c.contains("asymmetric route")),
        "{:?}",
        row.conditions
    );
    assert!(codes(&r).contains(&Code::AsymmetricRoute));
}

#[test]
fn ufw_policy_drop_and_deny_from_a_cloudflare_range() {
    let r = analysis::analyze(
        &host(Dumps {
            iptables_nft_save: Some(fixture("iptables/ufw-v4.nft.rules")),
            ip6tables_nft_save: Some(fixture("iptables/ufw-v6.nft.rules")),
            ..Default::default()
        }),
        &opts(&[80, 443]),
    );
    // `ufw allow 443/tcp` comes before `ufw deny from 173.245.48.0/20`.
    assert_eq!(verdicts(&r, 443, "0.0.0.0/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 443, "::/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 80, "104.16.0.0/13"), [VerdictKind::Drop]);
    let deny = r
        .reachability
        .iter()
        .find(|x| x.port == 80 && x.source == "173.245.48.0/20")
        .unwrap();
    assert_eq!(
        deny.rule.as_ref().unwrap().text,
        "-A ufw-user-input -s 173.245.48.0/20 -j DROP"
    );
    assert_eq!(deny.rule.as_ref().unwrap().position, 5);
    let pol = r
        .reachability
        .iter()
        .find(|x| x.port == 80 && x.source == "104.16.0.0/13")
        .unwrap();
    assert_eq!(
        pol.rule.as_ref().unwrap().position,
        0,
        "the INPUT policy decides"
    );
}

#[test]
fn fail2ban_bans_reject_only_the_banned_address() {
    let s = host(Dumps {
        iptables_nft_save: Some(fixture("iptables/fail2ban-v4.nft.rules")),
        ipset_save: Some(fixture("ipset/fail2ban.ipset")),
        ..Default::default()
    });
    let r = analysis::analyze(&s, &opts(&[80, 443]));
    assert_eq!(verdicts(&r, 443, "0.0.0.0/0"), [VerdictKind::Accept]);
    assert_eq!(r.status.exit_code(), 0, "{:#?}", r.findings);
    let (e, errs) = analysis::explain(
        &s,
        &opts(&[80]),
        "198.51.100.23".parse().unwrap(),
        80,
        false,
    );
    assert!(errs.is_empty());
    assert_eq!(e.verdict, VerdictKind::Reject);
    let rule = e.rule.unwrap();
    assert!(rule.text.contains("--match-set f2b-nginx-http-auth src"));
    assert_eq!(e.path.last(), Some(&rule));
}

#[test]
fn verdict_maps_pick_the_element_or_continue() {
    let r = analysis::analyze(
        &host(Dumps {
            nft_json: vec![fixture("nft/vmaps.json")],
            ..Default::default()
        }),
        &opts(&[80, 443, 8080]),
    );
    assert_eq!(verdicts(&r, 80, "0.0.0.0/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 443, "0.0.0.0/0"), [VerdictKind::Accept]);
    assert_eq!(verdicts(&r, 8080, "0.0.0.0/0"), [VerdictKind::Drop]);
    assert_eq!(
        row_rule_text(&r, 8080, "173.245.48.0/20").as_deref(),
        Some("tcp dport vmap @portv")
    );
}

#[test]
fn nat_redirect_is_followed_to_the_port_where_the_packet_lands() {
    let s = host(Dumps {
        nft_json: vec![fixture("nft/nat.json")],
        ..Default::default()
    });
    // 8080 is redirected to :80, where nginx listens.
    let (e, _) = analysis::explain(
        &s,
        &opts(&[8080]),
        "173.245.48.1".parse().unwrap(),
        8080,
        false,
    );
    assert_eq!(e.verdict, VerdictKind::Accept);
    assert!(
        e.lands.as_deref().unwrap().contains(":80, listening"),
        "{:?}",
        e.lands
    );
    // 8443 is DNATed to another host: forwarded, no local listener needed.
    let (e, _) = analysis::explain(
        &s,
        &opts(&[8443]),
        "173.245.48.1".parse().unwrap(),
        8443,
        false,
    );
    assert!(
        e.lands
            .as_deref()
            .unwrap()
            .starts_with("forwarded to 10.0.0.5:443"),
        "{:?}",
        e.lands
    );
}

#[test]
fn every_reject_form_is_a_521() {
    let r = analysis::analyze(
        &host(Dumps {
            nft_json: vec![fixture("nft/rejects.json")],
            ..Default::default()
        }),
        &opts(&[80, 443]),
    );
    assert_eq!(r.status.exit_code(), 0);
    let s = host(Dumps {
        nft_json: vec![fixture("nft/rejects.json")],
        ..Default::default()
    });
    for port in 1..=8u16 {
        let (e, _) =
            analysis::explain(&s, &opts(&[]), "173.245.48.1".parse().unwrap(), port, false);
        if port == 5 {
            // `meta nfproto ipv6` only: an IPv4 packet passes the firewall, and nothing listens
            // on port 5: the kernel's RST refuses it (521, decided by the socket layer).
            assert_eq!((e.verdict, e.cf_error), (VerdictKind::Reject, Some(521)));
            assert_eq!(
                e.rule.map(|r| r.backend),
                Some(origin_audit::firewall::Backend::Socket)
            );
            continue;
        }
        assert_eq!(
            (e.verdict, e.cf_error),
            (VerdictKind::Reject, Some(521)),
            "port {port}"
        );
    }
}

#[test]
fn mixed_backends_and_the_server_ruleset() {
    let s = host(Dumps {
        iptables_legacy_save: Some(fixture("iptables/server-v4.legacy.rules")),
        nft_json: vec![fixture("nft/crowdsec.json")],
        ..Default::default()
    });
    let r = analysis::analyze(&s, &opts(&[80, 443]));
    assert!(codes(&r).contains(&Code::MixedBackends));
    // Every row names its rule or is accepted; nothing is silently treated as a match.
    for row in &r.reachability {
        if row.verdict != VerdictKind::Accept {
            assert!(row.rule.is_some() || !row.conditions.is_empty(), "{row:?}");
        }
    }
}

#[test]
fn unparsable_dump_makes_the_status_unknown_and_names_the_line() {
    let s = host(Dumps {
        iptables_nft_save: Some(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 1.2.3.400 -j DROP\nCOMMIT\n".into(),
        ),
        ..Default::default()
    });
    let r = analysis::analyze(&s, &opts(&[443]));
    assert_eq!(r.status.exit_code(), 3);
    let f = r
        .findings
        .iter()
        .find(|f| f.code == Code::DumpUnparsable)
        .unwrap();
    assert!(
        f.message.contains("iptables-nft-save line 3"),
        "{}",
        f.message
    );
}

#[test]
fn stale_ranges_and_missing_listeners_are_findings() {
    let mut s = host(Dumps::default());
    s.listeners = Some(vec![listener("127.0.0.1", 443)]);
    let mut o = opts(&[80, 443]);
    o.max_age_days = 30;
    o.now = time::macros::datetime!(2030-01-01 0:00 UTC);
    let r = analysis::analyze(&s, &o);
    let c = codes(&r);
    assert!(c.contains(&Code::RangesStale));
    assert!(c.contains(&Code::NoListener), "{c:?}");
    let lo = r
        .findings
        .iter()
        .find(|f| f.code == Code::ListenerLoopbackOnly)
        .unwrap();
    assert_eq!(lo.ports, [443]);
    assert_eq!(lo.cf_error, Some(521));
    assert!(lo.message.contains("127.0.0.1"));
}

#[test]
fn no_provider_address_is_left_out_of_the_matrix() {
    let s = host(Dumps {
        nft_json: vec![fixture("nft/crowdsec.json")],
        ..Default::default()
    });
    let r = analysis::analyze(&s, &opts(&[443]));
    // Rows partition the provider ranges exactly: same number of addresses, no overlap.
    let mut rows: Vec<AddrRange> = r
        .reachability
        .iter()
        .map(|x| AddrRange::parse(&x.source).unwrap())
        .collect();
    rows.sort();
    for w in rows.windows(2) {
        assert!(w[0].family != w[1].family || w[0].end < w[1].start, "{w:?}");
    }
    let total = |v: &[AddrRange]| v.iter().map(|a| a.end - a.start + 1).sum::<u128>();
    let provider: Vec<AddrRange> = s
        .ranges
        .ipv4
        .iter()
        .map(|n| AddrRange::from_net((*n).into()))
        .chain(
            s.ranges
                .ipv6
                .iter()
                .map(|n| AddrRange::from_net((*n).into())),
        )
        .collect();
    assert_eq!(total(&rows), total(&provider));
    let _: IpAddr = "::".parse().unwrap();
}

#[test]
fn a_reuseport_group_with_a_full_member_drops_some_syns_and_names_the_counters() {
    let mut snap = host(Dumps::default());
    let ls = snap.listeners.as_mut().unwrap();
    let mut full = listener("0.0.0.0", 443);
    full.accept_queue = Some(512);
    full.backlog = Some(511);
    let mut ok = listener("0.0.0.0", 443);
    ok.accept_queue = Some(0);
    ok.backlog = Some(511);
    ls.retain(|l| !(l.port == 443 && l.address.is_ipv4()));
    ls.extend([full.clone(), ok]);
    snap.counters = Some(origin_audit::kstat::KernelCounters {
        listen_overflows: Some(41),
        listen_drops: Some(43),
        ..Default::default()
    });
    let r = analysis::analyze(&snap, &opts(&[80, 443]));
    assert_eq!(
        verdicts(&r, 443, "173.245.48.0/20"),
        vec![VerdictKind::Conditional]
    );
    assert_eq!(
        verdicts(&r, 443, "2400:cb00::/32"),
        vec![VerdictKind::Accept]
    );
    assert_eq!(
        verdicts(&r, 80, "173.245.48.0/20"),
        vec![VerdictKind::Accept]
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.code == Code::ListenQueueFull)
        .expect("listen-queue-full finding");
    assert!(f.message.contains("SO_REUSEPORT"), "{}", f.message);
    assert!(
        f.message.contains("ListenOverflows 41, ListenDrops 43"),
        "{}",
        f.message
    );

    // Every member full: every SYN is dropped.
    let ls = snap.listeners.as_mut().unwrap();
    ls.retain(|l| !(l.port == 443 && l.address.is_ipv4()));
    ls.extend([full.clone(), full]);
    let r = analysis::analyze(&snap, &opts(&[443]));
    assert_eq!(
        verdicts(&r, 443, "173.245.48.0/20"),
        vec![VerdictKind::Drop]
    );
}

#[test]
fn identical_undecidable_rules_fork_once_and_sampling_still_forks() {
    // 3,000 copies of one DSCP drop: the packet's DSCP is one value, so the branch that did not
    // match the first copy does not match any other (no 2^N combinations, no evaluation cap).
    let mut dump =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for _ in 0..3000 {
        dump.push_str("-A INPUT -p tcp -m dscp --dscp 0x0a -j DROP\n");
    }
    dump.push_str("COMMIT\n");
    let r = analysis::analyze(
        &host(Dumps {
            iptables_nft_save: Some(dump),
            ..Default::default()
        }),
        &opts(&[443]),
    );
    let row = r
        .reachability
        .iter()
        .find(|x| x.source == "173.245.48.0/20")
        .unwrap();
    assert_eq!(row.verdict, VerdictKind::Conditional);
    assert_eq!(
        row.conditions,
        vec!["the DSCP field matches (-m dscp --dscp 0x0a)".to_string()]
    );
    // `statistic` draws at every rule: two rules are two independent conditions.
    let dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                -A INPUT -p tcp -m statistic --mode random --probability 0.5 -j ACCEPT\n\
                -A INPUT -p tcp -m statistic --mode random --probability 0.5 -j ACCEPT\n\
                -A INPUT -p tcp -j DROP\nCOMMIT\n";
    let r = analysis::analyze(
        &host(Dumps {
            iptables_nft_save: Some(dump.into()),
            ..Default::default()
        }),
        &opts(&[443]),
    );
    let e = analysis::explain(
        &host(Dumps {
            iptables_nft_save: Some(dump.into()),
            ..Default::default()
        }),
        &opts(&[443]),
        "173.245.48.1".parse().unwrap(),
        443,
        false,
    )
    .0;
    assert_eq!(
        verdicts(&r, 443, "173.245.48.0/20"),
        vec![VerdictKind::Conditional]
    );
    // Picked by the first, by the second, or by neither (then dropped).
    assert_eq!(e.outcomes.len(), 3, "{:?}", e.outcomes);
}
