//! Running one packet through one device's tc filters, the way `tcf_classify` and
//! `u32_classify` do (net/sched/cls_api.c, cls_u32.c); the facts are listed in the parent
//! module. Where something is not known (a BPF program, a rate, a header field the packet class
//! does not fix) both outcomes are followed: when they agree that is the verdict, otherwise it
//! is [`TcVerdict::Conditional`] naming what it depends on.
//!
//! Must not: read anything; every input is the parsed [`Block`] and the [`TcPacket`].

use super::*;
use crate::firewall::Family;
use crate::firewall::addr::AddrRange;

/// The kernel's bound on reclassify / goto restarts before it drops (cls_api.c
/// `max_reclassify_loop`); the exact number does not change the verdict of a deterministic
/// loop, only that it ends in a drop.
const MAX_RECLASSIFY: u32 = 16;
/// u32 link depth (TC_U32_MAXDEPTH).
const MAX_DEPTH: usize = 8;
/// Undecidable points followed per decision before giving up.
const MAX_FORKS: u32 = 256;

/// How one filter ends for the packet.
#[derive(Debug, Clone)]
enum Flow {
    /// No match (or `continue`): the next filter runs.
    Next,
    Pass,
    Drop {
        by: TcRef,
        why: String,
    },
    Goto {
        chain: u32,
    },
    Reclassify {
        by: TcRef,
    },
    /// `desc` decides between `yes` and `no`.
    Fork {
        desc: String,
        by: TcRef,
        yes: Box<Flow>,
        no: Box<Flow>,
    },
    /// Nothing is known of what happens.
    Opaque {
        desc: String,
        by: TcRef,
    },
}

/// What a list of actions returns.
enum ActOut {
    Flow(Flow),
    /// TC_ACT_UNSPEC: u32 tries its next key node, other classifiers the next node.
    Continue,
}

struct Ctx<'a> {
    block: &'a Block,
    dev: &'a str,
    dir: TcDir,
    pkt: &'a TcPacket,
    forks: u32,
}

pub(super) fn decide_block(block: &Block, dev: &str, dir: TcDir, pkt: &TcPacket) -> TcVerdict {
    let mut ctx = Ctx {
        block,
        dev,
        dir,
        pkt,
        forks: 0,
    };
    ctx.run_chain(0, 0, 0)
}

fn applies(protocol: &str, family: Family) -> bool {
    match protocol {
        "all" => true,
        "ip" | "ipv4" | "0x0800" | "0x800" => family == Family::V4,
        "ipv6" | "0x86dd" => family == Family::V6,
        // 802.1Q, 802.1ad, arp, …: an untagged IP packet's skb->protocol is never these.
        _ => false,
    }
}

/// One byte of the packet as far as the packet class fixes it.
enum Byte {
    Known(u8),
    Unknown(String),
    /// A byte of the ephemeral source port (0 = high byte, 1 = low byte).
    EphemeralPort(u8),
}

impl Ctx<'_> {
    fn run_chain(&mut self, chain: u32, from: usize, loops: u32) -> TcVerdict {
        let block = self.block;
        let Some(tps) = block.chains.get(&chain) else {
            // `goto chain N` into a chain without filters: no result, the packet goes on.
            return TcVerdict::Pass;
        };
        for (idx, tp) in tps.iter().enumerate().skip(from) {
            if !applies(&tp.protocol, self.pkt.family) {
                continue;
            }
            let flow = match &tp.ambiguous {
                Some(desc) => Flow::Opaque {
                    desc: desc.clone(),
                    by: self.tp_ref(tp, "", ""),
                },
                None => self.classify(tp),
            };
            if matches!(flow, Flow::Next) {
                continue;
            }
            return self.resolve(flow, chain, idx, loops);
        }
        TcVerdict::Pass
    }

    fn resolve(&mut self, flow: Flow, chain: u32, idx: usize, loops: u32) -> TcVerdict {
        match flow {
            Flow::Next => self.run_chain(chain, idx + 1, loops),
            Flow::Pass => TcVerdict::Pass,
            Flow::Drop { by, why } => TcVerdict::Drop { by, why },
            Flow::Goto { chain: c } if loops < MAX_RECLASSIFY => self.run_chain(c, 0, loops + 1),
            Flow::Reclassify { .. } if loops < MAX_RECLASSIFY => self.run_chain(0, 0, loops + 1),
            Flow::Goto { .. } => TcVerdict::Conditional {
                desc: "goto chain loops; the kernel drops after its reclassify limit".into(),
                by: self.tp_ref_none(),
            },
            Flow::Reclassify { by } => TcVerdict::Drop {
                by,
                why: "action reclassify restarts classification, the same filter matches \
                      again, and the kernel drops the packet at its reclassify loop limit"
                    .into(),
            },
            Flow::Opaque { desc, by } => TcVerdict::Conditional { desc, by },
            Flow::Fork { desc, by, yes, no } => {
                self.forks += 1;
                if self.forks > MAX_FORKS {
                    return TcVerdict::Conditional {
                        desc: format!("{desc} (and too many other undecidable filters)"),
                        by,
                    };
                }
                let a = self.resolve(*yes, chain, idx, loops);
                let b = self.resolve(*no, chain, idx, loops);
                merge(a, b, desc, by)
            }
        }
    }

    fn classify(&mut self, tp: &Tp) -> Flow {
        match &tp.body {
            TpBody::U32(u) => match &u.root {
                Some(root) => self.walk(tp, u, root, 0, 0, 0, &mut Vec::new()),
                None => Flow::Opaque {
                    desc: format!(
                        "u32 filter pref {}: cannot tell its root hash table from the dump",
                        tp.pref
                    ),
                    by: self.tp_ref(tp, "", ""),
                },
            },
            TpBody::Bpf(nodes) => self.bpf(tp, nodes, 0),
            TpBody::Other { handles } => Flow::Opaque {
                desc: format!("tc classifier {} is not modelled", tp.kind),
                by: self.tp_ref(tp, handles.first().map_or("", |s| s.as_str()), ""),
            },
        }
    }

    fn bpf(&mut self, tp: &Tp, nodes: &[BpfNode], i: usize) -> Flow {
        let Some(n) = nodes.get(i) else {
            return Flow::Next;
        };
        let text = format!(
            "bpf {}{}{}",
            n.name,
            if n.direct_action {
                " direct-action"
            } else {
                ""
            },
            n.flowid
                .as_ref()
                .map(|f| format!(" flowid {f}"))
                .unwrap_or_default()
        );
        let by = self.tp_ref(tp, &n.handle, &text);
        if n.direct_action {
            return Flow::Opaque {
                desc: format!(
                    "BPF program {} (direct-action) decides the packet's fate",
                    n.name
                ),
                by,
            };
        }
        let yes = match self.actions(&n.actions, &by) {
            ActOut::Flow(f) => f,
            ActOut::Continue => self.bpf(tp, nodes, i + 1),
        };
        Flow::Fork {
            desc: format!("whether BPF program {} matches", n.name),
            by,
            yes: Box::new(yes),
            no: Box::new(self.bpf(tp, nodes, i + 1)),
        }
    }

    /// u32_classify from key node `i` of table `ht`; `base` is the network header offset
    /// (moved by `eat`), `off2` the `nexthdr+` offset a link computed.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        tp: &Tp,
        u: &U32Tp,
        ht: &str,
        i: usize,
        base: i64,
        off2: i64,
        stack: &mut Vec<(String, usize, i64)>,
    ) -> Flow {
        let nodes: Vec<&Knode> = u.knodes.iter().filter(|k| k.ht == ht).collect();
        let Some(n) = nodes.get(i).copied() else {
            // End of a linked table: back to the linking node's terminal check (POP).
            return match stack.pop() {
                Some((pht, pi, pbase)) => self.terminal(tp, u, &pht, pi, pbase, off2, stack),
                None => Flow::Next,
            };
        };
        match self.knode_match(n, base, off2) {
            Some(true) => self.matched(tp, u, ht, i, base, off2, stack),
            Some(false) => self.walk(tp, u, ht, i + 1, base, off2, stack),
            None => {
                let desc = self.unknown_desc(n, base, off2);
                let mut s2 = stack.clone();
                let yes = self.matched(tp, u, ht, i, base, off2, stack);
                let no = self.walk(tp, u, ht, i + 1, base, off2, &mut s2);
                Flow::Fork {
                    desc,
                    by: self.knode_ref(tp, n),
                    yes: Box::new(yes),
                    no: Box::new(no),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn matched(
        &mut self,
        tp: &Tp,
        u: &U32Tp,
        ht: &str,
        i: usize,
        base: i64,
        off2: i64,
        stack: &mut Vec<(String, usize, i64)>,
    ) -> Flow {
        let nodes: Vec<&Knode> = u.knodes.iter().filter(|k| k.ht == ht).collect();
        let n = nodes[i];
        let Some(link) = &n.link else {
            return self.terminal(tp, u, ht, i, base, off2, stack);
        };
        let by = self.knode_ref(tp, n);
        let divisor = u.tables.get(link).copied().unwrap_or(0);
        if n.hash || divisor > 1 || stack.len() + 1 >= MAX_DEPTH {
            return Flow::Opaque {
                desc: format!("u32 hashing into table {link} (divisor {divisor}) is not modelled"),
                by,
            };
        }
        let mut off2 = off2;
        if let Some(o) = n.offset {
            let mut v = o.plus + 3;
            if let Some((at, mask, shift)) = o.var {
                // Only the bytes the mask selects need to be fixed (IHL: `mask 0f00` at 0).
                let [mhi, mlo] = mask.to_be_bytes();
                let known = |b: Option<Byte>, m: u8| match b {
                    _ if m == 0 => Some(0),
                    Some(Byte::Known(x)) => Some(x & m),
                    _ => None,
                };
                let (Some(hi), Some(lo)) = (
                    known(self.byte(base + at), mhi),
                    known(self.byte(base + at + 1), mlo),
                ) else {
                    return Flow::Opaque {
                        desc: format!("u32 offset read at {at} from a header field not fixed"),
                        by,
                    };
                };
                v += i64::from(u16::from_be_bytes([hi, lo]) >> shift);
            }
            off2 = v & !3;
        }
        let mut newbase = base;
        if n.eat {
            newbase += off2;
            off2 = 0;
        }
        stack.push((ht.to_string(), i, base));
        self.walk(tp, u, link, 0, newbase, off2, stack)
    }

    #[allow(clippy::too_many_arguments)]
    fn terminal(
        &mut self,
        tp: &Tp,
        u: &U32Tp,
        ht: &str,
        i: usize,
        base: i64,
        off2: i64,
        stack: &mut Vec<(String, usize, i64)>,
    ) -> Flow {
        let nodes: Vec<&Knode> = u.knodes.iter().filter(|k| k.ht == ht).collect();
        let n = nodes[i];
        // TC_U32_TERMINAL is set by tc when a classid or an action is given.
        let terminal = n.flowid.is_some() || !n.actions.is_empty();
        if !terminal {
            return self.walk(tp, u, ht, i + 1, base, off2, stack);
        }
        let by = self.knode_ref(tp, n);
        match self.actions(&n.actions, &by) {
            ActOut::Flow(f) => f,
            ActOut::Continue => self.walk(tp, u, ht, i + 1, base, off2, stack),
        }
    }

    /// tcf_action_exec: actions in order while they return `pipe`.
    fn actions(&self, actions: &[Action], by: &TcRef) -> ActOut {
        for a in actions {
            let ctl = match &a.act {
                ActKind::Mirred {
                    redirect: true,
                    to_dev,
                } => {
                    return ActOut::Flow(Flow::Drop {
                        by: by.clone(),
                        why: format!(
                            "tc-mirred redirects the packet out of {to_dev} (dropped if {to_dev} \
                             is down): it never reaches this connection's path"
                        ),
                    });
                }
                ActKind::Mirred {
                    redirect: false, ..
                }
                | ActKind::Gact { random: false } => &a.control,
                ActKind::Gact { random: true } => {
                    return ActOut::Flow(Flow::Opaque {
                        desc: format!("action {} has a random branch", a.text),
                        by: by.clone(),
                    });
                }
                ActKind::Opaque => {
                    return ActOut::Flow(Flow::Opaque {
                        desc: format!(
                            "action {} ({}): its outcome (a rate, a program) is not known here",
                            a.kind, a.text
                        ),
                        by: by.clone(),
                    });
                }
            };
            let flow = match ctl {
                Control::Pipe => continue,
                Control::Continue => return ActOut::Continue,
                Control::Pass => Flow::Pass,
                Control::Drop => Flow::Drop {
                    by: by.clone(),
                    why: format!("action {} drops it", a.text),
                },
                Control::Stolen | Control::Trap => Flow::Drop {
                    by: by.clone(),
                    why: format!("action {} consumes it", a.text),
                },
                Control::Reclassify => Flow::Reclassify { by: by.clone() },
                Control::Goto(c) => Flow::Goto { chain: *c },
                Control::Other(s) => Flow::Opaque {
                    desc: format!("action control {s} is not modelled"),
                    by: by.clone(),
                },
            };
            return ActOut::Flow(flow);
        }
        // No action (classid only) → TC_ACT_OK; all `pipe` → TC_ACT_PIPE; both let it pass.
        ActOut::Flow(Flow::Pass)
    }

    /// `Some(true)` all keys match, `Some(false)` one certainly does not, `None` unknown.
    fn knode_match(&self, n: &Knode, base: i64, off2: i64) -> Option<bool> {
        let mut unknown = !n.unmodelled.is_empty();
        for k in &n.keys {
            match self.key_match(k, base, off2) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => unknown = true,
            }
        }
        if let Some(d) = &n.input_dev {
            match self.dir {
                TcDir::Ingress if d != self.dev => return Some(false),
                TcDir::Ingress => {}
                TcDir::Egress => unknown = true,
            }
        }
        if unknown { None } else { Some(true) }
    }

    fn key_bytes(&self, k: &U32Key, base: i64, off2: i64) -> (i64, [Byte; 4]) {
        let at = base + k.off + if k.nexthdr { off2 } else { 0 };
        let b = |j: i64| {
            self.byte(at + j)
                .unwrap_or_else(|| Byte::Unknown(format!("byte {} of the packet", at + j)))
        };
        (at, [b(0), b(1), b(2), b(3)])
    }

    fn key_match(&self, k: &U32Key, base: i64, off2: i64) -> Option<bool> {
        let (_, bytes) = self.key_bytes(k, base, off2);
        let (mut unknown, mut port_mask, mut port_val) = (false, 0u16, 0u16);
        for (j, b) in bytes.iter().enumerate() {
            let shift = 24 - 8 * j as u32;
            let (m, v) = ((k.mask >> shift) as u8, (k.value >> shift) as u8);
            if m == 0 {
                continue;
            }
            match b {
                Byte::Known(x) if (x ^ v) & m != 0 => return Some(false),
                Byte::Known(_) => {}
                Byte::Unknown(_) => unknown = true,
                Byte::EphemeralPort(p) => {
                    let s = if *p == 0 { 8 } else { 0 };
                    port_mask |= u16::from(m) << s;
                    port_val |= u16::from(v & m) << s;
                }
            }
        }
        if port_mask != 0 {
            let hits = (1024u16..=u16::MAX)
                .filter(|p| p & port_mask == port_val)
                .count();
            if hits == 0 {
                return Some(false);
            }
            if hits < usize::from(u16::MAX - 1023) {
                unknown = true;
            }
        }
        if unknown { None } else { Some(true) }
    }

    fn unknown_desc(&self, n: &Knode, base: i64, off2: i64) -> String {
        let mut what: Vec<String> = n.unmodelled.clone();
        for k in &n.keys {
            if self.key_match(k, base, off2).is_none() {
                let (at, bytes) = self.key_bytes(k, base, off2);
                let mut names: Vec<String> = Vec::new();
                for (j, b) in bytes.iter().enumerate() {
                    if (k.mask >> (24 - 8 * j as u32)) as u8 == 0 {
                        continue;
                    }
                    let name = match b {
                        Byte::Unknown(s) => s.clone(),
                        Byte::EphemeralPort(_) => "the client's ephemeral source port".into(),
                        Byte::Known(_) => continue,
                    };
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                what.push(format!(
                    "u32 key {:08x}/{:08x} at {} reads {}",
                    k.value,
                    k.mask,
                    at,
                    names.join(", ")
                ));
            }
        }
        if let (Some(d), TcDir::Egress) = (&n.input_dev, self.dir) {
            what.push(format!("input dev {d} on egress"));
        }
        format!("whether {} matches", what.join("; "))
    }

    /// Byte `i` of the packet from the network header, as the packet class fixes it.
    fn byte(&self, i: i64) -> Option<Byte> {
        let p = self.pkt;
        let u = |s: &str| Some(Byte::Unknown(s.to_string()));
        let addr = |a: Option<u128>, width: i64, j: i64, name: &str| match a {
            Some(v) => Some(Byte::Known((v >> (8 * (width - 1 - j))) as u8)),
            None => u(name),
        };
        let l4 = match p.family {
            Family::V4 => match i {
                0 => return Some(Byte::Known(0x45)),
                1 => return u("IPv4 TOS/DSCP"),
                2..=3 => return u("IPv4 total length"),
                4..=5 => return u("IPv4 identification"),
                6..=7 => return u("IPv4 flags/fragment offset"),
                8 => return u("IPv4 TTL"),
                9 => return Some(Byte::Known(p.proto)),
                10..=11 => return u("IPv4 header checksum"),
                12..=15 => return addr(p.src, 4, i - 12, "IPv4 source address"),
                16..=19 => return addr(p.dst, 4, i - 16, "IPv4 destination address"),
                _ => 20,
            },
            Family::V6 => match i {
                // Version 6; traffic class and flow label are not fixed.
                0..=3 => return u("IPv6 traffic class/flow label"),
                4..=5 => return u("IPv6 payload length"),
                6 => return Some(Byte::Known(p.proto)),
                7 => return u("IPv6 hop limit"),
                8..=23 => return addr(p.src, 16, i - 8, "IPv6 source address"),
                24..=39 => return addr(p.dst, 16, i - 24, "IPv6 destination address"),
                _ => 40,
            },
        };
        if i < 0 {
            return u("bytes before the network header");
        }
        self.l4_byte(i - l4)
    }

    fn l4_byte(&self, j: i64) -> Option<Byte> {
        let p = self.pkt;
        let u = |s: &str| Some(Byte::Unknown(s.to_string()));
        if p.proto != 6 {
            return u(if p.proto == 1 || p.proto == 58 {
                "the ICMP header"
            } else {
                "the transport header"
            });
        }
        let port = |v: Option<u16>, k: i64, name: &str| match v {
            Some(v) => Some(Byte::Known(v.to_be_bytes()[k as usize])),
            None if name == "sport" => Some(Byte::EphemeralPort(k as u8)),
            None => u("TCP destination port"),
        };
        match j {
            0..=1 => port(p.sport, j, "sport"),
            2..=3 => port(p.dport, j - 2, "dport"),
            4..=7 => u("TCP sequence number"),
            8..=11 => u("TCP acknowledgement number"),
            12 => u("TCP data offset"),
            13 => match p.tcp_flags {
                Some(f) => Some(Byte::Known(f)),
                None => u("TCP flags"),
            },
            14..=15 => u("TCP window"),
            _ => u("TCP checksum/options/payload"),
        }
    }

    fn tp_ref(&self, tp: &Tp, handle: &str, detail: &str) -> TcRef {
        TcRef {
            dev: self.dev.to_string(),
            direction: self.dir.as_str().to_string(),
            pref: tp.pref,
            handle: handle.to_string(),
            kind: tp.kind.clone(),
            text: format!(
                "filter protocol {} pref {} {} chain {}{}{}",
                tp.protocol,
                tp.pref,
                tp.kind,
                tp.chain,
                if handle.is_empty() { "" } else { " " },
                if detail.is_empty() {
                    handle.to_string()
                } else {
                    format!("{handle} {detail}")
                }
            ),
        }
    }

    fn tp_ref_none(&self) -> TcRef {
        TcRef {
            dev: self.dev.to_string(),
            direction: self.dir.as_str().to_string(),
            pref: 0,
            handle: String::new(),
            kind: String::new(),
            text: String::new(),
        }
    }

    fn knode_ref(&self, tp: &Tp, n: &Knode) -> TcRef {
        let mut d: Vec<String> = Vec::new();
        if let Some(l) = &n.link {
            d.push(format!("link {l}:"));
        }
        if let Some(f) = &n.flowid {
            d.push(format!("flowid {f}"));
        }
        for k in &n.keys {
            let at = if k.nexthdr { "nexthdr+" } else { "" };
            d.push(format!(
                "match {:08x}/{:08x} at {at}{}",
                k.value, k.mask, k.off
            ));
        }
        for (i, a) in n.actions.iter().enumerate() {
            d.push(format!("action order {}: {}", i + 1, a.text));
        }
        self.tp_ref(tp, &n.fh, &d.join(" "))
    }
}

fn short(v: &TcVerdict) -> String {
    match v {
        TcVerdict::Pass => "it passes".into(),
        TcVerdict::Drop { by, why } => format!("dropped by pref {} ({why})", by.pref),
        TcVerdict::Conditional { desc, .. } => format!("it depends on {desc}"),
    }
}

fn merge(a: TcVerdict, b: TcVerdict, desc: String, by: TcRef) -> TcVerdict {
    if a == b {
        return a;
    }
    TcVerdict::Conditional {
        desc: format!("{desc}: if so, {}; otherwise {}", short(&a), short(&b)),
        by,
    }
}

/// Address prefixes drawn by the u32 keys of one filter.
pub(super) fn tp_cuts(tp: &Tp) -> Vec<AddrRange> {
    let TpBody::U32(u) = &tp.body else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for n in &u.knodes {
        let keys: Vec<&U32Key> = n.keys.iter().filter(|k| !k.nexthdr).collect();
        let fields: [(Family, i64, u32); 4] = [
            (Family::V4, 12, 1),
            (Family::V4, 16, 1),
            (Family::V6, 8, 4),
            (Family::V6, 24, 4),
        ];
        for (family, start, words) in fields {
            if !applies(&tp.protocol, family) {
                continue;
            }
            let (mut val, mut mask) = (0u128, 0u128);
            for w in 0..words {
                let shift = 32 * (words - 1 - w);
                for k in keys.iter().filter(|k| k.off == start + 4 * i64::from(w)) {
                    mask |= u128::from(k.mask) << shift;
                    val |= u128::from(k.value & k.mask) << shift;
                }
            }
            let bits = 32 * words;
            let full = if bits == 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            // A prefix: the mask is leading ones within the field.
            let contiguous = mask != 0 && ((!mask & full) & ((!mask & full) + 1)) == 0;
            if contiguous {
                out.push(AddrRange {
                    family,
                    start: val,
                    end: val | (!mask & full),
                });
            }
        }
    }
    out
}
