//! The kernel's routing decision for one flow: policy rules (`ip rule`), routing tables
//! (`ip route`), and IPv4 reverse-path filtering (`rp_filter`), as pure data and pure functions.
//!
//! Owns: [`RoutingDumps`] (the raw `ip -j` outputs and sysctl values, stored verbatim in the
//! snapshot), the parsers that turn them into [`Routing`] ([`parse`]), the lookup
//! ([`Routing::lookup`]), the reverse-path check ([`Routing::rp_filter`]) and the prefix
//! boundaries the analysis splits address blocks at ([`Routing::cuts`]).
//! Must not: run commands or read files (`collect::routing` does), or decide what a result
//! means for Cloudflare (the analysis does). Anything it cannot evaluate exactly is reported as
//! `Undecided(reason)`, never guessed as "does not match".
//!
//! Sources for the semantics (kernel 6.x; this machine runs 6.18, iproute2 6.1.0):
//! - ip-rule(8), ip-route(8): selectors, actions, route types, `suppress_prefixlength`.
//! - net/core/fib_rules.c `fib_rules_lookup` / `fib_rule_match`: rules in list order (sorted by
//!   priority, ties in insertion order = dump order); `iif`/`oif`/`fwmark & mask`/`l3mdev`/
//!   `uidrange` then the family's match; `not` inverts the whole match; `goto` jumps to the
//!   first rule with that priority (unresolved → the rule is skipped); `nop` continues; an
//!   action returning `-EAGAIN` (no route, `throw`) or a suppressed result continues.
//! - net/ipv4/fib_rules.c `fib4_rule_match` (src/dst prefix, legacy tos `== flow tos & 0x1c`,
//!   ipproto, ports), `fib4_rule_action` (blackhole → -EINVAL, unreachable → -ENETUNREACH,
//!   prohibit → -EACCES, lookup in a missing table → -EAGAIN), `fib4_rule_suppress`
//!   (`prefixlen <= suppress_prefixlen`, device group).
//! - net/ipv4/fib_trie.c `fib_table_lookup`: longest prefix first, at one prefix the aliases in
//!   order (tos descending, then metric ascending); a route with a tos only for flows with that
//!   tos; blackhole/unreachable/prohibit/throw return their error at once; a dead nexthop, a
//!   linkdown nexthop when `ignore_routes_with_linkdown` is set, or a nexthop not on the
//!   flow's `oif` is skipped, and when no nexthop is left the lookup goes on (next alias, then
//!   shorter prefixes).
//! - net/ipv4/fib_frontend.c `fib_validate_source` / `__fib_validate_source` and
//!   Documentation/networking/ip-sysctl.rst (`rp_filter`: the maximum of conf/all and
//!   conf/IF; `src_valid_mark`, `accept_local`: conf/all OR conf/IF): see [`Routing::rp_filter`].
//!
//! Modelled as the kernel does, though easy to miss: an IPv4 output lookup with a bound device
//! (`oif`) whose lookup fails is sent on-link through that device (net/ipv4/route.c
//! `ip_route_output_key_hash_rcu`; checked with `ip route get … oif`); `linkdown` routes are
//! used unless `ignore_routes_with_linkdown` is set.
//!
//! Not modelled (each is reported as `Undecided`, never guessed): `uidrange`, port and `dscp` /
//! `flowlabel` / `tun_id` selectors, `l3mdev` (VRF) rules except for an unbound output lookup,
//! `suppress_ifgroup` (device groups are not dumped), IPv6 source-specific routes, unknown
//! route types or rule actions, missing sysctls. Approximated, and documented where used: a
//! multipath route's `dev` is its first usable nexthop (the kernel picks by hash; all are in
//! `nexthops`); IPv6 route selection is lowest metric (rt6_select's neighbour and router
//! preference scoring is not modelled); with only the default rules the kernel's fast path
//! (include/net/ip_fib.h `fib_lookup`) also consults table `default` after an error route in
//! `main` — different only when table `default` has routes.
//!
//! Performance: each table keeps its routes in a `HashMap<(network, prefix_len), Vec<index>>`
//! plus the sorted list of prefix lengths present, so a lookup is at most 33 (IPv4) or 129
//! (IPv6) hash probes per table visited, independent of the number of routes.

mod lookup;
mod parse;
mod rpf;
#[cfg(test)]
mod tests;

pub use parse::parse;

use crate::firewall::Family;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use thiserror::Error;

/// The raw routing state of a host, exactly as read: the outputs of `ip -j -4 route show table
/// all`, `ip -j -6 route show table all`, `ip -j -4 rule show`, `ip -j -6 rule show` (`None`
/// when not read), and sysctl values keyed by dotted name (`net.ipv4.conf.all.rp_filter`,
/// `net.ipv4.conf.eth0.src_valid_mark`, …).
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct RoutingDumps {
    pub routes_v4: Option<String>,
    pub routes_v6: Option<String>,
    pub rules_v4: Option<String>,
    pub rules_v6: Option<String>,
    pub sysctls: BTreeMap<String, String>,
}

/// The command each dump field holds, for error messages.
pub const ROUTES_V4_CMD: &str = "ip -j -4 route show table all";
pub const ROUTES_V6_CMD: &str = "ip -j -6 route show table all";
pub const RULES_V4_CMD: &str = "ip -j -4 rule show";
pub const RULES_V6_CMD: &str = "ip -j -6 rule show";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RoutingError {
    #[error("`{cmd}`: output is not the expected JSON: {message}")]
    Json { cmd: String, message: String },
    #[error("`{cmd}`: entry {index} ({entry}): {message}")]
    Entry {
        cmd: String,
        index: usize,
        entry: String,
        message: String,
    },
}

/// A routing table id: the kernel's number when iproute2 printed a known name or a number
/// (`main` = 254, `local` = 255, `default` = 253), else the name from /etc/iproute2/rt_tables
/// (routes and rules are printed by the same `ip`, so names agree between the two dumps).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableId {
    Num(u32),
    Name(String),
}

pub const TABLE_MAIN: TableId = TableId::Num(254);
pub const TABLE_LOCAL: TableId = TableId::Num(255);
pub const TABLE_DEFAULT: TableId = TableId::Num(253);

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableId::Num(254) => f.write_str("main"),
            TableId::Num(255) => f.write_str("local"),
            TableId::Num(253) => f.write_str("default"),
            TableId::Num(n) => write!(f, "{n}"),
            TableId::Name(s) => f.write_str(s),
        }
    }
}

/// `type` of a route (rtnetlink RTN_*); absent in `ip -j` = unicast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteType {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    /// `nat`, `xresolve`, or anything newer: a lookup reaching it is Undecided.
    Other(String),
}

/// One next hop of a route (the route's own `dev`/`gateway`, or one of its `nexthops`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub dev: Option<String>,
    pub gateway: Option<IpAddr>,
    /// Multipath weight (`nexthop … weight N`), for the route's text.
    pub weight: Option<u32>,
    /// `ip` prints `dead` and `linkdown` (RTNH_F_DEAD, RTNH_F_LINKDOWN), `onlink`, …
    pub flags: Vec<String>,
}

impl Nexthop {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// One route of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub kind: RouteType,
    /// Network address (host bits cleared) and prefix length.
    pub dst: u128,
    pub dst_len: u8,
    /// IPv6 source-specific route (`from` in `ip -6 route`): lookups reaching it are Undecided.
    pub from: Option<(u128, u8)>,
    pub table: TableId,
    pub nexthops: Vec<Nexthop>,
    pub metric: u32,
    /// Legacy TOS byte (`tos`/`dsfield`); 0 = any.
    pub tos: u8,
    pub prefsrc: Option<IpAddr>,
    pub protocol: Option<String>,
    pub scope: Option<String>,
    /// Nexthop object id (`nhid`); its resolved nexthops are dumped beside it (compat mode).
    pub nhid: Option<u32>,
    /// Set when the route carries realms (`flow`): the kernel then always runs the full
    /// source validation (`fib_num_tclassid_users`).
    pub realms: bool,
    /// As `ip route` prints it, e.g. `blackhole 173.245.48.0/20`.
    pub text: String,
}

/// What an `ip rule` does when its selectors match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    Lookup {
        table: TableId,
        suppress_prefixlen: Option<u8>,
        suppress_ifgroup: Option<String>,
    },
    /// `lookup [l3mdev-table]`: the VRF's table, unknown here.
    L3mdev,
    Goto {
        target: Option<u32>,
        unresolved: bool,
    },
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    /// `nat`/`masquerade` (removed from the kernel) or anything newer.
    Other(String),
}

/// One `ip rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub priority: u32,
    pub not: bool,
    pub src: Option<(u128, u8)>,
    pub dst: Option<(u128, u8)>,
    /// `iif NAME`; `iif_detached` when that interface does not exist (never matches).
    pub iif: Option<String>,
    pub iif_detached: bool,
    pub oif: Option<String>,
    pub oif_detached: bool,
    pub fwmark: u32,
    pub fwmask: u32,
    pub tos: u8,
    /// `ipproto`: `Some(true)` for TCP (every flow here is TCP), `Some(false)` for another.
    pub ipproto_tcp: Option<bool>,
    /// Selectors this model cannot evaluate (uidrange, ports, dscp, flowlabel, tun_id, an
    /// unparsable tos): a lookup reaching the rule is Undecided.
    pub unsupported: Vec<String>,
    pub action: RuleAction,
    /// As `ip rule` prints it, without the priority, e.g. `from all to 173.245.48.0/20 lookup 100`.
    pub text: String,
}

/// Where a decision came from, quoted in findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRef {
    /// The table the route is in (`main`, `100`, …), or `rule` when a rule action decided.
    pub table: String,
    /// The route line (`blackhole 173.245.48.0/20`) or rule line (`500: from all iif eth2
    /// blackhole`).
    pub text: String,
    /// The priority of the rule whose lookup found the route (or that decided).
    pub rule_priority: Option<u32>,
}

/// The result of a route lookup, as the kernel would decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leaves through `dev` (the first usable nexthop); `nexthops` lists every usable one of a
    /// multipath route (the kernel picks one by hash).
    Unicast {
        dev: Option<String>,
        gateway: Option<IpAddr>,
        nexthops: Vec<Nexthop>,
        route: RouteRef,
    },
    Local(RouteRef),
    /// broadcast, anycast, multicast routes.
    Other {
        kind: RouteType,
        route: RouteRef,
    },
    Blackhole(RouteRef),
    Unreachable(RouteRef),
    Prohibit(RouteRef),
    /// No rule produced a route (-ESRCH / -ENETUNREACH).
    NoRoute,
    Undecided(String),
}

/// The packet whose route is looked up. Addresses as in `crate::firewall::addr::addr_to_int`.
/// Every flow is TCP (rules with `ipproto tcp` match, others do not; port selectors are
/// Undecided since no ports are given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub family: Family,
    pub dst: u128,
    /// `None`: no source chosen yet (IPv4 matches rules with 0.0.0.0, like the kernel's
    /// output lookup with saddr 0; IPv6 rules with a `from` prefix are then Undecided).
    pub src: Option<u128>,
    /// Arrival interface; `"lo"` for locally generated packets (the kernel sets
    /// `flowi_iif = LOOPBACK_IFINDEX` for output lookups).
    pub iif: Option<String>,
    /// Output interface the socket is bound to (SO_BINDTODEVICE), if any.
    pub oif: Option<String>,
    pub mark: u32,
    /// The TOS / traffic class byte.
    pub tos: u8,
}

/// The outcome of reverse-path filtering of one arriving packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpResult {
    Pass,
    Drop {
        reason: String,
        by: Option<RouteRef>,
    },
    Undecided(String),
}

/// Routes of one table, indexed by (network, prefix length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub routes: Vec<Route>,
    /// (network, len) → indexes into `routes`, in lookup order (tos desc, metric asc, dump).
    index: HashMap<(u128, u8), Vec<usize>>,
    /// Prefix lengths present, longest first.
    lens: Vec<u8>,
}

/// The rules and tables of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyRouting {
    /// In kernel order: priority, ties in dump order.
    pub rules: Vec<RouteRule>,
    /// True when the rules come from the kernel defaults because none were dumped.
    pub default_rules: bool,
    pub tables: HashMap<TableId, Table>,
    /// False when the routes of this family were not dumped: every lookup is Undecided.
    pub routes_known: bool,
}

/// The parsed routing state of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub v4: FamilyRouting,
    pub v6: FamilyRouting,
    pub sysctls: BTreeMap<String, String>,
}

impl Routing {
    pub fn family(&self, f: Family) -> &FamilyRouting {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

pub(crate) fn family_bits(f: Family) -> u8 {
    match f {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// The network mask of a prefix length in a family's bit width.
pub(crate) fn prefix_mask(f: Family, len: u8) -> u128 {
    let bits = u32::from(family_bits(f));
    let len = u32::from(len).min(bits);
    if len == 0 {
        return 0;
    }
    let all = crate::firewall::addr::family_max(f);
    all & !(all.checked_shr(len).unwrap_or(0))
}
