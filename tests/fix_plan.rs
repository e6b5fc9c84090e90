//! `fix` without root: plan, proof and emitted forms on the real fixtures (tests/fixtures, each
//! with a header saying how it was produced) and on hand-written dumps.
//!
//! The strongest check here: the emitted iptables-restore / nft text is applied to the dump text
//! the way the tools would (`-I CHAIN N` / `-A CHAIN`, `insert … position HANDLE`), the result is
//! parsed and analysed again by origin-audit, and every Cloudflare row must be `accept` — so a
//! wrong position or a wrong set name in the emitted form fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use origin_audit::analysis::{self, Options, VerdictKind};
use origin_audit::firewall::Family;
use origin_audit::fix::{self, Anchor, Manager, Plan, emit};
use origin_audit::ranges;
use origin_audit::snapshot::{DefaultRoute, Dumps, IfAddr, Interface, SNAPSHOT_SCHEMA, Snapshot};

fn fixture(p: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// eth0 with 203.0.113.2/24 and 2001:db8:1::2/64, the default routes on it.
fn host(dumps: Dumps) -> Snapshot {
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        taken_at: "2026-11-26T00:00:00Z".into(),
        hostname: None,
        listeners: None,
        interfaces: vec![Interface {
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
        }],
        default_routes: vec![
            DefaultRoute {
                family: Family::V4,
                iface: "eth0".into(),
                gateway: None,
            },
            DefaultRoute {
                family: Family::V6,
                iface: "eth0".into(),
                gateway: None,
            },
        ],
        bindv6only: Some(false),
        forwarding: Default::default(),
        dumps,
        ranges: ranges::cloudflare().bundled_ranges().unwrap(),
        routing: None,
        netdev: None,
        conntrack: None,
        counters: None,
        read_errors: vec![],
        tls: None,
    }
}

fn opts() -> Options {
    let mut o = Options::new(time::OffsetDateTime::now_utc());
    o.max_age_days = 100_000;
    o
}

fn bad_rows(s: &Snapshot) -> usize {
    analysis::analyze(s, &opts())
        .reachability
        .iter()
        .filter(|r| r.verdict != VerdictKind::Accept)
        .count()
}

/// Applies an `iptables-restore --noflush` file (only `-I CHAIN N` / `-A CHAIN` lines, as emitted)
/// to an `iptables-save` dump, the way iptables-restore does: in order, positions 1-based.
fn apply_ipt(save: &str, restore: &str) -> String {
    // table → chain → rules ("-A CHAIN …" lines), keeping the header/chain declarations.
    let mut out: Vec<String> = save.lines().map(String::from).collect();
    let mut table = String::new();
    for l in restore.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        let (chain, pos, spec) = match words.as_slice() {
            ["-I", chain, pos, rest @ ..] => (
                chain.to_string(),
                Some(pos.parse::<usize>().unwrap()),
                rest.join(" "),
            ),
            ["-A", chain, rest @ ..] => (chain.to_string(), None, rest.join(" ")),
            _ => continue,
        };
        // Locate the table block and the chain's rules in it.
        let start = out
            .iter()
            .position(|x| *x == format!("*{table}"))
            .expect("table in dump");
        let end = start + out[start..].iter().position(|x| x == "COMMIT").unwrap();
        let prefix = format!("-A {chain} ");
        let idxs: Vec<usize> = (start..end)
            .filter(|&i| out[i].starts_with(&prefix))
            .collect();
        let line = format!("-A {chain} {spec}");
        let at = match pos {
            Some(p) if p >= 1 && p <= idxs.len() => idxs[p - 1],
            Some(p) if p == idxs.len() + 1 => idxs.last().map(|i| i + 1).unwrap_or(end),
            Some(p) => panic!("-I {chain} {p}: chain has {} rules", idxs.len()),
            None => idxs.last().map(|i| i + 1).unwrap_or(end),
        };
        out.insert(at, line);
    }
    out.join("\n") + "\n"
}

/// `ipset save` text for the plan's provider sets (what the emitted ipset restore leaves).
fn ipset_after(plan: &Plan, before: Option<&str>) -> String {
    let mut s = before.unwrap_or("").to_string();
    for p in &plan.sets {
        if p.home == fix::SetHome::Ipset {
            let fam = if p.family == Family::V4 {
                "inet"
            } else {
                "inet6"
            };
            s.push_str(&format!(
                "create {} hash:net family {fam} hashsize 1024 maxelem 65536\n",
                p.name
            ));
            for e in &p.elements {
                s.push_str(&format!("add {} {e}\n", p.name));
            }
        }
    }
    s
}

fn plan_of(s: &Snapshot) -> Plan {
    fix::plan(s, &opts(), false).expect("plan")
}

const TWO_CULPRITS: &str = "\
# hand-written: two culprits in one chain, a policy drop, a control accept and a control drop
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 173.245.48.0/20 -p tcp -m tcp --dport 443 -j DROP
-A INPUT -s 10.0.0.0/8 -p tcp -j ACCEPT
-A INPUT -s 103.21.244.0/22 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset
-A INPUT -s 192.0.2.0/24 -j DROP
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";

#[test]
fn accepts_go_right_before_each_culprit_and_the_emitted_file_fixes_the_dump() {
    let s = host(Dumps {
        iptables_nft_save: Some(TWO_CULPRITS.into()),
        ..Default::default()
    });
    assert!(bad_rows(&s) > 0);
    let plan = plan_of(&s);
    assert!(plan.offerable(), "{}", emit::human(&plan, &[], &[]));
    // Culprits #2 (drop) and #4 (reject) and the policy: three additions in INPUT.
    let anchors: Vec<(Anchor, Vec<u16>)> = plan
        .additions
        .iter()
        .map(|a| (a.anchor.clone(), a.ports.clone()))
        .collect();
    assert!(
        anchors.contains(&(Anchor::End, vec![80, 443])),
        "{anchors:?}"
    );
    assert!(
        anchors
            .iter()
            .any(|(a, p)| matches!(a, Anchor::Before { position: 4, .. }) && p == &vec![80]),
        "{anchors:?}"
    );
    assert!(
        anchors
            .iter()
            .any(|(a, p)| matches!(a, Anchor::Before { position: 2, .. }) && p == &vec![443]),
        "{anchors:?}"
    );
    // Applying the emitted text to the dump and re-analysing: everything accepted.
    let files = emit::iptables_files(&plan);
    assert_eq!(files.len(), 1);
    let fixed = apply_ipt(TWO_CULPRITS, &files[0].1);
    let after = host(Dumps {
        iptables_nft_save: Some(fixed.clone()),
        ipset_save: Some(ipset_after(&plan, None)),
        ..Default::default()
    });
    assert_eq!(bad_rows(&after), 0, "{fixed}");
    // And the controls are what they were (10/8 accepted, 192.0.2/24 dropped, others dropped).
    let before_rs = analysis::prepare(&s).ruleset;
    let after_rs = analysis::prepare(&after).ruleset;
    let (n, changes) = fix::compare_controls(
        &s,
        &before_rs,
        &after_rs,
        &opts(),
        &[Family::V4, Family::V6],
    );
    assert!(n > 4);
    assert!(changes.is_empty(), "{changes:?}");
    // Every written rule carries the comment; nothing else in the file touches other rules.
    for l in files[0].1.lines().filter(|l| l.starts_with('-')) {
        assert!(l.contains("--comment origin-audit"), "{l}");
        assert!(
            l.starts_with("-I INPUT") || l.starts_with("-A INPUT"),
            "{l}"
        );
    }
}

#[test]
fn the_proof_catches_a_change_to_control_sources() {
    let s = host(Dumps {
        iptables_nft_save: Some(TWO_CULPRITS.into()),
        ..Default::default()
    });
    let before = analysis::prepare(&s).ruleset;
    // A "fix" that accepts everything on 443 at the top (what blind scripts do).
    let blind = TWO_CULPRITS.replace(
        "-A INPUT -m conntrack",
        "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n-A INPUT -m conntrack",
    );
    let after = analysis::prepare(&host(Dumps {
        iptables_nft_save: Some(blind),
        ..Default::default()
    }))
    .ruleset;
    let (_, changes) = fix::compare_controls(&s, &before, &after, &opts(), &[Family::V4]);
    assert!(
        changes.iter().any(|c| c.port == 443
            && c.source.starts_with("192.0.2.")
            && c.after == VerdictKind::Accept),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|c| c.port == 80), "{changes:?}");
}

#[test]
fn ufw_fixture_is_detected_and_fixed_in_its_own_chain() {
    let save = fixture("iptables/ufw-v4.nft.rules");
    let s = host(Dumps {
        iptables_nft_save: Some(save.clone()),
        ..Default::default()
    });
    let plan = plan_of(&s);
    assert_eq!(plan.manager, Manager::Ufw);
    assert!(plan.offerable(), "{}", emit::human(&plan, &[], &[]));
    // `ufw deny from 173.245.48.0/20` lives in ufw-user-input (after `allow 443`): port 80 is
    // blocked there, so the accept goes there, before it; the rest of port 80 falls to the policy.
    assert!(
        plan.additions
            .iter()
            .any(|a| a.chain == "ufw-user-input" && a.culprit.text.contains("173.245.48.0/20")),
        "{:?}",
        plan.additions
    );
    let ufw = emit::ufw_commands(&plan);
    assert!(
        ufw.contains(
            "ufw insert 1 allow proto tcp from 173.245.48.0/20 port 1:65535 to any port 80"
        ),
        "{ufw}"
    );
    let fixed = apply_ipt(&save, &emit::iptables_files(&plan)[0].1);
    let after = host(Dumps {
        iptables_nft_save: Some(fixed),
        ipset_save: Some(ipset_after(&plan, None)),
        ..Default::default()
    });
    assert_eq!(bad_rows(&after), 0);
}

#[test]
fn fail2ban_ban_set_gets_advice_and_optional_removal() {
    // The real fail2ban fixture bans 198.51.100.23 (not Cloudflare): add a Cloudflare address to
    // its ipset the way `fail2ban-client set nginx-http-auth banip` would.
    let ipset =
        fixture("ipset/fail2ban.ipset") + "add f2b-nginx-http-auth 173.245.48.9 timeout 0\n";
    let s = host(Dumps {
        iptables_nft_save: Some(fixture("iptables/fail2ban-v4.nft.rules")),
        ipset_save: Some(ipset.clone()),
        ..Default::default()
    });
    assert!(bad_rows(&s) > 0);
    let plan = fix::plan(&s, &opts(), false).unwrap();
    assert!(plan.offerable(), "{}", emit::human(&plan, &[], &[]));
    let ban = plan
        .bans
        .iter()
        .find(|b| b.tool == "fail2ban")
        .expect("fail2ban ban list");
    // A single address bare: `ipset del` and nft `delete element` on a set without `flags
    // interval` both take it so.
    assert_eq!(ban.provider_elements, vec!["173.245.48.9".to_string()]);
    let v4: Vec<String> = s.ranges.ipv4.iter().map(|n| n.to_string()).collect();
    let advice = emit::ban_advice(&plan, &v4, &[]);
    for want in [
        "ignoreip = 127.0.0.1/8 ::1 ",
        "fail2ban-client set nginx-http-auth unbanip 173.245.48.9",
        "cscli allowlists add cloudflare",
        "set_real_ip_from 173.245.48.0/20;",
        "real_ip_header CF-Connecting-IP;",
        "RemoteIPHeader CF-Connecting-IP",
        "RemoteIPTrustedProxy 173.245.48.0/20",
        "only hides the symptom",
    ] {
        assert!(advice.contains(want), "missing {want:?} in\n{advice}");
    }
    // Without --remove-banned nothing is deleted; with it, exactly the Cloudflare entry.
    assert!(!emit::ipset_restore(&plan).contains("del "));
    let plan2 = fix::plan(&s, &opts(), true).unwrap();
    assert!(plan2.offerable());
    let r = emit::ipset_restore(&plan2);
    assert!(
        r.contains("del f2b-nginx-http-auth 173.245.48.9 -exist"),
        "{r}"
    );
    assert!(!r.contains("198.51.100.23"), "{r}");
    // Removing the ban alone fixes it: no accept rule is needed then.
    assert!(plan2.additions.is_empty(), "{:?}", plan2.additions);
}

#[test]
fn nft_fixtures_get_inserts_by_handle_and_proofs() {
    for f in [
        "nft/crowdsec.json",
        "nft/rejects.json",
        "nft/vmaps.json",
        "nft/families.json",
        "nft/matches.json",
        "nft/firewalld.json",
    ] {
        let s = host(Dumps {
            nft_json: vec![fixture(f)],
            ..Default::default()
        });
        let bad = bad_rows(&s);
        let plan = plan_of(&s);
        if bad == 0 {
            assert!(plan.is_noop(), "{f}");
            continue;
        }
        if !plan.offerable() {
            // Only conditional rows (undecidable matches) may keep a fix from being offered, and
            // then the plan must say why.
            assert!(!plan.problems.is_empty() || !plan.proof.holds(), "{f}");
            continue;
        }
        let nft = emit::nft_file(&plan);
        for a in plan
            .additions
            .iter()
            .filter(|a| a.backend == origin_audit::firewall::Backend::Nft)
        {
            match &a.anchor {
                Anchor::Before {
                    handle: Some(h), ..
                } => {
                    assert_eq!(a.culprit.handle, Some(*h), "{f}");
                    assert!(
                        nft.contains(&format!(
                            "insert rule {} {} {} position {h} ",
                            a.table_family, a.table, a.chain
                        )),
                        "{f}: {nft}"
                    );
                }
                Anchor::End => assert!(
                    nft.contains(&format!(
                        "add rule {} {} {} ",
                        a.table_family, a.table, a.chain
                    )),
                    "{f}"
                ),
                other => panic!("{f}: nft culprit without handle: {other:?}"),
            }
        }
        assert!(nft.contains("flags interval"), "{f}");
        assert!(plan.proof.control_changes.is_empty(), "{f}");
    }
    let crowd = plan_of(&host(Dumps {
        nft_json: vec![fixture("nft/crowdsec.json")],
        ..Default::default()
    }));
    assert!(
        crowd.bans.iter().any(|b| b.tool == "crowdsec"),
        "{:?}",
        crowd.bans
    );
    let fw = plan_of(&host(Dumps {
        nft_json: vec![fixture("nft/firewalld.json")],
        ..Default::default()
    }));
    assert_eq!(fw.manager, Manager::Firewalld);
}

#[test]
fn nothing_to_fix_means_no_change_and_no_form() {
    let s = host(Dumps {
        iptables_nft_save: Some(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.0/24 -j DROP\nCOMMIT\n".into(),
        ),
        ..Default::default()
    });
    let plan = plan_of(&s);
    assert!(plan.is_noop());
    assert!(emit::nft_file(&plan).is_empty());
    assert!(emit::iptables_script(&plan).is_empty());
}

#[test]
fn revert_deletes_exactly_the_commented_rules() {
    let save = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -p tcp -m set --match-set cloudflare_v4 src -m tcp --dport 443 -m comment --comment origin-audit -j ACCEPT\n\
-A INPUT -p tcp -m tcp --dport 443 -m comment --comment \"admin: origin-audit docs\" -j ACCEPT\n\
-A INPUT -s 173.245.48.0/20 -j DROP\nCOMMIT\n";
    let s = host(Dumps {
        iptables_nft_save: Some(save.into()),
        ipset_save: Some("create cloudflare_v4 hash:net family inet hashsize 1024 maxelem 65536\nadd cloudflare_v4 173.245.48.0/20\n".into()),
        ..Default::default()
    });
    let rs = analysis::prepare(&s).ruleset;
    let rp = fix::apply::revert_plan(&rs);
    assert_eq!(rp.count, 1);
    assert_eq!(rp.iptables.len(), 1);
    let text = &rp.iptables[0].1;
    assert!(text.contains("-D INPUT -p tcp -m set --match-set cloudflare_v4 src -m tcp --dport 443 -m comment --comment origin-audit -j ACCEPT"), "{text}");
    assert!(!text.contains("admin"), "{text}");
    assert_eq!(rp.ipset, "destroy cloudflare_v4\n");
}

#[test]
fn cli_dry_run_json_and_emit() {
    let bin = env!("CARGO_BIN_EXE_origin-audit");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v4.rules");
    std::fs::write(&f, TWO_CULPRITS).unwrap();
    let out = std::process::Command::new(bin)
        .args(["fix", "--offline", "--format", "json", "--iptables-save"])
        .arg(&f)
        .output()
        .unwrap();
    // A fix is offered: exit 1 (dry run, changes pending).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "origin-audit-fix/1");
    assert_eq!(v["offerable"], true);
    assert_eq!(v["plan"]["proof"]["provider_all_accept"], true);
    assert_eq!(
        v["plan"]["proof"]["control_changes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(
        v["plan"]["before"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verdict"] == "drop")
    );
    assert!(
        v["plan"]["after"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["verdict"] == "accept")
    );
    assert!(
        v["forms"]["iptables"]
            .as_str()
            .unwrap()
            .contains("iptables-nft-restore -w 10 --noflush")
    );
    // --emit prints exactly that form and nothing else.
    let out = std::process::Command::new(bin)
        .args(["fix", "--offline", "--emit", "iptables", "--iptables-save"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"), "{text}");
    assert!(
        text.contains("ipset restore <<'EOF'\ncreate cloudflare_v4 hash:net family inet -exist"),
        "{text}"
    );
    assert!(!text.contains("Proof"), "{text}");
    // --apply refuses saved dumps: it only works on the live host.
    let out = std::process::Command::new(bin)
        .args(["fix", "--offline", "--apply", "--state-dir"])
        .arg(dir.path())
        .arg("--iptables-save")
        .arg(&f)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("live host"));
}
