//! The host's answer to Cloudflare's SYN, and the socket that takes the SYN.
//!
//! Owns: choosing the listening socket the way the kernel does (`deliver`), building the
//! locally generated answer — SYN-ACK, the RST of a closed port, the RST / ICMP error of a
//! REJECT — and walking it out: output route, raw OUTPUT (-300), conntrack (-200), mangle /
//! filter / security OUTPUT, POSTROUTING (reverse NAT at priority 100), nft netdev egress.
//! Must not: do I/O or loop over addresses.
//!
//! Kernel facts used (net/ipv4/tcp_ipv4.c, inet_hashtables.c, nf_conntrack_core.c,
//! nf_conntrack_proto_tcp.c, nf_reject_ipv4.c):
//! - The listener is looked up by destination address and port; a socket bound to an address
//!   takes only that address, a wildcard one its family (an IPv6 wildcard without IPV6_V6ONLY
//!   also IPv4), one with SO_BINDTODEVICE only packets that arrived on that device. None → the
//!   kernel answers with a RST (tcp_v4_send_reset): Cloudflare 521.
//! - A listener whose accept queue is full (`sk_ack_backlog > sk_max_ack_backlog`) drops the
//!   SYN (tcp_conn_request, LINUX_MIB_LISTENOVERFLOWS): Cloudflare 522. Several listeners on
//!   one address, port and device are an SO_REUSEPORT group: the 4-tuple's hash picks the
//!   member (inet_lookup_reuseport), so a group with some members full drops some SYNs only.
//! - The SYN-ACK and the closed port's RST are new skbs: no conntrack entry before OUTPUT's
//!   conntrack hook (-200), which finds the SYN's entry in the reply direction: ESTABLISHED.
//!   A SYN that was NOTRACKed left no entry: the SYN-ACK/RST then starts no valid TCP
//!   connection (tcp_conntracks[sNO][synack/rst] = sIV) and is INVALID — unless raw OUTPUT
//!   NOTRACKs it too (UNTRACKED).
//! - REJECT's RST and ICMP error are RELATED to the SYN's entry in OUTPUT (nf_send_reset →
//!   nf_ct_attach; for the ICMP error checked with the kernel: an OUTPUT rule `-p icmp
//!   --ctstate RELATED -j ACCEPT` lets it out, tests/scenarios/110). Without an entry (the SYN
//!   was NOTRACKed) they are INVALID.
//! - nat chains never see the answer (not the first packet of a connection); the reverse of a
//!   DNAT/REDIRECT is applied at POSTROUTING priority 100 (NF_IP_PRI_NAT_SRC): chains before it
//!   see the translated source (the port the socket listens on).
//! - Any drop of the answer, or a REJECT of it (its RST goes back to this host), means nothing
//!   reaches Cloudflare: 522.

use super::{
    CondKind, Evaluator, Fate, L4, Outcome, St, Step, finish, has_conntrack_entry, policy_ref_like,
};
use crate::firewall::addr::int_to_addr;
use crate::firewall::{
    Backend, CtStates, Direction, Family, Hook, RejectKind, RuleRef, TableFamily,
};
use std::net::IpAddr;

/// What the host sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The SYN-ACK (or, for an established-connection check, the server's ACK).
    SynAck,
    /// The kernel's RST for a port nothing listens on.
    ClosedRst,
    /// REJECT --reject-with tcp-reset.
    RejectRst,
    /// REJECT with an ICMP/ICMPv6 error.
    RejectIcmp,
}

impl Answer {
    fn name(self) -> &'static str {
        match self {
            Answer::SynAck => "SYN-ACK",
            Answer::ClosedRst => "RST (closed port)",
            Answer::RejectRst => "RST (REJECT)",
            Answer::RejectIcmp => "ICMP error (REJECT)",
        }
    }
}

/// Set on a state that walks the answer out.
#[derive(Debug, Clone)]
pub(super) struct ReplyCtx {
    pub answer: Answer,
    /// For a refusal: the fate and the rule (REJECT, or the socket layer) to report when the
    /// refusal reaches Cloudflare.
    pub refusal: Option<(Fate, RuleRef)>,
    /// Whether the SYN left a conntrack entry (conntrack ran, not NOTRACKed).
    pub tracked: bool,
    ct_done: bool,
    denat_done: bool,
}

/// Applies what the kernel does to the answer before the base chain at `prio` of `hook`:
/// conntrack at OUTPUT -200, the reverse NAT at POSTROUTING 100.
pub(super) fn at_priority(mut st: St, hook: Hook, prio: i32) -> St {
    let conntrack_ran = match hook {
        Hook::Output => prio > -200,
        Hook::Postrouting | Hook::Egress => true,
        _ => false,
    };
    let denat = match hook {
        Hook::Postrouting => prio > 100,
        Hook::Egress => true,
        _ => false,
    };
    let Some(ctx) = st.reply.as_mut() else {
        return st;
    };
    if conntrack_ran && !ctx.ct_done {
        ctx.ct_done = true;
        if st.ct.is_none() {
            let dnat = if st.dnat_done { CtStates::DNAT } else { 0 };
            st.ct = Some(match ctx.answer {
                Answer::SynAck | Answer::ClosedRst if ctx.tracked => CtStates::ESTABLISHED | dnat,
                _ => CtStates::INVALID,
            });
        }
    }
    if denat && !ctx.denat_done {
        ctx.denat_done = true;
        if st.dnat_done {
            st.src = st.pkt.dst;
            st.sport = Some(st.pkt.dport);
        }
    }
    st
}

/// The socket layer's answer for a SYN delivered locally.
enum Sock {
    /// Listeners unknown (offline dumps) or the address is not known: taken as listening.
    Unknown,
    Listening,
    /// Accept queue full: the SYN is dropped.
    Full(RuleRef),
    /// An SO_REUSEPORT group where some members' accept queues are full: the connection's
    /// hash picks the member, so some SYNs are dropped and some taken.
    Partly(RuleRef, String),
    /// Nothing takes it: RST.
    Nothing(RuleRef),
}

fn socket_ref(family: Family, text: String) -> RuleRef {
    RuleRef {
        backend: Backend::Socket,
        family: match family {
            Family::V4 => TableFamily::Ip,
            Family::V6 => TableFamily::Ip6,
        },
        table: "tcp".into(),
        chain: "listen".into(),
        position: 1,
        handle: None,
        text,
        direction: Direction::In,
    }
}

impl Evaluator<'_> {
    /// A SYN that passed the input hooks: the socket takes it (SYN-ACK), or not (RST, or a
    /// drop when its accept queue is full).
    pub(super) fn deliver(&self, mut st: St, out: &mut Vec<Outcome>) {
        let fam = st.pkt.family;
        let addr = st.dst.map(|d| int_to_addr(fam, d));
        let port = st.dport.unwrap_or(st.pkt.dport);
        st.landed = Some((addr, port, true));
        // A packet of an established connection already has its socket (and its NAT binding,
        // which nat chains do not show): only the firewall is checked for it.
        let sock = if st.pkt.established {
            Sock::Unknown
        } else {
            self.socket_for(fam, addr, port, st.pkt.iif.as_deref())
        };
        match sock {
            Sock::Unknown | Sock::Listening => self.answer(st, Answer::SynAck, None, out),
            Sock::Full(r) => {
                st.path.push(Step::Rule(r.clone()));
                out.push(finish(st, Fate::Dropped, Some(r)));
            }
            Sock::Partly(r, desc) => {
                let cond = |holds| super::Cond {
                    first: holds,
                    kind: CondKind::Undecidable,
                    desc: desc.clone(),
                    holds,
                    rule: r.clone(),
                };
                let mut dropped = st.clone();
                dropped.conds.push(cond(true));
                dropped.path.push(Step::Rule(r.clone()));
                out.push(finish(dropped, Fate::Dropped, Some(r.clone())));
                st.conds.push(cond(false));
                self.answer(st, Answer::SynAck, None, out);
            }
            Sock::Nothing(r) => {
                st.path.push(Step::Rule(r.clone()));
                let refusal = (Fate::Rejected(RejectKind::TcpReset), r);
                self.answer(st, Answer::ClosedRst, Some(refusal), out);
            }
        }
    }

    /// A REJECT of the incoming SYN: its RST / ICMP error must leave the host too.
    pub(super) fn refuse(&self, st: St, kind: RejectKind, rule: RuleRef, out: &mut Vec<Outcome>) {
        let answer = match kind {
            RejectKind::TcpReset => Answer::RejectRst,
            RejectKind::Icmp(_) => Answer::RejectIcmp,
        };
        self.answer(st, answer, Some((Fate::Rejected(kind), rule)), out);
    }

    fn socket_for(&self, fam: Family, addr: Option<IpAddr>, port: u16, iif: Option<&str>) -> Sock {
        let (Some(ls), Some(dest)) = (&self.listeners, addr) else {
            return Sock::Unknown;
        };
        let takes_addr = |l: &crate::snapshot::Listener| {
            l.address == dest
                || match (l.address, dest) {
                    (IpAddr::V4(a), IpAddr::V4(_)) => a.is_unspecified(),
                    (IpAddr::V6(a), IpAddr::V6(_)) => a.is_unspecified(),
                    (IpAddr::V6(a), IpAddr::V4(_)) => {
                        a.is_unspecified() && !l.v6only.or(self.bindv6only).unwrap_or(false)
                    }
                    _ => false,
                }
        };
        let on_port: Vec<&crate::snapshot::Listener> =
            ls.iter().filter(|l| l.port == port).collect();
        // An unknown input interface (offline) cannot rule a bound socket out.
        let takes_dev = |l: &crate::snapshot::Listener| match (&l.bound_iface, iif) {
            (Some(b), Some(i)) => b == i,
            _ => true,
        };
        // The kernel looks the exact address up before the wildcard (__inet_lookup_listener),
        // and scores a bound device, then a socket of the packet's own family, higher
        // (compute_score).
        let key = |l: &crate::snapshot::Listener| {
            (
                l.address == dest,
                l.bound_iface.is_some(),
                l.address.is_ipv4() == dest.is_ipv4(),
            )
        };
        let candidates: Vec<&crate::snapshot::Listener> = on_port
            .iter()
            .copied()
            .filter(|l| takes_addr(l) && takes_dev(l))
            .collect();
        let chosen = candidates.iter().copied().max_by_key(|l| key(l));
        match chosen {
            Some(l) => {
                // Listeners sharing the chosen one's address, family and device exist only
                // as an SO_REUSEPORT group: the connection's hash picks the member
                // (inet_lookup_reuseport), whatever its queue.
                let group: Vec<&crate::snapshot::Listener> = candidates
                    .iter()
                    .copied()
                    .filter(|m| m.address == l.address && m.bound_iface == l.bound_iface)
                    .collect();
                let full: Vec<&crate::snapshot::Listener> =
                    group.iter().copied().filter(|m| queue_full(m)).collect();
                let describe = |m: &crate::snapshot::Listener| {
                    let (q, b) = (m.accept_queue.unwrap_or(0), m.backlog.unwrap_or(0));
                    format!(
                        "accept queue of {} full ({q} waiting, backlog {b}){}",
                        sockaddr(m.address, port),
                        who(m)
                    )
                };
                match (full.first(), full.len() == group.len()) {
                    (None, _) => Sock::Listening,
                    (Some(m), true) => Sock::Full(socket_ref(fam, describe(m))),
                    (Some(m), false) => Sock::Partly(
                        socket_ref(
                            fam,
                            format!(
                                "{} of the {} SO_REUSEPORT listeners on {}: {}",
                                full.len(),
                                group.len(),
                                sockaddr(l.address, port),
                                describe(m)
                            ),
                        ),
                        format!(
                            "the connection's hash picks a listener with a full accept queue ({} of {} on {})",
                            full.len(),
                            group.len(),
                            sockaddr(l.address, port)
                        ),
                    ),
                }
            }
            None => {
                let others: Vec<String> = on_port
                    .iter()
                    .map(|l| {
                        let dev = l
                            .bound_iface
                            .as_ref()
                            .map(|d| format!(" (bound to {d})"))
                            .unwrap_or_default();
                        let v6 = if l.address.is_ipv6() && dest.is_ipv4() {
                            " (IPv6 only)"
                        } else {
                            ""
                        };
                        format!("{}{dev}{v6}", sockaddr(l.address, port))
                    })
                    .collect();
                let only = if others.is_empty() {
                    String::new()
                } else {
                    format!("; only {}", others.join(", "))
                };
                Sock::Nothing(socket_ref(
                    fam,
                    format!("nothing listens on {}{only}", sockaddr(dest, port)),
                ))
            }
        }
    }

    /// Walks the answer out of the host and records the outcome.
    fn answer(
        &self,
        st: St,
        answer: Answer,
        refusal: Option<(Fate, RuleRef)>,
        out: &mut Vec<Outcome>,
    ) {
        let tracked = has_conntrack_entry(&st);
        let mut r = st;
        let related = matches!(answer, Answer::RejectRst | Answer::RejectIcmp) && tracked;
        r.reply = Some(ReplyCtx {
            answer,
            refusal,
            tracked,
            ct_done: false,
            denat_done: false,
        });
        r.src = r.dst;
        r.sport = Some(r.dport.unwrap_or(r.pkt.dport));
        r.dst = Some(r.pkt.src);
        r.dport = None;
        r.l4 = match answer {
            Answer::SynAck if r.pkt.established => L4::Tcp(0x10),
            Answer::SynAck => L4::Tcp(0x12),
            Answer::ClosedRst | Answer::RejectRst => L4::Tcp(0x14),
            Answer::RejectIcmp => L4::Icmp,
        };
        r.iif = None;
        r.mark = 0;
        r.ct = related.then_some(CtStates::RELATED);
        r.hook = Hook::Output;
        let mut routed = Vec::new();
        self.route_answer(r, &mut routed, out);
        let mut states = routed;
        for hook in [Hook::Output, Hook::Postrouting, Hook::Egress] {
            states = self.run_hook(hook, states, out);
        }
        let states = self.netdev(states, crate::tc::TcDir::Egress, out);
        for s in states {
            let (fate, rule) = match s.reply.as_ref().and_then(|c| c.refusal.clone()) {
                Some((f, r)) => (f, Some(r)),
                None => {
                    let fam = s.pkt.family;
                    let addr = s.pkt.dst.map(|d| int_to_addr(fam, d));
                    match s.landed {
                        Some((a, p, _)) => (Fate::Local { addr: a, port: p }, None),
                        None => (
                            Fate::Local {
                                addr,
                                port: s.pkt.dport,
                            },
                            None,
                        ),
                    }
                }
            };
            out.push(finish(s, fate, rule));
        }
    }

    /// The output route of the answer: which interface it leaves by, or why it cannot leave.
    fn route_answer(&self, mut st: St, next: &mut Vec<St>, out: &mut Vec<Outcome>) {
        let ans = st
            .reply
            .as_ref()
            .map(|c| c.answer.name())
            .unwrap_or("answer");
        let fam = st.pkt.family;
        let to = int_to_addr(fam, st.pkt.src);
        let from = st
            .src
            .map(|a| int_to_addr(fam, a).to_string())
            .unwrap_or_else(|| "this host".into());
        let end = match self.route_output(&st, None) {
            Some(Ok(dev)) => RouteEnd::Via(dev, false),
            Some(Err(o)) => {
                let mut o = *o;
                o.path.insert(
                    o.path.len().saturating_sub(1),
                    Step::Reply(format!("{ans} from {from} to {to}: no way out")),
                );
                out.push(o);
                return;
            }
            None => self.reply_oif(&st),
        };
        match end {
            RouteEnd::Via(dev, assumed) => {
                let how = if assumed {
                    " (assumed: routes unknown)"
                } else {
                    ""
                };
                st.path.push(Step::Reply(format!(
                    "{ans} from {from} to {to} leaves by {dev}{how}"
                )));
                let arrived = st.pkt.iif.clone();
                st.oif = Some(dev.clone());
                match arrived {
                    Some(i) if i != dev => {
                        let r = policy_ref_like(
                            Backend::Route,
                            fam,
                            "main",
                            format!("route to {to} leaves by {dev}, not {i}"),
                        );
                        let cond = |holds| super::Cond {
                            first: holds,
                            kind: CondKind::Undecidable,
                            desc: format!(
                                "the answer reaches Cloudflare by {dev} (asymmetric route: the SYN arrived on {i})"
                            ),
                            holds,
                            rule: r.clone(),
                        };
                        let mut lost = st.clone();
                        lost.conds.push(cond(false));
                        out.push(finish(lost, Fate::Dropped, Some(r.clone())));
                        st.conds.push(cond(true));
                        next.push(st);
                    }
                    _ => next.push(st),
                }
            }
            RouteEnd::Lost(r) => {
                st.path.push(Step::Reply(format!(
                    "{ans} from {from} to {to}: no way out"
                )));
                st.path.push(Step::Rule(r.clone()));
                out.push(finish(st, Fate::Dropped, Some(r)));
            }
        }
    }

    /// Output route of the answer: the connected subnet holding Cloudflare's address, else
    /// the family's default route; offline (no routes at all) the interface the SYN came in.
    fn reply_oif(&self, st: &St) -> RouteEnd {
        let p = &st.pkt;
        if let Some(dev) = self.route_back(p) {
            return RouteEnd::Via(dev.to_string(), false);
        }
        if self.routes.is_empty() && self.defaults.is_empty() {
            if let Some(i) = &p.iif {
                return RouteEnd::Via(i.clone(), true);
            }
            return RouteEnd::Via("the public interface".into(), true);
        }
        let to = int_to_addr(p.family, p.src);
        RouteEnd::Lost(policy_ref_like(
            Backend::Route,
            p.family,
            "main",
            format!("no route to {to} (no {} default route)", p.family),
        ))
    }
}

enum RouteEnd {
    /// Leaves by this device (`true`: assumed, routes unknown).
    Via(String, bool),
    /// Cannot leave: blackhole, unreachable, prohibit, no route.
    Lost(RuleRef),
}

/// `sk_acceptq_is_full`: more connections waiting than the backlog.
fn queue_full(l: &crate::snapshot::Listener) -> bool {
    matches!((l.accept_queue, l.backlog), (Some(q), Some(b)) if q > b)
}

fn sockaddr(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}:{port}"),
        IpAddr::V6(v) => format!("[{v}]:{port}"),
    }
}

fn who(l: &crate::snapshot::Listener) -> String {
    match (&l.process, l.pid) {
        (Some(p), Some(pid)) => format!(" ({p}, pid {pid})"),
        (Some(p), None) => format!(" ({p})"),
        _ => String::new(),
    }
}
