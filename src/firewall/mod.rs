//! The normalized firewall model every backend is parsed into, and the pure parsers that build it.
//!
//! Owns: [`Ruleset`] (all tables of every backend), [`Table`], [`Chain`] (with hook, priority,
//! policy for base chains), [`Rule`] (matches, side effects, a verdict and a [`RuleRef`] back to
//! the source text), [`Match`] and [`Verdict`], and named sets ([`SetDef`]) from nft or ipset.
//!
//! Must not: run commands or read files. Parsers are `&str -> model`; readers live in `collect/`.
//!
//! Design rules the parsers follow:
//! - A match or target the model does not know becomes [`Match::Unknown`] / [`Verdict::Unknown`]
//!   carrying its original text, never "matches nothing" and never "matches everything". The
//!   analysis turns it into a `conditional` verdict naming it.
//! - Negation is a flag on the match (`negate`), applied by the analysis after evaluation, so an
//!   unknown negated match stays unknown.
//! - iptables builtin chains get the hook/priority the kernel registers them with
//!   (see [`iptables_base`]); nft base chains carry what `nft -j` says.

pub mod addr;
pub mod ipset;
pub mod iptables_save;
pub mod nft_json;
pub mod nft_setelem;
pub mod nft_text;

pub use addr::{AddrRange, AddrSet};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a table came from. All backends present are evaluated together: the kernel runs all of
/// them (ARCHITECTURE.md, "iptables-nft and iptables-legacy can both be loaded at once").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Native nftables tables (`nft -j list ruleset`), minus those owned by iptables-nft.
    Nft,
    /// iptables/ip6tables with the nf_tables backend (`iptables-nft-save`).
    IptablesNft,
    /// iptables/ip6tables with the legacy x_tables backend (`iptables-legacy-save`).
    IptablesLegacy,
    /// Not a rule: a kernel setting that decides (e.g. `net.ipv4.ip_forward = 0`,
    /// `net.ipv4.conf.all.rp_filter = 1`).
    Kernel,
    /// A route or a policy-routing rule (`ip route` / `ip rule`): `table` is the routing table
    /// (or `rules`), `text` the entry as `ip` prints it.
    Route,
    /// A tc filter on a clsact/ingress qdisc: `table` is the device, `chain` the direction.
    Tc,
    /// An XDP program attached to an interface: `table` is the device.
    Xdp,
    /// The socket layer: no socket takes the SYN, or its accept queue is full.
    Socket,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::Kernel => "kernel",
            Backend::Route => "route",
            Backend::Tc => "tc",
            Backend::Xdp => "xdp",
            Backend::Socket => "socket",
        })
    }
}

/// The address family of a table. `Inet` (nft only) sees both IPv4 and IPv6 packets;
/// `Netdev` ingress chains see every packet arriving on their device before prerouting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TableFamily {
    Ip,
    Ip6,
    Inet,
    Netdev,
    Bridge,
    Arp,
}

impl TableFamily {
    pub fn from_nft(s: &str) -> Option<Self> {
        Some(match s {
            "ip" => TableFamily::Ip,
            "ip6" => TableFamily::Ip6,
            "inet" => TableFamily::Inet,
            "netdev" => TableFamily::Netdev,
            "bridge" => TableFamily::Bridge,
            "arp" => TableFamily::Arp,
            _ => return None,
        })
    }

    /// Does a routed IP packet of `family` traverse chains of this table family?
    pub fn sees(self, family: Family) -> bool {
        matches!(
            (self, family),
            (TableFamily::Ip, Family::V4)
                | (TableFamily::Ip6, Family::V6)
                | (TableFamily::Inet, _)
                | (TableFamily::Netdev, _)
        )
    }
}

impl fmt::Display for TableFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Inet => "inet",
            TableFamily::Netdev => "netdev",
            TableFamily::Bridge => "bridge",
            TableFamily::Arp => "arp",
        })
    }
}

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// Netfilter hooks: those of an incoming packet (ingress → prerouting → input/forward) and those
/// of the locally generated answer (output → postrouting → netdev egress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Ingress,
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    /// nft netdev `egress` (Linux 5.16+): packets leaving a device, after postrouting and
    /// before tc egress (nf_hook_egress in __dev_queue_xmit).
    Egress,
}

impl Hook {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "ingress" => Hook::Ingress,
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            "egress" => Hook::Egress,
            _ => return None,
        })
    }
}

/// nft chain type; iptables tables map onto these (`nat` → Nat, `mangle` OUTPUT → Route, rest Filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

/// What a base chain does with a packet that falls off its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    #[serde(rename = "type")]
    pub chain_type: ChainType,
    pub policy: Policy,
    /// For netdev ingress chains: the device(s) they are attached to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `Some` for base chains (iptables builtin chains, nft chains with a hook).
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub backend: Backend,
    pub family: TableFamily,
    pub name: String,
    pub chains: Vec<Chain>,
    /// nft named sets/maps of this table. ipset sets live in [`Ruleset::ipsets`].
    #[serde(default)]
    pub sets: Vec<SetDef>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
    pub fn set(&self, name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// Everything the kernel applies: all backends, all families, plus the ipset sets they reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub tables: Vec<Table>,
    #[serde(default)]
    pub ipsets: Vec<SetDef>,
}

impl Ruleset {
    pub fn ipset(&self, name: &str) -> Option<&SetDef> {
        self.ipsets.iter().find(|s| s.name == name)
    }
    pub fn extend(&mut self, other: Ruleset) {
        self.tables.extend(other.tables);
        self.ipsets.extend(other.ipsets);
    }
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }
}

/// Points from a model rule back to what the admin wrote, so findings can quote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub backend: Backend,
    pub family: TableFamily,
    pub table: String,
    pub chain: String,
    /// 1-based position in the chain (what `iptables -L --line-numbers` shows); 0 for a policy.
    pub position: usize,
    /// nft rule handle, when known.
    pub handle: Option<u64>,
    /// The rule as the admin would write it: the `-A` line, or nft's own text rendering.
    pub text: String,
    /// Which packet it decided: the incoming SYN (`in`) or the host's answer to it (`reply`:
    /// the SYN-ACK, or the RST / ICMP error of a refusal).
    #[serde(default)]
    pub direction: Direction,
}

/// Which way a packet of the audited connection travels.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Cloudflare's SYN arriving at this host.
    #[default]
    In,
    /// This host's answer leaving toward Cloudflare.
    Reply,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    /// Non-terminal statements executed when all matches hold (mark set, notrack, log, ...).
    #[serde(default)]
    pub effects: Vec<Effect>,
    pub verdict: Verdict,
    pub source: RuleRef,
}

/// Which side of the packet a field refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Src,
    Dst,
}

/// A field of the packet (or its metadata) usable as a dimension of a set lookup or map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    SrcAddr,
    DstAddr,
    SrcPort,
    DstPort,
    /// Layer-4 protocol number.
    L4Proto,
    /// Input interface name.
    Iifname,
    /// Output interface name.
    Oifname,
    /// Connection tracking state (as a bitmask of [`CtState`] bits).
    CtState,
    /// Packet mark.
    Mark,
}

/// Connection tracking states, as bits (iptables `--ctstate`, nft `ct state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CtStates(pub u8);

impl CtStates {
    pub const INVALID: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    pub const NEW: u8 = 8;
    pub const UNTRACKED: u8 = 16;
    /// conntrack `--ctstate SNAT/DNAT` are status bits, not states; kept here to stay exact.
    pub const SNAT: u8 = 32;
    pub const DNAT: u8 = 64;

    /// Parse one state name (case-insensitive), as iptables and nft print them.
    pub fn bit(name: &str) -> Option<u8> {
        Some(match name.to_ascii_lowercase().as_str() {
            "invalid" => Self::INVALID,
            "established" => Self::ESTABLISHED,
            "related" => Self::RELATED,
            "new" => Self::NEW,
            "untracked" => Self::UNTRACKED,
            "snat" => Self::SNAT,
            "dnat" => Self::DNAT,
            _ => return None,
        })
    }
}

/// An interface name pattern: iptables `eth+` / nft `"eth*"` are prefix wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfPattern {
    pub name: String,
    pub prefix: bool,
}

impl IfPattern {
    /// Parse iptables syntax (`eth+`).
    pub fn iptables(s: &str) -> Self {
        match s.strip_suffix('+') {
            Some(p) => IfPattern {
                name: p.to_string(),
                prefix: true,
            },
            None => IfPattern {
                name: s.to_string(),
                prefix: false,
            },
        }
    }
    /// Parse nft syntax (`"eth*"`; `\*` is a literal star).
    pub fn nft(s: &str) -> Self {
        if let Some(p) = s.strip_suffix('*')
            && !p.ends_with('\\')
        {
            return IfPattern {
                name: p.to_string(),
                prefix: true,
            };
        }
        IfPattern {
            name: s.replace("\\*", "*"),
            prefix: false,
        }
    }
    pub fn matches(&self, ifname: &str) -> bool {
        if self.prefix {
            ifname.starts_with(&self.name)
        } else {
            ifname == self.name
        }
    }
}

/// Value of one dimension of a set element or map key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    /// Addresses (a prefix or range, already normalized to a range).
    Addr(AddrRange),
    /// Ports, protocol numbers, marks, ct states bits: an inclusive integer range.
    Int(u64, u64),
    Iface(IfPattern),
    /// ipset `port` dimension: protocol and port range (`tcp:80-90`; tcp when no protocol given).
    ProtoPort {
        proto: u8,
        lo: u16,
        hi: u16,
    },
    /// Something the model could not interpret (kept as text): lookups hitting it are unknown.
    Unknown(String),
}

/// One element of a set or map: one value per dimension, plus what a map maps it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetElem {
    pub key: Vec<KeyValue>,
    /// ipset `nomatch`: an entry that makes the lookup fail for addresses it covers, even if
    /// a wider entry contains them (ipset(8), hash:net "nomatch").
    #[serde(default)]
    pub nomatch: bool,
    /// For verdict maps: the verdict this element selects.
    #[serde(default)]
    pub verdict: Option<Verdict>,
}

/// What a set's elements are. `dims` says which packet field each key dimension is compared
/// against when the set is used with its natural fields (ipset `src,dst` flags or nft selectors
/// bind the actual fields at the lookup site; these are only the types).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// ipset with a type name like `hash:net,port`.
    Ipset { set_type: String },
    /// nft named set.
    NftSet,
    /// nft verdict map (`type ... : verdict`).
    NftVmap,
    /// nft data map (not a verdict map): lookups are treated as unknown.
    NftMap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDef {
    pub name: String,
    pub kind: SetKind,
    /// Address family of address dimensions, if known.
    pub family: Option<Family>,
    pub elements: Vec<SetElem>,
    /// Set is updated by the data path (nft `dynamic`, meters, ipset with timeout, fail2ban/
    /// crowdsec style ban lists): its content can change between reading and a packet.
    #[serde(default)]
    pub dynamic: bool,
    /// Elements the parser could not interpret, kept verbatim for messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unparsed: Vec<String>,
}

/// A set referenced by a rule: anonymous (inline) or named (resolved at evaluation time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetRef {
    /// nft named set in the rule's own table.
    Named(String),
    /// ipset, by name (global to the network namespace).
    Ipset(String),
    /// Inline elements (`{ 80, 443 }`).
    Anonymous(Vec<SetElem>),
}

/// The rate-limit family, for messages and fix hints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `limit`, `hashlimit`, `connlimit`, `recent`, `meter`, `ct count`, `quota`, ...
    pub kind: String,
    /// Human description, e.g. `25/minute burst 100`.
    pub desc: String,
    /// nft `limit rate over`, iptables `--hashlimit-above` / `connlimit-above` / recent
    /// `--hitcount`: the match is *true* once the rate is exceeded. Otherwise (plain `limit`)
    /// it is true while under the rate.
    pub over: bool,
}

/// One condition of a rule. Each variant is either decided exactly for the analysed packet, or
/// explicitly undecidable (rate limits, unknowns) — see `analysis::eval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "match")]
pub enum Match {
    /// `-s/-d`, `ip saddr`, `iprange`: the address lies in `set`.
    Addr {
        dir: Dir,
        set: AddrSet,
        negate: bool,
    },
    /// `-i/-o`, `meta iifname/oifname`.
    Iface {
        dir: Dir,
        any_of: Vec<IfPattern>,
        negate: bool,
    },
    /// `-p`, `meta l4proto`, `ip protocol`, `ip6 nexthdr`.
    Proto { protos: Vec<u8>, negate: bool },
    /// `--sport/--dport`, multiport, `tcp dport`: inclusive ranges.
    Port {
        dir: Dir,
        ranges: Vec<(u16, u16)>,
        negate: bool,
    },
    /// multiport `--ports`: the source *or* the destination port is in `ranges`.
    PortEither {
        ranges: Vec<(u16, u16)>,
        negate: bool,
    },
    /// `--tcp-flags MASK COMP` / `--syn`; nft `tcp flags & mask == comp`.
    TcpFlags { mask: u8, comp: u8, negate: bool },
    /// `-m state/conntrack --ctstate`, `ct state`.
    CtState { states: u8, negate: bool },
    /// conntrack `--ctorigsrc/--ctorigdst`: an address of the connection's original direction —
    /// the packet as it arrived, before DNAT/REDIRECT rewrote it (iptables-extensions(8),
    /// conntrack). Without a conntrack entry (before priority -200, or NOTRACK) the whole
    /// conntrack match is false whatever its `!` (xt_conntrack: `ct == NULL` → no match).
    CtOrigAddr {
        dir: Dir,
        set: AddrSet,
        negate: bool,
    },
    /// conntrack `--ctorigsrcport/--ctorigdstport`: original-direction ports, as above.
    CtOrigPort {
        dir: Dir,
        ranges: Vec<(u16, u16)>,
        negate: bool,
    },
    /// `-m conntrack --ctstatus`/ `ct status`: DNAT/SNAT/CONFIRMED...; new SYN has none but
    /// DNAT after nat prerouting.
    CtStatus { names: Vec<String>, negate: bool },
    /// `-m set --match-set NAME src,dst`, `ip saddr @set`, `ip saddr . tcp dport @set`.
    ///
    /// For nft sets `fields` are the packet fields of the key, in order. For ipsets the
    /// iptables rule only gives a direction per dimension (`src,dst`): the parser stores
    /// `SrcAddr` for `src` and `DstAddr` for `dst`, and the analysis maps each dimension to the
    /// field the set type names (`hash:net,port` + `src,dst` → source address, destination port).
    Set {
        set: SetRef,
        fields: Vec<Field>,
        negate: bool,
    },
    /// `-m addrtype --src-type/--dst-type`, `fib daddr type local`.
    AddrType {
        dir: Dir,
        types: Vec<String>,
        negate: bool,
        /// `--limit-iface-in`: only addresses of the input interface count as LOCAL.
        limit_iface_in: bool,
    },
    /// `-m rpfilter [--loose] [--invert]`, nft `fib saddr [. iif] oif exists|missing`: a route
    /// back to the source exists (via the input interface when `strict`). Decided from the
    /// host's routes (connected subnets and default routes); policy routing is not modelled.
    ReversePath { strict: bool, negate: bool },
    /// `-m mark --mark V/M`, `meta mark and M == V`.
    Mark { value: u32, mask: u32, negate: bool },
    /// `-m connmark --mark`, `ct mark`: new connections start at 0.
    ConnMark { value: u32, mask: u32, negate: bool },
    /// `-m length`, `meta length`: packet length range.
    Length { min: u32, max: u32, negate: bool },
    /// nft `meta nfproto ipv4|ipv6` (in inet tables) or an `ip`/`ip6` payload implying a family.
    NfProto { family: Family, negate: bool },
    /// `-m icmp/icmp6`, `icmp type`: only relevant for ICMP packets; a TCP packet never matches.
    Icmp { desc: String, negate: bool },
    /// Matches that are only true under a rate: see [`RateLimit`].
    Rate(RateLimit),
    /// `-m recent --set` / nft `add @set` in match position, `-m comment`, `counter`: always
    /// true for our packet (side effects only).
    Always { what: String },
    /// Never true for the analysed packet (a new unicast TCP connection, first fragment):
    /// iptables `-f`, `-m pkttype --pkt-type broadcast|multicast`, `-m recent ! --set`.
    /// Exact, so rules that can only hit other traffic raise no "conditional" finding.
    Never { what: String },
    /// Matches that depend on something the host state cannot tell: MAC of the upstream router,
    /// `-m string`, `-m time`, `owner` (output only), `physdev`, `socket`, `rpfilter`, ...
    /// The analysis forks on it, naming `condition`.
    Undecidable { condition: String, negate: bool },
    /// A match the model does not know. Never "matches nothing", never "matches everything".
    Unknown { text: String, negate: bool },
}

/// How a REJECT answers. All of them make Cloudflare see a refused connection (521).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    TcpReset,
    /// Any ICMP/ICMPv6 error, named as in the source (`icmp-port-unreachable`, `admin-prohibited`).
    Icmp(String),
}

/// nft verdict map on packet fields: the element matching the packet's key picks the verdict;
/// no element matching means "continue".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictMap {
    pub fields: Vec<Field>,
    pub map: SetRef,
}

/// The final word of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// No verdict: LOG, counter, MARK, ... — the packet goes on to the next rule.
    Continue,
    Accept,
    Drop,
    Reject {
        with: RejectKind,
    },
    Return,
    Jump {
        chain: String,
    },
    Goto {
        chain: String,
    },
    /// NFQUEUE / QUEUE: userspace decides.
    Queue {
        desc: String,
    },
    /// DNAT / nft `dnat to`: rewrite destination (address and/or port), ends the nat chain.
    Dnat {
        addr: Option<std::net::IpAddr>,
        port: Option<u16>,
    },
    /// REDIRECT / nft `redirect to :port`: to the host itself, optionally another port.
    Redirect {
        port: Option<u16>,
    },
    /// SNAT / MASQUERADE / others ending a nat chain without changing what we analyse.
    NatOther {
        desc: String,
    },
    /// Verdict map: the verdict depends on a key built from packet fields.
    Map(VerdictMap),
    /// A target the model does not know (kept as text): the analysis reports it as conditional.
    Unknown {
        text: String,
    },
}

/// Side effects of a rule (non-terminal statements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// MARK --set-xmark / nft `meta mark set`: mark = (mark & !mask) ^ value.
    SetMark { value: u32, mask: u32 },
    /// CONNMARK --set-xmark / `ct mark set`.
    SetConnMark { value: u32, mask: u32 },
    /// CONNMARK --restore-mark: packet mark from the connection mark.
    RestoreMark,
    /// NOTRACK / CT --notrack / `notrack`: conntrack skips the packet (state UNTRACKED).
    Notrack,
    /// LOG, NFLOG, counter, TRACE, `add @set`, comments — no effect on the verdict.
    Other { what: String },
}

/// Kernel defaults for iptables builtin chains: the hook and priority each table registers
/// (include/uapi/linux/netfilter_ipv4.h `enum nf_ip_hook_priorities`: RAW -300, MANGLE -150,
/// NAT_DST -100, FILTER 0, SECURITY 50, NAT_SRC 100). iptables-nft 1.8.9 registers the security
/// chains at 150 instead (`nft list ruleset`: `type filter hook input priority 150`); the model
/// keeps 50 for both backends, which only reorders security against nat INPUT (100).
pub fn iptables_base(table: &str, chain: &str) -> Option<(Hook, i32, ChainType)> {
    let hook = Hook::from_name(chain)?;
    let (prio, ty) = match (table, hook) {
        ("raw", Hook::Prerouting | Hook::Output) => (-300, ChainType::Filter),
        ("mangle", Hook::Output) => (-150, ChainType::Route),
        ("mangle", _) => (-150, ChainType::Filter),
        ("nat", Hook::Prerouting | Hook::Output) => (-100, ChainType::Nat),
        ("nat", Hook::Input | Hook::Postrouting) => (100, ChainType::Nat),
        ("filter", Hook::Input | Hook::Forward | Hook::Output) => (0, ChainType::Filter),
        ("security", Hook::Input | Hook::Forward | Hook::Output) => (50, ChainType::Filter),
        _ => return None,
    };
    Some((hook, prio, ty))
}

/// Errors of the pure parsers: always say what and where (line, table, chain).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{source_name} line {line}: {message}")]
    Line {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Whole {
        source_name: String,
        message: String,
    },
}
