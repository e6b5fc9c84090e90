//! IPv4 reverse-path filtering: `fib_validate_source` / `__fib_validate_source`
//! (net/ipv4/fib_frontend.c) for a packet to a local address (`oif` = 0, as
//! `ip_route_input_slow` passes for local delivery). Pure.

use super::*;

impl Routing {
    /// Reverse-path check of an IPv4 packet from `src` to `dst` arriving on `iif`, with TOS 0.
    /// See [`Routing::rp_filter_tos`].
    pub fn rp_filter(
        &self,
        family: Family,
        iif: &str,
        src: u128,
        dst: u128,
        mark: u32,
    ) -> RpResult {
        self.rp_filter_tos(family, iif, src, dst, mark, 0)
    }

    /// What `fib_validate_source` decides (Documentation/networking/ip-sysctl.rst `rp_filter`:
    /// the mode is max(conf/all, conf/IIF); `accept_local` and `src_valid_mark` are
    /// conf/all OR conf/IIF, include/linux/inetdevice.h):
    ///
    /// - mode 0, no route realms: `accept_local` → pass. Otherwise, when the host has custom
    ///   rules or custom local routes, the full check below runs with mode 0; else the packet is
    ///   dropped only when `src` is one of the host's own addresses (`inet_lookup_ifaddr_rcu`).
    /// - full check: look up the route to `src` (daddr = src, saddr = dst, iif = lo, the skb's
    ///   mark only with `src_valid_mark`, the packet's tos). A failed lookup (blackhole,
    ///   unreachable, prohibit, no route) drops when mode != 0 and passes with mode 0 ("last
    ///   resort"). A result that is not unicast drops (local passes only with `accept_local`).
    ///   A route with a nexthop on `iif` passes. Otherwise: `iif` without IPv4 addresses →
    ///   last resort; mode 1 (strict) drops; mode 2 (loose) passes.
    ///
    /// Not modelled: IPsec (a packet with a secpath is checked with mode 0), VRF masters.
    /// "Custom rules" is judged from the dump (the kernel's flag stays set after such rules are
    /// deleted); the two paths differ only for sources that are local or broadcast addresses.
    /// IPv6 has no rp_filter sysctl: always Pass.
    pub fn rp_filter_tos(
        &self,
        family: Family,
        iif: &str,
        src: u128,
        dst: u128,
        mark: u32,
        tos: u8,
    ) -> RpResult {
        if family == Family::V6 {
            return RpResult::Pass;
        }
        let conf = |name: &str| -> Result<(i64, i64), RpResult> {
            let get = |i: &str| {
                let k = format!("net.ipv4.conf.{i}.{name}");
                self.sysctl_num(&k)
                    .ok_or_else(|| RpResult::Undecided(format!("sysctl {k} was not read")))
            };
            Ok((get("all")?, get(iif)?))
        };
        let (rp, accept_local, valid_mark) = match (
            conf("rp_filter"),
            conf("accept_local"),
            conf("src_valid_mark"),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a.0.max(a.1), b.0 != 0 || b.1 != 0, c.0 != 0 || c.1 != 0),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
        };
        if !self.v4.routes_known {
            return RpResult::Undecided("the ipv4 routes were not read".into());
        }
        let realms = self.v4.all_routes().any(|r| r.realms);
        if rp == 0 && !realms {
            if accept_local {
                return RpResult::Pass;
            }
            if !self.v4.has_custom_rules() && !self.v4.has_custom_local_routes() {
                return match self.v4.local_address_route(src) {
                    Some(r) => RpResult::Drop {
                        reason: "the source is one of this host's addresses (martian source)"
                            .into(),
                        by: Some(RouteRef {
                            table: r.table.to_string(),
                            text: r.text.clone(),
                            rule_priority: None,
                        }),
                    },
                    None => RpResult::Pass,
                };
            }
        }
        let back = Flow {
            family,
            dst: src,
            src: Some(dst),
            iif: Some("lo".into()),
            oif: None,
            mark: if valid_mark { mark } else { 0 },
            tos,
        };
        let res = self.resolve(&back);
        let last_resort = |by: Option<RouteRef>, what: &str| {
            if rp == 0 {
                RpResult::Pass
            } else {
                RpResult::Drop {
                    reason: format!("rp_filter={rp}: {what}"),
                    by,
                }
            }
        };
        match res.decision {
            Decision::Undecided(why) => RpResult::Undecided(why),
            Decision::Blackhole(r) => {
                last_resort(Some(r), "the route back to the source is a blackhole")
            }
            Decision::Unreachable(r) => {
                last_resort(Some(r), "the route back to the source is unreachable")
            }
            Decision::Prohibit(r) => {
                last_resort(Some(r), "the route back to the source is prohibit")
            }
            Decision::NoRoute => last_resort(None, "no route back to the source"),
            Decision::Other { kind, route } => RpResult::Drop {
                reason: format!(
                    "the route back to the source is {kind:?}, not unicast (invalid source)"
                ),
                by: Some(route),
            },
            Decision::Local(r) if !accept_local => RpResult::Drop {
                reason: "the source is a local address and accept_local is 0".into(),
                by: Some(r),
            },
            Decision::Local(r) => {
                let dev_match = iif == "lo" || res.route.is_some_and(|x| uses_dev(x, iif));
                self.after_lookup(rp, iif, dev_match, r)
            }
            Decision::Unicast { route, .. } => {
                // fib_info_nh_uses_dev: any nexthop of the route, dead or not.
                let dev_match = res.route.is_some_and(|x| uses_dev(x, iif));
                self.after_lookup(rp, iif, dev_match, route)
            }
        }
    }

    fn after_lookup(&self, rp: i64, iif: &str, dev_match: bool, by: RouteRef) -> RpResult {
        if dev_match {
            return RpResult::Pass;
        }
        if !self.v4.has_address_on(iif) {
            if rp == 0 {
                return RpResult::Pass;
            }
            return RpResult::Drop {
                reason: format!("rp_filter={rp}: {iif} has no IPv4 address"),
                by: Some(by),
            };
        }
        if rp == 1 {
            let via = by.text.clone();
            return RpResult::Drop {
                reason: format!(
                    "rp_filter=1 (strict): the route back to the source (`{via}`) does not leave through {iif}"
                ),
                by: Some(by),
            };
        }
        RpResult::Pass
    }
}

fn uses_dev(r: &Route, dev: &str) -> bool {
    r.nexthops.iter().any(|h| h.dev.as_deref() == Some(dev))
}

impl FamilyRouting {
    pub(crate) fn all_routes(&self) -> impl Iterator<Item = &Route> {
        self.tables.values().flat_map(|t| t.routes.iter())
    }

    /// Rules other than the kernel's defaults (`fib4_has_custom_rules`).
    pub(crate) fn has_custom_rules(&self) -> bool {
        let defaults: &[(u32, &str)] = &[
            (0, "from all lookup local"),
            (32766, "from all lookup main"),
            (32767, "from all lookup default"),
        ];
        self.rules
            .iter()
            .any(|r| !defaults.contains(&(r.priority, r.text.as_str())))
    }

    /// A `local` route added by hand (net->ipv4.fib_has_custom_local_routes is set for any
    /// RTN_LOCAL route added over netlink; the kernel's own are `proto kernel`).
    pub(crate) fn has_custom_local_routes(&self) -> bool {
        self.all_routes()
            .any(|r| r.kind == RouteType::Local && r.protocol.as_deref() != Some("kernel"))
    }

    /// The kernel's `local ADDR` host route for an interface address (one per address, in
    /// table local, `proto kernel`), if `addr` is one.
    pub(crate) fn local_address_route(&self, addr: u128) -> Option<&Route> {
        let t = self.tables.get(&TABLE_LOCAL)?;
        t.at(addr, 32)
            .iter()
            .map(|&i| &t.routes[i])
            .find(|r| r.kind == RouteType::Local && r.protocol.as_deref() == Some("kernel"))
    }

    /// Whether `dev` has an IPv4 address, judged from the kernel's local routes.
    pub(crate) fn has_address_on(&self, dev: &str) -> bool {
        self.tables.get(&TABLE_LOCAL).is_some_and(|t| {
            t.routes.iter().any(|r| {
                r.kind == RouteType::Local
                    && r.dst_len == 32
                    && r.protocol.as_deref() == Some("kernel")
                    && uses_dev(r, dev)
            })
        })
    }
}
