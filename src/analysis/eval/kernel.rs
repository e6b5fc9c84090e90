//! What the kernel decides outside netfilter on the audited connection's path: XDP and tc on
//! the public interface, the routing decision for the SYN (with reverse-path filtering), and
//! the output route of the answer.
//!
//! Owns: turning `routing::Decision`, `routing::RpResult` and `tc::TcVerdict` into branches
//! and outcomes with a quotable [`RuleRef`]. Must not: do I/O (the models are parsed before).
//!
//! Order (Documentation/networking, net/core/dev.c): XDP (driver or generic, before the stack)
//! → tc ingress (sch_handle_ingress) → nft netdev ingress → prerouting → route input
//! (ip_route_input_slow, with fib_validate_source = rp_filter) → input/forward. The answer:
//! output route → OUTPUT → POSTROUTING → nft netdev egress → tc egress (sch_handle_egress).

use super::{Cond, CondKind, Evaluator, Fate, L4, Outcome, St, Step, finish, l4_proto};
use crate::firewall::addr::int_to_addr;
use crate::firewall::{Backend, Direction, Family, RejectKind, RuleRef, TableFamily};
use crate::routing::{Decision, Flow, RouteRef, RpResult};
use crate::tc::{TcDir, TcPacket, TcRef, TcVerdict};

/// Where the routing decision sends the SYN.
pub(super) enum InRoute {
    Local,
    Forward,
    /// Routes not known (offline) or destination unknown: the caller decides as before.
    Unknown,
}

fn ipfam(f: Family) -> TableFamily {
    match f {
        Family::V4 => TableFamily::Ip,
        Family::V6 => TableFamily::Ip6,
    }
}

pub(super) fn route_rule(f: Family, r: &RouteRef, dir: Direction) -> RuleRef {
    RuleRef {
        backend: Backend::Route,
        family: ipfam(f),
        table: if r.table == "rule" {
            "rules".into()
        } else {
            r.table.clone()
        },
        chain: if r.table == "rule" { "rule" } else { "route" }.into(),
        position: 1,
        handle: None,
        text: r.text.clone(),
        direction: dir,
    }
}

fn tc_rule(r: &TcRef, dir: Direction) -> RuleRef {
    RuleRef {
        backend: Backend::Tc,
        family: TableFamily::Netdev,
        table: r.dev.clone(),
        chain: r.direction.clone(),
        position: usize::try_from(r.pref).unwrap_or(usize::MAX),
        handle: None,
        text: r.text.clone(),
        direction: dir,
    }
}

fn kernel_rule(f: Family, text: String, dir: Direction) -> RuleRef {
    RuleRef {
        backend: Backend::Kernel,
        family: ipfam(f),
        table: "sysctl".into(),
        chain: "routing".into(),
        position: 1,
        handle: None,
        text,
        direction: dir,
    }
}

fn tc_packet(s: &St) -> TcPacket {
    TcPacket {
        family: s.pkt.family,
        src: s.src,
        dst: s.dst,
        proto: l4_proto(s),
        sport: s.sport,
        dport: s.dport,
        tcp_flags: match s.l4 {
            L4::Tcp(f) => Some(f),
            L4::Icmp => None,
        },
    }
}

/// Forks `st` on an undecidable condition: the returned state takes it as holding (passes),
/// the other branch ends with `fate` by `rule`.
fn fork(mut st: St, desc: String, rule: RuleRef, fate: Fate, out: &mut Vec<Outcome>) -> St {
    let cond = |holds| Cond {
        kind: CondKind::Undecidable,
        desc: desc.clone(),
        holds,
        first: holds,
        rule: rule.clone(),
    };
    let mut other = st.clone();
    other.conds.push(cond(false));
    other.path.push(Step::Rule(rule.clone()));
    out.push(finish(other, fate, Some(rule.clone())));
    st.conds.push(cond(true));
    st
}

impl Evaluator<'_> {
    /// XDP and tc on the device a packet arrives on (`dir` In) or leaves by (Reply).
    pub(super) fn netdev(&self, states: Vec<St>, tc_dir: TcDir, out: &mut Vec<Outcome>) -> Vec<St> {
        let Some(nd) = &self.netdev else {
            return states;
        };
        let mut next = Vec::new();
        for st in states {
            let (dev, dir) = match tc_dir {
                TcDir::Ingress => (st.pkt.iif.clone(), Direction::In),
                TcDir::Egress => (st.oif.clone(), Direction::Reply),
            };
            let Some(dev) = dev else {
                next.push(st);
                continue;
            };
            let mut st = st;
            if tc_dir == TcDir::Ingress {
                for p in nd.xdp(&dev) {
                    let name = p.name.clone().unwrap_or_else(|| "?".into());
                    if self
                        .trusted_xdp
                        .iter()
                        .any(|t| *t == name || *t == p.id.to_string())
                    {
                        continue;
                    }
                    let r = RuleRef {
                        backend: Backend::Xdp,
                        family: TableFamily::Netdev,
                        table: dev.clone(),
                        chain: "xdp".into(),
                        position: 1,
                        handle: Some(p.id),
                        text: format!("xdp program {name} (id {}, {:?}) on {dev}", p.id, p.mode),
                        direction: dir,
                    };
                    let desc = format!(
                        "XDP program {name} (id {}) on {dev} passes the SYN (its code is not read)",
                        p.id
                    );
                    st = fork(st, desc, r, Fate::Dropped, out);
                }
            }
            match nd.decide(&dev, tc_dir, &tc_packet(&st)) {
                TcVerdict::Pass => next.push(st),
                TcVerdict::Drop { by, why } => {
                    let r = tc_rule(&by, dir);
                    let mut st = st;
                    st.path.push(Step::Rule(r.clone()));
                    st.path.push(Step::Reply(format!("tc: {why}")));
                    out.push(finish(st, Fate::Dropped, Some(r)));
                }
                TcVerdict::Conditional { desc, by } => {
                    let r = tc_rule(&by, dir);
                    next.push(fork(
                        st,
                        format!("tc filter: {desc}"),
                        r,
                        Fate::Dropped,
                        out,
                    ));
                }
            }
        }
        next
    }

    /// The routing decision for the SYN after prerouting, and reverse-path filtering.
    pub(super) fn route_input(&self, st: St, out: &mut Vec<Outcome>) -> Option<(St, InRoute)> {
        let fam = st.pkt.family;
        let (Some(rt), Some(dst), Some(iif)) = (&self.routing, st.dst, st.pkt.iif.clone()) else {
            return Some((st, InRoute::Unknown));
        };
        if !rt.family(fam).routes_known {
            return Some((st, InRoute::Unknown));
        }
        let src = st.pkt.src;
        let flow = Flow {
            family: fam,
            dst,
            src: Some(src),
            iif: Some(iif.clone()),
            oif: None,
            mark: st.mark,
            tos: 0,
        };
        let mut st = st;
        let route = match rt.lookup(&flow) {
            Decision::Local(_) => InRoute::Local,
            Decision::Unicast { .. } => InRoute::Forward,
            Decision::Blackhole(r) | Decision::Other { route: r, .. } => {
                let r = route_rule(fam, &r, Direction::In);
                st.path.push(Step::Rule(r.clone()));
                out.push(finish(st, Fate::Dropped, Some(r)));
                return None;
            }
            Decision::Unreachable(r) | Decision::Prohibit(r) => {
                // ip_error() answers with an ICMP error, which must leave the host too.
                let r = route_rule(fam, &r, Direction::In);
                st.path.push(Step::Rule(r.clone()));
                self.refuse(st, RejectKind::Icmp("host-unreachable".into()), r, out);
                return None;
            }
            Decision::NoRoute => {
                let r = kernel_rule(fam, "no route for the SYN".into(), Direction::In);
                out.push(finish(st, Fate::Dropped, Some(r)));
                return None;
            }
            Decision::Undecided(why) => {
                let r = kernel_rule(fam, format!("route lookup: {why}"), Direction::In);
                out.push(finish(
                    st,
                    Fate::Undecided(format!("route lookup: {why}")),
                    Some(r),
                ));
                return None;
            }
        };
        if fam == Family::V4 {
            match rt.rp_filter(fam, &iif, src, dst, st.mark) {
                RpResult::Pass => {}
                RpResult::Drop { reason, by } => {
                    let mode = self.rp_mode(&iif);
                    let via = by
                        .map(|b| format!("; route back: {}", b.text))
                        .unwrap_or_default();
                    let r = kernel_rule(
                        fam,
                        format!("net.ipv4.conf.{iif}.rp_filter = {mode}: {reason}{via}"),
                        Direction::In,
                    );
                    st.path.push(Step::Rule(r.clone()));
                    out.push(finish(st, Fate::Dropped, Some(r)));
                    return None;
                }
                RpResult::Undecided(why) => {
                    let r = kernel_rule(fam, format!("rp_filter: {why}"), Direction::In);
                    let desc = format!("reverse-path filter passes the SYN ({why})");
                    st = fork(st, desc, r, Fate::Dropped, out);
                }
            }
        }
        Some((st, route))
    }

    fn rp_mode(&self, iif: &str) -> String {
        let Some(rt) = &self.routing else {
            return "?".into();
        };
        let get = |k: String| rt.sysctls.get(&k).and_then(|v| v.trim().parse::<u8>().ok());
        let all = get("net.ipv4.conf.all.rp_filter".into()).unwrap_or(0);
        let dev = get(format!("net.ipv4.conf.{iif}.rp_filter")).unwrap_or(0);
        all.max(dev).to_string()
    }

    /// The output route of the answer from the routing model: `None` when it is not known
    /// (offline), else the device or the outcome that ends it.
    pub(super) fn route_output(
        &self,
        st: &St,
        bound: Option<String>,
    ) -> Option<Result<String, Box<Outcome>>> {
        let fam = st.pkt.family;
        let rt = self.routing.as_ref()?;
        if !rt.family(fam).routes_known {
            return None;
        }
        let flow = Flow {
            family: fam,
            dst: st.pkt.src,
            src: st.src,
            iif: Some("lo".into()),
            oif: bound,
            mark: st.mark,
            tos: 0,
        };
        let to = int_to_addr(fam, st.pkt.src);
        let lost = |r: RuleRef| {
            let mut s = st.clone();
            s.path.push(Step::Rule(r.clone()));
            Err(Box::new(finish(s, Fate::Dropped, Some(r))))
        };
        Some(match rt.lookup(&flow) {
            Decision::Unicast { dev: Some(d), .. } => Ok(d),
            Decision::Unicast {
                dev: None, route, ..
            }
            | Decision::Local(route) => lost(route_rule(fam, &route, Direction::Reply)),
            Decision::Blackhole(r)
            | Decision::Unreachable(r)
            | Decision::Prohibit(r)
            | Decision::Other { route: r, .. } => lost(route_rule(fam, &r, Direction::Reply)),
            Decision::NoRoute => lost(route_rule(
                fam,
                &RouteRef {
                    table: "main".into(),
                    text: format!("no route to {to}"),
                    rule_priority: None,
                },
                Direction::Reply,
            )),
            Decision::Undecided(why) => {
                let r = kernel_rule(fam, format!("route to {to}: {why}"), Direction::Reply);
                Err(Box::new(finish(
                    st.clone(),
                    Fate::Undecided(format!("route of the answer: {why}")),
                    Some(r),
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::{HostFacts, Packet};
    use crate::analysis::{VerdictKind, classify};
    use crate::firewall::Ruleset;
    use crate::firewall::addr::addr_to_int;
    use crate::tc::NetdevDumps;

    /// `ip -j -d link show` of a veth with `ip link set dev v1 xdpgeneric obj xdp_pass.o`
    /// (the capture in src/tc/tests.rs, cut to that one link).
    const LINK: &str = r#"[{"ifindex":2,"link":"v0","ifname":"v1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"xdp":{"mode":2,"prog":{"id":34,"name":"xdp_pass","tag":"614b434cd8324ecc","jited":1,"load_time":3619272979168,"created_by_uid":0},"attached":[{"mode":2,"prog":{"id":34,"name":"xdp_pass","tag":"614b434cd8324ecc","jited":1,"load_time":3619272979168,"created_by_uid":0}}]},"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"8a:e9:03:38:a4:b2","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"}}]"#;

    fn verdict(trusted: &[&str]) -> VerdictKind {
        let rs = Ruleset::default();
        let netdev = crate::tc::parse(&NetdevDumps {
            links: Some(LINK.into()),
            ..Default::default()
        })
        .unwrap();
        let ev = super::super::Evaluator::new(
            &rs,
            HostFacts {
                local: vec!["203.0.113.2".parse().unwrap()],
                netdev: Some(netdev),
                trusted_xdp: trusted.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        let (family, src) = addr_to_int("173.245.48.1".parse().unwrap());
        let dst = addr_to_int("203.0.113.2".parse().unwrap()).1;
        classify(&ev.evaluate(&Packet {
            family,
            src,
            dst: Some(dst),
            dport: 443,
            iif: Some("v1".into()),
            established: false,
        }))
        .verdict
    }

    #[test]
    fn an_xdp_program_is_conditional_unless_trusted_by_name_or_id() {
        assert_eq!(verdict(&[]), VerdictKind::Conditional);
        assert_eq!(verdict(&["other_prog", "35"]), VerdictKind::Conditional);
        assert_eq!(verdict(&["xdp_pass"]), VerdictKind::Accept);
        assert_eq!(verdict(&["34"]), VerdictKind::Accept);
    }
}
