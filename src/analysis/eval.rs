//! The evaluator: walks one packet through every base chain of every backend in the kernel's
//! order and returns every possible outcome with the conditions that lead to it.
//!
//! Owns: [`Packet`] (what we know of the packet), [`Evaluator`] (hook order, chain traversal,
//! jump/goto/return, policies, NAT, marks, conntrack state), [`Outcome`].
//! Must not: do I/O or loop over addresses (callers pass one representative per block).
//!
//! Netfilter facts used here (nft(8) "OVERALL EVALUATION OF THE RULESET"; ARCHITECTURE.md):
//! - Base chains on the same hook run in priority order, across all tables, families and
//!   backends. `accept` ends only the current base chain; `drop`/`reject` end everything.
//! - A chain falling off its end (or `return` in a base chain) applies the base chain's policy;
//!   in a user chain it returns to the caller. `goto` does not come back: falling off the
//!   goto'd chain returns to the caller of the chain that did the goto.
//! - Conntrack runs at prerouting priority -200 (NF_IP_PRI_CONNTRACK): before it, `ct state`
//!   sees no conntrack entry, which both xt_conntrack and nft_ct report as INVALID; after a
//!   NOTRACK/`notrack` the state is UNTRACKED.
//! - nat chains only see the first packet of a connection; the first DNAT/REDIRECT binding
//!   wins and later nat chains at that hook are skipped (nf_nat_inet_fn).
//! - After prerouting the routing decision sends the packet to INPUT if its (possibly
//!   rewritten) destination is local, else to FORWARD then POSTROUTING.

use crate::firewall::addr::{AddrRange, addr_to_int};
use crate::firewall::{
    Chain, ChainType, CtStates, Dir, Effect, Family, Field, Hook, IfPattern, KeyValue, Match,
    Policy, RejectKind, Rule, RuleRef, Ruleset, SetDef, SetElem, SetKind, SetRef, Table, Verdict,
};
use std::collections::HashMap;
use std::net::IpAddr;

mod kernel;
mod reply;
mod trail;

use trail::Trail;

/// What the analysis knows about the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub family: Family,
    pub src: u128,
    /// Destination address, if known (offline dumps without `--dest` don't know it).
    pub dst: Option<u128>,
    pub dport: u16,
    /// Input interface, if known.
    pub iif: Option<String>,
    /// Evaluate a packet of an established connection (ACK) rather than a new one (SYN).
    pub established: bool,
}

/// A condition the host state cannot decide, and which way a branch took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub kind: CondKind,
    pub desc: String,
    /// Whether the underlying match held (before negation) on this branch.
    pub holds: bool,
    /// For a rate condition: the value it takes for a first connection, at a low rate (`limit`
    /// holds under its rate; `--hashlimit-above`, connlimit, `recent --hitcount` do not hold).
    pub first: bool,
    pub rule: RuleRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKind {
    /// A rate limit: holds or not depending on traffic volume.
    Rate,
    /// Depends on something outside the host state (MAC, time, string, userspace, ...).
    Undecidable,
    /// A match or target origin-audit does not know.
    Unknown,
}

/// Where a packet ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Delivered to a local socket at this address and port (after any DNAT/REDIRECT).
    Local {
        addr: Option<IpAddr>,
        port: u16,
    },
    /// Forwarded to another host (DNAT to a container, ...), FORWARD chains accepted it.
    Forwarded {
        addr: Option<IpAddr>,
        port: u16,
    },
    Dropped,
    Rejected(RejectKind),
    /// Cannot be decided (userspace queue, unknown target, evaluation limits).
    Undecided(String),
}

/// One possible outcome for the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub fate: Fate,
    /// The rule that decided (for drops/rejects; the policy as a pseudo-rule with position 0).
    pub decided_by: Option<RuleRef>,
    /// Conditions taken on the way (empty when the outcome is certain).
    pub conds: Vec<Cond>,
    /// Every base chain visited and every rule that matched, in order.
    pub path: Vec<Step>,
    /// Where the SYN reached the socket layer (address after DNAT, port, local delivery?) —
    /// also when no socket took it or the answer was lost on the way out.
    pub landed: Option<(Option<IpAddr>, u16, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Entered a base chain.
    Chain {
        backend: crate::firewall::Backend,
        family: crate::firewall::TableFamily,
        table: String,
        chain: String,
        hook: Hook,
        priority: i32,
    },
    /// A rule matched (its verdict/effect applied).
    Rule(RuleRef),
    /// The base chain's policy applied.
    Policy(RuleRef),
    /// The host's answer starts here (SYN-ACK, RST or ICMP error, with its route).
    Reply(String),
}

/// Upper bound on the branches one packet may fork into; beyond it the result is conditional.
const MAX_BRANCHES: usize = 512;
/// Upper bound on nested jumps (the kernel refuses loops; this bounds pathological input).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
struct St {
    /// The SYN as it arrived (the connection's original direction, for `ct original …`).
    pkt: Packet,
    /// Current source address (`None`: not known, e.g. this host's address offline).
    src: Option<u128>,
    /// Current source port; `None` = an ephemeral port of Cloudflare's (1024-65535).
    sport: Option<u16>,
    /// Current destination (after DNAT).
    dst: Option<u128>,
    /// Current destination port; `None` = ephemeral (the reply goes to Cloudflare's port).
    dport: Option<u16>,
    /// Layer 4 of the current packet.
    l4: L4,
    /// Input interface of the current packet (`None` for a locally generated one).
    iif: Option<String>,
    /// Set on the answer's path.
    reply: Option<reply::ReplyCtx>,
    landed: Option<(Option<IpAddr>, u16, bool)>,
    mark: u32,
    ctmark: u32,
    /// Conntrack state bits, or None before conntrack ran.
    ct: Option<u8>,
    dnat_done: bool,
    /// The hook being traversed (the output interface exists only from forward on).
    hook: Hook,
    /// Output interface chosen by routing (forwarded packets), if known.
    oif: Option<String>,
    conds: Trail<Cond>,
    path: Trail<Step>,
}

/// Layer 4 of a packet on the audited connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    /// TCP with these flags (SYN 0x02, SYN-ACK 0x12, RST-ACK 0x14, ACK 0x10).
    Tcp(u8),
    /// An ICMP/ICMPv6 error (REJECT with an ICMP type).
    Icmp,
}

/// How a chain traversal ended for one branch.
#[derive(Debug, Clone)]
enum Flow {
    /// Fell off the end / RETURN: back to the caller (or the policy, in a base chain).
    End,
    Accept,
    Drop(RuleRef),
    Reject(RejectKind, RuleRef),
    /// A nat binding was made: ends this nat chain like accept.
    Nat,
    Undecided(String, RuleRef),
}

/// A base chain with the table it belongs to.
struct Base<'a> {
    table: &'a Table,
    chain: &'a Chain,
    hook: Hook,
    priority: i32,
    ctype: ChainType,
    policy: Policy,
    devices: &'a [String],
    order: usize,
}

/// What the evaluator needs to know about the host besides its rules.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Addresses of this host (routing: local delivery or forward).
    pub local: Vec<IpAddr>,
    /// Connected subnets per interface.
    pub routes: Vec<(String, AddrRange)>,
    /// Interfaces carrying a default route, per family.
    pub defaults: Vec<(Family, String)>,
    /// ip_forward sysctls (unknown offline).
    pub forwarding: crate::snapshot::Forwarding,
    /// Listening sockets (`None` offline: the SYN is taken as answered with a SYN-ACK).
    pub listeners: Option<Vec<crate::snapshot::Listener>>,
    /// `net.ipv6.bindv6only` (the default of IPV6_V6ONLY for sockets that did not say).
    pub bindv6only: Option<bool>,
    /// Every routing table and rule, with the rp_filter sysctls (`None` offline).
    pub routing: Option<crate::routing::Routing>,
    /// XDP programs and tc filters of the interfaces (`None` offline).
    pub netdev: Option<crate::tc::Netdev>,
    /// XDP programs the configuration trusts to pass the provider (`[audit] trusted_xdp`:
    /// program names or ids): not a condition on the verdict.
    pub trusted_xdp: Vec<String>,
}

/// Membership index for big single-dimension address sets (no nomatch, nothing unknown).
type SetIndex<'a> = HashMap<(*const Table, &'a str), crate::firewall::AddrSet>;

pub struct Evaluator<'a> {
    bases: Vec<Base<'a>>,
    /// Addresses of this host (routing decision: local delivery or forward).
    local: Vec<IpAddr>,
    /// Connected subnets per interface, for the output interface of forwarded packets.
    routes: Vec<(String, AddrRange)>,
    /// Interfaces carrying a default route, per family (reverse-path checks). Empty when the
    /// routes are unknown (offline dumps).
    defaults: Vec<(Family, String)>,
    forwarding: crate::snapshot::Forwarding,
    listeners: Option<Vec<crate::snapshot::Listener>>,
    bindv6only: Option<bool>,
    routing: Option<crate::routing::Routing>,
    netdev: Option<crate::tc::Netdev>,
    trusted_xdp: Vec<String>,
    index: SetIndex<'a>,
    ipset_index: HashMap<&'a str, crate::firewall::AddrSet>,
    /// Every chain by (table, name): a jump is one hash lookup, not a scan of the table's
    /// chains (kube-proxy tables hold tens of thousands).
    chains: HashMap<(*const Table, &'a str), &'a Chain>,
    /// Every named set and ipset by name, for the same reason.
    sets: HashMap<(*const Table, &'a str), &'a SetDef>,
    ipsets: HashMap<&'a str, &'a SetDef>,
}

/// A set that can be answered by one binary search: one address dimension, no nomatch.
fn simple_addr_set(s: &SetDef) -> Option<crate::firewall::AddrSet> {
    if matches!(s.kind, SetKind::NftVmap | SetKind::NftMap) || !s.unparsed.is_empty() {
        return None;
    }
    if let SetKind::Ipset { set_type } = &s.kind {
        let comps: Vec<&str> = set_type
            .split(':')
            .nth(1)
            .unwrap_or("")
            .split(',')
            .collect();
        if comps.len() != 1 || !matches!(comps[0], "ip" | "net") {
            return None;
        }
    }
    let mut ranges = Vec::with_capacity(s.elements.len());
    for e in &s.elements {
        match (e.nomatch, e.key.as_slice()) {
            (false, [KeyValue::Addr(r)]) => ranges.push(*r),
            _ => return None,
        }
    }
    Some(crate::firewall::AddrSet::new(ranges))
}

impl<'a> Evaluator<'a> {
    pub fn new(ruleset: &'a Ruleset, host: HostFacts) -> Self {
        let HostFacts {
            local,
            routes,
            defaults,
            forwarding,
            listeners,
            bindv6only,
            routing,
            netdev,
            trusted_xdp,
        } = host;
        let mut bases = Vec::new();
        for t in &ruleset.tables {
            for c in &t.chains {
                if let Some(b) = &c.base {
                    bases.push(Base {
                        table: t,
                        chain: c,
                        hook: b.hook,
                        priority: b.priority,
                        ctype: b.chain_type,
                        policy: b.policy,
                        devices: &b.devices,
                        order: bases.len(),
                    });
                }
            }
        }
        // Priority order; ties keep table order (the kernel's tie order is registration order,
        // which a dump cannot tell — only side effects could make it matter).
        bases.sort_by_key(|b| (b.priority, b.order));
        let mut index = HashMap::new();
        for t in &ruleset.tables {
            for s in &t.sets {
                if s.elements.len() >= 16
                    && let Some(a) = simple_addr_set(s)
                {
                    index.insert((t as *const Table, s.name.as_str()), a);
                }
            }
        }
        let mut chains = HashMap::new();
        for t in &ruleset.tables {
            for c in &t.chains {
                // The first of a (refused) duplicate name, as a scan would find it.
                chains
                    .entry((t as *const Table, c.name.as_str()))
                    .or_insert(c);
            }
        }
        let mut sets = HashMap::new();
        for t in &ruleset.tables {
            for d in &t.sets {
                sets.entry((t as *const Table, d.name.as_str()))
                    .or_insert(d);
            }
        }
        let mut ipsets = HashMap::new();
        for d in &ruleset.ipsets {
            ipsets.entry(d.name.as_str()).or_insert(d);
        }
        let mut ipset_index = HashMap::new();
        for s in &ruleset.ipsets {
            if s.elements.len() >= 16
                && let Some(a) = simple_addr_set(s)
            {
                ipset_index.insert(s.name.as_str(), a);
            }
        }
        Evaluator {
            bases,
            local,
            routes,
            defaults,
            forwarding,
            listeners,
            bindv6only,
            routing,
            netdev,
            trusted_xdp,
            index,
            ipset_index,
            chains,
            sets,
            ipsets,
        }
    }

    fn is_local(&self, family: Family, v: Option<u128>) -> Option<bool> {
        let v = v?;
        Some(
            self.local.iter().any(|a| {
                let (f, x) = addr_to_int(*a);
                f == family && x == v
            }) || match family {
                Family::V4 => (v >> 24) == 127,
                Family::V6 => v == 1,
            },
        )
    }

    /// Every outcome of a packet arriving from outside.
    pub fn evaluate(&self, pkt: &Packet) -> Vec<Outcome> {
        let st = St {
            src: Some(pkt.src),
            sport: None,
            dst: pkt.dst,
            dport: Some(pkt.dport),
            l4: L4::Tcp(if pkt.established { 0x10 } else { 0x02 }),
            iif: pkt.iif.clone(),
            reply: None,
            landed: None,
            mark: 0,
            ctmark: 0,
            ct: None,
            dnat_done: false,
            hook: Hook::Ingress,
            oif: None,
            conds: Trail::default(),
            path: Trail::default(),
            pkt: pkt.clone(),
        };
        let mut out = Vec::new();
        // XDP and tc ingress, netdev ingress, then prerouting with conntrack at -200.
        let mut states = self.netdev(vec![st], crate::tc::TcDir::Ingress, &mut out);
        for hook in [Hook::Ingress, Hook::Prerouting] {
            states = self.run_hook(hook, states, &mut out);
        }
        for st in states {
            if out.len() > MAX_BRANCHES {
                break;
            }
            let st = with_conntrack(st);
            let Some((st, route)) = self.route_input(st, &mut out) else {
                continue;
            };
            let local = match route {
                kernel::InRoute::Local => Some(true),
                kernel::InRoute::Forward => Some(false),
                kernel::InRoute::Unknown => self.is_local(st.pkt.family, st.dst),
            };
            match local {
                // Unknown destination (offline without --dest): it was sent to this host.
                Some(true) | None => {
                    let done = self.run_hook(Hook::Input, vec![st], &mut out);
                    for s in done {
                        self.deliver(s, &mut out);
                    }
                }
                Some(false) => {
                    let off = match st.pkt.family {
                        Family::V4 => self.forwarding.ipv4 == Some(false),
                        Family::V6 => self.forwarding.ipv6 == Some(false),
                    };
                    if off {
                        // ip_forward=0: the kernel drops the packet at the routing decision
                        // (ip_forward() is never reached; no FORWARD chain sees it).
                        let r = RuleRef {
                            direction: Default::default(),
                            backend: crate::firewall::Backend::Kernel,
                            family: match st.pkt.family {
                                Family::V4 => crate::firewall::TableFamily::Ip,
                                Family::V6 => crate::firewall::TableFamily::Ip6,
                            },
                            table: "sysctl".into(),
                            chain: "routing".into(),
                            position: 0,
                            handle: None,
                            text: match st.pkt.family {
                                Family::V4 => "net.ipv4.ip_forward = 0".into(),
                                Family::V6 => "net.ipv6.conf.all.forwarding = 0".into(),
                            },
                        };
                        let mut st = st;
                        st.path.push(Step::Rule(r.clone()));
                        out.push(finish(st, Fate::Dropped, Some(r)));
                        continue;
                    }
                    let mut st = st;
                    st.oif = st.dst.and_then(|d| {
                        self.routes
                            .iter()
                            .filter(|(_, r)| r.contains(st.pkt.family, d))
                            .min_by_key(|(_, r)| r.end - r.start)
                            .map(|(n, _)| n.clone())
                    });
                    let fwd = self.run_hook(Hook::Forward, vec![st], &mut out);
                    let post = self.run_hook(Hook::Postrouting, fwd, &mut out);
                    for s in post {
                        let addr = s
                            .dst
                            .map(|d| crate::firewall::addr::int_to_addr(s.pkt.family, d));
                        let port = s.dport.unwrap_or(s.pkt.dport);
                        let mut s = s;
                        s.landed = Some((addr, port, false));
                        out.push(finish(s, Fate::Forwarded { addr, port }, None));
                    }
                }
            }
        }
        if out.len() > MAX_BRANCHES {
            let rule = out.first().and_then(|o| o.decided_by.clone());
            return vec![Outcome {
                fate: Fate::Undecided(format!(
                    "more than {MAX_BRANCHES} combinations of undecidable conditions"
                )),
                decided_by: rule,
                conds: Vec::new(),
                path: Vec::new(),
                landed: None,
            }];
        }
        out
    }

    /// Runs all base chains of one hook, in priority order. Returns the states that passed;
    /// final outcomes (drop, reject, undecided) go to `out`.
    fn run_hook(&self, hook: Hook, mut states: Vec<St>, out: &mut Vec<Outcome>) -> Vec<St> {
        for b in self.bases.iter().filter(|b| b.hook == hook) {
            let fam = states.first().map(|s| s.pkt.family);
            let Some(fam) = fam else { break };
            if !b.table.family.sees(fam) {
                continue;
            }
            // An ingress chain sees only packets of its devices. nft 1.0.6's JSON does not print
            // the device (checked here: `nft -j list ruleset` omits `dev`), and the input
            // interface may be unknown offline: then whether it applies is a named condition,
            // never "it does not apply".
            let mut device_unknown = false;
            if matches!(hook, Hook::Ingress | Hook::Egress) {
                let on_dev = states.first().and_then(|s| {
                    if hook == Hook::Egress {
                        s.oif.clone()
                    } else {
                        s.pkt.iif.clone()
                    }
                });
                match (&on_dev, b.devices.is_empty()) {
                    (Some(d), false) if !b.devices.contains(d) => continue,
                    (Some(_), false) => {}
                    _ => device_unknown = true,
                }
            }
            let mut next = Vec::new();
            for st in states {
                let mut st = st;
                st.hook = hook;
                if device_unknown {
                    let mut r = as_seen(&st, policy_ref(b));
                    let h = format!("{hook:?}").to_lowercase();
                    r.text = format!("netdev {h} chain {} (device not known)", b.chain.name);
                    let cond = |holds| Cond {
                        first: holds,
                        kind: CondKind::Undecidable,
                        desc: format!(
                            "{h} chain {} {} is attached to the public interface",
                            b.table.name, b.chain.name
                        ),
                        holds,
                        rule: r.clone(),
                    };
                    let mut skipped = st.clone();
                    skipped.conds.push(cond(false));
                    next.push(skipped);
                    st.conds.push(cond(true));
                }
                if hook == Hook::Prerouting && b.priority > -200 {
                    st = with_conntrack(st);
                }
                if st.reply.is_some() {
                    st = reply::at_priority(st, hook, b.priority);
                }
                // nat chains see only a connection's first packet in the original direction:
                // never the answer (conntrack's reply direction, or a RELATED/INVALID packet).
                if b.ctype == ChainType::Nat
                    && (st.pkt.established || st.dnat_done || st.reply.is_some())
                {
                    // nat chains see only the first packet; after a binding, later nat chains
                    // at this hook are skipped.
                    next.push(st);
                    continue;
                }
                st.path.push(Step::Chain {
                    backend: b.table.backend,
                    family: b.table.family,
                    table: b.table.name.clone(),
                    chain: b.chain.name.clone(),
                    hook,
                    priority: b.priority,
                });
                for (s, flow) in self.run_chain(b.table, b.chain, st, 0) {
                    match flow {
                        Flow::Accept | Flow::Nat => next.push(s),
                        Flow::End => {
                            let pol = as_seen(&s, policy_ref(b));
                            match b.policy {
                                Policy::Accept => next.push(s),
                                Policy::Drop => {
                                    let mut s = s;
                                    s.path.push(Step::Policy(pol.clone()));
                                    out.push(finish(s, Fate::Dropped, Some(pol)));
                                }
                            }
                        }
                        Flow::Drop(r) => out.push(finish(s, Fate::Dropped, Some(r))),
                        // A REJECT of the answer sends its RST/ICMP back to this host: nothing
                        // reaches Cloudflare.
                        Flow::Reject(_, r) if s.reply.is_some() => {
                            out.push(finish(s, Fate::Dropped, Some(r)))
                        }
                        Flow::Reject(k, r) => self.refuse(s, k, r, out),
                        Flow::Undecided(why, r) => {
                            out.push(finish(s, Fate::Undecided(why), Some(r)))
                        }
                    }
                }
            }
            states = next;
            if states.is_empty() || out.len() > MAX_BRANCHES {
                break;
            }
        }
        states
    }

    fn run_chain(&self, table: &Table, chain: &Chain, st: St, depth: usize) -> Vec<(St, Flow)> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            let r = RuleRef {
                direction: Default::default(),
                backend: table.backend,
                family: table.family,
                table: table.name.clone(),
                chain: chain.name.clone(),
                position: 0,
                handle: None,
                text: format!("jumps nested deeper than {MAX_DEPTH}"),
            };
            out.push((st, Flow::Undecided(r.text.clone(), r)));
            return out;
        }
        let mut pending: Vec<(St, usize)> = vec![(st, 0)];
        while let Some((st, i)) = pending.pop() {
            if out.len() + pending.len() > MAX_BRANCHES {
                let r = chain.rules.get(i).map(|r| as_seen(&st, r.source.clone()));
                if let Some(r) = r {
                    out.push((st, Flow::Undecided("too many branches".into(), r)));
                }
                break;
            }
            let Some(rule) = chain.rules.get(i) else {
                out.push((st, Flow::End));
                continue;
            };
            for (mut s, matched) in self.match_rule(table, rule, st) {
                if !matched {
                    pending.push((s, i + 1));
                    continue;
                }
                s.path.push(Step::Rule(as_seen(&s, rule.source.clone())));
                apply_effects(&mut s, &rule.effects);
                let verdict = match &rule.verdict {
                    Verdict::Map(vm) => {
                        for (s2, v) in self.lookup_vmap(table, vm, s) {
                            self.apply_verdict(
                                table,
                                rule,
                                v.as_ref(),
                                s2,
                                i,
                                depth,
                                &mut pending,
                                &mut out,
                            );
                        }
                        continue;
                    }
                    v => Some(v.clone()),
                };
                self.apply_verdict(
                    table,
                    rule,
                    verdict.as_ref(),
                    s,
                    i,
                    depth,
                    &mut pending,
                    &mut out,
                );
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_verdict(
        &self,
        table: &Table,
        rule: &Rule,
        verdict: Option<&Verdict>,
        mut s: St,
        i: usize,
        depth: usize,
        pending: &mut Vec<(St, usize)>,
        out: &mut Vec<(St, Flow)>,
    ) {
        let reply = s.reply.is_some();
        let r = || as_seen_dir(reply, rule.source.clone());
        match verdict {
            None | Some(Verdict::Continue) => pending.push((s, i + 1)),
            Some(Verdict::Accept) => out.push((s, Flow::Accept)),
            Some(Verdict::Drop) => out.push((s, Flow::Drop(r()))),
            Some(Verdict::Reject { with }) => out.push((s, Flow::Reject(with.clone(), r()))),
            Some(Verdict::Return) => out.push((s, Flow::End)),
            Some(Verdict::Jump { chain }) | Some(Verdict::Goto { chain }) => {
                let is_goto = matches!(verdict, Some(Verdict::Goto { .. }));
                let Some(&target) = self.chains.get(&(table as *const Table, chain.as_str()))
                else {
                    out.push((
                        s,
                        Flow::Undecided(format!("jump to missing chain {chain}"), r()),
                    ));
                    return;
                };
                for (s2, f) in self.run_chain(table, target, s, depth + 1) {
                    match f {
                        Flow::End if !is_goto => pending.push((s2, i + 1)),
                        f => out.push((s2, f)),
                    }
                }
            }
            Some(Verdict::Queue { desc }) => out.push((
                s,
                Flow::Undecided(format!("a userspace program decides ({desc})"), r()),
            )),
            Some(Verdict::Dnat { addr, port }) => {
                if let Some(a) = addr {
                    let (f, v) = addr_to_int(*a);
                    if f == s.pkt.family {
                        s.dst = Some(v);
                    }
                }
                if let Some(p) = port {
                    s.dport = Some(*p);
                }
                s.dnat_done = true;
                if let Some(ct) = s.ct.as_mut() {
                    *ct |= CtStates::DNAT;
                }
                out.push((s, Flow::Nat));
            }
            Some(Verdict::Redirect { port }) => {
                // REDIRECT rewrites the destination to the primary address of the input
                // interface (iptables-extensions(8)): still this host.
                if let Some(p) = port {
                    s.dport = Some(*p);
                }
                s.dnat_done = true;
                if let Some(ct) = s.ct.as_mut() {
                    *ct |= CtStates::DNAT;
                }
                out.push((s, Flow::Nat));
            }
            Some(Verdict::NatOther { .. }) => out.push((s, Flow::Nat)),
            Some(Verdict::Map(_)) => out.push((
                s,
                Flow::Undecided("verdict map yielding a verdict map".into(), r()),
            )),
            Some(Verdict::Unknown { text }) => {
                // An unknown target might accept, drop or do nothing: fork into those outcomes.
                let cond = |holds: bool| Cond {
                    first: holds,
                    kind: CondKind::Unknown,
                    desc: format!("unknown target `{text}`"),
                    holds,
                    rule: r(),
                };
                let mut a = s.clone();
                a.conds.push(cond(true));
                out.push((a, Flow::Undecided(format!("unknown target `{text}`"), r())));
                s.conds.push(cond(false));
                pending.push((s, i + 1));
            }
        }
    }

    /// Evaluates the rule's matches; returns each branch with whether the rule matched.
    fn match_rule(&self, table: &Table, rule: &Rule, st: St) -> Vec<(St, bool)> {
        let mut live = vec![st];
        let mut out = Vec::new();
        for m in &rule.matches {
            let mut next = Vec::new();
            for s in live {
                match self.eval_match(table, m, &s) {
                    Tri::Yes => next.push(s),
                    Tri::No => out.push((s, false)),
                    Tri::Depends(kind, desc) => {
                        let neg = negated(m);
                        // A property of the packet (DSCP, TTL, MAC, time, …) has the same value
                        // at every rule that asks: an earlier answer on this branch decides,
                        // so N identical undecidable rules cost one fork, not 2^N.
                        if let Some(holds) = answered(&s, kind, &desc) {
                            if holds != neg {
                                next.push(s);
                            } else {
                                out.push((s, false));
                            }
                            continue;
                        }
                        for holds in [true, false] {
                            let mut b = s.clone();
                            b.conds.push(Cond {
                                kind,
                                desc: desc.clone(),
                                holds,
                                first: !matches!(m, Match::Rate(r) if r.over),
                                rule: as_seen(&s, rule.source.clone()),
                            });
                            if holds != neg {
                                next.push(b);
                            } else {
                                out.push((b, false));
                            }
                        }
                    }
                }
            }
            live = next;
            if live.is_empty() {
                break;
            }
        }
        out.extend(live.into_iter().map(|s| (s, true)));
        out
    }

    /// Evaluates one match (negation applied, except for `Depends`, which the caller negates).
    fn eval_match(&self, table: &Table, m: &Match, s: &St) -> Tri {
        let p = &s.pkt;
        let b = |v: bool, neg: bool| if v != neg { Tri::Yes } else { Tri::No };
        match m {
            Match::Addr { dir, set, negate } => match dir {
                Dir::Src => match s.src {
                    Some(v) => b(set.contains(p.family, v), *negate),
                    None if !set.families().any(|f| f == p.family) => b(false, *negate),
                    None => Tri::Depends(
                        CondKind::Undecidable,
                        format!("this host's address is in {set} (pass --dest)"),
                    ),
                },
                Dir::Dst => match s.dst {
                    Some(d) => b(set.contains(p.family, d), *negate),
                    None => {
                        // A set of the other family only can never match.
                        if !set.families().any(|f| f == p.family) {
                            return b(false, *negate);
                        }
                        Tri::Depends(
                            CondKind::Undecidable,
                            format!("destination address is in {set} (pass --dest)"),
                        )
                    }
                },
            },
            Match::Iface {
                dir,
                any_of,
                negate,
            } => match dir {
                // Before routing and on input there is no output interface: oifname is empty
                // (nft) and `-o` is refused by iptables there. On forward it is the route's.
                Dir::Dst => match s.hook {
                    Hook::Ingress | Hook::Prerouting | Hook::Input if s.reply.is_none() => {
                        b(any_of.iter().any(|pat| pat.matches("")), *negate)
                    }
                    _ => match &s.oif {
                        Some(o) => b(any_of.iter().any(|pat| pat.matches(o)), *negate),
                        None => Tri::Depends(
                            CondKind::Undecidable,
                            format!("output interface is {}", patterns(any_of)),
                        ),
                    },
                },
                // A locally generated answer has no input device: nft's `iifname` then breaks
                // the rule (NFT_BREAK, no match either way); xt compares with "".
                Dir::Src if s.reply.is_some() => {
                    if table.backend == crate::firewall::Backend::Nft {
                        Tri::No
                    } else {
                        b(any_of.iter().any(|pat| pat.matches("")), *negate)
                    }
                }
                Dir::Src => match &s.iif {
                    Some(i) => b(any_of.iter().any(|pat| pat.matches(i)), *negate),
                    None => {
                        // Internet packets never arrive on loopback.
                        if any_of.iter().all(|pat| pat.matches("lo") && !pat.prefix) {
                            return b(false, *negate);
                        }
                        Tri::Depends(
                            CondKind::Undecidable,
                            format!("input interface is {} (pass --iface)", patterns(any_of)),
                        )
                    }
                },
            },
            Match::Proto { protos, negate } => b(protos.contains(&l4_proto(s)), *negate),
            // Port and flag matches need a TCP header (`-p tcp` / nft's implicit
            // `meta l4proto tcp`): an ICMP error never matches them, negated or not.
            Match::Port { .. } | Match::PortEither { .. } | Match::TcpFlags { .. }
                if !matches!(s.l4, L4::Tcp(_)) =>
            {
                Tri::No
            }
            Match::Port {
                dir,
                ranges,
                negate,
            } => port_match(
                ranges,
                if *dir == Dir::Dst { s.dport } else { s.sport },
                *negate,
            ),
            Match::PortEither { ranges, negate } => {
                if s.dport.is_some_and(|p| in_ranges(ranges, p))
                    || s.sport.is_some_and(|p| in_ranges(ranges, p))
                {
                    b(true, *negate)
                } else if s.dport.is_some() && s.sport.is_some() {
                    b(false, *negate)
                } else {
                    src_port(ranges, *negate)
                }
            }
            Match::TcpFlags { mask, comp, negate } => {
                let flags: u8 = match s.l4 {
                    L4::Tcp(f) => f,
                    L4::Icmp => 0,
                };
                b(flags & mask == *comp, *negate)
            }
            Match::CtState { states, negate } => {
                let cur = s.ct.unwrap_or(CtStates::INVALID);
                // DNAT/SNAT are status bits folded into the state word by xt_conntrack.
                b(cur & states != 0, *negate)
            }
            Match::CtOrigAddr { dir, set, negate } => {
                if !has_conntrack_entry(s) {
                    return Tri::No;
                }
                match dir {
                    Dir::Src => b(set.contains(p.family, p.src), *negate),
                    Dir::Dst => match p.dst {
                        Some(d) => b(set.contains(p.family, d), *negate),
                        None => Tri::Depends(
                            CondKind::Undecidable,
                            format!("original destination address is in {set} (pass --dest)"),
                        ),
                    },
                }
            }
            Match::CtOrigPort {
                dir,
                ranges,
                negate,
            } => {
                if !has_conntrack_entry(s) {
                    return Tri::No;
                }
                match dir {
                    Dir::Dst => b(in_ranges(ranges, p.dport), *negate),
                    Dir::Src => src_port(ranges, *negate),
                }
            }
            Match::CtStatus { names, negate } => {
                let mut any = false;
                for n in names {
                    let v = match n.to_ascii_lowercase().as_str() {
                        "dnat" => s.dnat_done,
                        "snat" | "expected" => false,
                        // The answer passes conntrack after the SYN's entry was confirmed, and
                        // sets SEEN_REPLY; ASSURED needs the handshake's last ACK.
                        "confirmed" | "seen_reply" | "seen-reply" => {
                            p.established || (s.reply.is_some() && has_conntrack_entry(s))
                        }
                        "assured" => p.established,
                        "none" => !s.dnat_done && !p.established,
                        other => {
                            return Tri::Depends(CondKind::Unknown, format!("ct status {other}"));
                        }
                    };
                    any |= v;
                }
                b(any, *negate)
            }
            Match::Set {
                set,
                fields,
                negate,
            } => match self.set_lookup(table, set, fields, s) {
                Lookup::Hit => b(true, *negate),
                Lookup::Miss => b(false, *negate),
                Lookup::Depends(kind, d) => Tri::Depends(kind, d),
            },
            Match::AddrType {
                dir,
                types,
                negate,
                limit_iface_in: _,
            } => {
                // Unknown addresses are this host's (the destination of the SYN, the source
                // of the answer); Cloudflare's are unicast.
                let (a, unknown_is_local) = match dir {
                    Dir::Src => (s.src, s.reply.is_some()),
                    Dir::Dst => (s.dst, s.reply.is_none()),
                };
                let t = match self.is_local(p.family, a) {
                    Some(true) => "local",
                    None if unknown_is_local => "local",
                    _ => "unicast",
                };
                b(types.iter().any(|x| x.eq_ignore_ascii_case(t)), *negate)
            }
            Match::ReversePath { .. } if s.reply.is_some() => Tri::Depends(
                CondKind::Undecidable,
                "reverse-path match on a locally generated packet".into(),
            ),
            Match::ReversePath { strict, negate } => match self.route_back(p) {
                Some(iface) => b(!*strict || p.iif.as_deref() == Some(iface), *negate),
                None if self.routes.is_empty() && self.defaults.is_empty() => Tri::Depends(
                    CondKind::Undecidable,
                    "a route back to the source exists (routes unknown offline)".into(),
                ),
                None => b(false, *negate),
            },
            Match::Mark {
                value,
                mask,
                negate,
            } => b(s.mark & mask == *value, *negate),
            Match::ConnMark {
                value,
                mask,
                negate,
            } => {
                if p.established {
                    Tri::Depends(
                        CondKind::Undecidable,
                        format!("connection mark & {mask:#x} == {value:#x}"),
                    )
                } else {
                    b(s.ctmark & mask == *value, *negate)
                }
            }
            Match::Length { min, max, negate } => {
                // A SYN from Cloudflare: IP header + TCP header with options.
                let (lo, hi) = packet_length(s);
                if *min <= lo && hi <= *max {
                    b(true, *negate)
                } else if *max < lo || hi < *min {
                    b(false, *negate)
                } else {
                    Tri::Depends(CondKind::Undecidable, format!("packet length {min}:{max}"))
                }
            }
            Match::NfProto { family, negate } => b(*family == p.family, *negate),
            Match::Icmp { negate, .. } if matches!(s.l4, L4::Tcp(_)) => b(false, *negate),
            Match::Icmp { desc, negate } => match icmp_type_matches(desc, p.family, s) {
                Some(v) => b(v, *negate),
                None => Tri::Depends(
                    CondKind::Undecidable,
                    format!("the ICMP error of the refusal matches {desc}"),
                ),
            },
            Match::Rate(r) => Tri::Depends(CondKind::Rate, format!("{} {}", r.kind, r.desc)),
            Match::Always { .. } => Tri::Yes,
            Match::Never { .. } => Tri::No,
            Match::Undecidable { condition, .. } => {
                Tri::Depends(CondKind::Undecidable, condition.clone())
            }
            Match::Unknown { text, .. } => {
                Tri::Depends(CondKind::Unknown, format!("unknown match `{text}`"))
            }
        }
    }

    /// The interface the route back to the packet's source leaves by: the most specific
    /// connected subnet, else the family's default route (no policy routing).
    fn route_back(&self, p: &Packet) -> Option<&str> {
        self.routes
            .iter()
            .filter(|(_, r)| r.contains(p.family, p.src))
            .min_by_key(|(_, r)| r.end - r.start)
            .map(|(n, _)| n.as_str())
            .or_else(|| {
                self.defaults
                    .iter()
                    .find(|(f, _)| *f == p.family)
                    .map(|(_, n)| n.as_str())
            })
    }

    fn resolve_set<'s>(&'s self, table: &'s Table, set: &'s SetRef) -> Option<SetView<'s>> {
        match set {
            SetRef::Named(n) => self
                .sets
                .get(&(table as *const Table, n.as_str()))
                .map(|d| SetView::Def(d)),
            SetRef::Ipset(n) => self.ipsets.get(n.as_str()).map(|d| SetView::Def(d)),
            SetRef::Anonymous(e) => Some(SetView::Elems(e)),
        }
    }

    fn set_lookup(&self, table: &Table, set: &SetRef, fields: &[Field], s: &St) -> Lookup {
        // Fast path for big address sets.
        if let [field @ (Field::SrcAddr | Field::DstAddr)] = fields {
            let idx = match set {
                SetRef::Named(n) => self.index.get(&(table as *const Table, n.as_str())),
                SetRef::Ipset(n) => self.ipset_index.get(n.as_str()),
                SetRef::Anonymous(_) => None,
            };
            if let Some(a) = idx {
                let v = if *field == Field::SrcAddr {
                    s.src
                } else {
                    s.dst
                };
                return match v {
                    Some(v) => {
                        if a.contains(s.pkt.family, v) {
                            Lookup::Hit
                        } else {
                            Lookup::Miss
                        }
                    }
                    None => Lookup::Depends(
                        CondKind::Undecidable,
                        "this host's address (pass --dest)".into(),
                    ),
                };
            }
        }
        let Some(view) = self.resolve_set(table, set) else {
            return Lookup::Depends(
                CondKind::Unknown,
                format!("set {} is not in the dump", set_name(set)),
            );
        };
        let (elems, fields): (&[SetElem], Vec<Field>) = match view {
            SetView::Elems(e) => (e, fields.to_vec()),
            SetView::Def(d) => match &d.kind {
                SetKind::Ipset { set_type } if set_type == "list:set" => {
                    // A list:set matches if any member set matches, in order.
                    let mut depends = None;
                    for e in &d.elements {
                        if let [KeyValue::Unknown(member)] = e.key.as_slice() {
                            match self.set_lookup(table, &SetRef::Ipset(member.clone()), fields, s)
                            {
                                Lookup::Hit => return Lookup::Hit,
                                Lookup::Miss => {}
                                l @ Lookup::Depends(..) => depends = depends.or(Some(l)),
                            }
                        }
                    }
                    return depends.unwrap_or(Lookup::Miss);
                }
                SetKind::Ipset { set_type } => (&d.elements, ipset_fields(set_type, fields)),
                _ => (&d.elements, fields.to_vec()),
            },
        };
        // Most specific matching element wins (ipset nomatch semantics); nft sets have no
        // nomatch so any hit is a hit.
        let mut best: Option<(u128, bool)> = None;
        let mut unknown: Option<String> = None;
        for e in elems {
            match elem_matches(e, &fields, s) {
                ElemMatch::Yes(width) => {
                    if best.is_none_or(|(w, _)| width < w) {
                        best = Some((width, e.nomatch));
                    }
                }
                ElemMatch::No => {}
                ElemMatch::Unknown(d) => unknown = Some(d),
            }
        }
        match (best, unknown) {
            (Some((_, nomatch)), _) if !nomatch => Lookup::Hit,
            (_, Some(d)) => Lookup::Depends(CondKind::Unknown, d),
            _ => Lookup::Miss,
        }
    }

    /// Looks the packet up in a verdict map: the matching element's verdict, or continue. A map
    /// that is missing or an element that cannot be compared gives an unknown verdict, which
    /// `apply_verdict` forks on (never "continue").
    fn lookup_vmap(
        &self,
        table: &Table,
        vm: &crate::firewall::VerdictMap,
        s: St,
    ) -> Vec<(St, Option<Verdict>)> {
        let unknown = |text: String| Some(Verdict::Unknown { text });
        let elems: &[SetElem] = match self.resolve_set(table, &vm.map) {
            Some(SetView::Def(d)) => &d.elements,
            Some(SetView::Elems(e)) => e,
            None => {
                let d = format!("verdict map {} is not in the dump", set_name(&vm.map));
                return vec![(s, unknown(d))];
            }
        };
        let mut best: Option<(u128, &SetElem)> = None;
        for e in elems {
            match elem_matches(e, &vm.fields, &s) {
                ElemMatch::Yes(w) if best.is_none_or(|(bw, _)| w < bw) => best = Some((w, e)),
                ElemMatch::Unknown(d) => {
                    return vec![(s, unknown(format!("verdict map lookup: {d}")))];
                }
                _ => {}
            }
        }
        vec![(s, best.and_then(|(_, e)| e.verdict.clone()))]
    }
}

enum SetView<'a> {
    Def(&'a SetDef),
    Elems(&'a [SetElem]),
}

fn set_name(s: &SetRef) -> String {
    match s {
        SetRef::Named(n) => format!("@{n}"),
        SetRef::Ipset(n) => format!("ipset {n}"),
        SetRef::Anonymous(_) => "{…}".into(),
    }
}

/// Maps an ipset's type components (`hash:net,port`) and the rule's direction flags to the
/// packet fields each element dimension is compared with.
fn ipset_fields(set_type: &str, dirs: &[Field]) -> Vec<Field> {
    let comps = set_type.split(':').nth(1).unwrap_or("");
    comps
        .split(',')
        .zip(dirs.iter())
        .map(|(c, d)| {
            let src = *d == Field::SrcAddr;
            match c {
                "ip" | "net" => {
                    if src {
                        Field::SrcAddr
                    } else {
                        Field::DstAddr
                    }
                }
                "port" => {
                    if src {
                        Field::SrcPort
                    } else {
                        Field::DstPort
                    }
                }
                "iface" => {
                    if src {
                        Field::Iifname
                    } else {
                        Field::Oifname
                    }
                }
                "mark" => Field::Mark,
                _ => Field::L4Proto, // mac and others: elements hold Unknown, which decides
            }
        })
        .collect()
}

enum ElemMatch {
    /// Matches; the number is the width of the address dimension (for most-specific-wins).
    Yes(u128),
    No,
    Unknown(String),
}

fn elem_matches(e: &SetElem, fields: &[Field], s: &St) -> ElemMatch {
    let mut width = u128::MAX;
    let mut unknown = None;
    for (k, f) in e.key.iter().zip(fields) {
        let ok = match (k, f) {
            (KeyValue::Addr(r), Field::SrcAddr) => {
                width = width.min(r.end - r.start);
                match s.src {
                    Some(v) => r.contains(s.pkt.family, v),
                    None => {
                        unknown = Some("this host's address (pass --dest)".to_string());
                        true
                    }
                }
            }
            (KeyValue::Addr(r), Field::DstAddr) => match s.dst {
                Some(d) => r.contains(s.pkt.family, d),
                None => {
                    unknown = Some("destination address (pass --dest)".to_string());
                    true
                }
            },
            (KeyValue::Int(lo, hi), Field::DstPort) if s.dport.is_some() => {
                s.dport.is_some_and(|p| (*lo..=*hi).contains(&u64::from(p)))
            }
            (KeyValue::ProtoPort { proto, lo, hi }, Field::DstPort) if s.dport.is_some() => {
                *proto == l4_proto(s) && s.dport.is_some_and(|p| (*lo..=*hi).contains(&p))
            }
            (KeyValue::Int(lo, hi), Field::SrcPort) if s.sport.is_some() => {
                s.sport.is_some_and(|p| (*lo..=*hi).contains(&u64::from(p)))
            }
            (KeyValue::ProtoPort { proto, lo, hi }, Field::SrcPort) if s.sport.is_some() => {
                *proto == l4_proto(s) && s.sport.is_some_and(|p| (*lo..=*hi).contains(&p))
            }
            (KeyValue::Int(lo, hi), Field::SrcPort | Field::DstPort) => {
                // Ephemeral source ports: decided only if the range covers all or none.
                let (a, b) = (*lo as u32, *hi as u32);
                if a <= 1024 && b >= 65535 {
                    true
                } else if b < 1024 {
                    false
                } else {
                    unknown = Some(format!("source port {a}-{b}"));
                    true
                }
            }
            (KeyValue::ProtoPort { proto, lo, hi }, Field::SrcPort | Field::DstPort) => {
                if *proto != l4_proto(s) || *hi < 1024 {
                    false
                } else if *lo <= 1024 {
                    true
                } else {
                    unknown = Some(format!("source port {lo}-{hi}"));
                    true
                }
            }
            (KeyValue::Int(lo, hi), Field::L4Proto) => {
                (*lo..=*hi).contains(&u64::from(l4_proto(s)))
            }
            (KeyValue::Int(lo, hi), Field::Mark) => (*lo..=*hi).contains(&u64::from(s.mark)),
            (KeyValue::Int(lo, hi), Field::CtState) => {
                let st = u64::from(s.ct.unwrap_or(CtStates::INVALID));
                (*lo..=*hi).contains(&st) || (*lo == *hi && st & *lo != 0)
            }
            (KeyValue::Iface(pat), Field::Iifname) if s.reply.is_some() => {
                let _ = pat;
                false
            }
            (KeyValue::Iface(pat), Field::Oifname) if s.oif.is_some() => {
                s.oif.as_deref().is_some_and(|o| pat.matches(o))
            }
            (KeyValue::Iface(pat), Field::Iifname) => match &s.iif {
                Some(i) => pat.matches(i),
                None => {
                    if pat.name == "lo" && !pat.prefix {
                        false
                    } else {
                        unknown = Some(format!("input interface {} (pass --iface)", pat.name));
                        true
                    }
                }
            },
            (KeyValue::Iface(pat), Field::Oifname) => {
                unknown = Some(format!("output interface {}", pat.name));
                true
            }
            (KeyValue::Unknown(text), _) => {
                unknown = Some(text.clone());
                true
            }
            (k, f) => {
                unknown = Some(format!("set element {k:?} compared with {f:?}"));
                true
            }
        };
        if !ok {
            return ElemMatch::No;
        }
    }
    match unknown {
        Some(d) => ElemMatch::Unknown(d),
        None => ElemMatch::Yes(width),
    }
}

#[derive(Debug)]
enum Tri {
    Yes,
    No,
    Depends(CondKind, String),
}

enum Lookup {
    Hit,
    Miss,
    Depends(CondKind, String),
}

fn negated(m: &Match) -> bool {
    match m {
        Match::Addr { negate, .. }
        | Match::Iface { negate, .. }
        | Match::Proto { negate, .. }
        | Match::Port { negate, .. }
        | Match::PortEither { negate, .. }
        | Match::TcpFlags { negate, .. }
        | Match::CtState { negate, .. }
        | Match::CtStatus { negate, .. }
        | Match::Set { negate, .. }
        | Match::AddrType { negate, .. }
        | Match::Mark { negate, .. }
        | Match::ReversePath { negate, .. }
        | Match::CtOrigAddr { negate, .. }
        | Match::CtOrigPort { negate, .. }
        | Match::ConnMark { negate, .. }
        | Match::Length { negate, .. }
        | Match::NfProto { negate, .. }
        | Match::Icmp { negate, .. }
        | Match::Undecidable { negate, .. }
        | Match::Unknown { negate, .. } => *negate,
        // `limit rate over` is encoded in RateLimit::over, not as a negation.
        Match::Rate(_) | Match::Always { .. } | Match::Never { .. } => false,
    }
}

/// Whether an ICMP type match (`--icmp-type T[/C]`, `icmp type T`) holds for the refusal's
/// destination-unreachable error (type 3 for ICMP, 1 for ICMPv6; the code from the REJECT
/// kind). `None` when the match's text cannot be read exactly.
fn icmp_type_matches(desc: &str, family: Family, s: &St) -> Option<bool> {
    let tok = desc.split_whitespace().last()?.trim_start_matches('!');
    let (ty, code) = match tok.split_once('/') {
        Some((t, c)) => (t, Some(c.parse::<u8>().ok()?)),
        None => (tok, None),
    };
    let unreach = if family == Family::V4 { 3 } else { 1 };
    let (t, c): (u8, Option<u8>) = if let Ok(n) = ty.parse::<u8>() {
        (n, code)
    } else {
        match (family, ty) {
            (_, "any") => return Some(true),
            (_, "destination-unreachable") => (unreach, code),
            (Family::V4, "echo-reply") => (0, None),
            (Family::V4, "echo-request") => (8, None),
            (Family::V4, "time-exceeded") => (11, None),
            (Family::V4, "source-quench") => (4, None),
            (Family::V4, "redirect") => (5, None),
            (Family::V4, "parameter-problem") => (12, None),
            (Family::V4, "network-unreachable" | "net-unreachable") => (3, Some(0)),
            (Family::V4, "host-unreachable") => (3, Some(1)),
            (Family::V4, "protocol-unreachable" | "prot-unreachable") => (3, Some(2)),
            (Family::V4, "port-unreachable") => (3, Some(3)),
            (Family::V4, "network-prohibited" | "net-prohibited") => (3, Some(9)),
            (Family::V4, "host-prohibited") => (3, Some(10)),
            (Family::V4, "communication-prohibited" | "admin-prohibited") => (3, Some(13)),
            (Family::V6, "packet-too-big") => (2, None),
            (Family::V6, "time-exceeded" | "ttl-exceeded") => (3, None),
            (Family::V6, "parameter-problem") => (4, None),
            (Family::V6, "echo-request") => (128, None),
            (Family::V6, "echo-reply") => (129, None),
            (Family::V6, "router-solicitation") => (133, None),
            (Family::V6, "router-advertisement") => (134, None),
            (
                Family::V6,
                "neighbour-solicitation" | "neighbor-solicitation" | "nd-neighbor-solicit",
            ) => (135, None),
            (
                Family::V6,
                "neighbour-advertisement" | "neighbor-advertisement" | "nd-neighbor-advert",
            ) => (136, None),
            (Family::V6, "no-route") => (1, Some(0)),
            (Family::V6, "communication-prohibited" | "admin-prohibited") => (1, Some(1)),
            (Family::V6, "address-unreachable") => (1, Some(3)),
            (Family::V6, "port-unreachable") => (1, Some(4)),
            _ => return None,
        }
    };
    if t != unreach {
        return Some(false);
    }
    match c {
        None => Some(true),
        Some(c) => refusal_icmp_code(s, family).map(|mine| mine == c),
    }
}

/// The ICMP code of the refusal's error, from the REJECT kind's name.
fn refusal_icmp_code(s: &St, family: Family) -> Option<u8> {
    let (_, rule) = s.reply.as_ref()?.refusal.as_ref()?;
    let t = rule.text.to_ascii_lowercase();
    let v4 = [
        ("net-unreach", 0),
        ("host-unreach", 1),
        ("proto-unreach", 2),
        ("port-unreach", 3),
        ("net-prohib", 9),
        ("host-prohib", 10),
        ("admin-prohib", 13),
    ];
    let v6 = [
        ("no-route", 0),
        ("noroute", 0),
        ("adm-prohib", 1),
        ("admin-prohib", 1),
        ("addr-unreach", 3),
        ("port-unreach", 4),
    ];
    let table: &[(&str, u8)] = if family == Family::V4 { &v4 } else { &v6 };
    if !t.contains("reject") {
        return None;
    }
    let hit = table.iter().find(|(k, _)| t.contains(k)).map(|(_, c)| *c);
    // A REJECT without `--reject-with` / `with`: port-unreachable (iptables-extensions(8), nft(8)).
    hit.or(if t.contains("with") {
        None
    } else {
        Some(if family == Family::V4 { 3 } else { 4 })
    })
}

/// Protocol number of the current packet.
fn l4_proto(s: &St) -> u8 {
    match (s.l4, s.pkt.family) {
        (L4::Tcp(_), _) => 6,
        (L4::Icmp, Family::V4) => 1,
        (L4::Icmp, Family::V6) => 58,
    }
}

/// A port match: exact for a known port, the ephemeral rule for Cloudflare's own port.
fn port_match(ranges: &[(u16, u16)], port: Option<u16>, negate: bool) -> Tri {
    match port {
        Some(p) => {
            if in_ranges(ranges, p) != negate {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        None => src_port(ranges, negate),
    }
}

/// Length range of the current packet: a SYN or ACK from Cloudflare, or this host's SYN-ACK
/// (options: MSS, SACK, timestamps, window scale), RST, or ICMP error quoting the SYN.
fn packet_length(s: &St) -> (u32, u32) {
    let v6 = s.pkt.family == Family::V6;
    let ip = if v6 { 40 } else { 20 };
    match (s.l4, s.reply.is_some(), s.pkt.established) {
        (L4::Tcp(_), false, false) => (ip + 32, ip + 40),
        (L4::Tcp(_), false, true) => (ip + 20, 1500),
        (L4::Tcp(f), true, _) if f & 0x04 != 0 => (ip + 20, ip + 20),
        (L4::Tcp(_), true, _) => (ip + 24, ip + 40),
        (L4::Icmp, _, _) => (ip + 8 + ip + 20, if v6 { 1280 } else { 576 }),
    }
}

fn in_ranges(ranges: &[(u16, u16)], p: u16) -> bool {
    ranges.iter().any(|(a, b)| *a <= p && p <= *b)
}

/// Source ports of Cloudflare's connections are ephemeral (1024-65535, any of them).
fn src_port(ranges: &[(u16, u16)], negate: bool) -> Tri {
    let covers_all = ranges.iter().any(|(a, b)| *a <= 1024 && *b == 65535);
    let touches = ranges.iter().any(|(_, b)| *b >= 1024);
    if covers_all {
        if negate { Tri::No } else { Tri::Yes }
    } else if !touches {
        if negate { Tri::Yes } else { Tri::No }
    } else {
        let r: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}:{b}")).collect();
        Tri::Depends(
            CondKind::Undecidable,
            format!("client source port in {}", r.join(",")),
        )
    }
}

fn patterns(p: &[IfPattern]) -> String {
    let v: Vec<String> = p
        .iter()
        .map(|x| format!("{}{}", x.name, if x.prefix { "+" } else { "" }))
        .collect();
    v.join(",")
}

/// Whether the packet has a conntrack entry (conntrack ran and it was not NOTRACKed).
fn has_conntrack_entry(s: &St) -> bool {
    s.ct.is_some_and(|c| c & CtStates::UNTRACKED == 0)
}

fn with_conntrack(mut st: St) -> St {
    if st.ct.is_none() {
        st.ct = Some(if st.pkt.established {
            CtStates::ESTABLISHED
        } else {
            CtStates::NEW
        });
    }
    st
}

fn apply_effects(s: &mut St, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::SetMark { value, mask } => s.mark = (s.mark & !mask) ^ value,
            Effect::SetConnMark { value, mask } => s.ctmark = (s.ctmark & !mask) ^ value,
            Effect::RestoreMark => s.mark = s.ctmark,
            Effect::Notrack => {
                if s.ct.is_none() {
                    s.ct = Some(CtStates::UNTRACKED);
                }
            }
            Effect::Other { .. } => {}
        }
    }
}

/// A netfilter rule as it decided this state's packet: on the answer's way out it is a
/// reply-direction rule (the JSON `direction`, the `(reply)` label, the fix's `--sport` form).
fn as_seen(s: &St, r: RuleRef) -> RuleRef {
    as_seen_dir(s.reply.is_some(), r)
}

fn as_seen_dir(reply: bool, mut r: RuleRef) -> RuleRef {
    if reply {
        r.direction = crate::firewall::Direction::Reply;
    }
    r
}

fn policy_ref(b: &Base<'_>) -> RuleRef {
    RuleRef {
        direction: Default::default(),
        backend: b.table.backend,
        family: b.table.family,
        table: b.table.name.clone(),
        chain: b.chain.name.clone(),
        position: 0,
        handle: None,
        text: match b.table.backend {
            crate::firewall::Backend::Nft => format!(
                "chain {} {{ type {} hook {} priority {}; policy drop; }}",
                b.chain.name,
                match b.ctype {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                    ChainType::Route => "route",
                },
                format!("{:?}", b.hook).to_lowercase(),
                b.priority
            ),
            _ => format!(":{} DROP", b.chain.name),
        },
    }
}

/// A pseudo-rule for something that decides outside netfilter (a route, a sysctl).
fn policy_ref_like(
    backend: crate::firewall::Backend,
    family: Family,
    table: &str,
    text: String,
) -> RuleRef {
    RuleRef {
        backend,
        family: match family {
            Family::V4 => crate::firewall::TableFamily::Ip,
            Family::V6 => crate::firewall::TableFamily::Ip6,
        },
        table: table.into(),
        chain: "route".into(),
        position: 1,
        handle: None,
        text,
        direction: crate::firewall::Direction::Reply,
    }
}

/// Whether this branch already answered the same undecidable question (same kind and text).
/// Only for packet properties: rate limits and unknown matches keep state per rule (or may),
/// and sampling (`statistic`, nft `numgen`) draws anew at each rule, so those always fork.
fn answered(s: &St, kind: CondKind, desc: &str) -> Option<bool> {
    if kind != CondKind::Undecidable || desc.contains("statistic") || desc.contains("numgen") {
        return None;
    }
    s.conds
        .iter_rev()
        .find(|c| c.kind == kind && c.desc == desc)
        .map(|c| c.holds)
}

fn finish(s: St, fate: Fate, decided_by: Option<RuleRef>) -> Outcome {
    Outcome {
        fate,
        decided_by,
        conds: s.conds.to_vec(),
        path: s.path.to_vec(),
        landed: s.landed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{VerdictKind, classify};
    use crate::firewall::{AddrSet, Backend, BaseChain, RateLimit, TableFamily};

    fn rref(chain: &str, pos: usize) -> RuleRef {
        RuleRef {
            direction: Default::default(),
            backend: Backend::Nft,
            family: TableFamily::Inet,
            table: "t".into(),
            chain: chain.into(),
            position: pos,
            handle: None,
            text: format!("{chain}#{pos}"),
        }
    }
    fn rule(chain: &str, pos: usize, matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule {
            matches,
            effects: vec![],
            verdict,
            source: rref(chain, pos),
        }
    }
    fn src(cidr: &str) -> Match {
        Match::Addr {
            dir: Dir::Src,
            set: AddrSet::single(AddrRange::parse(cidr).expect("cidr")),
            negate: false,
        }
    }
    fn dport(p: u16) -> Match {
        Match::Port {
            dir: Dir::Dst,
            ranges: vec![(p, p)],
            negate: false,
        }
    }
    fn base(name: &str, hook: Hook, priority: i32, policy: Policy, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                hook,
                priority,
                chain_type: ChainType::Filter,
                policy,
                devices: vec![],
            }),
            rules,
        }
    }
    fn user(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: None,
            rules,
        }
    }
    fn table(name: &str, chains: Vec<Chain>) -> Table {
        Table {
            backend: Backend::Nft,
            family: TableFamily::Inet,
            name: name.into(),
            chains,
            sets: vec![],
        }
    }
    fn verdict(rs: &Ruleset, addr: &str, port: u16) -> crate::analysis::Classified {
        let ev = Evaluator::new(
            rs,
            HostFacts {
                local: vec!["203.0.113.2".parse().expect("ip")],
                ..Default::default()
            },
        );
        let (family, src) = addr_to_int(addr.parse().expect("ip"));
        let dst = addr_to_int("203.0.113.2".parse().expect("ip")).1;
        classify(&ev.evaluate(&Packet {
            family,
            src,
            dst: Some(dst),
            dport: port,
            iif: Some("eth0".into()),
            established: false,
        }))
    }

    #[test]
    fn accept_in_one_base_chain_does_not_undo_a_drop_in_another() {
        let rs = Ruleset {
            tables: vec![
                table(
                    "a",
                    vec![base(
                        "input",
                        Hook::Input,
                        0,
                        Policy::Accept,
                        vec![rule("input", 1, vec![], Verdict::Accept)],
                    )],
                ),
                table(
                    "b",
                    vec![base(
                        "input",
                        Hook::Input,
                        10,
                        Policy::Accept,
                        vec![rule(
                            "input",
                            1,
                            vec![src("173.245.48.0/20"), dport(443)],
                            Verdict::Drop,
                        )],
                    )],
                ),
            ],
            ipsets: vec![],
        };
        let c = verdict(&rs, "173.245.48.7", 443);
        assert_eq!(c.verdict, VerdictKind::Drop);
        assert_eq!(c.cf_error, Some(522));
        assert_eq!(c.rule.as_ref().map(|r| r.text.as_str()), Some("input#1"));
        assert_eq!(
            verdict(&rs, "173.245.64.1", 443).verdict,
            VerdictKind::Accept
        );
        assert_eq!(
            verdict(&rs, "173.245.48.7", 80).verdict,
            VerdictKind::Accept
        );
    }

    #[test]
    fn return_comes_back_goto_does_not() {
        // input: jump J (J returns for CF) ; then drop everything on 443 via goto G whose end
        // returns to input's caller = policy.
        let rs = Ruleset {
            tables: vec![table(
                "t",
                vec![
                    base(
                        "input",
                        Hook::Input,
                        0,
                        Policy::Drop,
                        vec![
                            rule("input", 1, vec![], Verdict::Jump { chain: "J".into() }),
                            rule(
                                "input",
                                2,
                                vec![dport(80)],
                                Verdict::Goto { chain: "G".into() },
                            ),
                            rule("input", 3, vec![], Verdict::Accept),
                        ],
                    ),
                    user(
                        "J",
                        vec![
                            rule("J", 1, vec![src("173.245.48.0/20")], Verdict::Return),
                            rule("J", 2, vec![], Verdict::Drop),
                        ],
                    ),
                    user(
                        "G",
                        vec![rule("G", 1, vec![src("10.0.0.0/8")], Verdict::Accept)],
                    ),
                ],
            )],
            ipsets: vec![],
        };
        assert_eq!(
            verdict(&rs, "173.245.48.1", 443).verdict,
            VerdictKind::Accept
        );
        let c = verdict(&rs, "104.16.0.1", 443);
        assert_eq!(
            (c.verdict, c.rule.map(|r| r.text)),
            (VerdictKind::Drop, Some("J#2".into()))
        );
        // goto G falls off → back to input's caller → policy drop, never reaching input#3.
        let c = verdict(&rs, "173.245.48.1", 80);
        assert_eq!(c.verdict, VerdictKind::Drop);
        assert_eq!(c.rule.map(|r| r.position), Some(0));
    }

    #[test]
    fn rate_limits_and_unknowns_are_named_not_guessed() {
        let limit = Match::Rate(RateLimit {
            kind: "limit".into(),
            desc: "10/second".into(),
            over: false,
        });
        let rs = Ruleset {
            tables: vec![table(
                "t",
                vec![base(
                    "input",
                    Hook::Input,
                    0,
                    Policy::Drop,
                    vec![
                        rule("input", 1, vec![dport(443), limit], Verdict::Accept),
                        rule(
                            "input",
                            2,
                            vec![
                                dport(80),
                                Match::Unknown {
                                    text: "-m foo".into(),
                                    negate: false,
                                },
                            ],
                            Verdict::Accept,
                        ),
                    ],
                )],
            )],
            ipsets: vec![],
        };
        let c = verdict(&rs, "173.245.48.1", 443);
        assert_eq!(c.verdict, VerdictKind::RateLimited);
        assert_eq!(c.cf_error, Some(522));
        assert_eq!(c.rule.map(|r| r.text), Some("input#1".into()));
        let c = verdict(&rs, "173.245.48.1", 80);
        assert_eq!(c.verdict, VerdictKind::Conditional);
        assert!(
            c.conditions.iter().any(|x| x.contains("-m foo")),
            "{:?}",
            c.conditions
        );
    }

    #[test]
    fn conntrack_state_before_and_after_priority_minus_200() {
        let new = Match::CtState {
            states: CtStates::NEW,
            negate: false,
        };
        let rs = Ruleset {
            tables: vec![table(
                "t",
                vec![
                    // raw priority: no conntrack entry yet → state INVALID, `ct state new` misses.
                    base(
                        "raw",
                        Hook::Prerouting,
                        -300,
                        Policy::Accept,
                        vec![rule("raw", 1, vec![new.clone()], Verdict::Drop)],
                    ),
                    base(
                        "input",
                        Hook::Input,
                        0,
                        Policy::Accept,
                        vec![rule(
                            "input",
                            1,
                            vec![new, dport(8443)],
                            Verdict::Reject {
                                with: RejectKind::TcpReset,
                            },
                        )],
                    ),
                ],
            )],
            ipsets: vec![],
        };
        assert_eq!(
            verdict(&rs, "173.245.48.1", 443).verdict,
            VerdictKind::Accept
        );
        let c = verdict(&rs, "173.245.48.1", 8443);
        assert_eq!((c.verdict, c.cf_error), (VerdictKind::Reject, Some(521)));
    }

    #[test]
    fn dnat_changes_the_port_later_chains_see() {
        let rs = Ruleset {
            tables: vec![table(
                "t",
                vec![
                    Chain {
                        name: "pre".into(),
                        base: Some(BaseChain {
                            hook: Hook::Prerouting,
                            priority: -100,
                            chain_type: ChainType::Nat,
                            policy: Policy::Accept,
                            devices: vec![],
                        }),
                        rules: vec![rule(
                            "pre",
                            1,
                            vec![dport(443)],
                            Verdict::Redirect { port: Some(8443) },
                        )],
                    },
                    base(
                        "input",
                        Hook::Input,
                        0,
                        Policy::Accept,
                        vec![rule("input", 1, vec![dport(8443)], Verdict::Drop)],
                    ),
                ],
            )],
            ipsets: vec![],
        };
        let c = verdict(&rs, "173.245.48.1", 443);
        assert_eq!(c.verdict, VerdictKind::Drop);
        assert_eq!(
            verdict(&rs, "173.245.48.1", 80).verdict,
            VerdictKind::Accept
        );
        let lands = verdict(&rs, "173.245.48.1", 80).lands;
        assert_eq!(lands.map(|l| l.1), Some(80));
    }

    #[test]
    fn ipset_nomatch_entry_carves_out_of_a_wider_one() {
        let el = |c: &str, nomatch: bool| SetElem {
            key: vec![KeyValue::Addr(AddrRange::parse(c).expect("cidr"))],
            nomatch,
            verdict: None,
        };
        let rs = Ruleset {
            tables: vec![table(
                "t",
                vec![base(
                    "input",
                    Hook::Input,
                    0,
                    Policy::Accept,
                    vec![rule(
                        "input",
                        1,
                        vec![Match::Set {
                            set: SetRef::Ipset("ban".into()),
                            fields: vec![Field::SrcAddr],
                            negate: false,
                        }],
                        Verdict::Drop,
                    )],
                )],
            )],
            ipsets: vec![SetDef {
                name: "ban".into(),
                kind: SetKind::Ipset {
                    set_type: "hash:net".into(),
                },
                family: Some(Family::V4),
                elements: vec![el("173.245.48.0/20", false), el("173.245.50.0/24", true)],
                dynamic: false,
                unparsed: vec![],
            }],
        };
        assert_eq!(verdict(&rs, "173.245.48.1", 443).verdict, VerdictKind::Drop);
        assert_eq!(
            verdict(&rs, "173.245.50.9", 443).verdict,
            VerdictKind::Accept
        );
    }

    #[test]
    fn ingress_chains_apply_to_their_device_and_unknown_devices_are_conditional() {
        let ingress = |devices: Vec<String>| Ruleset {
            tables: vec![Table {
                backend: Backend::Nft,
                family: TableFamily::Netdev,
                name: "nd".into(),
                chains: vec![Chain {
                    name: "ing".into(),
                    base: Some(BaseChain {
                        hook: Hook::Ingress,
                        priority: -500,
                        chain_type: ChainType::Filter,
                        policy: Policy::Accept,
                        devices,
                    }),
                    rules: vec![rule("ing", 1, vec![src("173.245.48.0/20")], Verdict::Drop)],
                }],
                sets: vec![],
            }],
            ipsets: vec![],
        };
        let on = ingress(vec!["eth0".into()]);
        assert_eq!(verdict(&on, "173.245.48.1", 443).verdict, VerdictKind::Drop);
        let other = ingress(vec!["eth1".into()]);
        assert_eq!(
            verdict(&other, "173.245.48.1", 443).verdict,
            VerdictKind::Accept
        );
        let unknown = ingress(vec![]);
        let c = verdict(&unknown, "173.245.48.1", 443);
        assert_eq!(c.verdict, VerdictKind::Conditional);
        assert!(
            c.conditions[0].contains("ingress chain nd ing"),
            "{:?}",
            c.conditions
        );
    }
}
