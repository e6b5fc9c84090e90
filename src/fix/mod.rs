//! `origin-audit fix`: the smallest change that lets every provider range reach every audited
//! port, proven on the model before anything touches the host.
//!
//! Owns: the [`Plan`] (where each accept goes, which named sets / ipsets hold the ranges), the
//! iterative planner ([`plan`]: find the deciding rule of every non-accept provider row, insert an
//! accept for the provider set and the affected ports immediately before it in that same chain,
//! re-analyse, repeat), the [`Proof`] (every provider row accept afterwards, and every control
//! source's verdict unchanged, compared block by block over the whole address space outside the
//! provider ranges), the firewall-manager detection and the ban-list advice.
//! Must not: do I/O. Text forms live in [`emit`], the only writer of the host is [`apply`], and
//! the command driver (flags → plan → output / apply) in [`command`].
//!
//! Netfilter facts (nft(8), "OVERALL EVALUATION OF THE RULESET"; ARCHITECTURE.md): `accept` ends
//! only the current base chain, `drop`/`reject` end everything, so an accept elsewhere cannot undo
//! a drop — the accept goes into the chain that decides, before the culprit. An accept in a user
//! chain reached by jump/goto is an accept of the calling base chain (iptables(8) TARGETS).

pub mod apply;
pub mod command;
pub mod emit;
pub mod state;
pub mod ufw;

use crate::analysis::eval::{Evaluator, Step};
use crate::analysis::{
    self, Options, Prepared, ReachRow, Report, Target, VerdictKind, blocks::Cuts,
};
use crate::firewall::addr::{AddrRange, family_max};
use crate::firewall::{
    AddrSet, Backend, CtStates, Dir, Direction, Family, Field, KeyValue, Match, Rule, RuleRef,
    Ruleset, SetDef, SetElem, SetKind, SetRef, TableFamily, Verdict,
};
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The comment every rule origin-audit writes carries; `fix --revert` finds them by it.
pub const COMMENT: &str = "origin-audit";
/// Upper bound on plan rounds (one round fixes every culprit the analysis names at once; a new
/// culprit can only appear behind one that was fixed, so real rulesets need 1–3).
pub const MAX_ROUNDS: usize = 16;

/// Name of the named set / ipset holding the provider's ranges of one family.
pub fn set_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "cloudflare_v4",
        Family::V6 => "cloudflare_v6",
    }
}

/// Where an accept goes in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "at")]
pub enum Anchor {
    /// Immediately before the culprit: its 1-based position in the chain *as it is when this
    /// addition is applied* (earlier additions in the same chain already counted), and its nft
    /// handle (stable, used by the nft form).
    Before {
        position: usize,
        handle: Option<u64>,
    },
    /// At the end of the base chain (the culprit is its policy).
    End,
}

/// One accept rule to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addition {
    pub backend: Backend,
    /// The table's family (`inet` tables get one rule per IP family).
    pub table_family: TableFamily,
    pub table: String,
    pub chain: String,
    pub anchor: Anchor,
    /// IP family of the rule's source set.
    pub family: Family,
    /// The set it matches (`cloudflare_v4` / `cloudflare_v6`).
    pub set: String,
    /// Destination ports as the packets carry them *at the culprit*: after a nat prerouting
    /// DNAT/REDIRECT (`80 → 8080`) the filter chains see the new port, so an accept naming the
    /// audited port would never match there.
    pub ports: Vec<u16>,
    /// The ports were translated (they differ from the audited ones): the rule also requires
    /// `ct status dnat` / `-m conntrack --ctstate DNAT`, so it accepts only connections a
    /// DNAT/REDIRECT sent to those ports, not direct connections to them.
    #[serde(default)]
    pub dnat: bool,
    /// The rule that decided before (a policy has position 0).
    pub culprit: RuleRef,
    /// The provider CIDRs that culprit blocked (for the report).
    pub sources: Vec<String>,
    /// The round of the planner that added it (1-based).
    pub round: usize,
    /// Which packet it lets through: the provider's SYN (`in`: source set, destination ports)
    /// or this host's answer to it (`reply`, in an output/postrouting chain: destination set,
    /// source ports — the SYN-ACK leaves from the web port toward the provider).
    #[serde(default)]
    pub direction: Direction,
}

/// Where a provider set lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SetHome {
    /// nft named set in a native table.
    Nft { family: TableFamily, table: String },
    /// ipset (global to the network namespace), used by iptables rules of both backends.
    Ipset,
}

/// A provider set to create or refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSet {
    pub home: SetHome,
    pub name: String,
    pub family: Family,
    /// The provider's ranges, merged (no overlaps: nft interval sets refuse them).
    pub elements: Vec<String>,
}

/// A ban list holding provider addresses: accepting in front of it hides the symptom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanList {
    /// fail2ban, crowdsec, csf, or `dynamic set`.
    pub tool: String,
    pub culprit: RuleRef,
    /// The set it looks up, if any.
    pub set: Option<(SetHome, String)>,
    /// Elements of that set lying entirely inside the provider ranges: what `--remove-banned`
    /// deletes (elements reaching outside them are left alone, they also ban others).
    pub provider_elements: Vec<String>,
}

/// What manages the firewall, for the form the fix is shown in and where to persist it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Ufw,
    Firewalld,
    Docker,
    Nft,
    Iptables,
    None,
}

/// A control block whose verdict the change would alter (the proof fails).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlChange {
    pub port: u16,
    pub source: String,
    pub before: VerdictKind,
    pub after: VerdictKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// Every provider row is `accept` on every audited port after the change.
    pub provider_all_accept: bool,
    /// Provider rows still not accepted after the change.
    pub remaining: Vec<ReachRow>,
    /// Control blocks compared (the address space outside the provider ranges, split at every
    /// boundary any rule draws), per port and family.
    pub control_blocks: usize,
    pub control_changes: Vec<ControlChange>,
}

impl Proof {
    pub fn holds(&self) -> bool {
        self.provider_all_accept && self.control_changes.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub manager: Manager,
    pub ports: Vec<u16>,
    pub sets: Vec<ProviderSet>,
    pub additions: Vec<Addition>,
    pub bans: Vec<BanList>,
    /// Whether the plan also removes provider elements from ban sets (`--remove-banned`).
    pub remove_banned: bool,
    pub before: Vec<ReachRow>,
    pub after: Vec<ReachRow>,
    pub proof: Proof,
    pub rounds: usize,
    /// Why something could not be planned (no deciding rule, no progress, parse errors).
    pub problems: Vec<String>,
}

impl Plan {
    /// Nothing to change: every provider row already accepted.
    pub fn is_noop(&self) -> bool {
        self.additions.is_empty() && !(self.remove_banned && self.has_ban_removals())
    }
    pub fn has_ban_removals(&self) -> bool {
        self.bans.iter().any(|b| !b.provider_elements.is_empty())
    }
    /// The fix may be offered / applied.
    pub fn offerable(&self) -> bool {
        self.problems.is_empty() && self.proof.holds()
    }
}

/// Provider ranges of one family, merged.
pub fn provider_set(snap: &Snapshot, f: Family) -> AddrSet {
    let v: Vec<AddrRange> = match f {
        Family::V4 => snap
            .ranges
            .ipv4
            .iter()
            .map(|n| AddrRange::from_net(ipnet::IpNet::V4(*n)))
            .collect(),
        Family::V6 => snap
            .ranges
            .ipv6
            .iter()
            .map(|n| AddrRange::from_net(ipnet::IpNet::V6(*n)))
            .collect(),
    };
    AddrSet::new(v)
}

/// Everything of family `f` outside `set`.
pub fn complement(set: &AddrSet, f: Family) -> Vec<AddrRange> {
    let mut out = Vec::new();
    let mut next: Option<u128> = Some(0);
    for r in set.ranges.iter().filter(|r| r.family == f) {
        if let Some(n) = next
            && r.start > n
        {
            out.push(AddrRange {
                family: f,
                start: n,
                end: r.start - 1,
            });
        }
        next = r.end.checked_add(1).filter(|x| *x <= family_max(f));
    }
    if let Some(n) = next {
        out.push(AddrRange {
            family: f,
            start: n,
            end: family_max(f),
        });
    }
    out
}

/// Detects what manages the firewall from the chains and tables present.
pub fn detect_manager(rs: &Ruleset) -> Manager {
    let chains = || {
        rs.tables
            .iter()
            .flat_map(|t| t.chains.iter().map(move |c| (t, c)))
    };
    if chains().any(|(t, c)| t.backend != Backend::Nft && c.name.starts_with("ufw-")) {
        return Manager::Ufw;
    }
    if rs
        .tables
        .iter()
        .any(|t| t.backend == Backend::Nft && t.name == "firewalld")
    {
        return Manager::Firewalld;
    }
    if chains().any(|(_, c)| c.name == "DOCKER-USER") {
        return Manager::Docker;
    }
    let has = |pred: &dyn Fn(Backend) -> bool| {
        rs.tables
            .iter()
            .any(|t| pred(t.backend) && t.chains.iter().any(|c| !c.rules.is_empty()))
    };
    if has(&|b| b == Backend::Nft) {
        Manager::Nft
    } else if has(&|b| b != Backend::Nft) {
        Manager::Iptables
    } else {
        Manager::None
    }
}

/// Errors that stop planning altogether.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the firewall dumps could not all be parsed ({0}); no fix is proposed for a ruleset origin-audit cannot fully read"
    )]
    Unparsed(String),
}

fn family_of_source(s: &str) -> Family {
    if s.contains(':') {
        Family::V6
    } else {
        Family::V4
    }
}

/// Same culprit across rounds: backend, table, chain, policy or not, rule text (positions shift
/// as we insert).
type CulpritKey = (Backend, TableFamily, String, String, bool, String);

fn culprit_key(r: &RuleRef) -> CulpritKey {
    (
        r.backend,
        r.family,
        r.table.clone(),
        r.chain.clone(),
        r.position == 0,
        r.text.clone(),
    )
}

/// Does a rule of this (backend, table family) match packets of IP family `f`?
fn table_sees(backend: Backend, tf: TableFamily, f: Family) -> bool {
    match backend {
        Backend::Nft => tf.sees(f),
        _ => matches!(
            (tf, f),
            (TableFamily::Ip, Family::V4) | (TableFamily::Ip6, Family::V6)
        ),
    }
}

/// The model rule of an addition (what the emitted text means, as the parsers would read it).
fn model_rule(a: &Addition, position: usize) -> Rule {
    let mut matches = Vec::new();
    let set = match a.backend {
        Backend::Nft => {
            if !matches!(a.table_family, TableFamily::Ip | TableFamily::Ip6) {
                // `ip saddr` in an inet/netdev table implies `meta nfproto ipv4` (nft(8) PAYLOAD
                // EXPRESSIONS: dependencies are added implicitly).
                matches.push(Match::NfProto {
                    family: a.family,
                    negate: false,
                });
            }
            SetRef::Named(a.set.clone())
        }
        _ => SetRef::Ipset(a.set.clone()),
    };
    matches.push(Match::Proto {
        protos: vec![6],
        negate: false,
    });
    let (field, port_dir) = match a.direction {
        Direction::In => (Field::SrcAddr, Dir::Dst),
        Direction::Reply => (Field::DstAddr, Dir::Src),
    };
    matches.push(Match::Set {
        set,
        fields: vec![field],
        negate: false,
    });
    matches.push(Match::Port {
        dir: port_dir,
        ranges: a.ports.iter().map(|p| (*p, *p)).collect(),
        negate: false,
    });
    if a.dnat {
        // What the emitted text parses back to: nft `ct status dnat`, iptables `--ctstate DNAT`.
        matches.push(match a.backend {
            Backend::Nft => Match::CtStatus {
                names: vec!["dnat".into()],
                negate: false,
            },
            _ => Match::CtState {
                states: CtStates::DNAT,
                negate: false,
            },
        });
    }
    Rule {
        matches,
        effects: Vec::new(),
        verdict: Verdict::Accept,
        source: RuleRef {
            direction: a.direction,
            backend: a.backend,
            family: a.table_family,
            table: a.table.clone(),
            chain: a.chain.clone(),
            position,
            handle: None,
            text: emit::rule_text(a),
        },
    }
}

fn set_def(ps: &ProviderSet) -> SetDef {
    SetDef {
        name: ps.name.clone(),
        kind: match ps.home {
            SetHome::Nft { .. } => SetKind::NftSet,
            SetHome::Ipset => SetKind::Ipset {
                set_type: "hash:net".into(),
            },
        },
        family: Some(ps.family),
        elements: ps
            .elements
            .iter()
            .filter_map(|e| AddrRange::parse(e).ok())
            .map(|r| SetElem {
                key: vec![KeyValue::Addr(r)],
                nomatch: false,
                verdict: None,
            })
            .collect(),
        dynamic: false,
        unparsed: Vec::new(),
    }
}

/// Puts a provider set into the model (replacing an older one of the same name).
fn install_set(rs: &mut Ruleset, ps: &ProviderSet) {
    let def = set_def(ps);
    match &ps.home {
        SetHome::Ipset => {
            rs.ipsets.retain(|s| s.name != ps.name);
            rs.ipsets.push(def);
        }
        SetHome::Nft { family, table } => {
            if let Some(t) = rs
                .tables
                .iter_mut()
                .find(|t| t.backend == Backend::Nft && t.family == *family && t.name == *table)
            {
                t.sets.retain(|s| s.name != ps.name);
                t.sets.push(def);
            }
        }
    }
}

/// Inserts the addition into the model and renumbers the chain. Returns the anchor with the
/// position as it is at that moment, or `None` if the culprit is not in the model.
fn insert(rs: &mut Ruleset, a: &Addition) -> Option<Anchor> {
    let c = &a.culprit;
    let t = rs
        .tables
        .iter_mut()
        .find(|t| t.backend == c.backend && t.family == c.family && t.name == c.table)?;
    let ch = t.chains.iter_mut().find(|x| x.name == c.chain)?;
    let (idx, anchor) = if c.position == 0 {
        ch.base.as_ref()?;
        (ch.rules.len(), Anchor::End)
    } else {
        // Find the culprit by identity, not only by position: same text, same handle. An
        // accept already put in front of it this round (the other IP family, or the translated
        // ports) moved it down by one; rules above it never move (bottom-up order).
        let idx = ch
            .rules
            .iter()
            .enumerate()
            .filter(|(i, r)| i + 1 >= c.position && r.source.text == c.text)
            .map(|(i, _)| i)
            .next()
            .or_else(|| {
                c.handle
                    .and_then(|h| ch.rules.iter().position(|r| r.source.handle == Some(h)))
            })?;
        (
            idx,
            Anchor::Before {
                position: idx + 1,
                handle: ch.rules[idx].source.handle,
            },
        )
    };
    ch.rules.insert(idx, model_rule(a, idx + 1));
    for (i, r) in ch.rules.iter_mut().enumerate() {
        r.source.position = i + 1;
    }
    Some(anchor)
}

/// Names of ban-list tools, from chain and set names (fail2ban `f2b-*`, CrowdSec `crowdsec*`,
/// CSF `DENYIN`/`chain_DENY`) or a dynamic set.
fn ban_tool(chain: &str, set: Option<&SetDef>, set_name: Option<&str>) -> Option<String> {
    let n = set_name.unwrap_or("");
    if chain.starts_with("f2b-") || n.starts_with("f2b-") || n.starts_with("fail2ban") {
        return Some("fail2ban".into());
    }
    if chain.starts_with("crowdsec") || n.starts_with("crowdsec") {
        return Some("crowdsec".into());
    }
    if matches!(chain, "DENYIN" | "chain_DENY" | "DENYOUT") || n.starts_with("chain_DENY") {
        return Some("csf".into());
    }
    if set.is_some_and(|s| s.dynamic) {
        return Some("dynamic set".into());
    }
    None
}

fn find_bans(rs: &Ruleset, culprit: &RuleRef, provider: &[AddrSet; 2]) -> Option<BanList> {
    let t = rs.tables.iter().find(|t| {
        t.backend == culprit.backend && t.family == culprit.family && t.name == culprit.table
    })?;
    let rule = t
        .chain(&culprit.chain)?
        .rules
        .iter()
        .find(|r| r.source.position == culprit.position && r.source.text == culprit.text);
    let mut set: Option<(SetHome, &SetDef)> = None;
    for m in rule.map(|r| r.matches.as_slice()).unwrap_or(&[]) {
        if let Match::Set {
            set: sref,
            negate: false,
            ..
        } = m
        {
            match sref {
                SetRef::Named(n) => {
                    if let Some(d) = t.set(n) {
                        set = Some((
                            SetHome::Nft {
                                family: t.family,
                                table: t.name.clone(),
                            },
                            d,
                        ));
                    }
                }
                SetRef::Ipset(n) => {
                    if let Some(d) = rs.ipset(n) {
                        set = Some((SetHome::Ipset, d));
                    }
                }
                SetRef::Anonymous(_) => {}
            }
        }
    }
    let tool = ban_tool(
        &culprit.chain,
        set.as_ref().map(|(_, d)| *d),
        set.as_ref().map(|(_, d)| d.name.as_str()),
    )?;
    let provider_elements = set
        .as_ref()
        .map(|(_, d)| {
            d.elements
                .iter()
                .filter(|e| !e.nomatch)
                .filter_map(|e| match e.key.as_slice() {
                    [KeyValue::Addr(r)] => Some(*r),
                    _ => None,
                })
                .filter(|r| {
                    let p = match r.family {
                        Family::V4 => &provider[0],
                        Family::V6 => &provider[1],
                    };
                    // Entirely inside one provider range: removing it unbans nobody else.
                    p.ranges
                        .iter()
                        .any(|x| x.family == r.family && x.start <= r.start && r.end <= x.end)
                })
                .map(ban_elem_text)
                .collect()
        })
        .unwrap_or_default();
    Some(BanList {
        tool,
        culprit: culprit.clone(),
        set: set.map(|(h, d)| (h, d.name.clone())),
        provider_elements,
    })
}

/// A ban-set element as `delete element` / `ipset del` take it: a single address bare (an nft
/// set without `flags interval` refuses `173.245.48.10/32`: "Set member cannot be prefix"),
/// a prefix or range as such (only interval sets hold those).
fn ban_elem_text(r: AddrRange) -> String {
    if r.start == r.end {
        crate::firewall::addr::int_to_addr(r.family, r.start).to_string()
    } else {
        r.to_string()
    }
}

/// Removes the provider elements of ban sets from the model (`--remove-banned`).
fn remove_banned_in_model(rs: &mut Ruleset, bans: &[BanList]) {
    for b in bans {
        let Some((home, name)) = &b.set else { continue };
        let drop: BTreeSet<&String> = b.provider_elements.iter().collect();
        let keep = |e: &SetElem| match e.key.as_slice() {
            [KeyValue::Addr(r)] => !drop.contains(&ban_elem_text(*r)),
            _ => true,
        };
        match home {
            SetHome::Ipset => {
                for s in rs.ipsets.iter_mut().filter(|s| &s.name == name) {
                    s.elements.retain(keep);
                }
            }
            SetHome::Nft { family, table } => {
                for t in rs.tables.iter_mut().filter(|t| {
                    t.backend == Backend::Nft && t.family == *family && &t.name == table
                }) {
                    for s in t.sets.iter_mut().filter(|s| &s.name == name) {
                        s.elements.retain(keep);
                    }
                }
            }
        }
    }
}

fn analyse(snap: &Snapshot, rs: &Ruleset, opts: &Options) -> Report {
    let p = Prepared {
        ruleset: rs.clone(),
        errors: Vec::new(),
    };
    analysis::analyze_prepared(snap, &p, opts)
}

/// Compares every control block (outside the provider ranges) between two rulesets.
pub fn compare_controls(
    snap: &Snapshot,
    before: &Ruleset,
    after: &Ruleset,
    opts: &Options,
    families: &[Family],
) -> (usize, Vec<ControlChange>) {
    // Split at the cuts of both rulesets, so one address decides for the block in each.
    let mut both = before.clone();
    both.extend(after.clone());
    let cuts = Cuts::new(&both);
    let mut n = 0;
    let mut changes: Vec<ControlChange> = Vec::new();
    let mut ports = opts.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    for &f in families {
        let outside = complement(&provider_set(snap, f), f);
        let blocks = cuts.split(&outside);
        for &port in &ports {
            let b = analysis::block_verdicts(snap, before, opts, &blocks, port);
            let a = analysis::block_verdicts(snap, after, opts, &blocks, port);
            n += blocks.len();
            for ((blk, x), y) in blocks.iter().zip(&b).zip(&a) {
                if x.verdict != y.verdict || x.cf_error != y.cf_error {
                    changes.push(ControlChange {
                        port,
                        source: blk.to_string(),
                        before: x.verdict,
                        after: y.verdict,
                    });
                }
            }
        }
    }
    (n, changes)
}

fn same_rule(a: &RuleRef, b: &RuleRef) -> bool {
    a.backend == b.backend
        && a.family == b.family
        && a.table == b.table
        && a.chain == b.chain
        && a.position == b.position
        && a.text == b.text
}

/// The verdict of the rule a path step names, looked up in the model.
fn verdict_of<'a>(rs: &'a Ruleset, r: &RuleRef) -> Option<&'a Verdict> {
    let t = rs
        .tables
        .iter()
        .find(|t| t.backend == r.backend && t.family == r.family && t.name == r.table)?;
    let rule = t.chain(&r.chain)?.rules.get(r.position.checked_sub(1)?)?;
    (rule.source.text == r.text).then_some(&rule.verdict)
}

/// The destination ports a new connection from each address block of `range` to `port` carries
/// when it reaches `culprit`: the audited port, unless a DNAT/REDIRECT met on the way rewrote
/// it (the evaluator applies them in hook order; nft(8) "NAT STATEMENTS", iptables-extensions(8)
/// DNAT/REDIRECT). Blocks whose every path misses the culprit keep the audited port (the proof
/// tells if that was wrong).
fn ports_at_culprit(
    ev: &Evaluator,
    rs: &Ruleset,
    t: &Target,
    cuts: &Cuts,
    range: AddrRange,
    port: u16,
    culprit: &RuleRef,
) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for b in cuts.split(&[range]) {
        let mut found = false;
        for o in ev.evaluate(&analysis::packet(t, b.family, b.start, port, false)) {
            let mut dport = port;
            for step in &o.path {
                let r = match step {
                    Step::Rule(r) | Step::Policy(r) => r,
                    Step::Chain { .. } | Step::Reply(_) => continue,
                };
                if same_rule(r, culprit) {
                    out.insert(dport);
                    found = true;
                    break;
                }
                if let Some(
                    Verdict::Dnat { port: Some(p), .. } | Verdict::Redirect { port: Some(p) },
                ) = verdict_of(rs, r)
                {
                    dport = *p;
                }
            }
        }
        if !found {
            out.insert(port);
        }
    }
    out
}

/// When a reply-path rule decides because it drops the RST / ICMP error of a REJECT met on
/// the way in, the REJECT is what keeps Cloudflare out: letting the refusal out only turns 522
/// into 521. Returns that REJECT (the last rule the SYN matched before its answer), if so.
fn refusal_behind(
    ev: &Evaluator,
    rs: &Ruleset,
    t: &Target,
    cuts: &Cuts,
    range: AddrRange,
    port: u16,
    culprit: &RuleRef,
) -> Option<RuleRef> {
    let b = cuts.split(&[range]).into_iter().next()?;
    for o in ev.evaluate(&analysis::packet(t, b.family, b.start, port, false)) {
        if !o.decided_by.as_ref().is_some_and(|d| same_rule(d, culprit)) {
            continue;
        }
        let mut last_in = None;
        for step in &o.path {
            match step {
                Step::Reply(_) => break,
                Step::Rule(r) | Step::Policy(r) => last_in = Some(r),
                Step::Chain { .. } => {}
            }
        }
        if let Some(r) = last_in
            && matches!(verdict_of(rs, r), Some(Verdict::Reject { .. }))
        {
            return Some(r.clone());
        }
    }
    None
}

/// Plans the fix for a snapshot. Pure.
pub fn plan(snap: &Snapshot, opts: &Options, remove_banned: bool) -> Result<Plan, PlanError> {
    let prepared = analysis::prepare(snap);
    if !prepared.errors.is_empty() {
        return Err(PlanError::Unparsed(prepared.errors.join("; ")));
    }
    Ok(plan_ruleset(snap, &prepared.ruleset, opts, remove_banned))
}

/// Plans the fix on an already-parsed ruleset.
pub fn plan_ruleset(
    snap: &Snapshot,
    original: &Ruleset,
    opts: &Options,
    remove_banned: bool,
) -> Plan {
    let before_report = analyse(snap, original, opts);
    let families = before_report.target.families.clone();
    let provider = [
        provider_set(snap, Family::V4),
        provider_set(snap, Family::V6),
    ];
    let mut rs = original.clone();
    let mut problems = Vec::new();
    let mut additions: Vec<Addition> = Vec::new();
    let mut sets: Vec<ProviderSet> = Vec::new();
    let mut bans: Vec<BanList> = Vec::new();
    // (culprit, IP family, translated ports): an accept already put there.
    let mut fixed: BTreeSet<(CulpritKey, Family, bool)> = BTreeSet::new();
    let target = analysis::target(snap, opts);
    let facts = analysis::host_facts(snap, &target);
    let mut report = before_report.clone();
    let mut rounds = 0;

    // Ban lists first: with --remove-banned the provider elements leave the ban sets in the model
    // too, so the proof covers that change.
    for r in report
        .reachability
        .iter()
        .filter(|r| !r.past_the_firewall())
    {
        if let Some(rule) = &r.rule
            && !bans.iter().any(|b| &b.culprit == rule)
            && let Some(b) = find_bans(&rs, rule, &provider)
        {
            bans.push(b);
        }
    }
    if remove_banned && bans.iter().any(|b| !b.provider_elements.is_empty()) {
        remove_banned_in_model(&mut rs, &bans);
        report = analyse(snap, &rs, opts);
    }

    while rounds < MAX_ROUNDS {
        let bad: Vec<&ReachRow> = report
            .reachability
            .iter()
            .filter(|r| !r.past_the_firewall())
            .collect();
        if bad.is_empty() {
            break;
        }
        rounds += 1;
        // culprit → (family, translated) → (ports at the culprit, sources)
        type PerFamily = BTreeMap<(Family, bool), (BTreeSet<u16>, Vec<String>)>;
        let mut by_culprit: BTreeMap<RuleRef, PerFamily> = BTreeMap::new();
        let ev = Evaluator::new(&rs, facts.clone());
        let cuts = Cuts::new(&rs);
        for r in &bad {
            let Some(rule) = &r.rule else {
                problems.push(format!(
                    "{} port {}: {:?} with no deciding rule to put an accept in front of",
                    r.source, r.port, r.verdict
                ));
                continue;
            };
            let f = family_of_source(&r.source);
            let range = AddrRange::parse(&r.source).ok();
            let rule = match range {
                Some(range) if rule.direction == Direction::Reply => {
                    refusal_behind(&ev, &rs, &target, &cuts, range, r.port, rule)
                        .unwrap_or_else(|| rule.clone())
                }
                _ => rule.clone(),
            };
            let rule = &rule;
            let at = match range {
                Some(range) => ports_at_culprit(&ev, &rs, &target, &cuts, range, r.port, rule),
                None => BTreeSet::from([r.port]),
            };
            for p in at {
                let e = by_culprit
                    .entry(rule.clone())
                    .or_default()
                    .entry((f, p != r.port))
                    .or_default();
                e.0.insert(p);
                if !e.1.contains(&r.source) {
                    e.1.push(r.source.clone());
                }
            }
        }
        // A port accepted outright needs no translated-only rule beside it.
        for fams in by_culprit.values_mut() {
            for f in [Family::V4, Family::V6] {
                let plain = fams
                    .get(&(f, false))
                    .map(|e| e.0.clone())
                    .unwrap_or_default();
                if let Some(e) = fams.get_mut(&(f, true)) {
                    e.0.retain(|p| !plain.contains(p));
                }
                if fams.get(&(f, true)).is_some_and(|e| e.0.is_empty()) {
                    fams.remove(&(f, true));
                }
            }
        }
        if !problems.is_empty() {
            break;
        }
        // Within one chain, insert from the bottom up so earlier positions stay valid this round;
        // policies (appended at the end) first.
        let mut order: Vec<(RuleRef, PerFamily)> = by_culprit.into_iter().collect();
        order.sort_by_key(|(r, _)| {
            (
                r.backend,
                r.family,
                r.table.clone(),
                r.chain.clone(),
                std::cmp::Reverse(if r.position == 0 {
                    usize::MAX
                } else {
                    r.position
                }),
            )
        });
        let mut progress = false;
        let mut round_adds = Vec::new();
        for (culprit, fams) in order {
            for ((f, dnat), (ports, sources)) in fams {
                if !fixed.insert((culprit_key(&culprit), f, dnat)) {
                    problems.push(format!(
                        "an accept before {} ({}) did not let {} through; the path to it needs a \
                         change origin-audit does not make",
                        analysis::rule_label(&culprit),
                        culprit.text,
                        sources.join(", ")
                    ));
                    continue;
                }
                if !matches!(
                    culprit.backend,
                    Backend::Nft | Backend::IptablesNft | Backend::IptablesLegacy
                ) {
                    problems.push(format!(
                        "{} is not a firewall rule and `fix` changes only firewall rules; {}",
                        analysis::rule_label(&culprit),
                        analysis::fix_hint(
                            &culprit,
                            &sources,
                            &ports.iter().copied().collect::<Vec<_>>()
                        )
                    ));
                    continue;
                }
                if !table_sees(culprit.backend, culprit.family, f) {
                    problems.push(format!(
                        "{} decides {f} traffic but an accept for {f} cannot be written there",
                        analysis::rule_label(&culprit)
                    ));
                    continue;
                }
                let home = match culprit.backend {
                    Backend::Nft => SetHome::Nft {
                        family: culprit.family,
                        table: culprit.table.clone(),
                    },
                    _ => SetHome::Ipset,
                };
                let name = set_name(f).to_string();
                if !sets.iter().any(|s| s.home == home && s.name == name) {
                    let ps = ProviderSet {
                        home,
                        name: name.clone(),
                        family: f,
                        elements: provider[match f {
                            Family::V4 => 0,
                            Family::V6 => 1,
                        }]
                        .to_cidrs()
                        .iter()
                        .map(|n| n.to_string())
                        .collect(),
                    };
                    install_set(&mut rs, &ps);
                    sets.push(ps);
                }
                let mut a = Addition {
                    backend: culprit.backend,
                    table_family: culprit.family,
                    table: culprit.table.clone(),
                    chain: culprit.chain.clone(),
                    anchor: Anchor::End,
                    family: f,
                    set: name,
                    ports: ports.into_iter().collect(),
                    dnat,
                    direction: culprit.direction,
                    culprit: culprit.clone(),
                    sources,
                    round: rounds,
                };
                match insert(&mut rs, &a) {
                    Some(anchor) => {
                        a.anchor = anchor;
                        round_adds.push(a);
                        progress = true;
                    }
                    None => problems.push(format!(
                        "{} is not in the parsed ruleset",
                        analysis::rule_label(&culprit)
                    )),
                }
            }
        }
        // Positions were computed bottom-up; the emitted order must match: keep that order.
        additions.extend(round_adds);
        if !progress {
            break;
        }
        report = analyse(snap, &rs, opts);
    }
    let remaining: Vec<ReachRow> = report
        .reachability
        .iter()
        .filter(|r| !r.past_the_firewall())
        .cloned()
        .collect();
    if !remaining.is_empty() && problems.is_empty() {
        problems.push(format!(
            "after {rounds} rounds {} provider rows are still not accepted",
            remaining.len()
        ));
    }
    let (control_blocks, control_changes) = if additions.is_empty() && !remove_banned {
        (0, Vec::new())
    } else {
        compare_controls(snap, original, &rs, opts, &families)
    };
    Plan {
        manager: detect_manager(original),
        ports: report.ports.clone(),
        sets,
        additions,
        bans,
        remove_banned,
        before: before_report.reachability,
        after: report.reachability,
        proof: Proof {
            provider_all_accept: remaining.is_empty(),
            remaining,
            control_blocks,
            control_changes,
        },
        rounds,
        problems,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::snapshot::{DefaultRoute, Dumps, IfAddr, Interface, SNAPSHOT_SCHEMA};

    /// `iptables-nft-save` (iptables v1.8.9 (nf_tables)) in a throwaway namespace after
    /// `iptables-nft-restore` of tests/scenarios/84-iptables-redirect.scn's IPv4 rules (header
    /// comments dropped): port 80 is redirected to 8080, and INPUT drops one Cloudflare range on
    /// 8080 — so that range is dropped on 80.
    const REDIRECT_80: &str = "*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -s 103.21.244.0/22 -p tcp -m tcp --dport 8080 -j DROP
-A INPUT -p tcp -m multiport --dports 443,8080 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8080
COMMIT
";

    fn host(v4_save: &str) -> Snapshot {
        Snapshot {
            schema: SNAPSHOT_SCHEMA.into(),
            taken_at: "2026-11-26T00:00:00Z".into(),
            hostname: None,
            listeners: None,
            interfaces: vec![Interface {
                name: "eth0".into(),
                up: true,
                addrs: vec![IfAddr {
                    addr: "203.0.113.2".parse().unwrap(),
                    prefix_len: 24,
                    scope: "global".into(),
                }],
            }],
            default_routes: vec![DefaultRoute {
                family: Family::V4,
                iface: "eth0".into(),
                gateway: None,
            }],
            bindv6only: Some(false),
            forwarding: Default::default(),
            dumps: Dumps {
                iptables_nft_save: Some(v4_save.into()),
                ..Default::default()
            },
            ranges: crate::ranges::cloudflare().bundled_ranges().unwrap(),
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
        o.max_age_days = 100_000;
        o.ports = ports.to_vec();
        o
    }

    #[test]
    fn accept_after_a_redirect_names_the_port_the_filter_sees() {
        let snap = host(REDIRECT_80);
        let plan = plan(&snap, &opts(&[80, 443]), false).unwrap();
        assert!(plan.offerable(), "{}", emit::human(&plan, &[], &[]));
        assert_eq!(plan.additions.len(), 1, "{:?}", plan.additions);
        let a = &plan.additions[0];
        assert_eq!(
            (a.chain.as_str(), a.ports.as_slice(), a.dnat),
            ("INPUT", &[8080u16][..], true)
        );
        assert_eq!(
            a.anchor,
            Anchor::Before {
                position: 3,
                handle: None
            }
        );
        // Only redirected connections: direct ones to 8080 stay as the admin set them.
        assert!(
            emit::rule_text(a).contains("--dport 8080 -m conntrack --ctstate DNAT"),
            "{}",
            emit::rule_text(a)
        );
    }

    #[test]
    fn two_accepts_before_one_iptables_culprit_both_land_before_it() {
        // Same layout, but the culprit drops the range on every port: 443 reaches it as 443,
        // 80 as 8080 (redirected). Both accepts go before it, in one round.
        let save = REDIRECT_80.replace(
            "-A INPUT -s 103.21.244.0/22 -p tcp -m tcp --dport 8080 -j DROP",
            "-A INPUT -s 103.21.244.0/22 -p tcp -j DROP",
        );
        let snap = host(&save);
        let plan = plan(&snap, &opts(&[80, 443]), false).unwrap();
        assert!(plan.offerable(), "{}", emit::human(&plan, &[], &[]));
        let got: Vec<(Vec<u16>, bool, Anchor)> = plan
            .additions
            .iter()
            .map(|a| (a.ports.clone(), a.dnat, a.anchor.clone()))
            .collect();
        let before = |position| Anchor::Before {
            position,
            handle: None,
        };
        // Applied in this order (`-I INPUT 3`, then `-I INPUT 4`): both end up before the drop.
        assert_eq!(
            got,
            vec![(vec![443], false, before(3)), (vec![8080], true, before(4))]
        );
    }
}
