//! tc (clsact / ingress qdisc filters) and XDP attachments: the pure model of what runs on a
//! packet before netfilter (ingress) and after it (egress), and the dumps it is built from.
//!
//! Owns: [`NetdevDumps`] (the raw `ip -j -d link show`, `tc -j qdisc show` and
//! `tc -j filter show dev D ingress|egress` text, stored verbatim in a snapshot), [`parse`]
//! (dumps → [`Netdev`]) and [`Netdev::decide`] (one packet, one device, one direction →
//! [`TcVerdict`]). Must not: run commands or read files (`collect::tc` does), or decide what an
//! XDP program does (it only exposes [`XdpProg`]; the evaluator treats one as conditional).
//!
//! Facts this model relies on, each checked against this machine's kernel (6.18, iproute2 6.1)
//! in a private namespace, see the tests and the report of the branch that added it:
//! - tc(8): filters of a qdisc run by ascending `pref`, chain 0 first; `goto chain N` continues
//!   in chain N. A filter only sees packets whose link-layer protocol equals its `protocol`
//!   (`all` sees every one): an `ipv6` filter never sees an IPv4 packet.
//! - Return codes (tc-actions(8) "CONTROL"): `continue` tries the next filter; `pass`/`ok` and
//!   `pipe` as the last action end classification and the packet goes on; `drop`/`shot` drops;
//!   `stolen`/`trap` consume the packet; `reclassify` restarts the chain, so the same filter
//!   matches again and the kernel drops after its reclassify loop limit (observed: the SYN was
//!   dropped). A matching filter with a classid and no action ends classification (pass).
//! - tc-mirred(8): `redirect` sends the packet out of another device (stolen; dropped when that
//!   device is down), so it is lost for the connection either way; `mirror` sends a copy and the
//!   original continues with the control action (`pipe` by default).
//! - tc-u32(8): a key is a 32-bit word `value/mask at off`; `at nexthdr+N` is relative to the
//!   offset a *linking* key computed (`link H: offset at 0 mask 0f00 shift 6`). In a filter
//!   without such a link that offset is 0, so `match tcp dst 443` in a flat filter reads the
//!   IPv4 header's first word, not the port (verified: it did not match a SYN to that port).
//!   `match ip dport` is a fixed `at 20` (our IPv4 packets carry no options, IHL 5).
//! - ip-link(8): `xdpgeneric`/`xdpdrv`/`xdpoffload`; `ip -j -d link` prints
//!   `"xdp":{"mode":N,"prog":{..},"attached":[{"mode":N,"prog":{"id","name","tag"}}]}` with
//!   N = 1 native (driver), 2 generic (skb), 3 offload (hardware), 4 several at once.
//!
//! iproute2 6.1 prints invalid JSON for a u32 key with `offset` or `eat` (a bare
//! `"    offset "` / `" eat "` string inside the object) and repeats the `match` key once per
//! key; the parser repairs the first and keeps every repeated key in order.

mod decide;
mod parse;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

pub use parse::parse;

/// The raw dumps, stored verbatim in a snapshot so a saved host can be re-analysed anywhere.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct NetdevDumps {
    /// `ip -j -d link show`
    #[serde(default)]
    pub links: Option<String>,
    /// `tc -j qdisc show`
    #[serde(default)]
    pub qdiscs: Option<String>,
    /// One per device with a clsact or ingress qdisc and direction.
    #[serde(default)]
    pub filters: Vec<TcDump>,
}

/// `tc -j filter show dev DEV ingress|egress`, verbatim.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct TcDump {
    #[serde(default)]
    pub dev: String,
    /// `"ingress"` or `"egress"`.
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub json: String,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TcError {
    #[error("`{cmd}`: output is not the expected JSON: {message}")]
    Json { cmd: String, message: String },
    #[error("`{cmd}`: filter {filter}: {message}")]
    Filter {
        cmd: String,
        filter: String,
        message: String,
    },
    #[error("filters dumped for direction {direction:?} of {dev}: expected ingress or egress")]
    Direction { dev: String, direction: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TcDir {
    /// Packets arriving on the device (the SYN).
    Ingress,
    /// Packets leaving by the device (the SYN-ACK, RST, ICMP error).
    Egress,
}

impl TcDir {
    pub fn as_str(self) -> &'static str {
        match self {
            TcDir::Ingress => "ingress",
            TcDir::Egress => "egress",
        }
    }
}

/// One packet as tc sees it. Addresses are integers as `firewall::addr::addr_to_int` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcPacket {
    pub family: crate::firewall::Family,
    pub src: Option<u128>,
    pub dst: Option<u128>,
    /// 6 tcp, 1 icmp, 58 icmpv6.
    pub proto: u8,
    /// `None` = an ephemeral client port, any of 1024-65535.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
}

/// Which filter decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcRef {
    pub dev: String,
    pub direction: String,
    pub pref: u32,
    /// u32 `fh` (`800::800`), bpf `handle` (`0x1`).
    pub handle: String,
    /// `u32`, `bpf`, …
    pub kind: String,
    /// The filter roughly as `tc filter show` prints it, on one line.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcVerdict {
    /// No filter stops the packet.
    Pass,
    /// Certainly dropped (or sent elsewhere) by `by`; `why` says how.
    Drop { by: TcRef, why: String },
    /// Depends on something this model cannot know (a BPF program, a rate, an unmodelled
    /// header field); `desc` names it and says what happens either way where known.
    Conditional { desc: String, by: TcRef },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XdpMode {
    Native,
    Generic,
    Offload,
    /// A mode number this model does not know.
    Other(u64),
}

/// One XDP program attached to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpProg {
    pub mode: XdpMode,
    pub id: u64,
    pub name: Option<String>,
    pub tag: Option<String>,
}

/// Every device's XDP programs and tc filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netdev {
    pub(crate) xdp: BTreeMap<String, Vec<XdpProg>>,
    /// (dev, direction) → chain → filters by pref.
    pub(crate) blocks: BTreeMap<(String, TcDir), Block>,
}

/// The filters of one device and direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Block {
    pub chains: BTreeMap<u32, Vec<Tp>>,
}

/// One filter (tcf_proto): one pref of one chain, with all its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tp {
    pub chain: u32,
    pub pref: u32,
    pub protocol: String,
    pub kind: String,
    pub body: TpBody,
    /// Set when the dump cannot tell which nodes belong to this filter.
    pub ambiguous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TpBody {
    U32(U32Tp),
    Bpf(Vec<BpfNode>),
    /// A classifier this model does not evaluate.
    Other {
        handles: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct U32Tp {
    /// ht id (hex, `800`) → divisor.
    pub tables: BTreeMap<String, u32>,
    /// In dump order, which is the kernel's list order.
    pub knodes: Vec<Knode>,
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Knode {
    pub fh: String,
    pub ht: String,
    pub keys: Vec<U32Key>,
    pub flowid: Option<String>,
    pub link: Option<String>,
    pub offset: Option<U32Offset>,
    pub eat: bool,
    pub hash: bool,
    pub input_dev: Option<String>,
    /// Options this model does not evaluate (fwmark, police, skip_sw, …).
    pub unmodelled: Vec<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U32Key {
    pub value: u32,
    pub mask: u32,
    pub off: i64,
    pub nexthdr: bool,
}

/// `offset [plus P] [at OFF mask M shift S]` of a linking key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct U32Offset {
    pub plus: i64,
    /// (offoff, mask, shift) when the offset is read from the packet.
    pub var: Option<(i64, u16, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BpfNode {
    pub handle: String,
    pub name: String,
    pub direct_action: bool,
    pub flowid: Option<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Continue,
    Pass,
    Drop,
    Reclassify,
    Pipe,
    Stolen,
    Trap,
    Goto(u32),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActKind {
    Gact {
        random: bool,
    },
    Mirred {
        redirect: bool,
        to_dev: String,
    },
    /// police, bpf, or anything else: its outcome is not known here.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    pub kind: String,
    pub act: ActKind,
    pub control: Control,
    pub text: String,
}

impl Netdev {
    /// The XDP programs attached to `dev` (empty when none or the device is unknown).
    pub fn xdp(&self, dev: &str) -> Vec<XdpProg> {
        self.xdp.get(dev).cloned().unwrap_or_default()
    }

    /// True when `dev` has at least one tc filter in `dir`.
    pub fn has_filters(&self, dev: &str, dir: TcDir) -> bool {
        self.blocks
            .get(&(dev.to_string(), dir))
            .is_some_and(|b| b.chains.values().any(|c| !c.is_empty()))
    }

    /// What tc on `dev` in `dir` does to `pkt`.
    pub fn decide(&self, dev: &str, dir: TcDir, pkt: &TcPacket) -> TcVerdict {
        match self.blocks.get(&(dev.to_string(), dir)) {
            None => TcVerdict::Pass,
            Some(b) => decide::decide_block(b, dev, dir, pkt),
        }
    }

    /// Every address prefix a u32 key draws, so the evaluator can split provider ranges there.
    pub fn cuts(&self) -> Vec<crate::firewall::addr::AddrRange> {
        let mut out: Vec<_> = self
            .blocks
            .values()
            .flat_map(|b| b.chains.values().flatten())
            .flat_map(decide::tp_cuts)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
