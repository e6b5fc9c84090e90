//! `ip -j -d link show`, `tc -j qdisc show` and `tc -j filter show` text → [`Netdev`].
//!
//! Owns: the JSON shapes iproute2 6.1 prints (see the parent module for its quirks).
//! Must not: decide anything about packets.

use super::*;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// A JSON object with its keys in order, repeated keys kept (u32 prints `match` once per key).
#[derive(Debug, Default)]
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, Value>()? {
                    v.push((k, val));
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl Pairs {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
    fn str(&self, k: &str) -> Option<String> {
        self.get(k).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    }
}

#[derive(Deserialize)]
struct RawFilter {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    pref: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    chain: Option<u32>,
    #[serde(default)]
    options: Option<Pairs>,
}

#[derive(Deserialize)]
struct RawLink {
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    xdp: Option<RawXdp>,
}

#[derive(Deserialize)]
struct RawXdp {
    #[serde(default)]
    mode: u64,
    #[serde(default)]
    prog: Option<RawProg>,
    #[serde(default)]
    attached: Vec<RawAttached>,
}

#[derive(Deserialize)]
struct RawAttached {
    #[serde(default)]
    mode: u64,
    #[serde(default)]
    prog: Option<RawProg>,
}

#[derive(Deserialize, Clone)]
struct RawProg {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

const LINK_CMD: &str = "ip -j -d link show";

/// Parse every dump. A dump that is `None` contributes nothing; the reader reports why.
pub fn parse(d: &NetdevDumps) -> Result<Netdev, TcError> {
    let mut nd = Netdev::default();
    if let Some(links) = &d.links {
        nd.xdp = parse_links(links)?;
    }
    for dump in &d.filters {
        let dir = match dump.direction.as_str() {
            "ingress" => TcDir::Ingress,
            "egress" => TcDir::Egress,
            _ => {
                return Err(TcError::Direction {
                    dev: dump.dev.clone(),
                    direction: dump.direction.clone(),
                });
            }
        };
        let cmd = format!("tc -j filter show dev {} {}", dump.dev, dump.direction);
        let block = parse_filters(&dump.json, &cmd)?;
        nd.blocks.insert((dump.dev.clone(), dir), block);
    }
    Ok(nd)
}

fn json_err(cmd: &str, e: serde_json::Error) -> TcError {
    TcError::Json {
        cmd: cmd.to_string(),
        message: e.to_string(),
    }
}

fn parse_links(text: &str) -> Result<BTreeMap<String, Vec<XdpProg>>, TcError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let links: Vec<RawLink> = serde_json::from_str(text).map_err(|e| json_err(LINK_CMD, e))?;
    let mut out = BTreeMap::new();
    for l in links {
        let Some(x) = l.xdp else { continue };
        let mut progs: Vec<XdpProg> = x
            .attached
            .iter()
            .filter_map(|a| a.prog.as_ref().map(|p| xdp_prog(a.mode, p)))
            .collect();
        // Older kernels report only IFLA_XDP_PROG_ID, printed as the top-level prog.
        if let (true, Some(p)) = (progs.is_empty(), &x.prog) {
            progs.push(xdp_prog(x.mode, p));
        }
        if !progs.is_empty() {
            out.insert(l.ifname, progs);
        }
    }
    Ok(out)
}

fn xdp_prog(mode: u64, p: &RawProg) -> XdpProg {
    // XDP_ATTACHED_DRV = 1, SKB = 2, HW = 3 (include/uapi/linux/if_link.h).
    let mode = match mode {
        1 => XdpMode::Native,
        2 => XdpMode::Generic,
        3 => XdpMode::Offload,
        n => XdpMode::Other(n),
    };
    XdpProg {
        mode,
        id: p.id,
        name: p.name.clone(),
        tag: p.tag.clone(),
    }
}

/// iproute2 6.1 prints `"    offset "` and `" eat "` as bare strings inside the u32 object
/// (`print_string(PRINT_ANY, NULL, …)` in tc/f_u32.c); without this no such dump parses.
fn repair(text: &str) -> String {
    text.replace(",\"    offset \"", "")
        .replace(",\" eat \"", ",\"eat\":true")
}

/// Parse one `tc -j filter show dev D DIR` (all chains).
pub(crate) fn parse_filters(text: &str, cmd: &str) -> Result<Block, TcError> {
    if text.trim().is_empty() {
        return Ok(Block::default());
    }
    let raw: Vec<RawFilter> = serde_json::from_str(&repair(text)).map_err(|e| json_err(cmd, e))?;
    // (chain, pref) → (protocol, kind, option objects) in dump order.
    let mut groups: BTreeMap<(u32, u32), (String, String, Vec<Pairs>)> = BTreeMap::new();
    for f in raw {
        let (Some(pref), Some(kind)) = (f.pref, f.kind) else {
            continue;
        };
        let chain = f.chain.unwrap_or(0);
        let g = groups.entry((chain, pref)).or_insert_with(|| {
            (
                f.protocol.clone().unwrap_or_else(|| "all".into()),
                kind.clone(),
                Vec::new(),
            )
        });
        if let Some(o) = f.options {
            g.2.push(o);
        }
    }
    let mut block = Block::default();
    for ((chain, pref), (protocol, kind, opts)) in groups {
        let filter = format!("chain {chain} pref {pref} {kind}");
        let ferr = |message: String| TcError::Filter {
            cmd: cmd.to_string(),
            filter: filter.clone(),
            message,
        };
        let body = match kind.as_str() {
            "u32" => TpBody::U32(parse_u32(&opts).map_err(ferr)?),
            "bpf" => TpBody::Bpf(
                opts.iter()
                    .map(parse_bpf)
                    .collect::<Result<_, _>>()
                    .map_err(ferr)?,
            ),
            _ => TpBody::Other {
                handles: opts
                    .iter()
                    .filter_map(|o| o.str("handle").or_else(|| o.str("fh")))
                    .collect(),
            },
        };
        block.chains.entry(chain).or_default().push(Tp {
            chain,
            pref,
            protocol,
            kind,
            body,
            ambiguous: None,
        });
    }
    mark_shared_u32(&mut block);
    Ok(block)
}

/// u32 hash tables belong to the whole block, and the kernel lists every table of the same
/// prio under each u32 filter of that prio (u32_walk): with one pref in two chains the dump
/// cannot say which table is whose.
fn mark_shared_u32(block: &mut Block) {
    let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for tp in block.chains.values().flatten() {
        if tp.kind == "u32" {
            seen.entry(tp.pref).or_default().push(tp.chain);
        }
    }
    for tp in block.chains.values_mut().flatten() {
        if let Some(chains) = seen.get(&tp.pref).filter(|c| c.len() > 1) {
            tp.ambiguous = Some(format!(
                "u32 filters with pref {} exist in chains {:?}; the kernel shares their hash \
                 tables and `tc filter show` lists each table under all of them, so which \
                 keys belong to which chain cannot be told from the dump",
                tp.pref, chains
            ));
        }
    }
}

fn hex_u32(v: &Value, what: &str) -> Result<u32, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what} is not a string"))?;
    u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| format!("bad {what} {s:?}"))
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("{what} is not an integer"))
}

fn parse_u32(opts: &[Pairs]) -> Result<U32Tp, String> {
    let mut tp = U32Tp::default();
    for o in opts {
        let fh = o.str("fh").unwrap_or_default();
        if let Some(div) = o.get("ht_divisor") {
            let id = fh.trim_end_matches(':').to_string();
            tp.tables
                .insert(id, u32::try_from(int(div, "ht_divisor")?).unwrap_or(0));
            continue;
        }
        tp.knodes.push(parse_knode(o, fh)?);
    }
    // The root table is the one the kernel made for this filter (ids 800..fff are generated,
    // tc(8) `handle 1:` tables are below) and that no key links to.
    let linked: Vec<&str> = tp.knodes.iter().filter_map(|k| k.link.as_deref()).collect();
    let roots: Vec<&String> = tp
        .tables
        .keys()
        .filter(|id| !linked.contains(&id.as_str()))
        .filter(|id| u32::from_str_radix(id, 16).is_ok_and(|n| n >= 0x800))
        .collect();
    if roots.len() == 1 {
        tp.root = Some(roots[0].clone());
    }
    Ok(tp)
}

fn parse_knode(o: &Pairs, fh: String) -> Result<Knode, String> {
    let mut k = Knode {
        fh,
        ..Default::default()
    };
    let mut offset = U32Offset::default();
    let (mut has_off, mut var) = (false, (0i64, 0u16, 0u32, false));
    for (key, v) in &o.0 {
        match key.as_str() {
            "fh" | "order" | "bkt" | "not_in_hw" | "in_hw" | "skip_hw" | "rule_hit" | "success" => {
            }
            "key_ht" => k.ht = v.as_str().unwrap_or_default().to_string(),
            "flowid" => k.flowid = v.as_str().map(String::from),
            "link" => k.link = v.as_str().map(|s| s.trim_end_matches(':').to_string()),
            "match" => k.keys.push(parse_key(v)?),
            "offset_mask" => {
                var.1 = u16::try_from(hex_u32(v, "offset_mask")?).map_err(|e| e.to_string())?;
                var.3 = true;
            }
            "offset_shift" => var.2 = u32::try_from(int(v, "offset_shift")?).unwrap_or(0),
            "offset_off" => var.0 = int(v, "offset_off")?,
            "plus" => {
                offset.plus = int(v, "plus")?;
                has_off = true;
            }
            "eat" => k.eat = true,
            "hash_mask" | "hash_off" => k.hash = true,
            "input_dev" => k.input_dev = v.as_str().map(String::from),
            "actions" => {
                let list = v.as_array().ok_or("actions is not an array")?;
                k.actions = list.iter().map(parse_action).collect();
            }
            other => k.unmodelled.push(format!("{other} {v}")),
        }
    }
    if var.3 {
        offset.var = Some((var.0, var.1, var.2));
        has_off = true;
    }
    // `offset` with neither field set (plus 0, no `at`) is not visible in the JSON at all.
    if has_off {
        k.offset = Some(offset);
    }
    Ok(k)
}

fn parse_key(v: &Value) -> Result<U32Key, String> {
    let get = |f: &str| v.get(f).ok_or_else(|| format!("match without {f}"));
    Ok(U32Key {
        value: hex_u32(get("value")?, "match value")?,
        mask: hex_u32(get("mask")?, "match mask")?,
        off: int(get("off")?, "match off")?,
        nexthdr: get("offmask")?.as_str().is_some_and(|s| !s.is_empty()),
    })
}

fn control(v: Option<&Value>) -> Control {
    let Some(c) = v else {
        return Control::Pipe;
    };
    match c.get("type").and_then(Value::as_str).unwrap_or("") {
        "continue" => Control::Continue,
        "pass" | "ok" => Control::Pass,
        "drop" | "shot" => Control::Drop,
        "reclassify" => Control::Reclassify,
        "pipe" => Control::Pipe,
        "stolen" => Control::Stolen,
        "trap" => Control::Trap,
        "goto" => match c.get("chain").and_then(Value::as_u64) {
            Some(n) => Control::Goto(u32::try_from(n).unwrap_or(u32::MAX)),
            None => Control::Other("goto".into()),
        },
        other => Control::Other(other.to_string()),
    }
}

fn control_name(c: &Control) -> String {
    match c {
        Control::Continue => "continue".into(),
        Control::Pass => "pass".into(),
        Control::Drop => "drop".into(),
        Control::Reclassify => "reclassify".into(),
        Control::Pipe => "pipe".into(),
        Control::Stolen => "stolen".into(),
        Control::Trap => "trap".into(),
        Control::Goto(n) => format!("goto chain {n}"),
        Control::Other(s) => s.clone(),
    }
}

fn parse_action(v: &Value) -> Action {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let control = control(v.get("control_action"));
    let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let act = match kind.as_str() {
        "gact" => ActKind::Gact {
            random: v.get("random_type").is_some(),
        },
        "mirred" => ActKind::Mirred {
            redirect: s("mirred_action") == "redirect",
            to_dev: s("to_dev"),
        },
        _ => ActKind::Opaque,
    };
    let text = match &act {
        ActKind::Mirred { redirect, to_dev } => format!(
            "mirred ({} {} to device {}) {}",
            s("direction"),
            if *redirect { "redirect" } else { "mirror" },
            to_dev,
            control_name(&control)
        ),
        _ => format!("{kind} {}", control_name(&control)),
    };
    Action {
        kind,
        act,
        control,
        text,
    }
}

fn parse_bpf(o: &Pairs) -> Result<BpfNode, String> {
    let actions = match o.get("actions") {
        Some(v) => v
            .as_array()
            .ok_or("actions is not an array")?
            .iter()
            .map(parse_action)
            .collect(),
        None => Vec::new(),
    };
    let prog = o.get("prog");
    let prog_name = prog.and_then(|p| p.get("name")).and_then(Value::as_str);
    let mut name = match (prog_name, o.str("bpf_name")) {
        (Some(p), Some(b)) => format!("{p} ({b})"),
        (Some(p), None) => p.to_string(),
        (None, Some(b)) => b,
        (None, None) => "?".into(),
    };
    if let Some(id) = prog.and_then(|p| p.get("id")).and_then(Value::as_u64) {
        name = format!("{name} id {id}");
    }
    Ok(BpfNode {
        handle: o.str("handle").unwrap_or_default(),
        name,
        direct_action: o.get("direct-action").is_some(),
        flowid: o.str("flowid"),
        actions,
    })
}
