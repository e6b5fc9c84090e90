//! Tolerant serde model over `nft -j list ruleset` and its conversion into the model.
//!
//! Owns: the JSON object model (tables, chains, sets/maps, rules, named limit/quota objects, as
//! printed by nft 1.0.6 and described in libnftables-json(5)), the interpretation of rule
//! expressions into [`Match`]/[`Effect`]/[`Verdict`], set element decoding into [`SetElem`], and a
//! readable nft-syntax rendering of each rule for [`RuleRef::text`].
//!
//! Must not: run `nft`, read files, or decide anything about packets. It does not use the
//! `nftables` crate, whose strict model rejects real rulesets (verdict maps, unusual statements).
//!
//! Tolerance rules:
//! - Objects of unknown kinds (flowtable, ct helper, counter, secmark, ...) are ignored: they
//!   cannot change a verdict by themselves. Named `limit` and `quota` objects are recorded so a
//!   rule that references them becomes a rate match with the object's `inv` flag.
//! - Expressions and statements the model does not understand are kept, never dropped: a match
//!   becomes [`Match::Unknown`] carrying its compact JSON; a statement that might end evaluation
//!   becomes [`Verdict::Unknown`]; harmless ones become [`Effect::Other`].
//! - Malformed JSON, objects with wrong field types, and rules/chains/sets naming a table or
//!   chain that was not declared are errors naming the source and the object.
//!
//! Dependencies nft adds implicitly (nft(8) "PAYLOAD EXPRESSION": a `tcp dport` match only
//! matches TCP packets; in inet/netdev/bridge tables an `ip saddr` match only IPv4 packets) are
//! made explicit as [`Match::Proto`] / [`Match::NfProto`] before the match that implies them.

use super::Backend;
use super::addr::AddrRange;
use super::{
    AddrSet, BaseChain, Chain, ChainType, CtStates, Dir, Effect, Family, Field, Hook, IfPattern,
    KeyValue, Match, ParseError, Policy, RateLimit, RejectKind, Rule, RuleRef, SetDef, SetElem,
    SetKind, SetRef, Table, TableFamily, Verdict, VerdictMap,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Parse one `nft -j list ruleset` document into native nft tables (backend `Nft`).
///
/// Tables keep the order nft printed them in; chains and sets keep their order within a table;
/// rules are attached to their chain in the order printed (which is evaluation order).
pub fn parse(text: &str, source_name: &str) -> Result<Vec<Table>, ParseError> {
    parse_with_elements(text, source_name, &[])
}

/// [`parse`] of a terse listing (`nft -j -t`: sets without their elements), with the
/// elements of some sets as the kernel sent them (see [`super::nft_setelem`]).
pub fn parse_with_elements(
    text: &str,
    source_name: &str,
    elements: &[crate::snapshot::NftSetElements],
) -> Result<Vec<Table>, ParseError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| ParseError::Line {
        source_name: source_name.to_string(),
        line: e.line(),
        message: format!("invalid JSON: {e}"),
    })?;
    let whole = |message: String| ParseError::Whole {
        source_name: source_name.to_string(),
        message,
    };
    let items = match doc {
        Value::Object(mut m) => match m.remove("nftables") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(whole(
                    "not `nft -j` output: no top-level \"nftables\" array".into(),
                ));
            }
        },
        _ => {
            return Err(whole(
                "not `nft -j` output: top level is not an object".into(),
            ));
        }
    };

    let mut b = Builder {
        kernel_elements: elements
            .iter()
            .map(|e| ((e.family.as_str(), e.table.as_str(), e.set.as_str()), e))
            .collect(),
        ..Builder::default()
    };
    let mut rules = Vec::new();
    for (idx, item) in items.into_iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(whole(format!(
                "item {idx} of \"nftables\" is not an object: {}",
                compact(&item)
            )));
        };
        for (kind, body) in obj {
            let loc = locate(&kind, &body);
            let de = |e: serde_json::Error| whole(format!("{loc}: {e}"));
            match kind.as_str() {
                "table" => b.add_table(serde_json::from_value(body).map_err(de)?, &loc),
                "chain" => b.add_chain(serde_json::from_value(body).map_err(de)?, &loc),
                "set" | "map" => b.add_set(serde_json::from_value(body).map_err(de)?, &loc),
                "limit" | "quota" => b.add_object(&kind, &body),
                "rule" => {
                    rules.push((serde_json::from_value::<JRule>(body).map_err(de)?, loc));
                    Ok(())
                }
                // metainfo, flowtable, counter, ct helper/timeout/expectation, secmark,
                // synproxy objects: nothing a verdict depends on by itself.
                _ => Ok(()),
            }
            .map_err(whole)?;
        }
    }
    for (r, loc) in rules {
        b.add_rule(r, &loc).map_err(whole)?;
    }
    b.finish();
    Ok(b.tables)
}

// ---------------------------------------------------------------------------------------------
// The JSON object model (libnftables-json(5) "RULESET ELEMENTS"). Only fields the conversion
// uses are declared; unknown fields are ignored. Expressions stay `serde_json::Value`: they are
// recursive and polymorphic (a number, a string, a list, or a one-key object).

#[derive(Deserialize)]
struct JTable {
    family: String,
    name: String,
}

#[derive(Deserialize)]
struct JChain {
    family: String,
    table: String,
    name: String,
    #[serde(rename = "type", default)]
    chain_type: Option<String>,
    #[serde(default)]
    hook: Option<String>,
    /// A number in nft 1.0.6; tolerated as a name (`"filter"`, `"raw + 10"`) too.
    #[serde(default)]
    prio: Option<Value>,
    #[serde(default)]
    policy: Option<String>,
    /// Newer nft prints the device(s) of netdev chains as `dev` (string or list); 1.0.6 prints
    /// neither (checked: `nft -j list ruleset` omits them; see tests/fixtures/nft/README).
    #[serde(default)]
    dev: Option<Value>,
    #[serde(default)]
    devices: Option<Value>,
}

#[derive(Deserialize)]
struct JSet {
    family: String,
    table: String,
    name: String,
    /// A type name, a list of names (concatenation), or `{"typeof": EXPR}`.
    #[serde(rename = "type")]
    key_type: Value,
    /// For maps: the data type (`"verdict"`, `"mark"`, ...).
    #[serde(default)]
    map: Option<Value>,
    #[serde(default)]
    flags: Option<Value>,
    #[serde(default)]
    elem: Vec<Value>,
    #[serde(default)]
    timeout: Option<Value>,
}

#[derive(Deserialize)]
struct JRule {
    family: String,
    table: String,
    chain: String,
    #[serde(default)]
    handle: Option<u64>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    expr: Vec<Value>,
}

/// What a named `limit`/`quota` object contributes to a rule referencing it.
struct NamedRate {
    desc: String,
    over: bool,
}

#[derive(Default)]
struct Builder<'e> {
    /// Set elements read from the kernel, by (family, table, set), for a terse listing.
    kernel_elements: HashMap<(&'e str, &'e str, &'e str), &'e crate::snapshot::NftSetElements>,
    tables: Vec<Table>,
    table_idx: HashMap<(TableFamily, String), usize>,
    chain_idx: HashMap<(usize, String), usize>,
    objects: HashMap<(usize, String, String), NamedRate>,
    /// Sets the data path writes to (`add @s`, `update @s`, meters): marked dynamic at the end,
    /// since nft 1.0.6 does not print the `dynamic` flag.
    written_sets: HashSet<(usize, String)>,
}

impl Builder<'_> {
    fn table_of(
        &self,
        family: &str,
        table: &str,
        loc: &str,
    ) -> Result<(usize, TableFamily), String> {
        let fam = TableFamily::from_nft(family)
            .ok_or_else(|| format!("{loc}: unknown table family {family:?}"))?;
        self.table_idx
            .get(&(fam, table.to_string()))
            .map(|&i| (i, fam))
            .ok_or_else(|| format!("{loc}: table {family} {table} was not declared"))
    }

    fn add_table(&mut self, t: JTable, loc: &str) -> Result<(), String> {
        let family = TableFamily::from_nft(&t.family)
            .ok_or_else(|| format!("{loc}: unknown table family {:?}", t.family))?;
        let key = (family, t.name.clone());
        if !self.table_idx.contains_key(&key) {
            self.table_idx.insert(key, self.tables.len());
            self.tables.push(Table {
                backend: Backend::Nft,
                family,
                name: t.name,
                chains: Vec::new(),
                sets: Vec::new(),
            });
        }
        Ok(())
    }

    fn add_chain(&mut self, c: JChain, loc: &str) -> Result<(), String> {
        let (ti, _) = self.table_of(&c.family, &c.table, loc)?;
        let base = match &c.hook {
            // A hook the model has no variant for never sees the audited packets; the chain is
            // kept as a regular chain so its rules stay visible.
            Some(h) => match Hook::from_name(h) {
                None => None,
                Some(hook) => Some(BaseChain {
                    hook,
                    priority: priority(c.prio.as_ref(), &c.family, loc)?,
                    chain_type: match c.chain_type.as_deref() {
                        None | Some("filter") => ChainType::Filter,
                        Some("nat") => ChainType::Nat,
                        Some("route") => ChainType::Route,
                        Some(other) => return Err(format!("{loc}: unknown chain type {other:?}")),
                    },
                    policy: match c.policy.as_deref() {
                        // nft(8) CHAINS: "policy ... defaults to accept".
                        None | Some("accept") => Policy::Accept,
                        Some("drop") => Policy::Drop,
                        Some(other) => return Err(format!("{loc}: unknown policy {other:?}")),
                    },
                    devices: devices(c.dev.as_ref(), c.devices.as_ref(), loc)?,
                }),
            },
            None => None,
        };
        let key = (ti, c.name.clone());
        if self.chain_idx.contains_key(&key) {
            return Err(format!("{loc}: chain declared twice"));
        }
        let chains = &mut self.tables[ti].chains;
        self.chain_idx.insert(key, chains.len());
        chains.push(Chain {
            name: c.name,
            base,
            rules: Vec::new(),
        });
        Ok(())
    }

    fn add_set(&mut self, s: JSet, loc: &str) -> Result<(), String> {
        let (ti, _) = self.table_of(&s.family, &s.table, loc)?;
        let kernel = self
            .kernel_elements
            .get(&(s.family.as_str(), s.table.as_str(), s.name.as_str()))
            .copied();
        let interval = set_flags(&s).contains(&"interval");
        let key_type = s
            .key_type
            .as_str()
            .and_then(super::nft_setelem::KeyType::from_nft);
        let mut def = convert_set(s);
        if let Some(k) = kernel {
            let ty = key_type
                .filter(|_| matches!(def.kind, SetKind::NftSet))
                .ok_or_else(|| {
                    format!(
                        "{loc}: elements read from the kernel for a set whose type is not decoded"
                    )
                })?;
            if !def.elements.is_empty() || !def.unparsed.is_empty() {
                return Err(format!(
                    "{loc}: elements both listed and read from the kernel"
                ));
            }
            match &k.error {
                // Unread: one element nothing can be compared with, so every lookup is
                // undecidable (never a miss).
                Some(why) => {
                    let what = format!("elements of set {} not read ({why})", def.name);
                    def.elements = vec![crate::firewall::SetElem {
                        key: vec![crate::firewall::KeyValue::Unknown(what.clone())],
                        nomatch: false,
                        verdict: None,
                    }];
                    def.unparsed = vec![what];
                }
                None => def.elements = super::nft_setelem::decode(k, ty, interval)?,
            }
        }
        self.tables[ti].sets.push(def);
        Ok(())
    }

    fn add_object(&mut self, kind: &str, body: &Value) -> Result<(), String> {
        let (Some(family), Some(table), Some(name)) = (
            body.get("family").and_then(Value::as_str),
            body.get("table").and_then(Value::as_str),
            body.get("name").and_then(Value::as_str),
        ) else {
            return Ok(());
        };
        let Ok((ti, _)) = self.table_of(family, table, "") else {
            return Ok(());
        };
        let (desc, over) = if kind == "limit" {
            (limit_desc(body), flag(body, "inv"))
        } else {
            (quota_desc(body), flag(body, "inv"))
        };
        self.objects.insert(
            (ti, kind.to_string(), name.to_string()),
            NamedRate { desc, over },
        );
        Ok(())
    }

    fn add_rule(&mut self, r: JRule, loc: &str) -> Result<(), String> {
        let (ti, family) = self.table_of(&r.family, &r.table, loc)?;
        let ci = *self
            .chain_idx
            .get(&(ti, r.chain.clone()))
            .ok_or_else(|| format!("{loc}: chain {} was not declared", r.chain))?;
        let mut cx = RuleCx {
            family,
            ti,
            objects: &self.objects,
            matches: Vec::new(),
            effects: Vec::new(),
            verdict: None,
            written: Vec::new(),
        };
        let mut parts = Vec::with_capacity(r.expr.len());
        for stmt in &r.expr {
            cx.statement(stmt);
            parts.push(render_stmt(stmt));
        }
        let mut text = parts.join(" ");
        if let Some(c) = &r.comment {
            text.push_str(&format!(" comment {}", quote(c)));
        }
        let RuleCx {
            matches,
            effects,
            verdict,
            written,
            ..
        } = cx;
        for s in written {
            self.written_sets.insert((ti, s));
        }
        let table = &mut self.tables[ti];
        let chain = &mut table.chains[ci];
        let position = chain.rules.len() + 1;
        chain.rules.push(Rule {
            matches,
            effects,
            verdict: verdict.unwrap_or(Verdict::Continue),
            source: RuleRef {
                direction: Default::default(),
                backend: Backend::Nft,
                family,
                table: r.table,
                chain: r.chain,
                position,
                handle: r.handle,
                text,
            },
        });
        Ok(())
    }

    fn finish(&mut self) {
        for (ti, t) in self.tables.iter_mut().enumerate() {
            for s in &mut t.sets {
                // A lookup per set, not a scan of the table's sets per written set.
                if self.written_sets.contains(&(ti, s.name.clone())) {
                    s.dynamic = true;
                }
            }
        }
    }
}

/// "rule (inet firewalld chain filter_INPUT handle 12)": names an object for error messages.
fn locate(kind: &str, body: &Value) -> String {
    let s = |k: &str| match body.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some(f) = s("family") {
        parts.push(f);
    }
    if kind == "table" {
        parts.extend(s("name"));
    } else {
        parts.extend(s("table"));
        if kind == "rule" {
            parts.extend(s("chain").map(|c| format!("chain {c}")));
        } else {
            parts.extend(s("name").map(|n| format!("{kind} {n}")));
        }
    }
    parts.extend(s("handle").map(|h| format!("handle {h}")));
    format!("{kind} ({})", parts.join(" "))
}

/// Chain priority: a number, or a standard priority name with an optional offset
/// (nft(8) "Table 6. Standard priority names, family and hook compatibility matrix").
fn priority(p: Option<&Value>, family: &str, loc: &str) -> Result<i32, String> {
    let bad = || {
        format!(
            "{loc}: bad chain priority {}",
            p.map(compact).unwrap_or_default()
        )
    };
    match p {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(bad),
        Some(Value::String(s)) => {
            let s = s.replace(' ', "");
            let (name, off) = match s.find(['+', '-']) {
                Some(0) | None => (s.as_str(), "0"),
                Some(i) => (&s[..i], &s[i..]),
            };
            let base = if let Ok(n) = name.parse::<i32>() {
                n
            } else {
                match (name, family) {
                    ("raw", _) => -300,
                    ("mangle", _) => -150,
                    ("dstnat", "bridge") => -300,
                    ("filter", "bridge") => -200,
                    ("out", "bridge") => 100,
                    ("srcnat", "bridge") => 300,
                    ("dstnat", _) => -100,
                    ("filter", _) => 0,
                    ("security", _) => 50,
                    ("srcnat", _) => 100,
                    _ => return Err(bad()),
                }
            };
            let off: i32 = off.trim_start_matches('+').parse().map_err(|_| bad())?;
            base.checked_add(off).ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

fn devices(dev: Option<&Value>, devs: Option<&Value>, loc: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v in [dev, devs].into_iter().flatten() {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => {
                for d in a {
                    match d.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => return Err(format!("{loc}: bad device {}", compact(d))),
                    }
                }
            }
            other => return Err(format!("{loc}: bad device {}", compact(other))),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Sets and set elements.

/// How the values of one key dimension are written and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Addr,
    /// Ports: numbers, or service names.
    Service,
    /// Protocol numbers or names.
    Proto,
    /// Plain integers (marks, lengths).
    Int,
    Iface,
    /// ct state names, as bits.
    CtState,
    /// A type the model does not decode: values become [`KeyValue::Unknown`].
    Other,
}

fn dim_of_type(name: &str) -> (Dim, Option<Family>) {
    match name {
        "ipv4_addr" => (Dim::Addr, Some(Family::V4)),
        "ipv6_addr" => (Dim::Addr, Some(Family::V6)),
        "inet_service" => (Dim::Service, None),
        "inet_proto" => (Dim::Proto, None),
        "mark" | "integer" => (Dim::Int, None),
        "ifname" => (Dim::Iface, None),
        "ct_state" => (Dim::CtState, None),
        _ => (Dim::Other, None),
    }
}

fn dim_of_field(f: Field) -> Dim {
    match f {
        Field::SrcAddr | Field::DstAddr => Dim::Addr,
        Field::SrcPort | Field::DstPort => Dim::Service,
        Field::L4Proto => Dim::Proto,
        Field::Iifname | Field::Oifname => Dim::Iface,
        Field::CtState => Dim::CtState,
        Field::Mark => Dim::Int,
    }
}

/// The key dimensions of a set declaration (`"type"`: name, list of names, or `typeof`).
fn set_dims(key_type: &Value, table_family: Option<TableFamily>) -> (Vec<Dim>, Option<Family>) {
    let mut family = None;
    let mut dims = Vec::new();
    let names: Vec<&Value> = match key_type {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for n in names {
        match n {
            Value::String(s) => {
                let (d, f) = dim_of_type(s);
                family = family.or(f);
                dims.push(d);
            }
            Value::Object(o) if o.contains_key("typeof") => {
                let e = &o["typeof"];
                let parts: Vec<&Value> = match e.get("concat").and_then(Value::as_array) {
                    Some(a) => a.iter().collect(),
                    None => vec![e],
                };
                for p in parts {
                    let mut cx = RuleCx::scratch(table_family.unwrap_or(TableFamily::Inet));
                    let sel = cx.selector(p);
                    if let Sel::Addr(_, fam) = sel {
                        family = family.or(Some(fam));
                    }
                    dims.push(sel.field().map(dim_of_field).unwrap_or(Dim::Other));
                }
            }
            _ => dims.push(Dim::Other),
        }
    }
    (dims, family)
}

fn set_flags(s: &JSet) -> Vec<&str> {
    match &s.flags {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(f)) => vec![f.as_str()],
        _ => Vec::new(),
    }
}

fn convert_set(s: JSet) -> SetDef {
    let (dims, family) = set_dims(&s.key_type, TableFamily::from_nft(&s.family));
    let kind = match s.map.as_ref() {
        None => SetKind::NftSet,
        Some(Value::String(v)) if v == "verdict" => SetKind::NftVmap,
        Some(_) => SetKind::NftMap,
    };
    let flags = set_flags(&s);
    // nft(8) SETS: `dynamic` sets are written from the packet path; `timeout` sets expire
    // elements on their own. Either way the content can change after we read it.
    let dynamic = flags.iter().any(|f| *f == "dynamic" || *f == "timeout") || s.timeout.is_some();
    let mut elements = Vec::with_capacity(s.elem.len());
    let mut unparsed = Vec::new();
    for e in &s.elem {
        let (key, data) = match (&kind, e) {
            (SetKind::NftVmap | SetKind::NftMap, Value::Array(kv)) if kv.len() == 2 => {
                (&kv[0], Some(&kv[1]))
            }
            _ => (e, None),
        };
        match element_key(&dims, key) {
            Some(key) => elements.push(SetElem {
                key,
                nomatch: false,
                verdict: match (&kind, data) {
                    (SetKind::NftVmap, Some(d)) => Some(verdict_value(d)),
                    _ => None,
                },
            }),
            None => unparsed.push(compact(e)),
        }
    }
    SetDef {
        name: s.name,
        kind,
        family,
        elements,
        dynamic,
        unparsed,
    }
}

/// Strip `{"elem": {"val": X, "timeout": ...}}` wrappers.
fn unwrap_elem(v: &Value) -> &Value {
    match v.get("elem").and_then(|e| e.get("val")) {
        Some(inner) => unwrap_elem(inner),
        None => v,
    }
}

/// One element's key: one value per dimension. `None` when its shape does not fit the set's
/// dimensions (the caller keeps it verbatim in `unparsed`).
fn element_key(dims: &[Dim], v: &Value) -> Option<Vec<KeyValue>> {
    let v = unwrap_elem(v);
    if dims.len() == 1 {
        return Some(vec![key_value(dims[0], v)]);
    }
    let parts = v.get("concat")?.as_array()?;
    if parts.len() != dims.len() {
        return None;
    }
    Some(
        dims.iter()
            .zip(parts)
            .map(|(d, p)| key_value(*d, p))
            .collect(),
    )
}

fn key_value(dim: Dim, v: &Value) -> KeyValue {
    let v = unwrap_elem(v);
    let unknown = || KeyValue::Unknown(compact(v));
    match dim {
        Dim::Addr => addr_value(v).map(KeyValue::Addr).unwrap_or_else(unknown),
        Dim::Iface => match v.as_str() {
            Some(s) => KeyValue::Iface(IfPattern::nft(s)),
            None => unknown(),
        },
        Dim::Other => unknown(),
        d => int_value(d, v)
            .map(|(a, b)| KeyValue::Int(a, b))
            .unwrap_or_else(unknown),
    }
}

fn ip(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn addr_value(v: &Value) -> Option<AddrRange> {
    let v = unwrap_elem(v);
    match v {
        Value::String(s) => AddrRange::parse(s).ok(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let a = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                AddrRange::parse(&format!("{a}/{len}")).ok()
            } else if let Some(Value::Array(r)) = o.get("range") {
                match r.as_slice() {
                    [a, b] => AddrRange::between(ip(a)?, ip(b)?),
                    _ => None,
                }
            } else {
                None
            }
        }
        _ => None,
    }
}

/// An inclusive integer range for a number, a name of the dimension's kind, or a `range`.
fn int_value(dim: Dim, v: &Value) -> Option<(u64, u64)> {
    let v = unwrap_elem(v);
    match v {
        Value::Number(n) => n.as_u64().map(|n| (n, n)),
        Value::String(s) => {
            let n = parse_int(s).or_else(|| match dim {
                Dim::Service => service_port(s).map(u64::from),
                Dim::Proto => proto_number(s).map(u64::from),
                Dim::CtState => CtStates::bit(s).map(u64::from),
                _ => None,
            })?;
            Some((n, n))
        }
        Value::Object(o) => match o.get("range") {
            Some(Value::Array(r)) if r.len() == 2 => {
                let (lo, _) = int_value(dim, &r[0])?;
                let (_, hi) = int_value(dim, &r[1])?;
                (lo <= hi).then_some((lo, hi))
            }
            _ => None,
        },
        _ => None,
    }
}

fn parse_int(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Protocol names nft prints (from /etc/protocols as shipped by netbase; nft's own table for
/// `ipv6-icmp`/`icmpv6`).
fn proto_number(s: &str) -> Option<u8> {
    Some(match s {
        "icmp" => 1,
        "igmp" => 2,
        "ipencap" => 4,
        "tcp" => 6,
        "egp" => 8,
        "udp" => 17,
        "dccp" => 33,
        "ipv6" => 41,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        "l2tp" => 115,
        "sctp" => 132,
        "udplite" => 136,
        _ => return None,
    })
}

/// Service names as in /etc/services; nft -j prints numbers, names only appear with `-S`-like
/// settings or hand-written JSON.
fn service_port(s: &str) -> Option<u16> {
    Some(match s {
        "ftp-data" => 20,
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "http" | "www" => 80,
        "pop3" => 110,
        "ntp" => 123,
        "imap" | "imap2" => 143,
        "snmp" => 161,
        "bgp" => 179,
        "ldap" => 389,
        "https" => 443,
        "microsoft-ds" => 445,
        "submissions" | "smtps" => 465,
        "submission" => 587,
        "ldaps" => 636,
        "imaps" => 993,
        "pop3s" => 995,
        "mysql" => 3306,
        "ms-wbt-server" => 3389,
        "postgresql" => 5432,
        "http-alt" | "webcache" => 8080,
        _ => return None,
    })
}

/// TCP flag bits (nft(8) "TCP HEADER EXPRESSION": fin, syn, rst, psh, ack, urg, ecn, cwr).
fn tcp_flag(s: &str) -> Option<u8> {
    Some(match s {
        "fin" => 0x01,
        "syn" => 0x02,
        "rst" => 0x04,
        "psh" => 0x08,
        "ack" => 0x10,
        "urg" => 0x20,
        "ecn" => 0x40,
        "cwr" => 0x80,
        _ => return None,
    })
}

/// A flags value: a name, a number, or a list (bitwise or) of them.
fn tcp_flags_value(v: &Value) -> Option<u8> {
    match v {
        Value::String(s) => tcp_flag(s).or_else(|| parse_int(s).and_then(|n| u8::try_from(n).ok())),
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Value::Array(a) => a
            .iter()
            .try_fold(0u8, |acc, x| Some(acc | tcp_flags_value(x)?)),
        Value::Object(o) => match o.get("|") {
            Some(Value::Array(a)) => a
                .iter()
                .try_fold(0u8, |acc, x| Some(acc | tcp_flags_value(x)?)),
            _ => None,
        },
        _ => None,
    }
}

/// The values on the right side of a match: the members of an anonymous set, the items of a
/// list (flag lists like `["established", "related"]`), or the one value.
fn right_values(v: &Value) -> Vec<&Value> {
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("set") => match &o["set"] {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        },
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    }
}

fn is_anon_set(v: &Value) -> bool {
    v.get("set").is_some()
}

fn named_set(v: &Value) -> Option<&str> {
    v.as_str()?.strip_prefix('@')
}

// ---------------------------------------------------------------------------------------------
// Rules: statements and match expressions.

/// What the left side of a match selects, as far as the model understands it.
#[derive(Debug, Clone, PartialEq)]
enum Sel {
    Addr(Dir, Family),
    /// Transport ports (`tcp`, `udp`, `sctp`, `dccp`, `udplite`, `th`).
    Port(Dir),
    Proto,
    Iface(Dir),
    /// `meta iif`/`oif`: like an interface name when nft printed a name.
    IfIndex(Dir),
    CtState,
    CtStatus,
    Mark,
    ConnMark,
    Length,
    NfProto,
    /// `meta protocol` (ethertype): `ip`/`ip6` decide the family.
    EtherProto,
    TcpFlags,
    /// `icmp type` etc.: its nft text.
    Icmp(String),
    PktType,
    /// `fib ... type`: direction and whether `iif` is in the flags.
    FibType(Dir, bool),
    /// `fib saddr [. mark] [. iif] oif`: nft's reverse-path check; whether `iif` is a flag.
    FibOif(bool),
    /// Known but not decidable from host state (named in the message).
    Undecidable(String),
    Unknown,
}

impl Sel {
    fn field(&self) -> Option<Field> {
        Some(match self {
            Sel::Addr(Dir::Src, _) => Field::SrcAddr,
            Sel::Addr(Dir::Dst, _) => Field::DstAddr,
            Sel::Port(Dir::Src) => Field::SrcPort,
            Sel::Port(Dir::Dst) => Field::DstPort,
            Sel::Proto => Field::L4Proto,
            Sel::Iface(Dir::Src) | Sel::IfIndex(Dir::Src) => Field::Iifname,
            Sel::Iface(Dir::Dst) | Sel::IfIndex(Dir::Dst) => Field::Oifname,
            Sel::CtState => Field::CtState,
            Sel::Mark => Field::Mark,
            _ => return None,
        })
    }
}

struct RuleCx<'a> {
    family: TableFamily,
    ti: usize,
    objects: &'a HashMap<(usize, String, String), NamedRate>,
    matches: Vec<Match>,
    effects: Vec<Effect>,
    verdict: Option<Verdict>,
    /// Names of sets this rule writes to from the packet path.
    written: Vec<String>,
}

static NO_OBJECTS: std::sync::LazyLock<HashMap<(usize, String, String), NamedRate>> =
    std::sync::LazyLock::new(HashMap::new);

impl RuleCx<'static> {
    /// A context for interpreting expressions outside a rule (set `typeof` declarations).
    fn scratch(family: TableFamily) -> Self {
        RuleCx {
            family,
            ti: usize::MAX,
            objects: &NO_OBJECTS,
            matches: Vec::new(),
            effects: Vec::new(),
            verdict: None,
            written: Vec::new(),
        }
    }
}

impl RuleCx<'_> {
    /// Add a match nft implies (payload dependency), unless the rule already has it.
    fn imply(&mut self, m: Match) {
        if !self.matches.contains(&m) {
            self.matches.push(m);
        }
    }

    /// The first terminal-looking statement decides; an unknown one stays unknown.
    fn set_verdict(&mut self, v: Verdict) {
        if self.verdict.is_none() {
            self.verdict = Some(v);
        }
    }

    fn statement(&mut self, s: &Value) {
        let Some((kind, body)) = one_key(s) else {
            self.set_verdict(Verdict::Unknown { text: compact(s) });
            return;
        };
        match kind {
            "match" => {
                let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
                match (body.get("left"), body.get("right")) {
                    (Some(l), Some(r)) => self.on_match(op, l, r, s),
                    _ => self.matches.push(Match::Unknown {
                        text: compact(s),
                        negate: false,
                    }),
                }
            }
            "accept" | "drop" | "continue" | "return" | "jump" | "goto" => {
                self.set_verdict(verdict_value(s))
            }
            "reject" => {
                // In inet/bridge/netdev tables `reject with icmp …` / `icmpv6 …` carries an
                // implicit `meta nfproto` dependency that nft adds when loading and hides when
                // listing (nft(8), REJECT STATEMENT; checked in a namespace: the rule then only
                // applies to that family).
                if !matches!(self.family, TableFamily::Ip | TableFamily::Ip6) {
                    let fam = match body.get("type").and_then(Value::as_str) {
                        Some("icmp") => Some(Family::V4),
                        Some("icmpv6") => Some(Family::V6),
                        _ => None,
                    };
                    if let Some(family) = fam {
                        let m = Match::NfProto {
                            family,
                            negate: false,
                        };
                        if !self.matches.contains(&m) {
                            self.matches.push(m);
                        }
                    }
                }
                self.set_verdict(Verdict::Reject {
                    with: reject_kind(body, self.family),
                })
            }
            "queue" => self.set_verdict(Verdict::Queue {
                desc: render_stmt(s),
            }),
            "vmap" => {
                let v = self
                    .vmap(body)
                    .unwrap_or_else(|| Verdict::Unknown { text: compact(s) });
                self.set_verdict(v);
            }
            "dnat" => {
                let addr = match body.get("addr") {
                    None => Some(None),
                    Some(a) => ip(a).map(Some),
                };
                let port = match body.get("port") {
                    None => Some(None),
                    Some(p) => p.as_u64().and_then(|p| u16::try_from(p).ok()).map(Some),
                };
                // A DNAT to something computed (map, range) changes where the packet goes in
                // a way we cannot follow: unknown, not "no DNAT".
                let v = match (addr, port) {
                    (Some(addr), Some(port)) => Verdict::Dnat { addr, port },
                    _ => Verdict::Unknown { text: compact(s) },
                };
                self.set_verdict(v);
            }
            "redirect" => {
                let v = match body.get("port") {
                    None => Verdict::Redirect { port: None },
                    Some(p) => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                        Some(p) => Verdict::Redirect { port: Some(p) },
                        None => Verdict::Unknown { text: compact(s) },
                    },
                };
                self.set_verdict(v);
            }
            "snat" | "masquerade" => self.set_verdict(Verdict::NatOther {
                desc: render_stmt(s),
            }),
            "limit" => {
                let m = match body {
                    Value::String(name) => self.named_rate("limit", name),
                    _ => Match::Rate(RateLimit {
                        kind: "limit".into(),
                        desc: limit_desc(body),
                        over: flag(body, "inv"),
                    }),
                };
                self.matches.push(m);
            }
            "quota" => {
                let m = match body {
                    Value::String(name) => self.named_rate("quota", name),
                    _ => Match::Rate(RateLimit {
                        kind: "quota".into(),
                        desc: quota_desc(body),
                        over: flag(body, "inv"),
                    }),
                };
                self.matches.push(m);
            }
            "ct count" => self.matches.push(Match::Rate(RateLimit {
                kind: "ct count".into(),
                desc: ct_count_desc(body),
                over: flag(body, "inv"),
            })),
            "meter" => {
                if let Some(k) = body.get("key") {
                    self.key_deps(k);
                }
                let inner = body.get("stmt");
                let m = inner
                    .and_then(|st| self.inner_rate("meter", st, s))
                    .unwrap_or_else(|| Match::Unknown {
                        text: compact(s),
                        negate: false,
                    });
                self.matches.push(m);
            }
            "set" | "map" => self.dynset(kind, body, s),
            "mangle" => self.mangle(body, s),
            "notrack" => self.effects.push(Effect::Notrack),
            "xt" => {
                // iptables-nft compat expressions (libnftables-json(5) XT): opaque here; the
                // lead reads those tables from iptables-nft-save instead.
                match body.get("type").and_then(Value::as_str) {
                    Some("match") => self.matches.push(Match::Unknown {
                        text: compact(s),
                        negate: false,
                    }),
                    Some("watcher") => self.effects.push(Effect::Other {
                        what: render_stmt(s),
                    }),
                    _ => self.set_verdict(Verdict::Unknown { text: compact(s) }),
                }
            }
            // Statements that never end evaluation nor change what we analyse.
            "counter" | "log" | "comment" | "dup" | "ct helper" | "ct timeout"
            | "ct expectation" | "secmark" | "flow" => self.effects.push(Effect::Other {
                what: render_stmt(s),
            }),
            // fwd, tproxy, synproxy and anything unknown may steal or drop the packet.
            _ => self.set_verdict(Verdict::Unknown { text: compact(s) }),
        }
    }

    fn named_rate(&self, kind: &str, name: &str) -> Match {
        match self
            .objects
            .get(&(self.ti, kind.to_string(), name.to_string()))
        {
            Some(o) => Match::Rate(RateLimit {
                kind: kind.into(),
                desc: format!("{kind} object {name}: {}", o.desc),
                over: o.over,
            }),
            None => Match::Undecidable {
                condition: format!("{kind} object {name} (not in the ruleset)"),
                negate: false,
            },
        }
    }

    /// The rate a meter or dynamic-set statement applies (`limit`, `ct count`, `quota`).
    fn inner_rate(&mut self, kind: &str, st: &Value, whole: &Value) -> Option<Match> {
        let st = match st {
            Value::Array(a) => match a.as_slice() {
                [one] => one,
                _ => return None,
            },
            one => one,
        };
        let (k, b) = one_key(st)?;
        let over = match k {
            "limit" | "quota" | "ct count" if b.is_object() => flag(b, "inv"),
            _ => return None,
        };
        Some(Match::Rate(RateLimit {
            kind: kind.into(),
            desc: render_stmt(whole),
            over,
        }))
    }

    /// `add @s { key }` / `update @s { key limit rate ... }` (libnftables-json(5) SET).
    fn dynset(&mut self, kind: &str, body: &Value, whole: &Value) {
        let target = body.get(kind).and_then(named_set).map(str::to_string);
        if let Some(t) = target {
            self.written.push(t);
        }
        if let Some(e) = body.get("elem") {
            self.key_deps(e);
        }
        match body.get("stmt") {
            Some(st) => {
                let m = self
                    .inner_rate("dynset", st, whole)
                    .unwrap_or_else(|| Match::Unknown {
                        text: compact(whole),
                        negate: false,
                    });
                self.matches.push(m);
            }
            None => self.effects.push(Effect::Other {
                what: render_stmt(whole),
            }),
        }
    }

    /// Payload dependencies of a key expression (single or concatenation).
    fn key_deps(&mut self, k: &Value) {
        match k.get("concat").and_then(Value::as_array) {
            Some(parts) => {
                for p in parts {
                    self.selector(p);
                }
            }
            None => {
                self.selector(k);
            }
        }
    }

    fn mangle(&mut self, body: &Value, whole: &Value) {
        let key = body.get("key");
        let value = body.get("value");
        let is = |v: Option<&Value>, base: &str, k: &str| {
            v.and_then(|v| v.get(base))
                .and_then(|m| m.get("key"))
                .and_then(Value::as_str)
                == Some(k)
        };
        let num = |v: Option<&Value>| {
            v.and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let meta_mark = is(key, "meta", "mark");
        let ct_mark = is(key, "ct", "mark");
        let effect = if meta_mark && is(value, "ct", "mark") {
            Some(Effect::RestoreMark)
        } else if let (true, Some(v)) = (meta_mark || ct_mark, num(value)) {
            // `meta mark set N`: mark = (mark & !0xffffffff) ^ N.
            Some(if meta_mark {
                Effect::SetMark {
                    value: v,
                    mask: u32::MAX,
                }
            } else {
                Effect::SetConnMark {
                    value: v,
                    mask: u32::MAX,
                }
            })
        } else if meta_mark || ct_mark {
            // `meta mark set meta mark | 0x10` / `& 0xff`: (mark & !mask) ^ value.
            let op = value.and_then(|v| {
                let (op, args) = one_key(v)?;
                let a = args.as_array()?;
                let same = if meta_mark {
                    is(a.first(), "meta", "mark")
                } else {
                    is(a.first(), "ct", "mark")
                };
                let n = num(a.get(1))?;
                (same && a.len() == 2).then_some((op, n))
            });
            let (value, mask) = match op {
                Some(("|", n)) => (n, n),
                Some(("&", n)) => (0, !n),
                Some(("^", n)) => (n, 0),
                _ => (0, 0),
            };
            match op {
                Some(("|" | "&" | "^", _)) => Some(if meta_mark {
                    Effect::SetMark { value, mask }
                } else {
                    Effect::SetConnMark { value, mask }
                }),
                _ => None,
            }
        } else {
            None
        };
        self.effects.push(effect.unwrap_or_else(|| Effect::Other {
            what: render_stmt(whole),
        }));
    }

    fn vmap(&mut self, body: &Value) -> Option<Verdict> {
        let key = body.get("key")?;
        let parts: Vec<&Value> = match key.get("concat").and_then(Value::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![key],
        };
        let mut fields = Vec::new();
        for p in parts {
            fields.push(self.selector(p).field()?);
        }
        let data = body.get("data")?;
        let map = if let Some(n) = named_set(data) {
            SetRef::Named(n.to_string())
        } else {
            let dims: Vec<Dim> = fields.iter().map(|f| dim_of_field(*f)).collect();
            let items = data.get("set")?.as_array()?;
            let mut elems = Vec::with_capacity(items.len());
            for it in items {
                let kv = it.as_array()?;
                let [k, v] = kv.as_slice() else { return None };
                elems.push(SetElem {
                    key: element_key(&dims, k)?,
                    nomatch: false,
                    verdict: Some(verdict_value(v)),
                });
            }
            SetRef::Anonymous(elems)
        };
        Some(Verdict::Map(VerdictMap { fields, map }))
    }

    /// Classify a left-hand expression; pushes the dependencies nft implies for payloads.
    fn selector(&mut self, e: &Value) -> Sel {
        let Some((kind, body)) = one_key(e) else {
            return Sel::Unknown;
        };
        let key = body.get("key").and_then(Value::as_str).unwrap_or("");
        match kind {
            "payload" => {
                let (Some(proto), Some(field)) = (
                    body.get("protocol").and_then(Value::as_str),
                    body.get("field").and_then(Value::as_str),
                ) else {
                    return Sel::Unknown; // raw payload (@nh,16,8)
                };
                self.payload_deps(proto);
                let dir = match field {
                    "saddr" | "sport" => Some(Dir::Src),
                    "daddr" | "dport" => Some(Dir::Dst),
                    _ => None,
                };
                match (proto, field, dir) {
                    ("ip", "saddr" | "daddr", Some(d)) => Sel::Addr(d, Family::V4),
                    ("ip6", "saddr" | "daddr", Some(d)) => Sel::Addr(d, Family::V6),
                    ("ip", "protocol", _) | ("ip6", "nexthdr", _) => Sel::Proto,
                    (
                        "tcp" | "udp" | "udplite" | "sctp" | "dccp" | "th",
                        "sport" | "dport",
                        Some(d),
                    ) => Sel::Port(d),
                    ("tcp", "flags", _) => Sel::TcpFlags,
                    ("icmp" | "icmpv6", _, _) => Sel::Icmp(format!("{proto} {field}")),
                    ("ether" | "vlan", _, _) => Sel::Undecidable(format!("{proto} {field}")),
                    _ => Sel::Unknown,
                }
            }
            "meta" => match key {
                "iifname" => Sel::Iface(Dir::Src),
                "oifname" => Sel::Iface(Dir::Dst),
                "iif" => Sel::IfIndex(Dir::Src),
                "oif" => Sel::IfIndex(Dir::Dst),
                "l4proto" => Sel::Proto,
                "nfproto" => Sel::NfProto,
                "protocol" => Sel::EtherProto,
                "mark" => Sel::Mark,
                "length" => Sel::Length,
                "pkttype" => Sel::PktType,
                "skuid" | "skgid" | "cgroup" | "cpu" | "time" | "day" | "hour" | "iiftype"
                | "oiftype" | "iifgroup" | "oifgroup" | "priority" | "random" | "nftrace"
                | "rtclassid" | "secpath" | "ibrname" | "obrname" | "ibridgename"
                | "obridgename" | "iifkind" | "oifkind" | "sdif" | "sdifname" | "secmark"
                | "ipsec" | "broute" | "ibrpvid" | "ibrvproto" => {
                    Sel::Undecidable(format!("meta {key}"))
                }
                _ => Sel::Unknown,
            },
            "ct" => {
                let plain = body.get("dir").is_none();
                match key {
                    "state" if plain => Sel::CtState,
                    "status" if plain => Sel::CtStatus,
                    "mark" if plain => Sel::ConnMark,
                    "direction" | "expiration" | "helper" | "label" | "zone" | "l3proto"
                    | "protocol" | "saddr" | "daddr" | "proto-src" | "proto-dst" | "packets"
                    | "bytes" | "avgpkt" | "id" | "event" | "secmark" | "count" | "mark"
                    | "state" | "status" => Sel::Undecidable(render_expr(e)),
                    _ => Sel::Unknown,
                }
            }
            "fib" => {
                let flags: Vec<&str> = match body.get("flags") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    Some(Value::String(s)) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                let dir = if flags.contains(&"daddr") {
                    Some(Dir::Dst)
                } else if flags.contains(&"saddr") {
                    Some(Dir::Src)
                } else {
                    None
                };
                match (body.get("result").and_then(Value::as_str), dir) {
                    (Some("type"), Some(d))
                        if !flags.contains(&"mark") && !flags.contains(&"oif") =>
                    {
                        Sel::FibType(d, flags.contains(&"iif"))
                    }
                    // `fib saddr . iif oif missing` is nft's rpfilter (nft(8), FIB EXPRESSIONS).
                    (Some("oif"), Some(Dir::Src)) => Sel::FibOif(flags.contains(&"iif")),
                    _ => Sel::Undecidable(render_expr(e)),
                }
            }
            "socket" | "osf" | "numgen" | "jhash" | "symhash" | "rt" | "ipsec" => {
                Sel::Undecidable(render_expr(e))
            }
            _ => Sel::Unknown,
        }
    }

    /// nft(8) PAYLOAD EXPRESSION dependencies: a transport header match implies its protocol;
    /// an `ip`/`ip6` header match implies the family where the table sees both.
    fn payload_deps(&mut self, proto: &str) {
        let multi = matches!(
            self.family,
            TableFamily::Inet | TableFamily::Netdev | TableFamily::Bridge
        );
        let fam = match proto {
            "ip" | "icmp" => Some(Family::V4),
            "ip6" | "icmpv6" => Some(Family::V6),
            _ => None,
        };
        if let (true, Some(family)) = (multi, fam) {
            self.imply(Match::NfProto {
                family,
                negate: false,
            });
        }
        let p = match proto {
            "tcp" => 6,
            "udp" => 17,
            "udplite" => 136,
            "sctp" => 132,
            "dccp" => 33,
            "icmp" => 1,
            "icmpv6" => 58,
            _ => return,
        };
        self.imply(Match::Proto {
            protos: vec![p],
            negate: false,
        });
    }

    fn on_match(&mut self, op: &str, left: &Value, right: &Value, whole: &Value) {
        let negate = op == "!=";
        let unknown = Match::Unknown {
            text: compact(whole),
            negate,
        };
        // Concatenations: `ip saddr . tcp dport @set` / `{ a . b, ... }`.
        if let Some(parts) = left.get("concat").and_then(Value::as_array) {
            let mut fields = Vec::new();
            for p in parts {
                match self.selector(p).field() {
                    Some(f) => fields.push(f),
                    None => {
                        self.matches.push(unknown);
                        return;
                    }
                }
            }
            let m = match self.set_ref(&fields, right) {
                Some(set) if matches!(op, "==" | "!=" | "in") => Match::Set {
                    set,
                    fields,
                    negate,
                },
                _ => unknown,
            };
            self.matches.push(m);
            return;
        }
        // Masked comparisons: `tcp flags & (syn | ack) == syn`, `meta mark & 0xff == 0x2`.
        if let Some(Value::Array(args)) = left.get("&") {
            let m = match args.as_slice() {
                [l, mask] if matches!(op, "==" | "!=") => match self.selector(l) {
                    Sel::TcpFlags => tcp_flags_value(mask)
                        .zip(tcp_flags_value(right))
                        .map(|(mask, comp)| Match::TcpFlags { mask, comp, negate }),
                    s @ (Sel::Mark | Sel::ConnMark) => {
                        let mask = mask.as_u64().and_then(|n| u32::try_from(n).ok());
                        let value = right.as_u64().and_then(|n| u32::try_from(n).ok());
                        mask.zip(value).map(|(mask, value)| {
                            if s == Sel::Mark {
                                Match::Mark {
                                    value,
                                    mask,
                                    negate,
                                }
                            } else {
                                Match::ConnMark {
                                    value,
                                    mask,
                                    negate,
                                }
                            }
                        })
                    }
                    _ => None,
                },
                _ => None,
            };
            self.matches.push(m.unwrap_or(unknown));
            return;
        }

        let sel = self.selector(left);
        let m = self.single(&sel, op, right, whole, negate);
        self.matches.push(m.unwrap_or(unknown));
    }

    /// A named set reference or an anonymous set of (possibly concatenated) elements.
    fn set_ref(&self, fields: &[Field], right: &Value) -> Option<SetRef> {
        if let Some(n) = named_set(right) {
            return Some(SetRef::Named(n.to_string()));
        }
        let dims: Vec<Dim> = fields.iter().map(|f| dim_of_field(*f)).collect();
        let mut elems = Vec::new();
        for v in right_values(right) {
            elems.push(SetElem {
                key: element_key(&dims, v)?,
                nomatch: false,
                verdict: None,
            });
        }
        Some(SetRef::Anonymous(elems))
    }

    /// A match on one selector. `None` when the combination is not understood (the caller
    /// keeps it as [`Match::Unknown`]).
    fn single(
        &self,
        sel: &Sel,
        op: &str,
        right: &Value,
        whole: &Value,
        negate: bool,
    ) -> Option<Match> {
        let eq = matches!(op, "==" | "!=" | "in");
        // Named set lookups.
        if let Some(name) = named_set(right) {
            if !eq {
                return None;
            }
            let field = sel.field()?;
            return Some(Match::Set {
                set: SetRef::Named(name.to_string()),
                fields: vec![field],
                negate,
            });
        }
        let values = right_values(right);
        // Text for undecidable conditions: the match as nft shows it, without the negation
        // (which is the `negate` flag).
        let cond = || {
            let l = one_key(whole)
                .and_then(|(_, b)| b.get("left"))
                .map(render_expr)
                .unwrap_or_default();
            let op = if matches!(op, "==" | "!=" | "in") {
                String::new()
            } else {
                format!("{op} ")
            };
            format!("{l} {op}{}", render_expr(right))
        };
        match sel {
            Sel::Addr(dir, _) if eq => {
                let ranges: Option<Vec<AddrRange>> = values.iter().map(|v| addr_value(v)).collect();
                Some(Match::Addr {
                    dir: *dir,
                    set: AddrSet::new(ranges?),
                    negate,
                })
            }
            Sel::Port(dir) => {
                let ranges = int_ranges(Dim::Service, op, &values, u16::MAX.into())?;
                let ranges = ranges
                    .into_iter()
                    .map(|(a, b)| Some((u16::try_from(a).ok()?, u16::try_from(b).ok()?)))
                    .collect::<Option<Vec<_>>>()?;
                Some(Match::Port {
                    dir: *dir,
                    ranges,
                    negate,
                })
            }
            Sel::Proto if eq => {
                let mut protos = Vec::new();
                for v in &values {
                    let (a, b) = int_value(Dim::Proto, v)?;
                    for p in a..=b.min(255) {
                        protos.push(u8::try_from(p).ok()?);
                    }
                }
                Some(Match::Proto { protos, negate })
            }
            Sel::Iface(dir) | Sel::IfIndex(dir) if eq => {
                let mut any_of = Vec::new();
                for v in &values {
                    match v.as_str() {
                        Some(s) => any_of.push(IfPattern::nft(s)),
                        // `meta iif 3` printed as an index: the name is not known here.
                        None if matches!(sel, Sel::IfIndex(_)) => {
                            return Some(Match::Undecidable {
                                condition: cond(),
                                negate,
                            });
                        }
                        None => return None,
                    }
                }
                Some(Match::Iface {
                    dir: *dir,
                    any_of,
                    negate,
                })
            }
            Sel::CtState if eq => {
                let mut states = 0u8;
                for v in &values {
                    states |= match v {
                        Value::String(s) => CtStates::bit(s)?,
                        Value::Number(n) => u8::try_from(n.as_u64()?).ok()?,
                        _ => return None,
                    };
                }
                Some(Match::CtState { states, negate })
            }
            Sel::CtStatus if eq => {
                let names = values
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()?;
                Some(Match::CtStatus { names, negate })
            }
            Sel::Mark | Sel::ConnMark => {
                let single = match values.as_slice() {
                    [v] if eq && !is_anon_set(right) => {
                        v.as_u64().and_then(|n| u32::try_from(n).ok())
                    }
                    _ => None,
                };
                match (single, sel) {
                    (Some(value), Sel::Mark) => Some(Match::Mark {
                        value,
                        mask: u32::MAX,
                        negate,
                    }),
                    (Some(value), _) => Some(Match::ConnMark {
                        value,
                        mask: u32::MAX,
                        negate,
                    }),
                    // Mark sets and ranges: an anonymous set lookup on the mark (exact).
                    (None, Sel::Mark) => {
                        let ranges = int_ranges(Dim::Int, op, &values, u32::MAX.into())?;
                        Some(Match::Set {
                            set: SetRef::Anonymous(
                                ranges
                                    .into_iter()
                                    .map(|(a, b)| SetElem {
                                        key: vec![KeyValue::Int(a, b)],
                                        nomatch: false,
                                        verdict: None,
                                    })
                                    .collect(),
                            ),
                            fields: vec![Field::Mark],
                            negate,
                        })
                    }
                    _ => None,
                }
            }
            Sel::Length => {
                let ranges = int_ranges(Dim::Int, op, &values, u32::MAX.into())?;
                match ranges.as_slice() {
                    [(a, b)] => Some(Match::Length {
                        min: u32::try_from(*a).ok()?,
                        max: u32::try_from(*b).ok()?,
                        negate,
                    }),
                    _ => None,
                }
            }
            Sel::NfProto | Sel::EtherProto if eq => {
                let family = match values.as_slice() {
                    [Value::String(s)] => match s.as_str() {
                        "ipv4" | "ip" => Family::V4,
                        "ipv6" | "ip6" => Family::V6,
                        _ => return None,
                    },
                    _ => return None,
                };
                Some(Match::NfProto { family, negate })
            }
            Sel::TcpFlags if eq => {
                let bits = match values.as_slice() {
                    [v] if !is_anon_set(right) => tcp_flags_value(v)?,
                    _ => return None,
                };
                // `tcp flags syn` prints as op "in": (flags & syn) != 0, exact only for one
                // bit; `==` compares the whole byte.
                match op {
                    "in" if bits.count_ones() == 1 => Some(Match::TcpFlags {
                        mask: bits,
                        comp: bits,
                        negate: false,
                    }),
                    "==" | "!=" => Some(Match::TcpFlags {
                        mask: 0xff,
                        comp: bits,
                        negate,
                    }),
                    _ => None,
                }
            }
            Sel::Icmp(_) => Some(Match::Icmp {
                desc: cond(),
                negate,
            }),
            Sel::PktType => {
                // A packet from the internet to this host is `host` (nft's `unicast`); other
                // types cannot be told apart here.
                let all_host = values
                    .iter()
                    .all(|v| matches!(v.as_str(), Some("host" | "unicast")));
                if all_host && matches!(op, "==" | "in") {
                    Some(Match::Always { what: cond() })
                } else {
                    Some(Match::Undecidable {
                        condition: cond(),
                        negate,
                    })
                }
            }
            Sel::FibType(dir, iif) if eq => {
                let types = values
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()?;
                Some(Match::AddrType {
                    dir: *dir,
                    types,
                    negate,
                    limit_iface_in: *iif,
                })
            }
            // `oif missing` is `== false`, `oif exists` is `== true`; any other comparison of
            // the interface index stays unknown.
            Sel::FibOif(iif) if eq => match values.first().copied() {
                Some(Value::Bool(exists)) if values.len() == 1 => Some(Match::ReversePath {
                    strict: *iif,
                    negate: negate == *exists,
                }),
                _ => None,
            },
            Sel::Undecidable(_) => Some(Match::Undecidable {
                condition: cond(),
                negate,
            }),
            _ => None,
        }
    }
}

/// Integer ranges for `==`/`!=`/`in` (values, ranges, sets) and for comparisons `<`, `<=`, `>`,
/// `>=` against one value (as one range in `0..=max`).
fn int_ranges(dim: Dim, op: &str, values: &[&Value], max: u64) -> Option<Vec<(u64, u64)>> {
    if matches!(op, "==" | "!=" | "in") {
        let r = values
            .iter()
            .map(|v| int_value(dim, v))
            .collect::<Option<Vec<_>>>()?;
        return r.iter().all(|&(_, b)| b <= max).then_some(r);
    }
    let [v] = values else { return None };
    let (n, m) = int_value(dim, v)?;
    if n != m || n > max {
        return None;
    }
    let r = match op {
        "<" if n == 0 => return Some(Vec::new()),
        "<" => (0, n - 1),
        "<=" => (0, n),
        ">" if n == max => return Some(Vec::new()),
        ">" => (n + 1, max),
        ">=" => (n, max),
        _ => return None,
    };
    Some(vec![r])
}

fn one_key(v: &Value) -> Option<(&str, &Value)> {
    match v {
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, b)| (k.as_str(), b)),
        _ => None,
    }
}

fn flag(body: &Value, k: &str) -> bool {
    body.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn compact(v: &Value) -> String {
    v.to_string()
}

/// A verdict expression (statement or map value): accept, drop, jump, ...
fn verdict_value(v: &Value) -> Verdict {
    let target = |b: &Value| b.get("target").and_then(Value::as_str).map(str::to_string);
    match one_key(v) {
        Some(("accept", _)) => Verdict::Accept,
        Some(("drop", _)) => Verdict::Drop,
        Some(("continue", _)) => Verdict::Continue,
        Some(("return", _)) => Verdict::Return,
        Some(("jump", b)) => match target(b) {
            Some(chain) => Verdict::Jump { chain },
            None => Verdict::Unknown { text: compact(v) },
        },
        Some(("goto", b)) => match target(b) {
            Some(chain) => Verdict::Goto { chain },
            None => Verdict::Unknown { text: compact(v) },
        },
        _ => Verdict::Unknown { text: compact(v) },
    }
}

/// libnftables-json(5) REJECT: `type` is "tcp reset", "icmpx", "icmp" or "icmpv6", `expr` the
/// code. Without a type nft(8) REJECT STATEMENT defaults to port-unreachable of the family
/// (icmpx in inet/netdev/bridge tables).
fn reject_kind(body: &Value, family: TableFamily) -> RejectKind {
    let ty = body.get("type").and_then(Value::as_str);
    if ty == Some("tcp reset") {
        return RejectKind::TcpReset;
    }
    let ty = ty.unwrap_or(match family {
        TableFamily::Ip => "icmp",
        TableFamily::Ip6 => "icmpv6",
        _ => "icmpx",
    });
    let code = match body.get("expr") {
        None | Some(Value::Null) => "port-unreachable".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => format!("code {}", render_expr(other)),
    };
    RejectKind::Icmp(format!("{ty} {code}"))
}

/// `10/second burst 5`, `1 mbytes/second burst 1000 bytes`.
fn limit_desc(b: &Value) -> String {
    let rate = b.get("rate").map(render_expr).unwrap_or_default();
    let per = b.get("per").and_then(Value::as_str).unwrap_or("second");
    let unit = b
        .get("rate_unit")
        .and_then(Value::as_str)
        .filter(|u| *u != "packets");
    let mut s = match unit {
        Some(u) => format!("{rate} {u}/{per}"),
        None => format!("{rate}/{per}"),
    };
    if let Some(burst) = b.get("burst").and_then(Value::as_u64).filter(|n| *n > 0) {
        s.push_str(&format!(" burst {burst}"));
        if unit.is_some() {
            let bu = b
                .get("burst_unit")
                .and_then(Value::as_str)
                .unwrap_or("bytes");
            s.push_str(&format!(" {bu}"));
        }
    }
    s
}

fn quota_desc(b: &Value) -> String {
    let val = b
        .get("val")
        .or_else(|| b.get("bytes"))
        .map(render_expr)
        .unwrap_or_default();
    let unit = b.get("val_unit").and_then(Value::as_str).unwrap_or("bytes");
    format!("{val} {unit}")
}

fn ct_count_desc(b: &Value) -> String {
    let n = b.get("val").map(render_expr).unwrap_or_default();
    if flag(b, "inv") {
        format!("over {n}")
    } else {
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Text rendering: close to `nft list ruleset`, for messages. Not meant to be parsed back.

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn is_ifname_expr(v: &Value) -> bool {
    matches!(
        v.get("meta")
            .and_then(|m| m.get("key"))
            .and_then(Value::as_str),
        Some("iifname" | "oifname")
    )
}

/// Render a value, quoting strings when they are interface names.
fn render_value(v: &Value, quote_strings: bool) -> String {
    match v {
        Value::String(s) if quote_strings && !s.starts_with('@') => quote(s),
        Value::Array(a) => a
            .iter()
            .map(|x| render_value(x, quote_strings))
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(o) if o.len() == 1 && o.contains_key("set") => match &o["set"] {
            Value::Array(a) => format!(
                "{{ {} }}",
                a.iter()
                    .map(|x| match x.as_array().map(Vec::as_slice) {
                        Some([k, d]) =>
                            format!("{} : {}", render_value(k, quote_strings), render_expr(d)),
                        _ => render_value(x, quote_strings),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            one => format!("{{ {} }}", render_value(one, quote_strings)),
        },
        _ => render_expr(v),
    }
}

fn render_expr(v: &Value) -> String {
    let Some((k, b)) = one_key(v) else {
        return match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(x) => x.to_string(),
            Value::Array(_) => render_value(v, false),
            _ => compact(v),
        };
    };
    let s = |key: &str| b.get(key).and_then(Value::as_str).unwrap_or("");
    match k {
        "payload" => match (b.get("protocol"), b.get("field")) {
            (Some(_), Some(_)) => format!("{} {}", s("protocol"), s("field")),
            _ => format!(
                "@{},{},{}",
                s("base"),
                b.get("offset").map(render_expr).unwrap_or_default(),
                b.get("len").map(render_expr).unwrap_or_default()
            ),
        },
        "meta" => match s("key") {
            key @ ("iifname" | "oifname" | "iif" | "oif" | "iifgroup" | "oifgroup") => key.into(),
            key => format!("meta {key}"),
        },
        "ct" => {
            let mut parts = vec!["ct".to_string()];
            if let Some(d) = b.get("dir").and_then(Value::as_str) {
                parts.push(d.into());
            }
            if let Some(f) = b.get("family").and_then(Value::as_str) {
                parts.push(f.into());
            }
            parts.push(s("key").into());
            parts.join(" ")
        }
        "fib" => {
            let flags = match b.get("flags") {
                Some(Value::Array(a)) => a.iter().map(render_expr).collect::<Vec<_>>().join(" . "),
                Some(f) => render_expr(f),
                None => String::new(),
            };
            format!("fib {flags} {}", s("result"))
        }
        "concat" => match b {
            Value::Array(a) => a.iter().map(render_expr).collect::<Vec<_>>().join(" . "),
            _ => compact(v),
        },
        "set" if !b.is_object() => render_value(v, false),
        "prefix" => format!(
            "{}/{}",
            b.get("addr").map(render_expr).unwrap_or_default(),
            b.get("len").map(render_expr).unwrap_or_default()
        ),
        "range" => match b.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => format!("{}-{}", render_expr(lo), render_expr(hi)),
            _ => compact(v),
        },
        "&" | "|" | "^" | "<<" | ">>" => match b.as_array() {
            Some(a) => a
                .iter()
                .map(|x| match x {
                    Value::Array(fl) => format!(
                        "({})",
                        fl.iter().map(render_expr).collect::<Vec<_>>().join(" | ")
                    ),
                    _ => render_expr(x),
                })
                .collect::<Vec<_>>()
                .join(&format!(" {k} ")),
            None => compact(v),
        },
        "map" => format!(
            "{} map {}",
            b.get("key").map(render_expr).unwrap_or_default(),
            b.get("data").map(render_expr).unwrap_or_default()
        ),
        "elem" => b.get("val").map(render_expr).unwrap_or_default(),
        "accept" | "drop" | "continue" | "return" => k.into(),
        "jump" | "goto" => format!("{k} {}", s("target")),
        "socket" | "osf" | "rt" | "numgen" => format!("{k} {}", s("key")),
        _ => compact(v),
    }
}

fn render_stmt(v: &Value) -> String {
    let Some((k, b)) = one_key(v) else {
        return compact(v);
    };
    let s = |key: &str| b.get(key).and_then(Value::as_str).unwrap_or("");
    let e = |key: &str| b.get(key).map(render_expr).unwrap_or_default();
    match k {
        "match" => {
            let left = b.get("left");
            let q = left.is_some_and(is_ifname_expr);
            // nft omits `==` and `in` except after a bitwise expression and on `tcp flags`,
            // where `==` (whole byte) and `in` (any bit) differ.
            let explicit_eq = left.is_some_and(|l| {
                l.get("&").is_some()
                    || l.get("|").is_some()
                    || l.get("payload")
                        .and_then(|p| p.get("field"))
                        .and_then(Value::as_str)
                        == Some("flags")
            });
            let op = match s("op") {
                "==" if explicit_eq => "== ".to_string(),
                "==" | "in" | "" => String::new(),
                op => format!("{op} "),
            };
            format!(
                "{} {op}{}",
                e("left"),
                b.get("right")
                    .map(|r| render_value(r, q))
                    .unwrap_or_default()
            )
        }
        "reject" => match (b.get("type").and_then(Value::as_str), b.get("expr")) {
            (Some("tcp reset"), _) => "reject with tcp reset".into(),
            (Some(t), Some(x)) => format!("reject with {t} {}", render_expr(x)),
            (Some(t), None) => format!("reject with {t}"),
            _ => "reject".into(),
        },
        "limit" => match b {
            Value::String(n) => format!("limit name {}", quote(n)),
            _ => {
                let over = if flag(b, "inv") { "over " } else { "" };
                let pk = b
                    .get("rate_unit")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == "packets")
                    && b.get("burst")
                        .and_then(Value::as_u64)
                        .is_some_and(|n| n > 0);
                format!(
                    "limit rate {over}{}{}",
                    limit_desc(b),
                    if pk { " packets" } else { "" }
                )
            }
        },
        "quota" => match b {
            Value::String(n) => format!("quota name {}", quote(n)),
            _ => format!(
                "quota {}{}",
                if flag(b, "inv") { "over " } else { "" },
                quota_desc(b)
            ),
        },
        "ct count" => format!("ct count {}", ct_count_desc(b)),
        "counter" => "counter".into(),
        "log" => match b.get("prefix").and_then(Value::as_str) {
            Some(p) => format!("log prefix {}", quote(p)),
            None => "log".into(),
        },
        "notrack" => "notrack".into(),
        "meter" => {
            let size = b
                .get("size")
                .map(|n| format!(" size {}", render_expr(n)))
                .unwrap_or_default();
            format!(
                "meter {}{size} {{ {} {} }}",
                s("name"),
                e("key"),
                b.get("stmt").map(render_stmt).unwrap_or_default()
            )
        }
        "set" | "map" => {
            let inner = match b.get("stmt") {
                Some(Value::Array(a)) => a.iter().map(render_stmt).collect::<Vec<_>>().join(" "),
                Some(x) => render_stmt(x),
                None => String::new(),
            };
            let data = b
                .get("data")
                .map(|d| format!(" : {}", render_expr(d)))
                .unwrap_or_default();
            let body = [e("elem") + &data, inner]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            format!("{} {} {{ {body} }}", s("op"), s(k))
        }
        "mangle" => format!("{} set {}", e("key"), e("value")),
        "vmap" => format!(
            "{} vmap {}",
            e("key"),
            b.get("data")
                .map(|d| render_value(d, false))
                .unwrap_or_default()
        ),
        "dnat" | "snat" => {
            let fam = b
                .get("family")
                .and_then(Value::as_str)
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            let addr = b.get("addr").map(render_expr);
            let port = b.get("port").map(render_expr);
            let to = match (addr, port) {
                (Some(a), Some(p)) if a.contains(':') => format!(" to [{a}]:{p}"),
                (Some(a), Some(p)) => format!(" to {a}:{p}"),
                (Some(a), None) => format!(" to {a}"),
                (None, Some(p)) => format!(" to :{p}"),
                (None, None) => String::new(),
            };
            format!("{k}{fam}{to}")
        }
        "redirect" | "masquerade" => match b.get("port") {
            Some(p) => format!("{k} to :{}", render_expr(p)),
            None => k.into(),
        },
        "queue" => match b.get("num") {
            Some(n) => format!("queue num {}", render_expr(n)),
            None => "queue".into(),
        },
        "xt" => format!("xt {} {}", s("type"), quote(s("name"))),
        "accept" | "drop" | "continue" | "return" | "jump" | "goto" => render_expr(v),
        _ => compact(v),
    }
}

#[cfg(test)]
mod tests {
    //! Fixture tests use real `nft -j list ruleset` output (tests/fixtures/nft, see its README
    //! and regen.sh). The small inline documents in the error/tolerance tests are hand-written
    //! in the shapes of libnftables-json(5) for cases this host's nft cannot produce.
    use super::*;

    fn load(name: &str, text: &str) -> Vec<Table> {
        match parse(text, name) {
            Ok(t) => t,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn table<'a>(ts: &'a [Table], family: TableFamily, name: &str) -> &'a Table {
        ts.iter()
            .find(|t| t.family == family && t.name == name)
            .unwrap_or_else(|| panic!("no table {family} {name}"))
    }

    fn chain<'a>(t: &'a Table, name: &str) -> &'a Chain {
        t.chain(name)
            .unwrap_or_else(|| panic!("no chain {name} in {}", t.name))
    }

    fn rule<'a>(t: &'a Table, c: &str, pos: usize) -> &'a Rule {
        let r = &chain(t, c).rules[pos - 1];
        assert_eq!(r.source.position, pos);
        r
    }

    fn base(c: &Chain) -> &BaseChain {
        c.base
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not a base chain", c.name))
    }

    fn addrs(cidrs: &[&str]) -> AddrSet {
        AddrSet::new(
            cidrs
                .iter()
                .map(|c| AddrRange::parse(c).expect("test cidr"))
                .collect(),
        )
    }

    fn addr_key(s: &str) -> KeyValue {
        KeyValue::Addr(AddrRange::parse(s).expect("test addr"))
    }

    fn port(lo: u16, hi: u16) -> Match {
        Match::Port {
            dir: Dir::Dst,
            ranges: vec![(lo, hi)],
            negate: false,
        }
    }

    fn tcp() -> Match {
        Match::Proto {
            protos: vec![6],
            negate: false,
        }
    }

    fn v4() -> Match {
        Match::NfProto {
            family: Family::V4,
            negate: false,
        }
    }

    const FIREWALLD: &str = include_str!("../../tests/fixtures/nft/firewalld.json");
    const CROWDSEC: &str = include_str!("../../tests/fixtures/nft/crowdsec.json");
    const VMAPS: &str = include_str!("../../tests/fixtures/nft/vmaps.json");
    const MATCHES: &str = include_str!("../../tests/fixtures/nft/matches.json");
    const REJECTS: &str = include_str!("../../tests/fixtures/nft/rejects.json");
    const FAMILIES: &str = include_str!("../../tests/fixtures/nft/families.json");
    const NAT: &str = include_str!("../../tests/fixtures/nft/nat.json");
    const IPTABLES_NFT: &str = include_str!("../../tests/fixtures/nft/iptables-nft.json");

    #[test]
    fn firewalld_zones_chains_and_jumps() {
        let ts = load("firewalld.json", FIREWALLD);
        assert_eq!(ts.len(), 1);
        let t = table(&ts, TableFamily::Inet, "firewalld");
        assert_eq!(t.backend, Backend::Nft);
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "filter_INPUT",
                "filter_INPUT_ZONES",
                "filter_IN_public",
                "filter_IN_public_pre",
                "filter_IN_public_allow",
                "filter_IN_trusted"
            ]
        );
        let b = base(chain(t, "filter_INPUT"));
        // `priority filter + 10` is printed as the number 10.
        assert_eq!(
            (b.hook, b.priority, b.chain_type, b.policy),
            (Hook::Input, 10, ChainType::Filter, Policy::Accept)
        );
        assert!(chain(t, "filter_IN_public").base.is_none());
        assert!(chain(t, "filter_IN_public_pre").rules.is_empty());

        let r = rule(t, "filter_INPUT", 1);
        assert_eq!(
            r.matches,
            [Match::CtState {
                states: CtStates::ESTABLISHED | CtStates::RELATED,
                negate: false
            }]
        );
        assert_eq!(r.source.handle, Some(8));
        assert_eq!(r.source.text, "ct state { established, related } accept");
        assert_eq!(
            rule(t, "filter_INPUT", 2).matches,
            [Match::CtStatus {
                names: vec!["dnat".into()],
                negate: false
            }]
        );
        assert_eq!(
            rule(t, "filter_INPUT", 5).verdict,
            Verdict::Jump {
                chain: "filter_INPUT_ZONES".into()
            }
        );
        assert_eq!(
            rule(t, "filter_INPUT", 6).verdict,
            Verdict::Reject {
                with: RejectKind::Icmp("icmpx admin-prohibited".into())
            }
        );
        let z = rule(t, "filter_INPUT_ZONES", 2);
        assert_eq!(
            z.matches,
            [Match::Iface {
                dir: Dir::Src,
                any_of: vec![IfPattern {
                    name: "wg".into(),
                    prefix: true
                }],
                negate: false
            }]
        );
        assert_eq!(
            z.verdict,
            Verdict::Goto {
                chain: "filter_IN_trusted".into()
            }
        );
        assert_eq!(
            rule(t, "filter_IN_public", 3).matches,
            [Match::Proto {
                protos: vec![1, 58],
                negate: false
            }]
        );

        let c = rule(t, "filter_IN_public_allow", 3);
        assert_eq!(c.source.handle, Some(25));
        assert_eq!(
            c.source.text,
            "tcp dport 443 ct state { new, untracked } accept comment \"https for the world\""
        );
        let r = rule(t, "filter_IN_public_allow", 4);
        assert_eq!(
            r.source.text,
            "ip saddr 173.245.48.0/20 tcp dport 80 accept"
        );
        assert_eq!(
            r.matches,
            [
                v4(),
                Match::Addr {
                    dir: Dir::Src,
                    set: addrs(&["173.245.48.0/20"]),
                    negate: false
                },
                tcp(),
                port(80, 80)
            ]
        );
        assert_eq!(r.verdict, Verdict::Accept);
        assert_eq!(r.source.table, "firewalld");
        assert_eq!(r.source.chain, "filter_IN_public_allow");
        assert_eq!(r.source.family, TableFamily::Inet);
        // ip6 daddr implies IPv6 and udp dport implies UDP.
        let r = rule(t, "filter_IN_public_allow", 2);
        assert_eq!(
            r.matches[0],
            Match::NfProto {
                family: Family::V6,
                negate: false
            }
        );
        assert_eq!(
            r.matches[2],
            Match::Proto {
                protos: vec![17],
                negate: false
            }
        );
    }

    #[test]
    fn crowdsec_ban_sets_are_dynamic_and_hold_the_banned_address() {
        let ts = load("crowdsec.json", CROWDSEC);
        let t = table(&ts, TableFamily::Ip, "crowdsec");
        let c = chain(t, "crowdsec-chain-input");
        assert_eq!((base(c).hook, base(c).priority), (Hook::Input, -10));
        let s = t.set("crowdsec-blacklists").expect("ban set");
        assert_eq!(s.kind, SetKind::NftSet);
        assert_eq!(s.family, Some(Family::V4));
        assert!(s.dynamic, "timeout set must be dynamic");
        assert!(s.unparsed.is_empty());
        // Elements come wrapped in {"elem": {"val", "timeout", "expires"}}.
        assert!(
            s.elements
                .iter()
                .any(|e| e.key == [addr_key("173.245.48.1")])
        );
        assert_eq!(s.elements.len(), 2);
        let r = rule(t, "crowdsec-chain-input", 1);
        // An ip table needs no family dependency.
        assert_eq!(
            r.matches,
            [Match::Set {
                set: SetRef::Named("crowdsec-blacklists".into()),
                fields: vec![Field::SrcAddr],
                negate: false
            }]
        );
        assert_eq!(r.verdict, Verdict::Drop);

        let t6 = table(&ts, TableFamily::Ip6, "crowdsec6");
        let s6 = t6.set("crowdsec6-blacklists").expect("v6 ban set");
        assert_eq!(s6.family, Some(Family::V6));
        assert_eq!(s6.elements[0].key, [addr_key("2400:cb00::1")]);
        let r6 = rule(t6, "crowdsec6-chain-input", 1);
        assert_eq!(r6.verdict, Verdict::Drop);
        assert_eq!(
            r6.effects,
            [Effect::Other {
                what: "counter".into()
            }]
        );
        assert_eq!(
            r6.source.text,
            "ip6 saddr @crowdsec6-blacklists counter drop"
        );
    }

    #[test]
    fn verdict_maps_named_anonymous_and_concatenated() {
        let ts = load("vmaps.json", VMAPS);
        let t = table(&ts, TableFamily::Inet, "vm");
        assert_eq!(base(chain(t, "input")).policy, Policy::Drop);

        let portv = t.set("portv").expect("portv");
        assert_eq!(portv.kind, SetKind::NftVmap);
        let by_port = |p: u64| {
            portv
                .elements
                .iter()
                .find(|e| e.key == [KeyValue::Int(p, p)])
                .and_then(|e| e.verdict.clone())
        };
        assert_eq!(by_port(22), Some(Verdict::Accept));
        assert_eq!(
            by_port(80),
            Some(Verdict::Jump {
                chain: "web".into()
            })
        );
        assert_eq!(
            by_port(443),
            Some(Verdict::Goto {
                chain: "web".into()
            })
        );
        assert_eq!(by_port(8080), Some(Verdict::Drop));

        let sp = t.set("srcport").expect("srcport");
        assert_eq!(sp.family, Some(Family::V4));
        assert_eq!(
            sp.elements[0].key,
            [addr_key("173.245.48.0/20"), KeyValue::Int(443, 443)]
        );
        assert_eq!(
            sp.elements[1].key,
            [addr_key("10.0.0.1"), KeyValue::Int(80, 90)]
        );
        assert_eq!(sp.elements[1].verdict, Some(Verdict::Drop));

        let marks = t.set("marks").expect("data map");
        assert_eq!(marks.kind, SetKind::NftMap);
        assert_eq!(marks.elements.len(), 2);
        assert!(marks.elements.iter().all(|e| e.verdict.is_none()));

        let r = rule(t, "input", 1);
        assert_eq!(r.matches, [tcp()]);
        assert_eq!(
            r.verdict,
            Verdict::Map(VerdictMap {
                fields: vec![Field::DstPort],
                map: SetRef::Named("portv".into())
            })
        );
        assert_eq!(r.source.text, "tcp dport vmap @portv");
        let r = rule(t, "input", 2);
        assert_eq!(r.matches, [v4(), tcp()]);
        assert_eq!(
            r.verdict,
            Verdict::Map(VerdictMap {
                fields: vec![Field::SrcAddr, Field::DstPort],
                map: SetRef::Named("srcport".into())
            })
        );
        let r = rule(t, "input", 3);
        let Verdict::Map(VerdictMap {
            fields,
            map: SetRef::Anonymous(elems),
        }) = &r.verdict
        else {
            panic!("anonymous vmap expected, got {:?}", r.verdict);
        };
        assert_eq!(fields, &[Field::SrcAddr, Field::DstPort]);
        let drop = elems
            .iter()
            .find(|e| e.key == [addr_key("198.51.100.1"), KeyValue::Int(443, 443)])
            .expect("198.51.100.1 . 443");
        assert_eq!(drop.verdict, Some(Verdict::Drop));
        assert_eq!(
            r.source.text,
            "ip saddr . tcp dport vmap { 198.51.100.2 . 80 : accept, 198.51.100.1 . 443 : drop }"
        );
        let Verdict::Map(VerdictMap {
            fields,
            map: SetRef::Anonymous(elems),
        }) = &rule(t, "input", 4).verdict
        else {
            panic!("ip protocol vmap expected");
        };
        assert_eq!(fields, &[Field::L4Proto]);
        assert_eq!(elems[1].key, [KeyValue::Int(17, 17)]);
        assert_eq!(elems[1].verdict, Some(Verdict::Continue));
        // A mark set from a data map is kept as a side effect, not dropped.
        let r = rule(t, "input", 5);
        assert_eq!(r.verdict, Verdict::Continue);
        assert_eq!(
            r.effects,
            [Effect::Other {
                what: "meta mark set ip saddr map @marks".into()
            }]
        );
        assert_eq!(rule(t, "web", 2).verdict, Verdict::Return);
    }

    #[test]
    fn matches_sets_and_negation() {
        let ts = load("matches.json", MATCHES);
        let t = table(&ts, TableFamily::Inet, "m");
        let cf4 = t.set("cf4").expect("cf4");
        assert!(!cf4.dynamic);
        let keys: Vec<&KeyValue> = cf4.elements.iter().map(|e| &e.key[0]).collect();
        assert_eq!(
            keys,
            [
                &addr_key("10.1.1.1-10.1.1.9"),
                &addr_key("103.21.244.0/22"),
                &addr_key("173.245.48.0/20")
            ]
        );
        let pairs = t.set("allowpairs").expect("concat set");
        assert!(
            pairs
                .elements
                .iter()
                .any(|e| e.key == [addr_key("198.51.100.1"), KeyValue::Int(443, 443)])
        );
        let ifs = t.set("ifaces").expect("ifname set");
        assert!(
            ifs.elements
                .iter()
                .any(|e| e.key == [KeyValue::Iface(IfPattern::nft("eth0"))])
        );
        let wp = t.set("webports").expect("webports");
        assert_eq!(wp.elements[2].key, [KeyValue::Int(8000, 8999)]);
        // `flags dynamic,timeout` prints only "timeout"; the set is also written by rules.
        assert!(t.set("flood").expect("flood").dynamic);

        let r = rule(t, "input", 1);
        assert_eq!(r.source.text, "ip saddr != @cf4 tcp dport { 80, 443 } drop");
        assert_eq!(
            r.matches,
            [
                v4(),
                Match::Set {
                    set: SetRef::Named("cf4".into()),
                    fields: vec![Field::SrcAddr],
                    negate: true
                },
                tcp(),
                Match::Port {
                    dir: Dir::Dst,
                    ranges: vec![(80, 80), (443, 443)],
                    negate: false
                }
            ]
        );
        assert_eq!(
            rule(t, "input", 3).matches[2],
            Match::Set {
                set: SetRef::Named("allowpairs".into()),
                fields: vec![Field::SrcAddr, Field::DstPort],
                negate: false
            }
        );
        assert_eq!(
            rule(t, "input", 4).matches[0],
            Match::Set {
                set: SetRef::Named("ifaces".into()),
                fields: vec![Field::Iifname],
                negate: false
            }
        );
        let r = rule(t, "input", 5);
        assert_eq!(
            r.source.text,
            "iifname != \"eth1\" oifname \"eth2*\" accept"
        );
        assert_eq!(
            r.matches,
            [
                Match::Iface {
                    dir: Dir::Src,
                    any_of: vec![IfPattern::nft("eth1")],
                    negate: true
                },
                Match::Iface {
                    dir: Dir::Dst,
                    any_of: vec![IfPattern::nft("eth2*")],
                    negate: false
                }
            ]
        );
        let r = rule(t, "input", 33);
        assert_eq!(
            r.matches,
            [
                Match::CtState {
                    states: CtStates::ESTABLISHED | CtStates::RELATED,
                    negate: true
                },
                tcp(),
                Match::Port {
                    dir: Dir::Dst,
                    ranges: vec![(80, 80), (443, 443)],
                    negate: true
                }
            ]
        );
        let r = rule(t, "input", 34);
        assert_eq!(
            r.matches[2],
            Match::Addr {
                dir: Dir::Src,
                set: addrs(&["10.9.0.1-10.9.0.3", "192.0.2.0/24", "198.51.100.9"]),
                negate: false
            }
        );
        let Match::Set {
            set: SetRef::Anonymous(elems),
            fields,
            negate: false,
        } = &rule(t, "input", 35).matches[2]
        else {
            panic!("anonymous concatenated set expected");
        };
        assert_eq!(fields, &[Field::SrcAddr, Field::DstPort]);
        assert_eq!(
            elems[1].key,
            [addr_key("203.0.113.2"), KeyValue::Int(8000, 8080)]
        );
        assert_eq!(
            rule(t, "input", 38).matches[1],
            Match::Addr {
                dir: Dir::Src,
                set: addrs(&["10.0.0.1-10.0.0.5"]),
                negate: false
            }
        );
    }

    #[test]
    fn matches_rates_meters_and_ct_count() {
        let ts = load("matches.json", MATCHES);
        let t = table(&ts, TableFamily::Inet, "m");
        let rate = |pos: usize| -> RateLimit {
            rule(t, "input", pos)
                .matches
                .iter()
                .find_map(|m| match m {
                    Match::Rate(r) => Some(r.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("rule {pos} has no rate match"))
        };
        assert_eq!(
            rate(6),
            RateLimit {
                kind: "limit".into(),
                desc: "10/second burst 5".into(),
                over: false
            }
        );
        assert_eq!(
            rule(t, "input", 6).source.text,
            "ct state new tcp dport 8443 limit rate 10/second burst 5 packets accept"
        );
        let over = rate(7);
        assert!(over.over);
        assert_eq!(over.desc, "100/minute burst 5");
        let m = rate(8);
        assert_eq!((m.kind.as_str(), m.over), ("meter", true));
        assert!(m.desc.contains("syn4"), "{}", m.desc);
        let d = rate(9);
        assert_eq!((d.kind.as_str(), d.over), ("dynset", true));
        assert!(d.desc.contains("@flood"), "{}", d.desc);
        // `add @flood { ip saddr }` without a statement is a side effect only.
        let r = rule(t, "input", 10);
        assert!(!r.matches.iter().any(|m| matches!(m, Match::Rate(_))));
        assert_eq!(
            r.effects,
            [Effect::Other {
                what: "add @flood { ip saddr }".into()
            }]
        );
        assert_eq!(r.verdict, Verdict::Accept);
        let c = rate(11);
        assert_eq!((c.kind.as_str(), c.over), ("ct count", true));
        assert_eq!(
            rule(t, "input", 11).verdict,
            Verdict::Reject {
                with: RejectKind::TcpReset
            }
        );
        let q = rate(30);
        assert_eq!((q.kind.as_str(), q.over), ("quota", true));
    }

    #[test]
    fn matches_fib_flags_ports_meta_icmp() {
        let ts = load("matches.json", MATCHES);
        let t = table(&ts, TableFamily::Inet, "m");
        let m = |pos: usize| rule(t, "input", pos).matches.clone();
        assert_eq!(
            m(12)[0],
            Match::AddrType {
                dir: Dir::Dst,
                types: vec!["local".into()],
                negate: false,
                limit_iface_in: false
            }
        );
        assert_eq!(
            m(13),
            [Match::AddrType {
                dir: Dir::Dst,
                types: vec!["local".into(), "broadcast".into()],
                negate: true,
                limit_iface_in: true
            }]
        );
        assert_eq!(
            m(14)[1],
            Match::TcpFlags {
                mask: 0x17,
                comp: 0x02,
                negate: false
            }
        );
        assert_eq!(
            rule(t, "input", 14).source.text,
            "tcp flags & (fin | syn | rst | ack) == syn tcp dport 9001 accept"
        );
        // `tcp flags syn` tests one bit; `tcp flags == syn` the whole byte.
        assert_eq!(
            m(36)[1],
            Match::TcpFlags {
                mask: 0x02,
                comp: 0x02,
                negate: false
            }
        );
        assert_eq!(
            m(37)[1],
            Match::TcpFlags {
                mask: 0xff,
                comp: 0x02,
                negate: false
            }
        );
        assert_eq!(
            m(15),
            [
                tcp(),
                Match::Port {
                    dir: Dir::Dst,
                    ranges: vec![(0, 1023)],
                    negate: false
                },
                Match::Port {
                    dir: Dir::Src,
                    ranges: vec![(1024, 65535)],
                    negate: false
                }
            ]
        );
        assert_eq!(m(16), [tcp(), port(2000, 2100)]);
        // `th dport` has no protocol dependency.
        assert_eq!(m(17), [port(3000, 3000)]);
        assert_eq!(
            m(18)[0],
            Match::Proto {
                protos: vec![17],
                negate: false
            }
        );
        assert_eq!(m(19), [tcp(), v4()]);
        assert_eq!(
            m(20),
            [Match::Mark {
                value: 0x10,
                mask: u32::MAX,
                negate: false
            }]
        );
        assert_eq!(
            m(21),
            [Match::Mark {
                value: 2,
                mask: 0xff,
                negate: false
            }]
        );
        assert_eq!(
            m(22),
            [Match::ConnMark {
                value: 5,
                mask: u32::MAX,
                negate: false
            }]
        );
        assert_eq!(
            m(23),
            [Match::Length {
                min: 100,
                max: 200,
                negate: false
            }]
        );
        assert_eq!(
            m(24),
            [Match::Undecidable {
                condition: "meta skuid 0".into(),
                negate: false
            }]
        );
        assert!(
            matches!(&m(25)[0], Match::Undecidable { condition, .. } if condition.contains("pkttype"))
        );
        assert_eq!(
            m(26),
            [
                v4(),
                Match::Proto {
                    protos: vec![1],
                    negate: false
                },
                Match::Icmp {
                    desc: "icmp type echo-request".into(),
                    negate: false
                }
            ]
        );
        assert_eq!(
            m(28)[1],
            Match::Proto {
                protos: vec![6],
                negate: true
            }
        );
        assert_eq!(
            m(29),
            [
                Match::NfProto {
                    family: Family::V6,
                    negate: false
                },
                Match::Proto {
                    protos: vec![17],
                    negate: false
                }
            ]
        );
        let log = rule(t, "input", 31);
        assert_eq!(log.verdict, Verdict::Continue);
        assert_eq!(log.effects.len(), 2);
    }

    #[test]
    fn matches_prerouting_effects() {
        let ts = load("matches.json", MATCHES);
        let t = table(&ts, TableFamily::Inet, "m");
        let pre = base(chain(t, "pre"));
        assert_eq!((pre.hook, pre.priority), (Hook::Prerouting, -300));
        assert_eq!(rule(t, "pre", 1).effects, [Effect::Notrack]);
        assert_eq!(
            rule(t, "pre", 2).effects,
            [Effect::SetMark {
                value: 42,
                mask: u32::MAX
            }]
        );
        assert_eq!(
            rule(t, "pre", 3).effects,
            [Effect::SetConnMark {
                value: 7,
                mask: u32::MAX
            }]
        );
        assert!(
            chain(t, "pre")
                .rules
                .iter()
                .all(|r| r.verdict == Verdict::Continue)
        );
    }

    #[test]
    fn every_reject_form() {
        let ts = load("rejects.json", REJECTS);
        let t = table(&ts, TableFamily::Inet, "rj");
        let with = |t: &Table, pos: usize| match &rule(t, "input", pos).verdict {
            Verdict::Reject { with } => with.clone(),
            v => panic!("rule {pos}: not a reject: {v:?}"),
        };
        assert_eq!(with(t, 1), RejectKind::TcpReset);
        assert_eq!(
            with(t, 2),
            RejectKind::Icmp("icmpx admin-prohibited".into())
        );
        // Plain `reject` in an inet table.
        assert_eq!(
            with(t, 3),
            RejectKind::Icmp("icmpx port-unreachable".into())
        );
        assert_eq!(with(t, 4), RejectKind::Icmp("icmp host-unreachable".into()));
        assert_eq!(
            with(t, 5),
            RejectKind::Icmp("icmpv6 admin-prohibited".into())
        );
        assert_eq!(
            rule(t, "input", 1).source.text,
            "tcp dport 1 reject with tcp reset"
        );
        let t4 = table(&ts, TableFamily::Ip, "rj4");
        assert_eq!(
            with(t4, 1),
            RejectKind::Icmp("icmp port-unreachable".into())
        );
        assert_eq!(with(t4, 2), RejectKind::Icmp("icmp net-prohibited".into()));
    }

    #[test]
    fn families_hooks_priorities_policies() {
        let ts = load("families.json", FAMILIES);
        let fams: Vec<TableFamily> = ts.iter().map(|t| t.family).collect();
        assert_eq!(
            fams,
            [
                TableFamily::Ip,
                TableFamily::Ip6,
                TableFamily::Inet,
                TableFamily::Netdev,
                TableFamily::Bridge
            ]
        );
        let f4 = table(&ts, TableFamily::Ip, "f4");
        let raw = base(chain(f4, "raw_pre"));
        assert_eq!((raw.hook, raw.priority), (Hook::Prerouting, -300));
        let r = rule(f4, "raw_pre", 1);
        assert_eq!(r.verdict, Verdict::Drop);
        assert_eq!(
            r.matches,
            [Match::Addr {
                dir: Dir::Src,
                set: addrs(&["203.0.113.0/24"]),
                negate: false
            }]
        );
        assert_eq!(base(chain(f4, "input")).policy, Policy::Drop);
        let f6 = table(&ts, TableFamily::Ip6, "f6");
        assert_eq!(base(chain(f6, "input")).priority, -5);
        // In an ip6 table `ip6 saddr` needs no family dependency.
        assert!(matches!(
            rule(f6, "input", 1).matches[0],
            Match::Addr { .. }
        ));
        let fi = table(&ts, TableFamily::Inet, "fi");
        assert_eq!(base(chain(fi, "forward")).hook, Hook::Forward);
        assert!(chain(fi, "helper").base.is_none());
        let nd = table(&ts, TableFamily::Netdev, "fnd");
        let ing = base(chain(nd, "ingress"));
        assert_eq!((ing.hook, ing.priority), (Hook::Ingress, -500));
        // nft 1.0.6 does not print the device of a netdev chain (see fixtures README).
        assert!(ing.devices.is_empty());
        assert_eq!(rule(nd, "ingress", 1).matches[0], v4());
        assert_eq!(
            rule(nd, "ingress", 2).matches[0],
            Match::NfProto {
                family: Family::V6,
                negate: false
            }
        );
    }

    #[test]
    fn nat_statements() {
        let ts = load("nat.json", NAT);
        let t = table(&ts, TableFamily::Ip, "nat");
        let pre = base(chain(t, "prerouting"));
        assert_eq!((pre.chain_type, pre.priority), (ChainType::Nat, -100));
        assert_eq!(base(chain(t, "postrouting")).priority, 100);
        let v = |c: &str, pos: usize| rule(t, c, pos).verdict.clone();
        assert_eq!(
            v("prerouting", 1),
            Verdict::Dnat {
                addr: Some("10.0.0.5".parse().expect("ip")),
                port: Some(443)
            }
        );
        assert_eq!(v("prerouting", 2), Verdict::Redirect { port: Some(80) });
        assert_eq!(
            v("prerouting", 3),
            Verdict::Dnat {
                addr: Some("10.0.0.6".parse().expect("ip")),
                port: None
            }
        );
        assert_eq!(v("prerouting", 4), Verdict::Redirect { port: None });
        assert_eq!(
            rule(t, "prerouting", 1).source.text,
            "tcp dport 8443 dnat to 10.0.0.5:443"
        );
        assert!(matches!(v("postrouting", 1), Verdict::NatOther { .. }));
        assert!(
            matches!(v("postrouting", 2), Verdict::NatOther { desc } if desc == "snat to 192.0.2.1")
        );
        let t6 = table(&ts, TableFamily::Inet, "nat6");
        assert_eq!(
            rule(t6, "prerouting", 1).verdict,
            Verdict::Dnat {
                addr: Some("2001:db8::5".parse().expect("ip")),
                port: Some(443)
            }
        );
    }

    #[test]
    fn iptables_nft_xt_objects_stay_unknown() {
        let ts = load("iptables-nft.json", IPTABLES_NFT);
        let t = table(&ts, TableFamily::Ip, "filter");
        assert_eq!(t.chains.len(), 4);
        assert_eq!(base(chain(t, "FORWARD")).policy, Policy::Drop);
        let r = rule(t, "INPUT", 1);
        assert!(
            matches!(&r.matches[..], [Match::Unknown { text, negate: false }] if text.contains("conntrack"))
        );
        assert_eq!(r.verdict, Verdict::Accept);
        let r = rule(t, "INPUT", 3);
        assert_eq!(r.matches[0], tcp());
        assert!(matches!(&r.matches[1], Match::Unknown { text, .. } if text.contains("hashlimit")));
        assert_eq!(r.verdict, Verdict::Drop);
        // An xt target (REJECT) may end evaluation: it must not be read as "continue".
        let r = rule(t, "CF", 2);
        assert!(matches!(&r.verdict, Verdict::Unknown { text } if text.contains("REJECT")));
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_source() {
        let truncated = &FIREWALLD[..FIREWALLD.len() / 2];
        let e = parse(truncated, "/tmp/x.json").expect_err("truncated");
        assert!(matches!(e, ParseError::Line { .. }), "{e}");
        assert!(e.to_string().starts_with("/tmp/x.json line 1"), "{e}");

        let e = parse("[1,2]", "dump").expect_err("not a document");
        assert!(
            e.to_string().starts_with("dump: not `nft -j` output"),
            "{e}"
        );

        let wrong = r#"{"nftables":[{"table":{"family":"inet","name":"t","handle":1}},
            {"chain":{"family":"inet","table":"t","name":"c","handle":1}},
            {"rule":{"family":"inet","table":"t","chain":"c","handle":"seven","expr":[]}}]}"#;
        let e = parse(wrong, "dump").expect_err("handle is a string");
        let msg = e.to_string();
        assert!(
            msg.contains("dump") && msg.contains("rule (inet t chain c handle seven)"),
            "{msg}"
        );

        let orphan = r#"{"nftables":[{"table":{"family":"ip","name":"t"}},
            {"rule":{"family":"ip","table":"t","chain":"nope","handle":4,"expr":[{"accept":null}]}}]}"#;
        let msg = parse(orphan, "dump")
            .expect_err("unknown chain")
            .to_string();
        assert!(
            msg.contains("chain nope") && msg.contains("handle 4"),
            "{msg}"
        );

        let no_table = r#"{"nftables":[{"chain":{"family":"ip","table":"ghost","name":"c"}}]}"#;
        let msg = parse(no_table, "dump")
            .expect_err("unknown table")
            .to_string();
        assert!(msg.contains("ghost"), "{msg}");

        let bad_prio = r#"{"nftables":[{"table":{"family":"ip","name":"t"}},
            {"chain":{"family":"ip","table":"t","name":"c","hook":"input","prio":[1]}}]}"#;
        let msg = parse(bad_prio, "dump").expect_err("prio").to_string();
        assert!(msg.contains("chain c") && msg.contains("priority"), "{msg}");
    }

    #[test]
    fn damaged_fixtures_never_panic() {
        // Every prefix cut and a type-mangled copy of each real dump: Ok or Err, never a panic.
        for text in [
            FIREWALLD,
            CROWDSEC,
            VMAPS,
            MATCHES,
            REJECTS,
            FAMILIES,
            NAT,
            IPTABLES_NFT,
        ] {
            for cut in (0..text.len()).step_by(97) {
                if text.is_char_boundary(cut) {
                    let _ = parse(&text[..cut], "cut");
                }
            }
            for (from, to) in [
                ("\"prio\": ", "\"prio\": \"x\" , \"y\": "),
                ("\"right\": ", "\"right\": [[{}]], \"r\": "),
                ("\"len\": ", "\"len\": 999, \"l\": "),
                ("\"expr\": [", "\"expr\": [{\"a\":1,\"b\":2}, 7, "),
            ] {
                let _ = parse(&text.replace(from, to), "mangled");
            }
        }
        let msg = parse(
            r#"{"nftables":[{"table":{"family":"ip","name":"t"}},
            {"chain":{"family":"ip","table":"t","name":"c","hook":"input","prio":"security + 2147483647"}}]}"#,
            "dump",
        )
        .expect_err("priority overflow")
        .to_string();
        assert!(msg.contains("priority"), "{msg}");
    }

    /// A one-table, one-chain document with the given rule expressions (libnftables-json(5)
    /// shapes) and extra top-level objects.
    fn doc(family: &str, extra: &str, exprs: &[&str]) -> String {
        let rules: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    r#"{{"rule":{{"family":"{family}","table":"t","chain":"c","handle":{},"expr":{e}}}}}"#,
                    i + 10
                )
            })
            .collect();
        let mut items = vec![
            r#"{"metainfo":{"version":"9.9","json_schema_version":1}}"#.to_string(),
            format!(r#"{{"table":{{"family":"{family}","name":"t","handle":1}}}}"#),
            format!(
                r#"{{"chain":{{"family":"{family}","table":"t","name":"c","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}}}}"#
            ),
        ];
        if !extra.is_empty() {
            items.push(extra.to_string());
        }
        items.extend(rules);
        format!(r#"{{"nftables":[{}]}}"#, items.join(","))
    }

    fn rules_of(d: &str) -> Vec<Rule> {
        let ts = load("inline", d);
        ts[0].chains[0].rules.clone()
    }

    #[test]
    fn unknown_expressions_and_statements_are_kept_not_errors() {
        let d = doc(
            "inet",
            r#"{"flowtable":{"family":"inet","name":"ft","table":"t","hook":"ingress","prio":0,"dev":"eth0"}}"#,
            &[
                r#"[{"match":{"op":"==","left":{"frobnicate":{"x":1}},"right":3}},{"accept":null}]"#,
                r#"[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"ttl"}},"right":64}},{"drop":null}]"#,
                r#"[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443}},{"synproxy":{"mss":1460}}]"#,
                r#"[{"queue":{"num":3,"flags":["bypass"]}}]"#,
                r#"[{"reject":null}]"#,
                r#"[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":"https"}},{"accept":null}]"#,
                r#"[{"counter":{"packets":1,"bytes":2}},{"flow":{"op":"add","flowtable":"@ft"}}]"#,
            ],
        );
        let rs = rules_of(&d);
        assert!(
            matches!(&rs[0].matches[..], [Match::Unknown { text, negate: false }] if text.contains("frobnicate"))
        );
        assert_eq!(rs[0].verdict, Verdict::Accept);
        // The implied family dependency is kept, the ttl comparison is unknown and negated.
        assert_eq!(rs[1].matches[0], v4());
        assert!(
            matches!(&rs[1].matches[1], Match::Unknown { text, negate: true } if text.contains("ttl"))
        );
        assert!(matches!(&rs[2].verdict, Verdict::Unknown { text } if text.contains("synproxy")));
        assert_eq!(
            rs[3].verdict,
            Verdict::Queue {
                desc: "queue num 3".into()
            }
        );
        assert_eq!(
            rs[4].verdict,
            Verdict::Reject {
                with: RejectKind::Icmp("icmpx port-unreachable".into())
            }
        );
        assert_eq!(rs[5].matches[1], port(443, 443));
        assert_eq!(rs[6].verdict, Verdict::Continue);
        assert_eq!(rs[6].effects.len(), 2);
    }

    #[test]
    fn named_limit_objects_typeof_sets_and_devices() {
        let extra = r#"{"limit":{"family":"netdev","name":"lim","table":"t","handle":3,"rate":5,"per":"second","burst":0,"inv":true}},
            {"set":{"family":"netdev","name":"s","table":"t","type":{"typeof":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"payload":{"protocol":"tcp","field":"dport"}}]}},"handle":4,"flags":["dynamic"],"elem":[{"concat":["192.0.2.1",443]},{"concat":["192.0.2.2"]}]}}"#;
        let mut d = doc(
            "netdev",
            extra,
            &[
                r#"[{"limit":"lim"},{"drop":null}]"#,
                r#"[{"limit":"missing"},{"drop":null}]"#,
            ],
        );
        d = d.replace(
            r#""hook":"input","prio":0"#,
            r#""hook":"ingress","prio":"filter - 5","dev":["eth0","eth1"]"#,
        );
        let ts = load("inline", &d);
        let t = &ts[0];
        let b = base(&t.chains[0]);
        assert_eq!((b.hook, b.priority), (Hook::Ingress, -5));
        assert_eq!(b.devices, ["eth0", "eth1"]);
        let s = t.set("s").expect("typeof set");
        assert!(s.dynamic);
        assert_eq!(s.family, Some(Family::V4));
        assert_eq!(
            s.elements[0].key,
            [addr_key("192.0.2.1"), KeyValue::Int(443, 443)]
        );
        // An element whose shape does not fit the key is kept verbatim.
        assert_eq!(s.unparsed, [r#"{"concat":["192.0.2.2"]}"#]);
        let rs = &t.chains[0].rules;
        assert!(
            matches!(&rs[0].matches[0], Match::Rate(RateLimit { kind, over: true, .. }) if kind == "limit")
        );
        assert!(
            matches!(&rs[1].matches[0], Match::Undecidable { condition, .. } if condition.contains("missing"))
        );
    }
}
