//! Pure analysis: [`Snapshot`] + [`Options`] → [`Report`] (and [`explain`] for one address).
//!
//! Owns: turning raw dumps into one [`Ruleset`] ([`prepare`]), deciding where Cloudflare's
//! packets arrive ([`Target`]), splitting the provider ranges into blocks every rule treats
//! alike ([`blocks`]), classifying the evaluator's outcomes into verdicts, merging blocks into
//! the fewest CIDRs, and building findings.
//! Must not: do I/O, spawn processes, or loop over addresses: the number of evaluations is
//! (blocks × ports), where blocks come from the boundaries rules draw inside the ranges.

pub mod blocks;
pub mod eval;
pub mod tls;

use crate::findings::{Code, Finding, Severity};
use crate::firewall::addr::{AddrRange, addr_to_int};
use crate::firewall::{self, Backend, Family, RuleRef, Ruleset, TableFamily};
use crate::ranges::ProviderRanges;
use crate::snapshot::{Listener, Snapshot};
use eval::{CondKind, Evaluator, Fate, Outcome, Packet, Step};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What the user asked for, resolved (no I/O).
#[derive(Debug, Clone)]
pub struct Options {
    pub ports: Vec<u16>,
    pub ifaces: Vec<String>,
    pub dests: Vec<IpAddr>,
    pub now: time::OffsetDateTime,
    /// A range list older than this is a finding.
    pub max_age_days: i64,
    /// XDP programs (names or ids) trusted to pass the provider's traffic.
    pub trusted_xdp: Vec<String>,
    /// The SSL mode, hostnames and roots of the TLS check (no mode: not checked).
    pub tls: tls::TlsOptions,
}

impl Options {
    pub fn new(now: time::OffsetDateTime) -> Self {
        Options {
            ports: vec![80, 443],
            ifaces: Vec::new(),
            dests: Vec::new(),
            now,
            max_age_days: 30,
            trusted_xdp: Vec::new(),
            tls: tls::TlsOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Accept,
    Drop,
    Reject,
    RateLimited,
    Conditional,
}

impl VerdictKind {
    /// The wire name (as in the JSON report and Prometheus labels).
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Accept => "accept",
            VerdictKind::Drop => "drop",
            VerdictKind::Reject => "reject",
            VerdictKind::RateLimited => "rate_limited",
            VerdictKind::Conditional => "conditional",
        }
    }
}

/// One row of the reachability matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachRow {
    pub port: u16,
    /// A CIDR of provider addresses.
    pub source: String,
    pub verdict: VerdictKind,
    pub cf_error: Option<u16>,
    pub rule: Option<RuleRef>,
    /// For `rate_limited`/`conditional`: the conditions that decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
}

impl ReachRow {
    /// The SYN got through every firewall and route but no socket takes it (nothing listens
    /// on that address and port for that device): a listener problem, which the listener
    /// findings explain and no firewall change can fix.
    pub fn socket_refused(&self) -> bool {
        self.verdict == VerdictKind::Reject
            && self
                .rule
                .as_ref()
                .is_some_and(|x| x.backend == Backend::Socket)
    }
    /// Nothing on the firewall's side is left to change for this row: accepted, or refused
    /// only by the socket layer.
    pub fn past_the_firewall(&self) -> bool {
        self.verdict == VerdictKind::Accept || self.socket_refused()
    }
}

/// Where the audited packets arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub ifaces: Vec<String>,
    pub dest_v4: Option<IpAddr>,
    pub dest_v6: Option<IpAddr>,
    /// Families analysed (a live host without a global IPv6 address gets no IPv6 traffic).
    pub families: Vec<Family>,
    /// All addresses of this host (routing: local delivery vs forward).
    pub local: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// XDP programs trusted by the configuration (names or ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_xdp: Vec<String>,
}

impl Target {
    pub fn dest(&self, f: Family) -> Option<IpAddr> {
        match f {
            Family::V4 => self.dest_v4,
            Family::V6 => self.dest_v6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
    pub ranges: ProviderRanges,
    /// Age of the range list in whole days at analysis time.
    pub ranges_age_days: Option<i64>,
    pub target: Target,
    pub ports: Vec<u16>,
    /// `None` when listeners are unknown (offline dumps).
    pub listeners: Option<Vec<Listener>>,
    pub reachability: Vec<ReachRow>,
    pub findings: Vec<Finding>,
    pub rule_count: usize,
    /// Findings an `[[accept]]` exception of the configuration covers: shown, with the reason,
    /// but left out of `status`. Empty unless `Config::apply` moved some here.
    #[serde(default)]
    pub accepted: Vec<AcceptedFinding>,
    /// The TLS check per listener × hostname; `None` when TLS was not checked, with why.
    #[serde(default)]
    pub tls: Option<Vec<tls::TlsRow>>,
    #[serde(default)]
    pub tls_note: Option<String>,
}

/// A finding the admin accepted in the configuration (see `config.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedFinding {
    pub finding: Finding,
    pub reason: String,
    /// Last day the exception applies (`YYYY-MM-DD`), if it expires.
    pub until: Option<String>,
    /// `file:line` of the `[[accept]]` entry.
    pub origin: String,
}

impl Report {
    /// Status from the open findings (after severity overrides or exceptions changed them):
    /// the same rule `analyze` uses.
    pub fn recompute_status(&mut self) {
        let has = |s: Severity| self.findings.iter().any(|f| f.severity == s);
        self.status = if has(Severity::Unknown) {
            Status::Unknown
        } else if has(Severity::Critical) {
            Status::Critical
        } else if has(Severity::Warning) {
            Status::Warning
        } else {
            Status::Ok
        };
    }
}

impl Report {
    /// The provider's ranges (as published) of the families that were analysed.
    pub fn provider_ranges(&self) -> Vec<AddrRange> {
        self.ranges
            .ipv4
            .iter()
            .map(|n| AddrRange::from_net(ipnet::IpNet::V4(*n)))
            .chain(
                self.ranges
                    .ipv6
                    .iter()
                    .map(|n| AddrRange::from_net(ipnet::IpNet::V6(*n))),
            )
            .filter(|a| self.target.families.contains(&a.family))
            .collect()
    }

    /// Verdicts of the reachability rows on `port` that overlap `range`.
    pub fn verdicts_within(&self, port: u16, range: &AddrRange) -> Vec<VerdictKind> {
        self.reachability
            .iter()
            .filter(|row| row.port == port)
            .filter_map(|row| AddrRange::parse(&row.source).ok().map(|a| (a, row)))
            .filter(|(a, _)| {
                a.family == range.family && a.start <= range.end && range.start <= a.end
            })
            .map(|(_, row)| row.verdict)
            .collect()
    }
}

/// The ruleset parsed from a snapshot's dumps, with what could not be parsed.
pub struct Prepared {
    pub ruleset: Ruleset,
    pub errors: Vec<String>,
}

/// Parses every raw dump. iptables-nft tables show up in `nft -j` as well (with opaque `xt`
/// expressions); those are taken from `iptables-nft-save` only, so nothing is counted twice.
pub fn prepare(snap: &Snapshot) -> Prepared {
    let d = &snap.dumps;
    let mut rs = Ruleset::default();
    let mut errors = Vec::new();
    let mut owned: BTreeSet<(TableFamily, String)> = BTreeSet::new();
    let ipt = [
        (
            &d.iptables_nft_save,
            Backend::IptablesNft,
            Family::V4,
            "iptables-nft-save",
        ),
        (
            &d.ip6tables_nft_save,
            Backend::IptablesNft,
            Family::V6,
            "ip6tables-nft-save",
        ),
        (
            &d.iptables_legacy_save,
            Backend::IptablesLegacy,
            Family::V4,
            "iptables-legacy-save",
        ),
        (
            &d.ip6tables_legacy_save,
            Backend::IptablesLegacy,
            Family::V6,
            "ip6tables-legacy-save",
        ),
    ];
    for (text, backend, family, name) in ipt {
        let Some(text) = text else { continue };
        let foreign = firewall::iptables_save::incompatible_tables(text);
        match firewall::iptables_save::parse(text, backend, family, name) {
            Ok(mut tables) => {
                // A native nft table that merely shares a name with an iptables table
                // (`table ip filter { … }`): iptables-nft-save prints only a warning and an
                // empty skeleton for it. Its rules come from `nft -j`; the skeleton is dropped.
                tables.retain(|t| !foreign.contains(&t.name));
                if backend == Backend::IptablesNft {
                    for t in &tables {
                        owned.insert((t.family, t.name.clone()));
                    }
                }
                rs.tables.extend(tables);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    for (i, text) in d.nft_json.iter().enumerate() {
        let name = if d.nft_json.len() > 1 {
            format!("nft -j list ruleset (#{})", i + 1)
        } else {
            "nft -j list ruleset".to_string()
        };
        match firewall::nft_json::parse_with_elements(text, &name, &d.nft_set_elements) {
            Ok(tables) => rs.tables.extend(
                tables
                    .into_iter()
                    .filter(|t| !owned.contains(&(t.family, t.name.clone()))),
            ),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(text) = &d.nft_text {
        for (fam, table, chain, devices) in firewall::nft_text::ingress_devices(text) {
            let base = rs
                .tables
                .iter_mut()
                .filter(|t| t.backend == Backend::Nft && t.family == fam && t.name == table)
                .flat_map(|t| t.chains.iter_mut())
                .filter(|c| c.name == chain)
                .filter_map(|c| c.base.as_mut());
            for b in base {
                if b.devices.is_empty() {
                    b.devices = devices.clone();
                }
            }
        }
    }
    if let Some(r) = &snap.routing
        && let Err(e) = crate::routing::parse(r)
    {
        errors.push(e.to_string());
    }
    if let Some(n) = &snap.netdev
        && let Err(e) = crate::tc::parse(n)
    {
        errors.push(e.to_string());
    }
    if let Some(text) = &d.ipset_save {
        match firewall::ipset::parse(text, "ipset save") {
            Ok(sets) => rs.ipsets = sets,
            Err(e) => errors.push(e.to_string()),
        }
    }
    Prepared {
        ruleset: rs,
        errors,
    }
}

/// Could Cloudflare's packets be addressed to this address? IPv4 private addresses count (the
/// provider reaches them through 1:1 NAT, as on most clouds); IPv6 unique-local (fc00::/7) and
/// link-local addresses do not, as IPv6 origins are not NATed.
fn is_global(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_loopback() || v.is_link_local() || v.is_unspecified()),
        IpAddr::V6(v) => {
            let s0 = v.segments()[0];
            !(v.is_loopback()
                || v.is_unspecified()
                || (s0 & 0xffc0) == 0xfe80
                || (s0 & 0xfe00) == 0xfc00)
        }
    }
}

/// Decides where the provider's packets arrive: the default-route interfaces (or `--iface`)
/// and their first global address per family (or `--dest`).
pub fn target(snap: &Snapshot, opts: &Options) -> Target {
    let mut notes = Vec::new();
    let mut ifaces: Vec<String> = if opts.ifaces.is_empty() {
        let mut v: Vec<String> = snap
            .default_routes
            .iter()
            .map(|r| r.iface.clone())
            .collect();
        v.dedup();
        v
    } else {
        opts.ifaces.clone()
    };
    let mut seen = BTreeSet::new();
    ifaces.retain(|i| seen.insert(i.clone()));
    let live = !snap.interfaces.is_empty();
    let mut local: Vec<IpAddr> = snap
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr))
        .collect();
    let pick = |fam: Family| -> Option<IpAddr> {
        if let Some(d) = opts.dests.iter().find(|d| addr_to_int(**d).0 == fam) {
            return Some(*d);
        }
        snap.interfaces
            .iter()
            .filter(|i| ifaces.contains(&i.name))
            .flat_map(|i| &i.addrs)
            .map(|a| a.addr)
            .find(|a| addr_to_int(*a).0 == fam && is_global(a))
    };
    let dest_v4 = pick(Family::V4);
    let dest_v6 = pick(Family::V6);
    local.extend(opts.dests.iter().copied());
    let mut families = Vec::new();
    for (f, d) in [(Family::V4, dest_v4), (Family::V6, dest_v6)] {
        if d.is_some() || !live {
            families.push(f);
        } else {
            notes.push(format!(
                "{f}: not analysed — no global {f} address on {} (Cloudflare cannot reach this \
                 host over {f}); pass --dest to analyse it anyway",
                if ifaces.is_empty() {
                    "any default-route interface".to_string()
                } else {
                    ifaces.join(",")
                }
            ));
        }
    }
    if !live && snap.default_routes.is_empty() && !ifaces.is_empty() {
        notes.push(format!(
            "routes unknown (offline dumps): the answers are assumed to leave by {}, the \
             interface the SYNs arrive on",
            ifaces[0]
        ));
    }
    if ifaces.is_empty() {
        notes.push(
            "input interface unknown: rules matching on it are conditional (pass --iface)".into(),
        );
    } else if ifaces.len() > 1 {
        notes.push(format!(
            "several public interfaces ({}); packets are analysed as arriving on {}",
            ifaces.join(","),
            ifaces[0]
        ));
    }
    if live && dest_v4.is_none() && dest_v6.is_none() {
        notes.push("no public address found; pass --iface/--dest".into());
    }
    Target {
        ifaces,
        dest_v4,
        dest_v6,
        families,
        local,
        notes,
        trusted_xdp: opts.trusted_xdp.clone(),
    }
}

/// A classified verdict for one block and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub verdict: VerdictKind,
    pub cf_error: Option<u16>,
    pub rule: Option<RuleRef>,
    pub conditions: Vec<String>,
    /// Where accepted packets land (after DNAT/REDIRECT), for the listener check.
    pub lands: Option<(Option<IpAddr>, u16, bool)>,
}

fn fate_class(f: &Fate) -> u8 {
    match f {
        Fate::Local { .. } | Fate::Forwarded { .. } => 0,
        Fate::Dropped => 1,
        Fate::Rejected(_) => 2,
        Fate::Undecided(_) => 3,
    }
}

/// The branch that took the fewest undecidable conditions as holding: the one to quote when all
/// branches end alike (e.g. a drop by policy rather than by an IPv6-routing-header rule).
fn plainest<'a>(it: impl Iterator<Item = &'a Outcome>) -> Option<&'a Outcome> {
    it.min_by_key(|o| o.conds.iter().filter(|c| c.holds).count())
}

/// Turns the evaluator's outcomes into one verdict: all equal → that verdict; differing only by
/// rate limits → `rate_limited`; otherwise `conditional`, naming the conditions that decide.
pub fn classify(outcomes: &[Outcome]) -> Classified {
    let classes: BTreeSet<u8> = outcomes.iter().map(|o| fate_class(&o.fate)).collect();
    // Where the SYN reached a socket (or found none): from the accepted branches first.
    let lands = outcomes
        .iter()
        .find_map(|o| match &o.fate {
            Fate::Local { addr, port } => Some((*addr, *port, true)),
            Fate::Forwarded { addr, port } => Some((*addr, *port, false)),
            _ => None,
        })
        .or_else(|| outcomes.iter().find_map(|o| o.landed));
    let first_bad = plainest(outcomes.iter().filter(|o| fate_class(&o.fate) != 0));
    let err_of = |o: &Outcome| match o.fate {
        Fate::Dropped => Some(522),
        Fate::Rejected(_) => Some(521),
        _ => None,
    };
    // Conditions that change the class: those taken both ways on branches of different classes.
    let mut by_cond: BTreeMap<(String, String), [BTreeSet<u8>; 2]> = BTreeMap::new();
    let mut cond_meta: BTreeMap<(String, String), (CondKind, RuleRef)> = BTreeMap::new();
    for o in outcomes {
        for c in &o.conds {
            let key = (c.desc.clone(), c.rule.text.clone());
            by_cond.entry(key.clone()).or_default()[usize::from(c.holds)]
                .insert(fate_class(&o.fate));
            cond_meta.entry(key).or_insert((c.kind, c.rule.clone()));
        }
    }
    let relevant: Vec<(CondKind, RuleRef, String)> = by_cond
        .iter()
        .filter(|(_, [f, t])| f != t)
        .filter_map(|(k, _)| {
            cond_meta
                .get(k)
                .map(|(kind, r)| (*kind, r.clone(), k.0.clone()))
        })
        .collect();
    let undecided: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.fate {
            Fate::Undecided(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let mut conditions: Vec<String> = relevant.iter().map(|(_, _, d)| d.clone()).collect();
    for u in &undecided {
        if !conditions.contains(u) {
            conditions.push(u.clone());
        }
    }
    if classes.len() == 1 && !classes.contains(&3) {
        let verdict = match classes.first() {
            Some(0) => VerdictKind::Accept,
            Some(1) => VerdictKind::Drop,
            _ => VerdictKind::Reject,
        };
        let o = first_bad;
        return Classified {
            verdict,
            cf_error: o.and_then(err_of),
            rule: o.and_then(|o| o.decided_by.clone()),
            conditions: Vec::new(),
            lands,
        };
    }
    let only_rate = undecided.is_empty()
        && !relevant.is_empty()
        && relevant.iter().all(|(k, _, _)| *k == CondKind::Rate);
    if !classes.contains(&0) && !classes.contains(&3) && only_rate {
        // Always blocked; only the manner varies with the rate (e.g. reject under a limit,
        // drop above it). A drop-or-reject that hangs on an undecidable condition is
        // `conditional` below: the kernel's answer is one of the named outcomes.
        // The matrix shows what a first connection gets (every rate condition on its
        // low-rate side); the other outcome is named as what happens under load.
        let first = outcomes
            .iter()
            .find(|o| {
                o.conds
                    .iter()
                    .all(|c| c.kind != CondKind::Rate || c.holds == c.first)
            })
            .or(first_bad);
        let loaded: Vec<String> = outcomes
            .iter()
            .filter(|o| first.is_none_or(|f| fate_class(&f.fate) != fate_class(&o.fate)))
            .filter_map(|o| {
                let by = o.decided_by.as_ref().map(rule_label).unwrap_or_default();
                match o.fate {
                    Fate::Dropped => {
                        Some(format!("above the limit: dropped by {by} (522 under load)"))
                    }
                    Fate::Rejected(_) => Some(format!(
                        "above the limit: rejected by {by} (521 under load)"
                    )),
                    _ => None,
                }
            })
            .collect();
        let mut conditions = conditions;
        for l in loaded {
            if !conditions.contains(&l) {
                conditions.push(l);
            }
        }
        return Classified {
            verdict: if first.is_some_and(|o| matches!(o.fate, Fate::Dropped)) {
                VerdictKind::Drop
            } else {
                VerdictKind::Reject
            },
            cf_error: first.and_then(err_of),
            rule: first.and_then(|o| o.decided_by.clone()),
            conditions,
            lands,
        };
    }
    let cf_error = outcomes
        .iter()
        .filter_map(err_of)
        .min_by_key(|e| if *e == 522 { 0 } else { 1 });
    let rule = relevant
        .iter()
        .find(|(k, _, _)| !only_rate || *k == CondKind::Rate)
        .map(|(_, r, _)| r.clone())
        .or_else(|| first_bad.and_then(|o| o.decided_by.clone()));
    Classified {
        verdict: if only_rate {
            VerdictKind::RateLimited
        } else {
            VerdictKind::Conditional
        },
        cf_error,
        rule,
        conditions,
        lands,
    }
}

fn provider_blocks(ranges: &ProviderRanges, fam: Family) -> Vec<AddrRange> {
    match fam {
        Family::V4 => ranges
            .ipv4
            .iter()
            .map(|n| AddrRange::from_net(ipnet::IpNet::V4(*n)))
            .collect(),
        Family::V6 => ranges
            .ipv6
            .iter()
            .map(|n| AddrRange::from_net(ipnet::IpNet::V6(*n)))
            .collect(),
    }
}

/// Connected subnets of every interface (the route a forwarded packet takes).
fn connected(snap: &Snapshot) -> Vec<(String, AddrRange)> {
    snap.interfaces
        .iter()
        .flat_map(|i| {
            i.addrs.iter().filter_map(move |a| {
                ipnet::IpNet::new(a.addr, a.prefix_len)
                    .ok()
                    .map(|n| (i.name.clone(), AddrRange::from_net(n.trunc())))
            })
        })
        .collect()
}

/// What the evaluator knows about the host besides its rules (also used by `fix` to follow a
/// packet the same way).
pub fn host_facts(snap: &Snapshot, t: &Target) -> eval::HostFacts {
    eval::HostFacts {
        local: t.local.clone(),
        routes: connected(snap),
        defaults: snap
            .default_routes
            .iter()
            .map(|r| (r.family, r.iface.clone()))
            .collect(),
        forwarding: snap.forwarding,
        listeners: snap.listeners.clone(),
        bindv6only: snap.bindv6only,
        // Parse errors are reported by `prepare` (dump-unparsable, unknown).
        routing: snap
            .routing
            .as_ref()
            .and_then(|d| crate::routing::parse(d).ok()),
        netdev: snap.netdev.as_ref().and_then(|d| crate::tc::parse(d).ok()),
        trusted_xdp: t.trusted_xdp.clone(),
    }
}

/// Address boundaries drawn outside netfilter: routes, policy rules, tc filters.
fn kernel_cuts(facts: &eval::HostFacts) -> Vec<AddrRange> {
    let mut v = Vec::new();
    if let Some(r) = &facts.routing {
        v.extend(r.cuts());
    }
    if let Some(n) = &facts.netdev {
        v.extend(n.cuts());
    }
    v
}

/// Builds the packet for one block representative.
/// The packet the analysis walks for one block: from `src` to `port` on the target.
pub fn packet(t: &Target, fam: Family, src: u128, port: u16, established: bool) -> Packet {
    Packet {
        family: fam,
        src,
        dst: t.dest(fam).map(|a| addr_to_int(a).1),
        dport: port,
        iif: t.ifaces.first().cloned(),
        established,
    }
}

/// Analyses a snapshot.
pub fn analyze(snap: &Snapshot, opts: &Options) -> Report {
    let prepared = prepare(snap);
    analyze_prepared(snap, &prepared, opts)
}

/// Analyses with an already-parsed ruleset (benchmarks parse once, analyse many times).
pub fn analyze_prepared(snap: &Snapshot, prepared: &Prepared, opts: &Options) -> Report {
    let rs = &prepared.ruleset;
    let t = target(snap, opts);
    let facts = host_facts(snap, &t);
    let mut cuts = blocks::Cuts::new(rs);
    cuts.add(&kernel_cuts(&facts));
    let ev = Evaluator::new(rs, facts);
    let mut ports = opts.ports.clone();
    ports.sort_unstable();
    ports.dedup();

    // (port, family) → [(block, classified)]
    let mut rows = Vec::new();
    let mut established_bad: BTreeMap<(u16, Option<RuleRef>), Vec<AddrRange>> = BTreeMap::new();
    let mut lands: BTreeMap<(u16, Family), (Option<IpAddr>, u16, bool)> = BTreeMap::new();
    for &port in &ports {
        for &fam in &t.families {
            let blocks = cuts.split(&provider_blocks(&snap.ranges, fam));
            let mut classified: Vec<(AddrRange, Classified)> = Vec::with_capacity(blocks.len());
            for b in blocks {
                let c = classify(&ev.evaluate(&packet(&t, fam, b.start, port, false)));
                if c.verdict == VerdictKind::Accept {
                    let e = classify(&ev.evaluate(&packet(&t, fam, b.start, port, true)));
                    if e.verdict != VerdictKind::Accept {
                        established_bad
                            .entry((port, e.rule.clone()))
                            .or_default()
                            .push(b);
                    }
                }
                if let Some(l) = c.lands {
                    lands.entry((port, fam)).or_insert(l);
                }
                classified.push((b, c));
            }
            rows.extend(merge_rows(port, classified));
        }
    }

    let mut findings = Vec::new();
    findings.extend(reach_findings(&rows, translates_ports(rs)));
    // The namespace's listen-overflow counters back a full accept queue (cumulative: evidence
    // that drops happened, beside the queue seen full now).
    if let Some(ev) = snap.counters.and_then(|c| c.listen_evidence()) {
        for f in findings
            .iter_mut()
            .filter(|f| f.code == Code::ListenQueueFull)
        {
            f.message = format!("{}; {ev}", f.message);
        }
    }
    for ((port, rule), blocks) in established_bad {
        let sources = cidrs(&blocks);
        findings.push(Finding {
            code: Code::EstablishedBlocked,
            severity: Code::EstablishedBlocked.default_severity(),
            message: format!(
                "packets of established connections from {} to port {port} are not accepted{}",
                summarize(&sources),
                rule.as_ref().map(|r| format!(" ({})", rule_label(r))).unwrap_or_default()
            ),
            ports: vec![port],
            sources,
            cf_error: Some(522),
            rules: rule.into_iter().collect(),
            fix: Some("accept ct state established,related (-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT) early in the input chain".into()),
        });
    }
    if let Some(listeners) = &snap.listeners {
        findings.extend(listener_findings(
            listeners,
            &t,
            &ports,
            &lands,
            snap.bindv6only,
        ));
    }
    findings.extend(housekeeping_findings(snap, prepared, opts));
    let (tls_rows, tls_note) = tls_check(snap, opts, &mut findings);
    if t.families.is_empty() {
        // Nothing was analysed: never an "all clear".
        findings.push(Finding {
            code: Code::ReadFailed,
            severity: Severity::Unknown,
            message: format!(
                "no public address to audit: {}",
                if t.notes.is_empty() {
                    "no interface carries a default route".to_string()
                } else {
                    t.notes.join("; ")
                }
            ),
            ports: Vec::new(),
            sources: Vec::new(),
            cf_error: None,
            rules: Vec::new(),
            fix: Some(
                "pass --iface NAME and/or --dest ADDR (the address Cloudflare connects to)".into(),
            ),
        });
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));

    let status = if findings.iter().any(|f| f.severity == Severity::Unknown) {
        Status::Unknown
    } else if findings.iter().any(|f| f.severity == Severity::Critical) {
        Status::Critical
    } else if findings.iter().any(|f| f.severity == Severity::Warning) {
        Status::Warning
    } else {
        Status::Ok
    };
    Report {
        status,
        ranges: snap.ranges.clone(),
        ranges_age_days: snap.ranges.age_days(opts.now),
        target: t,
        ports,
        listeners: snap.listeners.clone(),
        reachability: rows,
        findings,
        rule_count: rs.rule_count(),
        accepted: Vec::new(),
        tls: tls_rows,
        tls_note,
    }
}

/// The TLS findings of the captured handshakes, or why TLS was not checked.
fn tls_check(
    snap: &Snapshot,
    opts: &Options,
    findings: &mut Vec<Finding>,
) -> (Option<Vec<tls::TlsRow>>, Option<String>) {
    let o = &opts.tls;
    let Some(mode) = o.mode else {
        return (
            None,
            Some("TLS not checked: no SSL mode configured ([tls] ssl_mode or --ssl-mode)".into()),
        );
    };
    if mode == tls::SslMode::Flexible {
        return (
            None,
            Some("TLS not checked: in Flexible mode Cloudflare connects to the origin over plain HTTP".into()),
        );
    }
    if o.hostnames.is_empty() {
        // A mode that needs TLS, and nothing to check it with: not an all clear.
        let why = "TLS not checked: the SSL mode needs TLS, but no hostname is configured ([tls] hostnames or --hostname)";
        findings.push(Finding {
            code: Code::TlsNotChecked,
            severity: Code::TlsNotChecked.default_severity(),
            message: format!("{why}: the certificate Cloudflare would see is unknown"),
            ports: vec![],
            sources: vec![],
            cf_error: None,
            rules: vec![],
            fix: Some("name the zone's hostnames: [tls] hostnames = [\"example.com\"] or --hostname example.com".into()),
        });
        return (None, Some(why.into()));
    }
    let Some(probes) = &snap.tls else {
        return (
            None,
            Some("TLS not checked: no handshakes in these inputs (offline dumps, or a snapshot taken without [tls] hostnames)".into()),
        );
    };
    if probes.is_empty() {
        return (
            Some(vec![]),
            Some("TLS: no listener serves an audited HTTPS port on a public address".into()),
        );
    }
    let (rows, f) = tls::judge(probes, o, opts.now.unix_timestamp());
    findings.extend(f);
    (Some(rows), None)
}

/// Merges adjacent blocks with the same verdict, rule and conditions into the fewest CIDRs.
fn merge_rows(port: u16, mut blocks: Vec<(AddrRange, Classified)>) -> Vec<ReachRow> {
    blocks.sort_by_key(|(b, _)| (b.family, b.start));
    let mut merged: Vec<(AddrRange, Classified)> = Vec::new();
    for (b, c) in blocks {
        if let Some((last, lc)) = merged.last_mut()
            && last.family == b.family
            && last.end.checked_add(1) == Some(b.start)
            && lc.verdict == c.verdict
            && lc.rule == c.rule
            && lc.conditions == c.conditions
            && lc.cf_error == c.cf_error
        {
            last.end = b.end;
            continue;
        }
        merged.push((b, c));
    }
    merged
        .into_iter()
        .flat_map(|(r, c)| {
            r.to_cidrs().into_iter().map(move |n| ReachRow {
                port,
                source: n.to_string(),
                verdict: c.verdict,
                cf_error: c.cf_error,
                rule: c.rule.clone(),
                conditions: c.conditions.clone(),
            })
        })
        .collect()
}

fn cidrs(blocks: &[AddrRange]) -> Vec<String> {
    crate::firewall::AddrSet::new(blocks.to_vec())
        .to_cidrs()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

fn summarize(sources: &[String]) -> String {
    match sources.len() {
        0 => "no addresses".into(),
        1..=4 => sources.join(", "),
        n => format!("{}, … ({n} CIDRs)", sources[..3].join(", ")),
    }
}

/// `iptables-nft filter INPUT #3` / `nft inet fw input handle 7`.
pub fn rule_label(r: &RuleRef) -> String {
    let dir = if r.direction == firewall::Direction::Reply {
        " (reply)"
    } else {
        ""
    };
    match r.backend {
        Backend::Route => return format!("route {}", r.text),
        Backend::Socket => return format!("socket: {}", r.text),
        Backend::Tc => return format!("tc {} {} pref {}", r.table, r.chain, r.position),
        Backend::Xdp => return format!("xdp on {}", r.table),
        Backend::Kernel => return format!("kernel {}", r.text),
        _ => {}
    }
    format!("{}{dir}", netfilter_label(r))
}

fn netfilter_label(r: &RuleRef) -> String {
    let pos = if r.position == 0 {
        "policy".to_string()
    } else if let Some(h) = r.handle {
        format!("handle {h}")
    } else {
        format!("#{}", r.position)
    };
    match r.backend {
        Backend::Nft => format!("nft {} {} {} {pos}", r.family, r.table, r.chain),
        b => format!(
            "{}{} {} {} {pos}",
            b,
            if r.family == TableFamily::Ip6 {
                " (v6)"
            } else {
                ""
            },
            r.table,
            r.chain
        ),
    }
}

/// The one-line fix for a rule that blocks the provider's ranges on some ports.
pub fn fix_hint(r: &RuleRef, sources: &[String], ports: &[u16]) -> String {
    let ports_s: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    // Before the culprit rule in its own chain; for a policy, appended at the chain's end.
    let policy = r.position == 0;
    if r.direction == firewall::Direction::In
        && let Some(jail) = fail2ban_jail(r)
    {
        return fail2ban_hint(&jail, sources);
    }
    if r.direction == firewall::Direction::In
        && let Some(h) = ban_tool_hint(r, sources)
    {
        return h;
    }
    if r.direction == firewall::Direction::Reply
        && matches!(
            r.backend,
            Backend::Nft | Backend::IptablesNft | Backend::IptablesLegacy
        )
    {
        return reply_fix_hint(r, sources, ports);
    }
    match r.backend {
        Backend::Kernel if r.text.contains("rp_filter") => {
            let key = r.text.split(" = ").next().unwrap_or(&r.text);
            format!(
                "sysctl -w {key}=2  # loose; or route the provider's ranges back by the interface they arrive on; persist it in /etc/sysctl.d/"
            )
        }
        Backend::Kernel => {
            let key = r.text.split(" = ").next().unwrap_or(&r.text);
            format!(
                "sysctl -w {key}=1  # forwarded traffic is dropped while it is 0; persist it in /etc/sysctl.d/"
            )
        }
        Backend::Route => match r.text.split_whitespace().next() {
            Some("blackhole" | "unreachable" | "prohibit") if r.table == "rules" => {
                format!("ip rule del {}", r.text.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':').trim())
            }
            Some(t @ ("blackhole" | "unreachable" | "prohibit" | "throw")) => {
                let _ = t;
                let v6 = if r.family == TableFamily::Ip6 { "-6 " } else { "" };
                format!("ip {v6}route del {}", r.text)
            }
            _ if r.table == "rules" => format!(
                "ip rule del {}  # or make the table it selects route the provider's ranges out of the public interface",
                r.text.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':').trim()
            ),
            _ => "add a route back to the provider's ranges through the public interface (e.g. a default route)".to_string(),
        },
        Backend::Socket if r.text.contains("accept queue") => format!(
            "the server is not accepting connections fast enough: check it is alive (`ss -ltn sport = :{p}`: Recv-Q ≥ Send-Q means full), then raise its backlog (nginx `listen {p} backlog=4096;`) and `sysctl -w net.core.somaxconn=4096` (persist it in /etc/sysctl.d/)",
            p = ports.first().copied().unwrap_or(443)
        ),
        Backend::Socket => format!(
            "make the web server listen on 0.0.0.0:{p} and [::]:{p} without binding it to another device (e.g. nginx `listen {p};` and `listen [::]:{p};`), or accept connections faster",
            p = ports.first().copied().unwrap_or(443)
        ),
        Backend::Tc => format!(
            "tc filter del dev {} {} pref {} (after checking what else the filter is for)",
            r.table, r.chain, r.position
        ),
        Backend::Xdp => format!(
            "check the XDP program on {} (`ip link show dev {}`, `bpftool prog show`); if it is trusted, list it in the configuration",
            r.table, r.table
        ),
        Backend::Nft if r.table == "firewalld" => firewalld_hint(r, sources, ports),
        Backend::Nft => {
            let (verb, at) = match (policy, r.handle) {
                (false, Some(h)) => ("insert", format!(" position {h}")),
                (false, None) => ("insert", String::new()),
                (true, _) => ("add", String::new()),
            };
            nft_per_family(r, sources, |fam, srcs| {
                format!(
                    "nft {verb} rule {} {} {}{at} {fam} saddr {{ {srcs} }} tcp dport {{ {} }} accept comment \"origin-audit\"",
                    r.family,
                    r.table,
                    r.chain,
                    ports_s.join(", ")
                )
            })
        }
        _ if ufw_user_rules_precede(&r.chain) => ufw_hint(r, sources, ports, false),
        b => {
            let bin = match (b, r.family) {
                (Backend::IptablesLegacy, TableFamily::Ip6) => "ip6tables-legacy",
                (Backend::IptablesLegacy, _) => "iptables-legacy",
                (_, TableFamily::Ip6) => "ip6tables-nft",
                _ => "iptables-nft",
            };
            let at = if policy {
                format!("-A {}", r.chain)
            } else {
                format!("-I {} {}", r.chain, r.position)
            };
            let dport = if ports.len() == 1 {
                format!("--dport {}", ports[0])
            } else {
                format!("-m multiport --dports {}", ports_s.join(","))
            };
            format!(
                "{bin} -t {} {at} -s {} -p tcp {dport} -m comment --comment origin-audit -j ACCEPT",
                r.table,
                sources.join(","),
            )
        }
    }
}

/// The firewalld zone a chain of firewalld's nft table belongs to: `filter_IN_public_deny`,
/// `filter_IN_public`, `nat_PRE_dmz_allow`, … (firewalld names a zone's input chains
/// `<table>_IN_<zone>` / `<table>_PRE_<zone>` with the `_pre`, `_log`, `_deny`, `_allow`, `_post`
/// sub-chains). `None` for the chains above the zones (`filter_INPUT`, `filter_INPUT_ZONES`).
pub fn firewalld_zone(chain: &str) -> Option<&str> {
    let rest = ["filter_IN_", "nat_PRE_", "mangle_PRE_"]
        .iter()
        .find_map(|p| chain.strip_prefix(p))?;
    let zone = ["_pre", "_log", "_deny", "_allow", "_post"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))
        .unwrap_or(rest);
    (!zone.is_empty()).then_some(zone)
}

/// The priority of the rich rules origin-audit prints. Without one a rich rule lands, by its
/// action, in the zone's `_allow` chain, which runs after `_deny`: an accept there never beats a
/// deny rich rule. Below 0 it lands in the zone's `_pre` chain, ahead of the zone's log, deny
/// and allow chains (firewalld.richlanguage(5), "priority").
pub const RICH_PRIORITY: i32 = -32768;

/// On firewalld's own table, firewalld's permanent configuration (an nft rule added there is
/// gone at the next `firewall-cmd --reload`): one rich rule per range and port ahead of the
/// zone's rules, then a reload; past a handful, the firewalld form of `fix`, which uses ipsets.
fn firewalld_hint(r: &RuleRef, sources: &[String], ports: &[u16]) -> String {
    let ports_s: Vec<String> = ports.iter().map(u16::to_string).collect();
    if sources.len() * ports.len() > 6 {
        return format!(
            "origin-audit fix --emit firewalld --ports {} | sh  # firewalld rebuilds its table at every reload: this writes permanent ipsets and rich rules, then reloads",
            ports_s.join(",")
        );
    }
    let zone = firewalld_zone(&r.chain)
        .map(|z| format!(" --zone={z}"))
        .unwrap_or_default();
    let mut cmds: Vec<String> = vec![];
    for src in sources {
        let fam = if src.contains(':') { "ipv6" } else { "ipv4" };
        for p in ports {
            cmds.push(format!(
                "firewall-cmd --permanent{zone} --add-rich-rule='rule priority=\"{RICH_PRIORITY}\" family=\"{fam}\" source address=\"{src}\" port port=\"{p}\" protocol=\"tcp\" accept'"
            ));
        }
    }
    cmds.push("firewall-cmd --reload".into());
    format!(
        "{}  # firewalld keeps it across reloads (an nft rule in its table would not)",
        cmds.join(" && ")
    )
}

/// The fail2ban jail whose ban decides: its iptables chain `f2b-JAIL`, or in its nft table
/// (`f2b-table`) the set the rule looks up, `addr-set-JAIL` / `addr6-set-JAIL`.
fn fail2ban_jail(r: &RuleRef) -> Option<String> {
    if r.backend != Backend::Nft
        && let Some(j) = r.chain.strip_prefix("f2b-")
    {
        return Some(j.to_string());
    }
    if r.backend == Backend::Nft && r.table == "f2b-table" {
        return r.text.split_whitespace().find_map(|w| {
            let w = w.trim_start_matches('@');
            w.strip_prefix("addr-set-")
                .or_else(|| w.strip_prefix("addr6-set-"))
                .map(str::to_string)
        });
    }
    None
}

/// Lift the ban with fail2ban itself (so its state agrees), and say why it happened: behind
/// Cloudflare every visitor arrives from Cloudflare's addresses. A shell comment carries the
/// advice, so the line still pastes as a command.
fn fail2ban_hint(jail: &str, sources: &[String]) -> String {
    let addrs: Vec<&str> = sources.iter().map(|s| bare_addr(s)).collect();
    format!(
        "fail2ban-client set {jail} unbanip {}  # the ban hit Cloudflare, not the visitor: add Cloudflare's ranges to ignoreip in /etc/fail2ban/jail.local and log the visitor's address (CF-Connecting-IP); `origin-audit fix` prints both",
        addrs.join(" ")
    )
}

/// The address as the ban tools write it: a host without its `/32` / `/128`.
fn bare_addr(s: &str) -> &str {
    s.strip_suffix("/32")
        .or_else(|| s.strip_suffix("/128"))
        .unwrap_or(s)
}

/// CrowdSec's bouncers (iptables: chain `CROWDSEC_CHAIN`, ipsets `crowdsec-blacklists*` /
/// `crowdsec6-blacklists*`; nft: tables `crowdsec` / `crowdsec6`) and CSF (chains `DENYIN`,
/// `DENYOUT`, `chain_DENY`): lift the ban with the tool, so the bouncer or csf does not put it
/// back, and say why it happened.
fn ban_tool_hint(r: &RuleRef, sources: &[String]) -> Option<String> {
    let lower = |s: &str| s.to_ascii_lowercase();
    let crowdsec = lower(&r.chain).starts_with("crowdsec")
        || (r.backend == Backend::Nft && r.table.starts_with("crowdsec"))
        || r.text.contains("crowdsec-blacklists")
        || r.text.contains("crowdsec6-blacklists");
    if crowdsec {
        let cmds: Vec<String> = sources
            .iter()
            .map(|s| {
                let a = bare_addr(s);
                let flag = if a.contains('/') { "--range" } else { "--ip" };
                format!("cscli decisions delete {flag} {a}")
            })
            .collect();
        return Some(format!(
            "{}  # the ban hit Cloudflare, not the visitor: whitelist Cloudflare's ranges in CrowdSec and parse the visitor's address (CF-Connecting-IP); `origin-audit fix` prints both",
            cmds.join(" && ")
        ));
    }
    if matches!(r.chain.as_str(), "DENYIN" | "DENYOUT" | "chain_DENY") {
        let cmds: Vec<String> = sources
            .iter()
            .map(|s| format!("csf -dr {}", bare_addr(s)))
            .collect();
        return Some(format!(
            "{}  # (a temporary ban: `csf -tr ADDR`) the ban hit Cloudflare, not the visitor: list Cloudflare's ranges in /etc/csf/csf.allow and csf.ignore, and log the visitor's address (CF-Connecting-IP)",
            cmds.join(" && ")
        ));
    }
    None
}

/// ufw chains that ufw's user rules come before (ufw(8): before → user → after → reject,
/// then the policy; `limit` rules live in the user list): a `ufw insert 1` / `ufw prepend`
/// accept lands ahead of the culprit and, unlike an iptables command, survives `ufw reload`.
fn ufw_user_rules_precede(chain: &str) -> bool {
    let c = chain
        .strip_prefix("ufw6-")
        .or_else(|| chain.strip_prefix("ufw-"))
        .unwrap_or("");
    matches!(
        c,
        "user-input"
            | "user-output"
            | "user-limit"
            | "user-limit-accept"
            | "after-input"
            | "after-output"
            | "after-logging-input"
            | "after-logging-output"
            | "reject-input"
            | "reject-output"
    )
}

/// The ufw commands accepting `sources` on `ports` (or, for `reply`, the answers to them), one
/// per range and port. The provider side names `port 1:65535` (TCP never uses port 0) so that a
/// rule of the admin's with the same addresses and port does not make ufw skip ours ("Skipping
/// inserting existing rule").
fn ufw_hint(r: &RuleRef, sources: &[String], ports: &[u16], reply: bool) -> String {
    let mut cmds = Vec::new();
    for s in sources {
        let verb = if s.contains(':') {
            "prepend"
        } else {
            "insert 1"
        };
        for p in ports {
            cmds.push(if reply || r.direction == firewall::Direction::Reply {
                format!("ufw {verb} allow out proto tcp from any port {p} to {s} port 1:65535 comment origin-audit")
            } else {
                format!("ufw {verb} allow proto tcp from {s} port 1:65535 to any port {p} comment origin-audit")
            });
        }
    }
    cmds.join(" && ")
}

/// One nft command per address family (a set literal of mixed families is refused: "Address
/// family for hostname not supported"), joined so the line pastes as one shell command. An
/// `ip` table sees only IPv4 and an `ip6` table only IPv6: the other family is left out.
fn nft_per_family(r: &RuleRef, sources: &[String], cmd: impl Fn(&str, &str) -> String) -> String {
    let (v6, v4): (Vec<&String>, Vec<&String>) = sources.iter().partition(|s| s.contains(':'));
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let mut cmds = Vec::new();
    if !v4.is_empty() && r.family != TableFamily::Ip6 {
        cmds.push(cmd("ip", &join(&v4)));
    }
    if !v6.is_empty() && r.family != TableFamily::Ip {
        cmds.push(cmd("ip6", &join(&v6)));
    }
    cmds.join(" && ")
}

/// The fix for a rule that drops the host's answer: accept the answers to the provider's
/// ranges (from the web ports) before the culprit, in its own chain.
fn reply_fix_hint(r: &RuleRef, sources: &[String], ports: &[u16]) -> String {
    let ports_s: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let policy = r.position == 0;
    if r.backend != Backend::Nft && ufw_user_rules_precede(&r.chain) {
        return ufw_hint(r, sources, ports, true);
    }
    match r.backend {
        Backend::Nft if r.table == "firewalld" => firewalld_hint(r, sources, ports),
        Backend::Nft => {
            let (verb, at) = match (policy, r.handle) {
                (false, Some(h)) => ("insert", format!(" position {h}")),
                _ => ("add", String::new()),
            };
            nft_per_family(r, sources, |fam, srcs| {
                format!(
                    "nft {verb} rule {} {} {}{at} {fam} daddr {{ {srcs} }} tcp sport {{ {} }} accept comment \"origin-audit\"",
                    r.family,
                    r.table,
                    r.chain,
                    ports_s.join(", ")
                )
            })
        }
        b => {
            let bin = match (b, r.family) {
                (Backend::IptablesLegacy, TableFamily::Ip6) => "ip6tables-legacy",
                (Backend::IptablesLegacy, _) => "iptables-legacy",
                (_, TableFamily::Ip6) => "ip6tables-nft",
                _ => "iptables-nft",
            };
            let at = if policy {
                format!("-A {}", r.chain)
            } else {
                format!("-I {} {}", r.chain, r.position)
            };
            let sport = if ports.len() == 1 {
                format!("--sport {}", ports[0])
            } else {
                format!("-m multiport --sports {}", ports_s.join(","))
            };
            // REJECT's answer: an ICMP error (RELATED to the SYN's entry) is not TCP, so the
            // sport rule misses it; a TCP reset leaves from the web port and is covered.
            let icmp = if r.family == TableFamily::Ip6 {
                "ipv6-icmp"
            } else {
                "icmp"
            };
            format!(
                "{bin} -t {t} {at} -d {d} -p tcp {sport} -m comment --comment origin-audit -j ACCEPT && \
                 {bin} -t {t} {at} -d {d} -p {icmp} -m conntrack --ctstate RELATED -m comment --comment origin-audit -j ACCEPT",
                t = r.table,
                d = sources.join(","),
            )
        }
    }
}

/// Whether a DNAT or REDIRECT rewrites a destination port: the filter chains after nat
/// PREROUTING then see the translated port (and the answer leaves from it), so a one-line
/// accept naming the audited port would not match there.
fn translates_ports(rs: &firewall::Ruleset) -> bool {
    rs.tables
        .iter()
        .flat_map(|t| &t.chains)
        .flat_map(|c| &c.rules)
        .any(|r| {
            matches!(
                r.verdict,
                firewall::Verdict::Dnat { port: Some(_), .. }
                    | firewall::Verdict::Redirect { port: Some(_) }
            )
        })
}

/// Before nat PREROUTING (raw, and mangle PREROUTING): the packet still has its original port.
fn before_dnat(r: &RuleRef) -> bool {
    r.direction == firewall::Direction::In
        && (r.table == "raw" || (r.table == "mangle" && r.chain == "PREROUTING"))
}

fn reach_findings(rows: &[ReachRow], translates: bool) -> Vec<Finding> {
    // Group by (verdict, rule, conditions); within a group, by the source set, so one finding
    // says "rule X drops A, B on ports 80, 443" when it treats ports alike.
    type Key = (VerdictKind, Option<String>, Vec<String>);
    type Group = (Option<RuleRef>, Option<u16>, BTreeMap<u16, Vec<String>>);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    // A SYN no socket takes is the listener findings' to explain (one alarm per cause).
    for r in rows.iter().filter(|r| !r.past_the_firewall()) {
        let key = (
            r.verdict,
            r.rule
                .as_ref()
                .map(|x| format!("{}|{}|{}", rule_label(x), x.text, x.position)),
            r.conditions.clone(),
        );
        let g = groups
            .entry(key)
            .or_insert_with(|| (r.rule.clone(), r.cf_error, BTreeMap::new()));
        g.2.entry(r.port).or_default().push(r.source.clone());
    }
    let mut out = Vec::new();
    for ((verdict, _, conditions), (rule, cf_error, per_port)) in groups {
        // Ports with identical source sets share one finding.
        let mut by_sources: BTreeMap<Vec<String>, Vec<u16>> = BTreeMap::new();
        for (port, s) in per_port {
            by_sources.entry(s).or_default().push(port);
        }
        for (sources, ports) in by_sources {
            let socket = rule.as_ref().is_some_and(|r| r.backend == Backend::Socket);
            let code = match verdict {
                VerdictKind::Drop | VerdictKind::Conditional if socket => Code::ListenQueueFull,
                VerdictKind::Drop => Code::RangeDropped,
                VerdictKind::Reject => Code::RangeRejected,
                VerdictKind::RateLimited => Code::RangeRateLimited,
                _ => Code::RangeConditional,
            };
            let ports_s: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            let by = rule
                .as_ref()
                .map(|r| format!(" by {}: {}", rule_label(r), r.text))
                .unwrap_or_default();
            let what = match verdict {
                VerdictKind::Drop => "dropped".to_string(),
                VerdictKind::Reject => "rejected".to_string(),
                VerdictKind::RateLimited => "rate-limited".to_string(),
                _ => format!("conditional on {}", conditions.join("; ")),
            };
            let effect = match (cf_error, verdict) {
                (Some(e), VerdictKind::RateLimited) => format!(" → Cloudflare {e} above the limit"),
                (Some(e), VerdictKind::Conditional) => format!(" → Cloudflare {e} when it blocks"),
                (Some(e), _) => format!(" → Cloudflare {e}"),
                (None, _) => String::new(),
            };
            let message = format!(
                "Cloudflare {} on port {} {what}{by}{effect}",
                summarize(&sources),
                ports_s.join(", "),
            );
            let fix = rule.as_ref().map(|r| {
                if translates
                    && matches!(
                        r.backend,
                        Backend::Nft | Backend::IptablesNft | Backend::IptablesLegacy
                    )
                    && !before_dnat(r)
                {
                    if r.backend == Backend::Nft && r.table == "firewalld" {
                        format!(
                            "origin-audit fix --emit firewalld --ports {} | sh  # a DNAT/forward-port changes the port this chain sees: the firewalld form opens the translated ports (permanent, then a reload)",
                            ports_s.join(",")
                        )
                    } else {
                    format!(
                        "origin-audit fix --apply --ports {}  # a DNAT/REDIRECT changes the port this chain sees: fix plans the accepts on the translated ports, proves them on the model and verifies them in the kernel (`origin-audit fix --ports {0}` shows them first)",
                        ports_s.join(",")
                    )
                    }
                } else {
                    fix_hint(r, &sources, &ports)
                }
            });
            if let Some(c) = conditions.iter().find(|c| c.contains("asymmetric route")) {
                out.push(Finding {
                    code: Code::AsymmetricRoute,
                    severity: Code::AsymmetricRoute.default_severity(),
                    message: format!(
                        "Cloudflare {} on port {}: {c}",
                        summarize(&sources),
                        ports_s.join(", ")
                    ),
                    ports: ports.clone(),
                    sources: sources.clone(),
                    cf_error: Some(522),
                    rules: rule.iter().cloned().collect(),
                    fix: Some(
                        "route the provider's ranges back out of the interface they arrive on \
                         (remove the more specific route, or `ip rule add from PUBLIC-ADDRESS \
                         lookup TABLE` with a default route via the public interface in TABLE)"
                            .into(),
                    ),
                });
            }
            out.push(Finding {
                code,
                severity: code.default_severity(),
                message,
                ports,
                sources,
                cf_error,
                rules: rule.iter().cloned().collect(),
                fix,
            });
        }
    }
    out
}

fn listener_findings(
    listeners: &[Listener],
    t: &Target,
    ports: &[u16],
    lands: &BTreeMap<(u16, Family), (Option<IpAddr>, u16, bool)>,
    bindv6only: Option<bool>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for &port in ports {
        // One finding per port: the most specific problem of any family, naming each family.
        let mut problems: Vec<(Code, String)> = Vec::new();
        let mut lport_seen = port;
        for &fam in &t.families {
            // Where accepted packets land: the DNAT/REDIRECT target if any. When no provider
            // packet gets through on this port and family, the firewall findings already say
            // why visitors fail; a listener finding there would be a second alarm for one cause.
            let Some(&(addr, lport, local)) = lands.get(&(port, fam)) else {
                continue;
            };
            if !local {
                continue; // forwarded to another host: its listener is not ours to see
            }
            let Some(dest) = addr.or(t.dest(fam)) else {
                continue;
            };
            lport_seen = lport;
            if listener_for(
                listeners,
                dest,
                lport,
                bindv6only,
                t.ifaces.first().map(String::as_str),
            )
            .is_some()
            {
                continue;
            }
            let on_port: Vec<&Listener> = listeners
                .iter()
                .filter(|l| l.port == lport && addr_to_int(l.address).0 == fam)
                .collect();
            let addrs = on_port
                .iter()
                .map(|l| l.address.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let who = on_port.first().map(|l| proc_label(l)).unwrap_or_default();
            problems.push(if on_port.is_empty() {
                (
                    Code::NoListener,
                    format!("{fam}: nothing listens on {dest}"),
                )
            } else if on_port.iter().all(|l| l.address.is_loopback()) {
                (
                    Code::ListenerLoopbackOnly,
                    format!("{fam}: only {addrs}{who}, not {dest}"),
                )
            } else {
                (
                    Code::ListenerWrongAddress,
                    format!("{fam}: only {addrs}{who}, not {dest}"),
                )
            });
        }
        let Some(code) = problems.iter().map(|(c, _)| *c).max_by_key(|c| match c {
            Code::ListenerLoopbackOnly => 2,
            Code::ListenerWrongAddress => 1,
            _ => 0,
        }) else {
            continue;
        };
        let redirected = if lport_seen != port {
            format!(" (redirected to {lport_seen})")
        } else {
            String::new()
        };
        let details = problems
            .iter()
            .map(|(_, d)| d.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let fix = match code {
            Code::NoListener => format!(
                "start the web server on port {lport_seen} (e.g. nginx `listen {lport_seen};` and `listen [::]:{lport_seen};`)"
            ),
            Code::ListenerLoopbackOnly => format!(
                "listen on 0.0.0.0:{lport_seen} and [::]:{lport_seen} (or the public address), not on 127.0.0.1/::1"
            ),
            _ => format!(
                "listen on 0.0.0.0:{lport_seen} and [::]:{lport_seen}, or on the address Cloudflare connects to"
            ),
        };
        out.push(Finding {
            code,
            severity: code.default_severity(),
            message: format!(
                "port {port}{redirected}: {details} → connections refused, Cloudflare 521"
            ),
            ports: vec![port],
            sources: Vec::new(),
            cf_error: code.cf_error(),
            rules: Vec::new(),
            fix: Some(fix),
        });
    }
    out
}

/// The socket that takes a connection to `dest:port`, if any: bound to that address or to the
/// wildcard of its family; a `[::]` socket without IPV6_V6ONLY takes IPv4 too (ipv6(7),
/// `bindv6only`).
fn listener_for<'l>(
    listeners: &'l [Listener],
    dest: IpAddr,
    port: u16,
    bindv6only: Option<bool>,
    iif: Option<&str>,
) -> Option<&'l Listener> {
    listeners.iter().find(|l| {
        l.port == port
            && match (&l.bound_iface, iif) {
                (Some(b), Some(i)) => b == i,
                _ => true,
            }
            && (l.address == dest
                || match (l.address, dest) {
                    (IpAddr::V4(a), IpAddr::V4(_)) => a.is_unspecified(),
                    (IpAddr::V6(a), IpAddr::V6(_)) => a.is_unspecified(),
                    (IpAddr::V6(a), IpAddr::V4(_)) => {
                        a.is_unspecified() && !l.v6only.or(bindv6only).unwrap_or(false)
                    }
                    _ => false,
                })
    })
}

fn proc_label(l: &Listener) -> String {
    match (&l.process, l.pid) {
        (Some(p), Some(pid)) => format!(" ({p}, pid {pid})"),
        (Some(p), None) => format!(" ({p})"),
        _ => String::new(),
    }
}

fn housekeeping_findings(snap: &Snapshot, prepared: &Prepared, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let simple = |code: Code, severity: Severity, message: String, fix: Option<String>| Finding {
        code,
        severity,
        message,
        ports: Vec::new(),
        sources: Vec::new(),
        cf_error: None,
        rules: Vec::new(),
        fix,
    };
    for e in &snap.read_errors {
        out.push(simple(
            Code::ReadFailed,
            if e.firewall {
                Severity::Unknown
            } else {
                Severity::Warning
            },
            format!("could not read {} ({}): {}", e.what, e.source, e.message),
            None,
        ));
    }
    for e in &prepared.errors {
        out.push(simple(
            Code::DumpUnparsable,
            Severity::Unknown,
            format!("could not parse {e}"),
            Some("report the line to origin-audit; nothing is concluded from a dump that could not be parsed".into()),
        ));
    }
    let has_rules = |pred: &dyn Fn(Backend) -> bool| {
        prepared.ruleset.tables.iter().any(|t| {
            pred(t.backend)
                && t.chains.iter().any(|c| {
                    !c.rules.is_empty()
                        || c.base
                            .as_ref()
                            .is_some_and(|b| b.policy == firewall::Policy::Drop)
                })
        })
    };
    if has_rules(&|b| b == Backend::IptablesLegacy) && has_rules(&|b| b != Backend::IptablesLegacy)
    {
        out.push(simple(
            Code::MixedBackends,
            Code::MixedBackends.default_severity(),
            "rules are loaded through iptables-legacy and through nf_tables (iptables-nft or nft) at once; both apply to every packet".into(),
            Some("list both: `iptables-legacy-save` and `nft list ruleset`; keep one backend".into()),
        ));
    }
    if let Some(ct) = snap.conntrack
        && ct.max > 0
        && ct.count.saturating_mul(10) >= ct.max.saturating_mul(9)
    {
        out.push(Finding {
            code: Code::ConntrackFull,
            severity: Code::ConntrackFull.default_severity(),
            message: format!(
                "connection tracking table at {} of {} entries ({} %): new connections are dropped when it is full → Cloudflare 522{}",
                ct.count,
                ct.max,
                ct.count.saturating_mul(100) / ct.max,
                snap.counters
                    .and_then(|c| c.conntrack_evidence())
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            ),
            ports: Vec::new(),
            sources: Vec::new(),
            cf_error: Some(522),
            rules: Vec::new(),
            fix: Some("sysctl -w net.netfilter.nf_conntrack_max=<larger> (persist in /etc/sysctl.d/), or NOTRACK the web ports in raw PREROUTING and OUTPUT together".into()),
        });
    }
    let r = &snap.ranges;
    if !r.problems.is_empty() {
        out.push(simple(
            Code::RangesFallback,
            Code::RangesFallback.default_severity(),
            format!(
                "Cloudflare ranges: using the {} list ({})",
                source_name(r),
                r.problems.join("; ")
            ),
            None,
        ));
    }
    if let Some(age) = r.age_days(opts.now)
        && age > opts.max_age_days
    {
        out.push(simple(
            Code::RangesStale,
            Code::RangesStale.default_severity(),
            format!(
                "the Cloudflare range list ({}, as of {}) is {age} days old",
                source_name(r),
                r.as_of
            ),
            Some(stale_hint(r)),
        ));
    }
    out
}

/// What to do about an old range list, from where it came: a file the admin passed, a failed
/// fetch (its reason is in the `ranges-fallback` finding), or no fetch tried (`--offline`).
fn stale_hint(r: &ProviderRanges) -> String {
    use crate::ranges::RangeSource;
    match r.source {
        RangeSource::File => {
            "update the file given to --ranges-file (or [ranges] file) from https://www.cloudflare.com/ips/".into()
        }
        _ if !r.problems.is_empty() => "the fetch of the current list failed (see ranges-fallback): allow HTTPS to api.cloudflare.com from this host, or pass --ranges-file FILE with a current list".into(),
        _ => "a fetch was not tried (--offline, or ranges.offline in the configuration): run without it where api.cloudflare.com is reachable, or pass --ranges-file FILE with a current list".into(),
    }
}

pub fn source_name(r: &ProviderRanges) -> &'static str {
    match r.source {
        crate::ranges::RangeSource::Fetched => "fetched",
        crate::ranges::RangeSource::Cache => "cached",
        crate::ranges::RangeSource::Bundled => "bundled",
        crate::ranges::RangeSource::File => "file",
    }
}

/// The answer of `explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub address: IpAddr,
    pub port: u16,
    pub established: bool,
    pub verdict: VerdictKind,
    pub cf_error: Option<u16>,
    pub rule: Option<RuleRef>,
    /// Every rule that matched on the decisive path, in order (policies as position 0).
    pub path: Vec<RuleRef>,
    /// Base chains visited on that path, in order: `backend family table chain (hook prio)`.
    pub chains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
    /// Human-readable path: chains entered and rules matched, in order.
    pub trace: Vec<String>,
    /// Every distinct outcome (for rate limits and conditions), human-readable.
    pub outcomes: Vec<String>,
    /// Where the packet lands and whether something listens there.
    pub lands: Option<String>,
    /// The host's answer on the decisive path (SYN-ACK, RST or ICMP error): how it leaves,
    /// or why it cannot; empty when no answer is sent (the SYN was dropped on its way in).
    pub answer: Vec<String>,
    pub in_provider_range: bool,
    pub target: Target,
}

/// Explains one address and port.
pub fn explain(
    snap: &Snapshot,
    opts: &Options,
    address: IpAddr,
    port: u16,
    established: bool,
) -> (Explanation, Vec<String>) {
    let prepared = prepare(snap);
    let t = target(snap, opts);
    let ev = Evaluator::new(&prepared.ruleset, host_facts(snap, &t));
    let (fam, src) = addr_to_int(address);
    let mut t2 = t.clone();
    if !t2.families.contains(&fam) {
        t2.families.push(fam);
    }
    let outcomes = ev.evaluate(&packet(&t2, fam, src, port, established));
    let c = classify(&outcomes);
    // The decisive path: the bad branch for non-accept verdicts, else the first.
    let main = plainest(
        outcomes
            .iter()
            .filter(|o| (c.verdict == VerdictKind::Accept) == (fate_class(&o.fate) == 0)),
    )
    .or(outcomes.first());
    let mut path = Vec::new();
    let mut chains = Vec::new();
    let mut trace = Vec::new();
    let mut answer = Vec::new();
    if let Some(o) = main {
        for s in &o.path {
            match s {
                Step::Chain {
                    backend,
                    family,
                    table,
                    chain,
                    hook,
                    priority,
                } => {
                    let c = format!(
                        "{backend} {family} {table} {chain} (hook {}, priority {priority})",
                        format!("{hook:?}").to_lowercase()
                    );
                    trace.push(format!("chain {c}"));
                    chains.push(c);
                }
                Step::Reply(what) => {
                    trace.push(format!("answer: {what}"));
                    answer.push(what.clone());
                }
                Step::Rule(r) | Step::Policy(r) => {
                    let pos = if r.position == 0 {
                        "policy".to_string()
                    } else {
                        format!("#{}", r.position)
                    };
                    trace.push(format!("  {pos:<6} [{} {}] {}", r.table, r.chain, r.text));
                    path.push(r.clone());
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let outcome_lines: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let conds: Vec<String> = o
                .conds
                .iter()
                .map(|c| format!("{} {}", if c.holds { "if" } else { "unless" }, c.desc))
                .collect();
            let fate = match &o.fate {
                Fate::Local { addr, port } => format!(
                    "accepted, delivered to {}:{port}",
                    addr.map(|a| a.to_string())
                        .unwrap_or_else(|| "this host".into())
                ),
                Fate::Forwarded { addr, port } => format!(
                    "accepted, forwarded to {}:{port}",
                    addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
                ),
                Fate::Dropped => "dropped".into(),
                Fate::Rejected(firewall::RejectKind::TcpReset) => {
                    "rejected with a TCP reset".into()
                }
                Fate::Rejected(firewall::RejectKind::Icmp(t)) => format!("rejected with ICMP {t}"),
                Fate::Undecided(w) => format!("undecided: {w}"),
            };
            let by = o
                .decided_by
                .as_ref()
                .map(|r| format!(" by {}", rule_label(r)))
                .unwrap_or_default();
            if conds.is_empty() {
                format!("{fate}{by}")
            } else {
                format!("{fate}{by} — {}", conds.join(", "))
            }
        })
        .filter(|l| seen.insert(l.clone()))
        .collect();
    let in_range = match fam {
        Family::V4 => snap.ranges.ipv4.iter().any(|n| {
            n.contains(&match address {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            })
        }),
        Family::V6 => snap.ranges.ipv6.iter().any(|n| {
            n.contains(&match address {
                IpAddr::V6(a) => a,
                IpAddr::V4(_) => std::net::Ipv6Addr::UNSPECIFIED,
            })
        }),
    };
    let lands = c.lands.map(|(addr, p, local)| {
        let a = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "this host".into());
        if !local {
            return format!("forwarded to {a}:{p}");
        }
        match &snap.listeners {
            None => format!("{a}:{p} (listeners unknown)"),
            Some(ls) => {
                let Some(dest) = addr.or(t.dest(fam)) else {
                    return format!(
                        "{a}:{p} (this host's {fam} address is unknown: listeners not matched)"
                    );
                };
                let iif = t.ifaces.first().map(String::as_str);
                match listener_for(ls, dest, p, snap.bindv6only, iif) {
                    Some(l) => format!("{a}:{p}, listening: {}{}", l.address, proc_label(l)),
                    None => {
                        let others: Vec<String> = ls
                            .iter()
                            .filter(|l| l.port == p)
                            .map(|l| l.address.to_string())
                            .collect();
                        let only = if others.is_empty() {
                            String::new()
                        } else {
                            format!(" (only on {})", others.join(", "))
                        };
                        format!(
                            "{a}:{p}, but nothing listens there{only} → connection refused (521)"
                        )
                    }
                }
            }
        }
    });
    (
        Explanation {
            address,
            port,
            established,
            verdict: c.verdict,
            cf_error: c.cf_error,
            rule: c.rule,
            path,
            chains,
            trace,
            conditions: c.conditions,
            outcomes: outcome_lines,
            lands,
            answer,
            in_provider_range: in_range,
            target: t,
        },
        prepared.errors,
    )
}

/// Verdicts of new connections from arbitrary address blocks (one evaluation per block, at its
/// first address), with `ruleset` instead of the snapshot's own. Additive helper for `fix`, which
/// compares control sources (everything outside the provider ranges) before and after a change.
/// The caller must split `blocks` at every cut of the ruleset ([`blocks::Cuts`]) so that one
/// address decides for the whole block; blocks of a family the target does not analyse are
/// evaluated all the same.
pub fn block_verdicts(
    snap: &Snapshot,
    ruleset: &Ruleset,
    opts: &Options,
    blocks: &[AddrRange],
    port: u16,
) -> Vec<Classified> {
    let t = target(snap, opts);
    let ev = Evaluator::new(ruleset, host_facts(snap, &t));
    blocks
        .iter()
        .map(|b| classify(&ev.evaluate(&packet(&t, b.family, b.start, port, false))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(backend: Backend, family: TableFamily, chain: &str) -> RuleRef {
        RuleRef {
            backend,
            family,
            table: "filter".into(),
            chain: chain.into(),
            position: 3,
            handle: Some(7),
            text: "x".into(),
            direction: firewall::Direction::In,
        }
    }

    #[test]
    fn nft_hints_are_one_command_per_family() {
        let both = ["104.24.0.0/14".to_string(), "2400:cb00::/32".to_string()];
        let h = fix_hint(
            &rule(Backend::Nft, TableFamily::Inet, "input"),
            &both,
            &[443],
        );
        assert_eq!(
            h,
            "nft insert rule inet filter input position 7 ip saddr { 104.24.0.0/14 } tcp dport { 443 } accept comment \"origin-audit\" && \
             nft insert rule inet filter input position 7 ip6 saddr { 2400:cb00::/32 } tcp dport { 443 } accept comment \"origin-audit\""
        );
        // An `ip` table sees IPv4 only: no ip6 command in it.
        let h = fix_hint(&rule(Backend::Nft, TableFamily::Ip, "input"), &both, &[443]);
        assert!(!h.contains("ip6") && !h.contains("&&"), "{h}");
    }

    #[test]
    fn fail2ban_bans_are_lifted_with_fail2ban_client() {
        let src = ["162.158.0.9/32".to_string()];
        let h = fix_hint(
            &rule(Backend::IptablesNft, TableFamily::Ip, "f2b-nginx"),
            &src,
            &[443],
        );
        assert!(
            h.starts_with("fail2ban-client set nginx unbanip 162.158.0.9  # "),
            "{h}"
        );
        let mut r = rule(Backend::Nft, TableFamily::Inet, "f2b-chain");
        r.table = "f2b-table".into();
        r.text =
            "tcp dport { 80, 443 } ip saddr @addr-set-web reject with icmp port-unreachable".into();
        let h = fix_hint(&r, &src, &[443]);
        assert!(
            h.starts_with("fail2ban-client set web unbanip 162.158.0.9  # "),
            "{h}"
        );
    }

    #[test]
    fn ufw_user_chain_hints_are_ufw_commands() {
        let src = ["173.245.48.0/20".to_string()];
        let h = fix_hint(
            &rule(Backend::IptablesNft, TableFamily::Ip, "ufw-user-input"),
            &src,
            &[80, 443],
        );
        assert_eq!(
            h,
            "ufw insert 1 allow proto tcp from 173.245.48.0/20 port 1:65535 to any port 80 comment origin-audit && \
             ufw insert 1 allow proto tcp from 173.245.48.0/20 port 1:65535 to any port 443 comment origin-audit"
        );
        // ufw-before-input runs before the user rules: a ufw allow would not help there.
        let h = fix_hint(
            &rule(Backend::IptablesNft, TableFamily::Ip, "ufw-before-input"),
            &src,
            &[443],
        );
        assert!(
            h.starts_with("iptables-nft -t filter -I ufw-before-input 3 "),
            "{h}"
        );
    }

    #[test]
    fn firewalld_table_hints_are_permanent_rich_rules_ahead_of_the_zone() {
        let mut r = rule(Backend::Nft, TableFamily::Inet, "filter_IN_public_deny");
        r.table = "firewalld".into();
        let h = fix_hint(&r, &["131.0.72.0/22".to_string()], &[443]);
        assert_eq!(
            h,
            "firewall-cmd --permanent --zone=public --add-rich-rule='rule priority=\"-32768\" \
             family=\"ipv4\" source address=\"131.0.72.0/22\" port port=\"443\" protocol=\"tcp\" \
             accept' && firewall-cmd --reload  # firewalld keeps it across reloads (an nft rule \
             in its table would not)"
        );
        // Many ranges: the firewalld form of `fix` (ipsets) instead of a wall of rich rules.
        let many: Vec<String> = (0..4).map(|i| format!("2400:cb0{i}::/32")).collect();
        let h = fix_hint(&r, &many, &[80, 443]);
        assert!(
            h.starts_with("origin-audit fix --emit firewalld --ports 80,443 | sh  # "),
            "{h}"
        );
    }

    #[test]
    fn crowdsec_and_csf_bans_are_lifted_with_their_tools() {
        let mut r = rule(Backend::IptablesNft, TableFamily::Ip, "CROWDSEC_CHAIN");
        r.text = "-m set --match-set crowdsec-blacklists-0 src -j DROP".into();
        let h = fix_hint(
            &r,
            &["173.245.48.10/32".to_string(), "2400:cb00::/48".to_string()],
            &[443],
        );
        assert!(
            h.starts_with(
                "cscli decisions delete --ip 173.245.48.10 && cscli decisions delete --range 2400:cb00::/48  # "
            ),
            "{h}"
        );
        let mut r = rule(Backend::Nft, TableFamily::Ip, "crowdsec-chain");
        r.table = "crowdsec".into();
        let h = fix_hint(&r, &["173.245.48.10/32".to_string()], &[443]);
        assert!(
            h.starts_with("cscli decisions delete --ip 173.245.48.10  # "),
            "{h}"
        );
        let r = rule(Backend::IptablesLegacy, TableFamily::Ip, "DENYIN");
        let h = fix_hint(&r, &["173.245.48.10/32".to_string()], &[443]);
        assert!(h.starts_with("csf -dr 173.245.48.10  # "), "{h}");
    }

    /// `iptables-nft-save` (iptables v1.8.9) in a namespace holding only the native
    /// `table ip filter { chain input { type filter hook input priority 0; … } }`.
    const SKELETON: &str =
        "# Table `filter' contains incompatible base-chains, use 'nft' tool to list them.
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 11:28:34 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
";

    /// A snapshot holding only `dumps` and the bundled ranges.
    fn bare_snapshot(dumps: crate::snapshot::Dumps) -> Snapshot {
        Snapshot {
            schema: crate::snapshot::SNAPSHOT_SCHEMA.into(),
            taken_at: String::new(),
            hostname: None,
            listeners: None,
            interfaces: vec![],
            default_routes: vec![],
            bindv6only: None,
            forwarding: Default::default(),
            dumps,
            ranges: crate::ranges::cloudflare()
                .bundled_ranges()
                .expect("bundled"),
            routing: None,
            netdev: None,
            conntrack: None,
            counters: None,
            read_errors: vec![],
            tls: None,
        }
    }

    #[test]
    fn native_table_named_like_an_iptables_table_is_read_from_nft() {
        assert_eq!(
            firewall::iptables_save::incompatible_tables(SKELETON),
            BTreeSet::from(["filter".to_string()])
        );
        let nft = r#"{"nftables":[{"metainfo":{"version":"1.0.6","release_name":"Lester Gooch #5","json_schema_version":1}},
{"table":{"family":"ip","name":"filter","handle":1}},
{"chain":{"family":"ip","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},
{"rule":{"family":"ip","table":"filter","chain":"input","handle":2,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443}},{"drop":null}]}}]}"#;
        let snap = bare_snapshot(crate::snapshot::Dumps {
            iptables_nft_save: Some(SKELETON.into()),
            nft_json: vec![nft.into()],
            ..Default::default()
        });
        let p = prepare(&snap);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let names: Vec<(Backend, &str)> = p
            .ruleset
            .tables
            .iter()
            .map(|t| (t.backend, t.name.as_str()))
            .collect();
        assert_eq!(names, [(Backend::Nft, "filter")]);
        assert_eq!(p.ruleset.rule_count(), 1);
    }

    #[test]
    fn a_mode_that_needs_tls_without_hostnames_is_a_warning() {
        let mut snap = bare_snapshot(Default::default());
        snap.tls = Some(vec![]);
        // A mode that needs TLS without a hostname is a warning, not a silent skip; Flexible
        // and no mode are notes only.
        let mut o = Options::new(time::OffsetDateTime::now_utc());
        for (mode, warned) in [
            (Some(tls::SslMode::Strict), true),
            (Some(tls::SslMode::Full), true),
            (Some(tls::SslMode::Flexible), false),
            (None, false),
        ] {
            o.tls.mode = mode;
            let mut f = vec![];
            let (rows, note) = tls_check(&snap, &o, &mut f);
            assert!(rows.is_none() && note.is_some(), "{mode:?}");
            assert_eq!(
                f.iter().any(|f| f.code == Code::TlsNotChecked),
                warned,
                "{mode:?}: {f:?}"
            );
        }
    }
}
