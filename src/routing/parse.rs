//! Parsers of `ip -j route show table all` and `ip -j rule show` (iproute2 6.1 field names,
//! checked against ip/iproute.c and ip/iprule.c): pure `&str → model`.
//!
//! Tolerant of every field `ip -j` prints (unknown fields are ignored), never silently
//! misreading: a value that cannot be read exactly is an error naming the command and entry,
//! or, for a rule selector the model cannot evaluate, a recorded `unsupported` reason that
//! makes lookups reaching the rule Undecided.

use super::*;
use crate::firewall::addr::addr_to_int;
use serde_json::{Map, Value};

/// Parse every dump. Absent rules mean the kernel's default rules (IPv4: 0 local, 32766 main,
/// 32767 default; IPv6: 0 local, 32766 main — net/ipv4/fib_rules.c `fib_default_rules_init`,
/// net/ipv6/fib6_rules.c `fib6_rules_net_init`).
pub fn parse(d: &RoutingDumps) -> Result<Routing, RoutingError> {
    Ok(Routing {
        v4: parse_family(Family::V4, &d.routes_v4, &d.rules_v4)?,
        v6: parse_family(Family::V6, &d.routes_v6, &d.rules_v6)?,
        sysctls: d.sysctls.clone(),
    })
}

fn parse_family(
    f: Family,
    routes: &Option<String>,
    rules: &Option<String>,
) -> Result<FamilyRouting, RoutingError> {
    let (rcmd, ucmd) = match f {
        Family::V4 => (ROUTES_V4_CMD, RULES_V4_CMD),
        Family::V6 => (ROUTES_V6_CMD, RULES_V6_CMD),
    };
    let mut out = FamilyRouting::default();
    if let Some(text) = routes {
        out.routes_known = true;
        for (i, obj) in json_entries(text, rcmd)?.iter().enumerate() {
            let r = parse_route(f, obj).map_err(|m| entry_err(rcmd, i, obj, m))?;
            out.tables
                .entry(r.table.clone())
                .or_default()
                .routes
                .push(r);
        }
    }
    for t in out.tables.values_mut() {
        t.build_index();
    }
    match rules {
        Some(text) => {
            for (i, obj) in json_entries(text, ucmd)?.iter().enumerate() {
                let r = parse_rule(f, obj).map_err(|m| entry_err(ucmd, i, obj, m))?;
                out.rules.push(r);
            }
        }
        None => {
            out.default_rules = true;
            out.rules = default_rules(f);
        }
    }
    // The kernel keeps rules sorted by priority; a stable sort keeps equal ones in dump order.
    out.rules.sort_by_key(|r| r.priority);
    Ok(out)
}

fn default_rules(f: Family) -> Vec<RouteRule> {
    let mut prios = vec![(0, TABLE_LOCAL), (32766, TABLE_MAIN)];
    if f == Family::V4 {
        prios.push((32767, TABLE_DEFAULT));
    }
    prios
        .into_iter()
        .map(|(priority, table)| RouteRule {
            priority,
            not: false,
            src: None,
            dst: None,
            iif: None,
            iif_detached: false,
            oif: None,
            oif_detached: false,
            fwmark: 0,
            fwmask: 0,
            tos: 0,
            ipproto_tcp: None,
            unsupported: Vec::new(),
            text: format!("from all lookup {table}"),
            action: RuleAction::Lookup {
                table,
                suppress_prefixlen: None,
                suppress_ifgroup: None,
            },
        })
        .collect()
}

impl Table {
    pub(crate) fn build_index(&mut self) {
        self.index.clear();
        for (i, r) in self.routes.iter().enumerate() {
            self.index.entry((r.dst, r.dst_len)).or_default().push(i);
        }
        let routes = &self.routes;
        for v in self.index.values_mut() {
            // fib_trie keeps the aliases of one prefix ordered by tos descending, then
            // priority (metric) ascending (fib_find_alias); equal ones in insertion order.
            v.sort_by_key(|&i| (std::cmp::Reverse(routes[i].tos), routes[i].metric));
        }
        let mut lens: Vec<u8> = self.index.keys().map(|k| k.1).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        self.lens = lens;
    }

    /// Route indexes with exactly this network and length, in kernel order.
    pub(crate) fn at(&self, net: u128, len: u8) -> &[usize] {
        self.index.get(&(net, len)).map_or(&[], |v| v.as_slice())
    }

    pub(crate) fn lens(&self) -> &[u8] {
        &self.lens
    }
}

fn entry_err(cmd: &str, index: usize, obj: &Map<String, Value>, message: String) -> RoutingError {
    let mut entry = Value::Object(obj.clone()).to_string();
    if entry.len() > 200 {
        let mut cut = 200;
        while !entry.is_char_boundary(cut) {
            cut -= 1;
        }
        entry.truncate(cut);
        entry.push('…');
    }
    RoutingError::Entry {
        cmd: cmd.to_string(),
        index,
        entry,
        message,
    }
}

/// The top-level array of objects. iproute2 prints nothing at all (not `[]`) on some versions
/// when there is nothing to show, and an empty object for an entry filtered out mid-dump.
fn json_entries(text: &str, cmd: &str) -> Result<Vec<Map<String, Value>>, RoutingError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<Value> = serde_json::from_str(text).map_err(|e| RoutingError::Json {
        cmd: cmd.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, e) in v.into_iter().enumerate() {
        match e {
            Value::Object(m) if m.is_empty() => {}
            Value::Object(m) => out.push(m),
            other => {
                return Err(RoutingError::Json {
                    cmd: cmd.to_string(),
                    message: format!("entry {i} is not an object: {other}"),
                });
            }
        }
    }
    Ok(out)
}

fn get_str<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{k}` is not a string: {other}")),
    }
}

fn get_u32(o: &Map<String, Value>, k: &str) -> Result<Option<u32>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| format!("`{k}` is not a u32: {n}")),
        Some(Value::String(s)) => parse_num(s)
            .map(Some)
            .ok_or_else(|| format!("`{k}` is not a number: {s:?}")),
        Some(other) => Err(format!("`{k}` is not a number: {other}")),
    }
}

/// Decimal or `0x` hex, as iproute2 prints marks, masks and tos.
fn parse_num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Present as a key (iproute2's `print_null` flags: `not`, `nop`, `l3mdev`, `*_detached`).
fn has(o: &Map<String, Value>, k: &str) -> bool {
    o.contains_key(k)
}

fn flags(o: &Map<String, Value>) -> Result<Vec<String>, String> {
    match o.get("flags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("flag {v} is not a string"))
            })
            .collect(),
        Some(other) => Err(format!("`flags` is not a list: {other}")),
    }
}

/// A table as iproute2 prints it (`rtnl_rttable_n2a`): `main`, `local`, `default`, a number,
/// or a name from rt_tables.
pub(crate) fn parse_table(s: &str) -> TableId {
    match s {
        "main" => TABLE_MAIN,
        "local" => TABLE_LOCAL,
        "default" => TABLE_DEFAULT,
        other => match other.parse::<u32>() {
            Ok(n) => TableId::Num(n),
            Err(_) => TableId::Name(other.to_string()),
        },
    }
}

fn parse_addr(f: Family, s: &str) -> Result<u128, String> {
    let a: IpAddr = s.parse().map_err(|_| format!("bad address {s:?}"))?;
    let (af, v) = addr_to_int(a);
    if af != f {
        return Err(format!("address {s:?} is not {f}"));
    }
    Ok(v)
}

/// `default`, `a/len`, a bare address (= host route), or iproute2's `0/len` for a prefix
/// without an address attribute. Host bits are cleared, as the kernel stores the key.
fn parse_prefix(f: Family, s: &str) -> Result<(u128, u8), String> {
    let s = s.trim();
    if s == "default" || s == "all" {
        return Ok((0, 0));
    }
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| format!("bad prefix {s:?}"))?),
        None => (s, family_bits(f)),
    };
    if len > family_bits(f) {
        return Err(format!("prefix length too long in {s:?}"));
    }
    let v = if a == "0" { 0 } else { parse_addr(f, a)? };
    Ok((v & prefix_mask(f, len), len))
}

fn parse_type(s: Option<&str>) -> RouteType {
    match s.unwrap_or("unicast") {
        "unicast" => RouteType::Unicast,
        "local" => RouteType::Local,
        "broadcast" => RouteType::Broadcast,
        "anycast" => RouteType::Anycast,
        "multicast" => RouteType::Multicast,
        "blackhole" => RouteType::Blackhole,
        "unreachable" => RouteType::Unreachable,
        "prohibit" => RouteType::Prohibit,
        "throw" => RouteType::Throw,
        other => RouteType::Other(other.to_string()),
    }
}

fn type_name(k: &RouteType) -> &str {
    match k {
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Anycast => "anycast",
        RouteType::Multicast => "multicast",
        RouteType::Blackhole => "blackhole",
        RouteType::Unreachable => "unreachable",
        RouteType::Prohibit => "prohibit",
        RouteType::Throw => "throw",
        RouteType::Other(s) => s,
    }
}

fn parse_gateway(o: &Map<String, Value>) -> Result<Option<IpAddr>, String> {
    if let Some(g) = get_str(o, "gateway")? {
        return g
            .parse()
            .map(Some)
            .map_err(|_| format!("bad gateway {g:?}"));
    }
    // RTA_VIA (an IPv6 gateway for an IPv4 route): {"family":"inet6","host":"fe80::1"}.
    if let Some(Value::Object(v)) = o.get("via")
        && let Some(Value::String(h)) = v.get("host")
    {
        return h.parse().map(Some).map_err(|_| format!("bad via {h:?}"));
    }
    Ok(None)
}

fn parse_nexthop(o: &Map<String, Value>) -> Result<Nexthop, String> {
    Ok(Nexthop {
        dev: get_str(o, "dev")?.map(str::to_string),
        gateway: parse_gateway(o)?,
        weight: get_u32(o, "weight")?,
        flags: flags(o)?,
    })
}

pub(crate) fn parse_route(f: Family, o: &Map<String, Value>) -> Result<Route, String> {
    let kind = parse_type(get_str(o, "type")?);
    let dst_s = get_str(o, "dst")?.ok_or("no `dst`")?;
    let (dst, dst_len) = parse_prefix(f, dst_s)?;
    let from = match get_str(o, "from")?.or(get_str(o, "src")?) {
        Some(s) => Some(parse_prefix(f, s)?),
        None => None,
    };
    let table = get_str(o, "table")?.map_or(TABLE_MAIN, parse_table);
    let tos = match get_str(o, "tos")?.or(get_str(o, "dsfield")?) {
        Some(s) => {
            let v = parse_num(s).ok_or_else(|| format!("unreadable tos {s:?}"))?;
            u8::try_from(v).map_err(|_| format!("tos {s:?} out of range"))?
        }
        None => 0,
    };
    let mut nexthops = Vec::new();
    if let Some(v) = o.get("nexthops") {
        let arr = v.as_array().ok_or("`nexthops` is not a list")?;
        for h in arr {
            let h = h.as_object().ok_or("a nexthop is not an object")?;
            nexthops.push(parse_nexthop(h)?);
        }
    } else if o.contains_key("dev") || o.contains_key("gateway") || o.contains_key("via") {
        nexthops.push(parse_nexthop(o)?);
    } else {
        // A route without nexthop attributes (reject types) still carries its flags.
        let fl = flags(o)?;
        if !fl.is_empty() {
            nexthops.push(Nexthop {
                dev: None,
                gateway: None,
                weight: None,
                flags: fl,
            });
        }
    }
    let prefsrc = match get_str(o, "prefsrc")? {
        Some(s) => Some(s.parse().map_err(|_| format!("bad prefsrc {s:?}"))?),
        None => None,
    };
    let mut r = Route {
        family: f,
        kind,
        dst,
        dst_len,
        from,
        table,
        nexthops,
        metric: get_u32(o, "metric")?.unwrap_or(0),
        tos,
        prefsrc,
        protocol: get_str(o, "protocol")?.map(str::to_string),
        scope: get_str(o, "scope")?.map(str::to_string),
        nhid: get_u32(o, "nhid")?,
        realms: o.contains_key("flow"),
        text: String::new(),
    };
    r.text = route_text(&r, dst_s, o);
    Ok(r)
}

/// The route as `ip route` prints it (ip/iproute.c `print_route`, same field order).
fn route_text(r: &Route, dst_s: &str, o: &Map<String, Value>) -> String {
    let mut t = Vec::<String>::new();
    if r.kind != RouteType::Unicast {
        t.push(type_name(&r.kind).to_string());
    }
    t.push(dst_s.to_string());
    if let Ok(Some(s)) = get_str(o, "from") {
        t.push(format!("from {s}"));
    }
    if let Some(n) = r.nhid {
        t.push(format!("nhid {n}"));
    }
    if r.tos != 0 {
        t.push(format!("tos {:#x}", r.tos));
    }
    let single = !o.contains_key("nexthops");
    if single && let Some(h) = r.nexthops.first() {
        if let Some(g) = h.gateway {
            t.push(format!("via {g}"));
        }
        if let Some(d) = &h.dev {
            t.push(format!("dev {d}"));
        }
    }
    if r.table != TABLE_MAIN {
        t.push(format!("table {}", r.table));
    }
    if let Some(p) = &r.protocol {
        t.push(format!("proto {p}"));
    }
    if let Some(s) = &r.scope {
        t.push(format!("scope {s}"));
    }
    if let Some(p) = r.prefsrc {
        t.push(format!("src {p}"));
    }
    if o.contains_key("metric") {
        t.push(format!("metric {}", r.metric));
    }
    if single {
        if let Some(h) = r.nexthops.first() {
            t.extend(h.flags.iter().cloned());
        }
    } else {
        for h in &r.nexthops {
            let mut n = vec!["nexthop".to_string()];
            if let Some(g) = h.gateway {
                n.push(format!("via {g}"));
            }
            if let Some(d) = &h.dev {
                n.push(format!("dev {d}"));
            }
            if let Some(w) = h.weight {
                n.push(format!("weight {w}"));
            }
            n.extend(h.flags.iter().cloned());
            t.push(n.join(" "));
        }
    }
    if let Ok(Some(p)) = get_str(o, "pref") {
        t.push(format!("pref {p}"));
    }
    t.join(" ")
}

fn rule_prefix(
    f: Family,
    o: &Map<String, Value>,
    key: &str,
    len_key: &str,
) -> Result<Option<(u128, u8)>, String> {
    let Some(a) = get_str(o, key)? else {
        return Ok(None);
    };
    if a == "all" {
        return Ok(None);
    }
    let len = match get_u32(o, len_key)? {
        Some(l) => u8::try_from(l).map_err(|_| format!("`{len_key}` {l} out of range"))?,
        None => family_bits(f),
    };
    if len > family_bits(f) {
        return Err(format!("`{len_key}` {len} too long"));
    }
    if len == 0 {
        return Ok(None);
    }
    let v = if a == "0" { 0 } else { parse_addr(f, a)? };
    Ok(Some((v & prefix_mask(f, len), len)))
}

/// Rule selectors outside the model: present → the rule is Undecided when reached.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("uid_start", "uidrange"),
    ("sport", "sport"),
    ("sport_start", "sport"),
    ("dport", "dport"),
    ("dport_start", "dport"),
    ("dscp", "dscp"),
    ("flowlabel", "flowlabel"),
    ("tun_id", "tun_id"),
];

pub(crate) fn parse_rule(f: Family, o: &Map<String, Value>) -> Result<RouteRule, String> {
    let priority = get_u32(o, "priority")?.ok_or("no `priority`")?;
    let mut unsupported: Vec<String> = UNSUPPORTED_KEYS
        .iter()
        .filter(|(k, _)| has(o, k))
        .map(|(_, name)| format!("selector `{name}` (the flow has no uid or ports here)"))
        .collect();
    let tos = match get_str(o, "tos")?.or(get_str(o, "dsfield")?) {
        None => 0,
        Some(s) => match parse_num(s).and_then(|v| u8::try_from(v).ok()) {
            Some(v) => v,
            None => {
                unsupported.push(format!("tos {s:?} (a name from rt_dsfield)"));
                0
            }
        },
    };
    let fwmark = get_u32(o, "fwmark")?;
    // iproute2 omits `fwmask` when it is 0xffffffff, which the kernel sets whenever a
    // non-zero mark is given without a mask (fib_nl2rule).
    let fwmask = get_u32(o, "fwmask")?.unwrap_or(if fwmark.is_some() { u32::MAX } else { 0 });
    let ipproto_tcp = get_str(o, "ipproto")?.map(|p| matches!(p, "tcp" | "6" | "ipproto-6"));
    let action = rule_action(o)?;
    let text = rule_text(o, &action)?;
    Ok(RouteRule {
        priority,
        not: has(o, "not"),
        src: rule_prefix(f, o, "src", "srclen")?,
        dst: rule_prefix(f, o, "dst", "dstlen")?,
        iif: get_str(o, "iif")?.map(str::to_string),
        iif_detached: has(o, "iif_detached"),
        oif: get_str(o, "oif")?.map(str::to_string),
        oif_detached: has(o, "oif_detached"),
        fwmark: fwmark.unwrap_or(0),
        fwmask,
        tos,
        ipproto_tcp,
        unsupported,
        action,
        text,
    })
}

/// ip/iprule.c: `goto` is printed as `"goto": N` (or `"none"`), `nop` as `"nop": null`, the
/// reject actions as `"action": "blackhole"|"unreachable"|"prohibit"`, `l3mdev` as
/// `"l3mdev": null`, a plain lookup as `"table"` with no action.
fn rule_action(o: &Map<String, Value>) -> Result<RuleAction, String> {
    if let Some(g) = o.get("goto") {
        let target = match g {
            Value::String(s) if s == "none" => None,
            _ => Some(get_u32(o, "goto")?.ok_or("bad `goto`")?),
        };
        return Ok(RuleAction::Goto {
            target,
            unresolved: has(o, "unresolved"),
        });
    }
    if has(o, "nop") {
        return Ok(RuleAction::Nop);
    }
    if let Some(a) = get_str(o, "action")? {
        return Ok(match a {
            "blackhole" => RuleAction::Blackhole,
            "unreachable" => RuleAction::Unreachable,
            "prohibit" => RuleAction::Prohibit,
            other => RuleAction::Other(other.to_string()),
        });
    }
    if has(o, "l3mdev") {
        return Ok(RuleAction::L3mdev);
    }
    if has(o, "nat_gateway") || has(o, "masquerade") {
        return Ok(RuleAction::Other("nat".into()));
    }
    let Some(t) = get_str(o, "table")? else {
        return Err("no `table` and no action".into());
    };
    let suppress_prefixlen = match o.get("suppress_prefixlen") {
        None => None,
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => None,
        Some(_) => {
            let v = get_u32(o, "suppress_prefixlen")?.ok_or("bad `suppress_prefixlen`")?;
            Some(u8::try_from(v).map_err(|_| "`suppress_prefixlen` out of range")?)
        }
    };
    Ok(RuleAction::Lookup {
        table: parse_table(t),
        suppress_prefixlen,
        suppress_ifgroup: get_str(o, "suppress_ifgroup")?.map(str::to_string),
    })
}

/// The rule as `ip rule` prints it after `PRIO:\t` (ip/iprule.c `print_rule`).
fn rule_text(o: &Map<String, Value>, action: &RuleAction) -> Result<String, String> {
    let mut t = Vec::<String>::new();
    if has(o, "not") {
        t.push("not".into());
    }
    let pfx = |k: &str, lk: &str| -> Result<Option<String>, String> {
        Ok(get_str(o, k)?.map(|a| match get_u32(o, lk) {
            Ok(Some(l)) => format!("{a}/{l}"),
            _ => a.to_string(),
        }))
    };
    t.push(format!(
        "from {}",
        pfx("src", "srclen")?.unwrap_or("all".into())
    ));
    if let Some(d) = pfx("dst", "dstlen")? {
        t.push(format!("to {d}"));
    }
    if let Some(s) = get_str(o, "tos")? {
        t.push(format!("tos {s}"));
    }
    if let Some(m) = get_str(o, "fwmark")? {
        match get_str(o, "fwmask")? {
            Some(k) => t.push(format!("fwmark {m}/{k}")),
            None => t.push(format!("fwmark {m}")),
        }
    }
    for k in ["iif", "oif"] {
        if let Some(d) = get_str(o, k)? {
            t.push(format!("{k} {d}"));
            if has(o, &format!("{k}_detached")) {
                t.push("[detached]".into());
            }
        }
    }
    if let (Some(a), Some(b)) = (get_u32(o, "uid_start")?, get_u32(o, "uid_end")?) {
        t.push(format!("uidrange {a}-{b}"));
    }
    if let Some(p) = get_str(o, "ipproto")? {
        t.push(format!("ipproto {p}"));
    }
    for k in ["sport", "dport"] {
        if let Some(p) = get_u32(o, k)? {
            t.push(format!("{k} {p}"));
        } else if let (Some(a), Some(b)) = (
            get_u32(o, &format!("{k}_start"))?,
            get_u32(o, &format!("{k}_end"))?,
        ) {
            t.push(format!("{k} {a}-{b}"));
        }
    }
    match action {
        RuleAction::Lookup {
            table,
            suppress_prefixlen,
            suppress_ifgroup,
        } => {
            t.push(format!("lookup {table}"));
            if let Some(p) = suppress_prefixlen {
                t.push(format!("suppress_prefixlength {p}"));
            }
            if let Some(g) = suppress_ifgroup {
                t.push(format!("suppress_ifgroup {g}"));
            }
        }
        RuleAction::L3mdev => t.push("lookup [l3mdev-table]".into()),
        RuleAction::Goto { target, unresolved } => {
            t.push(match target {
                Some(n) => format!("goto {n}"),
                None => "goto none".into(),
            });
            if *unresolved {
                t.push("[unresolved]".into());
            }
        }
        RuleAction::Nop => t.push("nop".into()),
        RuleAction::Blackhole => t.push("blackhole".into()),
        RuleAction::Unreachable => t.push("unreachable".into()),
        RuleAction::Prohibit => t.push("prohibit".into()),
        RuleAction::Other(a) => t.push(a.clone()),
    }
    Ok(t.join(" "))
}
