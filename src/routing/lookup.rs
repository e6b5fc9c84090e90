//! Route lookup (`fib_rules_lookup` + `fib_table_lookup`) and IPv4 source validation
//! (`fib_validate_source`). Pure: reads only the parsed [`Routing`].

use super::*;
use crate::firewall::addr::AddrRange;

/// What one table lookup produced (fib_table_lookup's return).
enum TableResult<'a> {
    /// -EAGAIN: no route, `throw`, or no such table — the next rule is tried.
    Continue,
    Found(&'a Route, Vec<Nexthop>),
    Undecided(String),
}

/// The full result: the decision plus the route it came from (for rp_filter's device match).
pub(crate) struct Resolved<'a> {
    pub decision: Decision,
    pub route: Option<&'a Route>,
}

/// Three-valued match of one selector set.
#[derive(PartialEq)]
enum Tri {
    Yes,
    No,
    Unknown(String),
}

fn rule_ref(r: &RouteRule) -> RouteRef {
    RouteRef {
        table: "rule".into(),
        text: format!("{}: {}", r.priority, r.text),
        rule_priority: Some(r.priority),
    }
}

fn route_ref(route: &Route, rule: &RouteRule) -> RouteRef {
    RouteRef {
        table: route.table.to_string(),
        text: route.text.clone(),
        rule_priority: Some(rule.priority),
    }
}

impl Routing {
    /// The kernel's route lookup for `flow`: rules in priority order, each rule's action, the
    /// table's longest prefix match. See the module doc for the sources.
    pub fn lookup(&self, flow: &Flow) -> Decision {
        self.resolve(flow).decision
    }

    pub(crate) fn resolve(&self, flow: &Flow) -> Resolved<'_> {
        let r = self.resolve_rules(flow);
        // IPv4 output with a bound device: a failed lookup is not an error, the kernel assumes
        // the destination is on-link (net/ipv4/route.c ip_route_output_key_hash_rcu,
        // "Apparently, routing tables are wrong. Assume, that the destination is on link."),
        // unless the device is a VRF master, which this model cannot tell.
        if flow.family == Family::V4
            && let Some(oif) = &flow.oif
        {
            let failed = matches!(
                r.decision,
                Decision::Blackhole(_)
                    | Decision::Unreachable(_)
                    | Decision::Prohibit(_)
                    | Decision::NoRoute
            );
            if failed {
                let why = match &r.decision {
                    Decision::Blackhole(x) | Decision::Unreachable(x) | Decision::Prohibit(x) => {
                        x.text.clone()
                    }
                    _ => "no route".into(),
                };
                return Resolved {
                    decision: Decision::Unicast {
                        dev: Some(oif.clone()),
                        gateway: None,
                        nexthops: vec![Nexthop {
                            dev: Some(oif.clone()),
                            gateway: None,
                            weight: None,
                            flags: Vec::new(),
                        }],
                        route: RouteRef {
                            table: String::new(),
                            text: format!(
                                "on-link via bound device {oif} (the lookup failed: {why})"
                            ),
                            rule_priority: None,
                        },
                    },
                    route: None,
                };
            }
        }
        r
    }

    fn resolve_rules(&self, flow: &Flow) -> Resolved<'_> {
        let fr = self.family(flow.family);
        let undecided = |s: String| Resolved {
            decision: Decision::Undecided(s),
            route: None,
        };
        if !fr.routes_known {
            return undecided(format!("the {} routes were not read", flow.family));
        }
        let mut i = 0;
        while let Some(rule) = fr.rules.get(i) {
            match rule_match(rule, flow) {
                Tri::No => {
                    i += 1;
                    continue;
                }
                Tri::Unknown(why) => {
                    return undecided(format!("rule `{}: {}`: {why}", rule.priority, rule.text));
                }
                Tri::Yes => {}
            }
            let decided = |d: Decision| Resolved {
                decision: d,
                route: None,
            };
            match &rule.action {
                RuleAction::Goto {
                    target: Some(t),
                    unresolved: false,
                } => {
                    // The kernel jumps to the first rule with that priority and only allows
                    // forward targets (fib_nl_newrule rejects `target <= pref`).
                    match fr.rules.iter().position(|r| r.priority == *t) {
                        Some(j) if j > i => i = j,
                        _ => i += 1,
                    }
                }
                RuleAction::Goto { .. } | RuleAction::Nop => i += 1,
                RuleAction::Blackhole => return decided(Decision::Blackhole(rule_ref(rule))),
                RuleAction::Unreachable => return decided(Decision::Unreachable(rule_ref(rule))),
                RuleAction::Prohibit => return decided(Decision::Prohibit(rule_ref(rule))),
                // An output lookup of an unbound socket has no flowi_l3mdev, so the rule does
                // not match (net/l3mdev/l3mdev.c l3mdev_fib_rule_match).
                RuleAction::L3mdev if flow.iif.as_deref() == Some("lo") && flow.oif.is_none() => {
                    i += 1
                }
                RuleAction::L3mdev => {
                    return undecided(format!(
                        "rule `{}: {}`: the VRF table of the flow is unknown",
                        rule.priority, rule.text
                    ));
                }
                RuleAction::Other(a) => {
                    return undecided(format!(
                        "rule `{}: {}`: action `{a}` is not modelled",
                        rule.priority, rule.text
                    ));
                }
                RuleAction::Lookup {
                    table,
                    suppress_prefixlen,
                    suppress_ifgroup,
                } => match self.table_lookup(fr, table, flow) {
                    TableResult::Continue => i += 1,
                    TableResult::Undecided(why) => {
                        return undecided(format!("table {table}: {why}"));
                    }
                    TableResult::Found(route, hops) => {
                        let d = decision(route, rule, hops);
                        // Only a successful lookup (err == 0) is subject to suppression;
                        // reject routes return their error first (fib_rules_lookup).
                        let ok = !matches!(
                            d,
                            Decision::Blackhole(_)
                                | Decision::Unreachable(_)
                                | Decision::Prohibit(_)
                        );
                        if ok && suppress_prefixlen.is_some_and(|p| route.dst_len <= p) {
                            i += 1;
                            continue;
                        }
                        if ok
                            && suppress_ifgroup.is_some()
                            && route.nexthops.iter().any(|h| h.dev.is_some())
                        {
                            return undecided(format!(
                                "rule `{}: {}`: interface groups are not known",
                                rule.priority, rule.text
                            ));
                        }
                        return Resolved {
                            decision: d,
                            route: Some(route),
                        };
                    }
                },
            }
        }
        Resolved {
            decision: Decision::NoRoute,
            route: None,
        }
    }

    /// fib_table_lookup: longest prefix first; at one prefix the aliases in kernel order.
    fn table_lookup<'a>(
        &'a self,
        fr: &'a FamilyRouting,
        id: &TableId,
        flow: &Flow,
    ) -> TableResult<'a> {
        let Some(t) = fr.tables.get(id) else {
            return TableResult::Continue;
        };
        for &len in t.lens() {
            let net = flow.dst & prefix_mask(flow.family, len);
            for &idx in t.at(net, len) {
                let r = &t.routes[idx];
                if r.tos != 0 && !tos_match(flow.family, r.tos, flow.tos) {
                    continue;
                }
                if r.from.is_some() {
                    return TableResult::Undecided(format!(
                        "source-specific route `{}` is not modelled",
                        r.text
                    ));
                }
                match &r.kind {
                    RouteType::Throw => return TableResult::Continue,
                    RouteType::Blackhole | RouteType::Unreachable | RouteType::Prohibit => {
                        return TableResult::Found(r, Vec::new());
                    }
                    RouteType::Other(k) => {
                        return TableResult::Undecided(format!("route type `{k}` in `{}`", r.text));
                    }
                    _ => match self.usable_nexthops(r, flow) {
                        Err(why) => return TableResult::Undecided(why),
                        Ok(h) if h.is_empty() => continue,
                        Ok(h) => return TableResult::Found(r, h),
                    },
                }
            }
        }
        TableResult::Continue
    }

    /// The nexthops fib_table_lookup would accept: not dead, not linkdown when the device has
    /// `ignore_routes_with_linkdown` (IPv4: conf/all OR conf/DEV, include/linux/inetdevice.h;
    /// IPv6: conf/DEV), and on the flow's `oif` when one is given.
    fn usable_nexthops(&self, r: &Route, flow: &Flow) -> Result<Vec<Nexthop>, String> {
        if r.nexthops.iter().all(|h| h.dev.is_none()) {
            return Err(format!("route `{}` has no device in the dump", r.text));
        }
        let mut out = Vec::new();
        for h in &r.nexthops {
            if h.has_flag("dead") {
                continue;
            }
            if h.has_flag("linkdown") {
                let dev = h.dev.as_deref().unwrap_or("");
                match self.ignore_linkdown(flow.family, dev) {
                    Some(true) => continue,
                    Some(false) => {}
                    None => {
                        return Err(format!(
                            "route `{}` is linkdown and ignore_routes_with_linkdown of {dev} is unknown",
                            r.text
                        ));
                    }
                }
            }
            if let Some(o) = &flow.oif
                && h.dev.as_deref() != Some(o.as_str())
            {
                continue;
            }
            out.push(h.clone());
        }
        Ok(out)
    }

    fn ignore_linkdown(&self, f: Family, dev: &str) -> Option<bool> {
        let key = |i: &str| match f {
            Family::V4 => format!("net.ipv4.conf.{i}.ignore_routes_with_linkdown"),
            Family::V6 => format!("net.ipv6.conf.{i}.ignore_routes_with_linkdown"),
        };
        let dev_v = self.sysctl_num(&key(dev))?;
        match f {
            Family::V4 => Some(dev_v != 0 || self.sysctl_num(&key("all"))? != 0),
            Family::V6 => Some(dev_v != 0),
        }
    }

    pub(crate) fn sysctl_num(&self, key: &str) -> Option<i64> {
        self.sysctls.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// Every prefix of every route and every rule `from`/`to`, for splitting address blocks.
    pub fn cuts(&self) -> Vec<AddrRange> {
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            let fr = self.family(f);
            let mut push = |(net, len): (u128, u8)| {
                let host = !prefix_mask(f, len) & crate::firewall::addr::family_max(f);
                out.push(AddrRange {
                    family: f,
                    start: net,
                    end: net | host,
                });
            };
            for t in fr.tables.values() {
                for r in &t.routes {
                    push((r.dst, r.dst_len));
                }
            }
            for r in &fr.rules {
                r.src.into_iter().chain(r.dst).for_each(&mut push);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn decision(route: &Route, rule: &RouteRule, hops: Vec<Nexthop>) -> Decision {
    let rr = route_ref(route, rule);
    match &route.kind {
        RouteType::Unicast => Decision::Unicast {
            dev: hops.first().and_then(|h| h.dev.clone()),
            gateway: hops.first().and_then(|h| h.gateway),
            nexthops: hops,
            route: rr,
        },
        RouteType::Local => Decision::Local(rr),
        RouteType::Blackhole => Decision::Blackhole(rr),
        RouteType::Unreachable => Decision::Unreachable(rr),
        RouteType::Prohibit => Decision::Prohibit(rr),
        k => Decision::Other {
            kind: k.clone(),
            route: rr,
        },
    }
}

/// TOS selector match. IPv4 rules and routes compare the legacy TOS bits only:
/// `dscp == flow_dscp & INET_DSCP_LEGACY_TOS_MASK` (fib_dscp_masked_match; the old code compared
/// against `flowi4_tos & IPTOS_RT_MASK`, 0x1c). IPv6 rules compare the full DSCP
/// (fib6_rule_match, `ip6_dscp(flowlabel)`).
fn tos_match(f: Family, sel: u8, flow_tos: u8) -> bool {
    match f {
        Family::V4 => sel & 0xfc == flow_tos & 0x1c,
        Family::V6 => sel & 0xfc == flow_tos & 0xfc,
    }
}

fn prefix_match(f: Family, sel: Option<(u128, u8)>, v: u128) -> bool {
    sel.is_none_or(|(net, len)| v & prefix_mask(f, len) == net)
}

/// fib_rule_match + fib4_rule_match / fib6_rule_match; `not` (FIB_RULE_INVERT) inverts the
/// whole result. A selector that is definitely false decides "no match" even when another
/// cannot be evaluated.
fn rule_match(r: &RouteRule, flow: &Flow) -> Tri {
    let mut unknown: Option<String> = None;
    let mut ok = true;
    let f = flow.family;
    // iifindex/oifindex: a detached interface has index -1 and never matches.
    if let Some(i) = &r.iif {
        ok &= !r.iif_detached && flow.iif.as_deref() == Some(i.as_str());
    }
    if let Some(o) = &r.oif {
        ok &= !r.oif_detached && flow.oif.as_deref() == Some(o.as_str());
    }
    ok &= (r.fwmark ^ flow.mark) & r.fwmask == 0;
    if r.tos != 0 {
        ok &= tos_match(f, r.tos, flow.tos);
    }
    if r.ipproto_tcp == Some(false) {
        ok = false;
    }
    ok &= prefix_match(f, r.dst, flow.dst);
    if r.src.is_some() {
        match (flow.src, f) {
            (Some(s), _) => ok &= prefix_match(f, r.src, s),
            // IPv4 output lookups without a source match with saddr 0.
            (None, Family::V4) => ok &= prefix_match(f, r.src, 0),
            (None, Family::V6) => {
                unknown = Some("`from` selector and the flow has no source yet".into());
            }
        }
    }
    if let Some(u) = r.unsupported.first() {
        unknown = Some(format!("{u} cannot be evaluated"));
    }
    let inner = if !ok {
        Tri::No
    } else if let Some(u) = unknown {
        return Tri::Unknown(u);
    } else {
        Tri::Yes
    };
    match (inner, r.not) {
        (Tri::Yes, true) => Tri::No,
        (Tri::No, true) => Tri::Yes,
        (x, _) => x,
    }
}
