//! [`Snapshot`]: everything origin-audit knows about one host, as plain serializable data.
//!
//! Owns: the shape of what `collect/` reads (listeners, interfaces, default routes, the raw
//! firewall dumps exactly as the tools printed them, provider ranges, what could not be read) and
//! the snapshot file format (`origin-audit snapshot` writes it, `--snapshot FILE` reads it).
//! Raw dumps are kept verbatim rather than parsed so a snapshot taken by one version can be
//! re-analysed by a later one, and so `check --snapshot` runs exactly the same parsers as `check`.
//!
//! Must not: read the host or decide anything.

use crate::ranges::ProviderRanges;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const SNAPSHOT_SCHEMA: &str = "origin-audit-snapshot/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: String,
    /// RFC 3339 time the snapshot was taken (UTC).
    pub taken_at: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// `None` when listeners are unknown (offline dumps without a snapshot): listener findings are
    /// then skipped, not reported as "nothing listens".
    pub listeners: Option<Vec<Listener>>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub default_routes: Vec<DefaultRoute>,
    /// `net.ipv6.bindv6only`: whether a `[::]` listener also takes IPv4 connections.
    #[serde(default)]
    pub bindv6only: Option<bool>,
    /// `net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding`: with forwarding off, a packet
    /// DNATed to another host is dropped by the kernel before any FORWARD chain.
    #[serde(default)]
    pub forwarding: Forwarding,
    pub dumps: Dumps,
    /// `ip -j route show table all`, `ip -j rule show` (v4, v6) and the rp_filter sysctls,
    /// verbatim. `None` offline: the answer's route is then assumed (see the report's notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::routing::RoutingDumps>,
    /// `ip -j -d link show`, `tc -j qdisc show` and the tc filters of clsact/ingress qdiscs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev: Option<crate::tc::NetdevDumps>,
    /// `nf_conntrack_count` / `nf_conntrack_max` when conntrack is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackUsage>,
    /// Cumulative listen-queue and conntrack drop counters of the namespace: evidence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<crate::kstat::KernelCounters>,
    pub ranges: ProviderRanges,
    /// What could not be read, and why. Each becomes a `read-failed` finding.
    #[serde(default)]
    pub read_errors: Vec<ReadError>,
    /// TLS handshakes with this host's HTTPS listeners, one per listener address, port and
    /// hostname; `None` when TLS was not checked (no SSL mode configured, or offline dumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<TlsProbe>>,
}

/// One TLS handshake with a listener of this host, as Cloudflare's edge would open it: that
/// hostname as SNI, TLS 1.2 or 1.3. Whatever certificate is presented is captured, unjudged
/// (the analysis judges it), so a snapshot reproduces the TLS findings anywhere.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsProbe {
    pub address: IpAddr,
    pub port: u16,
    pub hostname: String,
    pub outcome: TlsOutcome,
    /// The versions a handshake succeeded with when offered alone (`TLSv1.2`, `TLSv1.3`).
    #[serde(default)]
    pub versions: Vec<String>,
    /// Version and cipher suite of the handshake offering both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<String>,
    /// The certificates the server sent, leaf first, DER as lowercase hex.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The server asked for a client certificate (Authenticated Origin Pulls).
    #[serde(default)]
    pub client_cert: ClientCertAsk,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", content = "detail", rename_all = "kebab-case")]
pub enum TlsOutcome {
    /// The handshake completed.
    Ok,
    /// No TCP connection from this host (refused, or timed out: possibly this host's own
    /// firewall on the loopback path): nothing is known about TLS.
    NoConnection(String),
    /// Connected, then no TLS answer within the time bound.
    Timeout,
    /// The server ended the handshake with this TLS alert (`handshake_failure`, …).
    Alert(String),
    /// The server answered in plain HTTP (its first line).
    PlainHttp(String),
    /// Any other handshake failure.
    Failed(String),
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertAsk {
    #[default]
    No,
    /// A certificate was asked for; the handshake went on without one.
    Requested,
    /// A certificate was asked for, and without one the server ended the connection.
    Required,
}

/// How full the connection tracking table is (/proc/sys/net/netfilter/nf_conntrack_{count,max}).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackUsage {
    pub count: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forwarding {
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
}

/// Raw firewall dumps, verbatim. `None` = not present / not read (see `read_errors`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dumps {
    #[serde(default)]
    pub iptables_nft_save: Option<String>,
    #[serde(default)]
    pub ip6tables_nft_save: Option<String>,
    #[serde(default)]
    pub iptables_legacy_save: Option<String>,
    #[serde(default)]
    pub ip6tables_legacy_save: Option<String>,
    /// `ipset save` (may hold several of them concatenated, from repeated `--ipset-save`).
    #[serde(default)]
    pub ipset_save: Option<String>,
    /// `nft -j list ruleset` (several documents allowed: one per `--nft-json`).
    #[serde(default)]
    pub nft_json: Vec<String>,
    /// `nft list ruleset` (text), read only when ingress chains exist: nft 1.0.x's JSON omits
    /// the devices those chains are attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_text: Option<String>,
    /// Elements of the named nft sets the rules reference, read over netlink
    /// (`NFT_MSG_GETSETELEM`) when `nft_json` is the terse listing (`nft -j -t`): `nft -j`
    /// spends seconds to minutes printing a large set as JSON. Decoded by
    /// [`crate::firewall::nft_setelem`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nft_set_elements: Vec<NftSetElements>,
}

/// The raw `NFT_MSG_NEWSETELEM` replies for one set, as the kernel sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftSetElements {
    /// nft family name (`ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`).
    pub family: String,
    pub table: String,
    pub set: String,
    /// Each reply's payload after its `nfgenmsg` header, hex-encoded.
    pub messages: Vec<String>,
    /// Why the elements could not be read (then `messages` is empty): rules that look packets
    /// up in this set are undecidable, never "no match".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Dumps {
    pub fn is_empty(&self) -> bool {
        self.iptables_nft_save.is_none()
            && self.ip6tables_nft_save.is_none()
            && self.iptables_legacy_save.is_none()
            && self.ip6tables_legacy_save.is_none()
            && self.ipset_save.is_none()
            && self.nft_json.is_empty()
    }
}

/// A listening TCP socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listener {
    pub address: IpAddr,
    pub port: u16,
    pub process: Option<String>,
    pub pid: Option<u32>,
    /// IPV6_V6ONLY on a `[::]` socket, when sock_diag told us; `None` = follow `bindv6only`.
    #[serde(default)]
    pub v6only: Option<bool>,
    /// SO_BINDTODEVICE, when set (sock_diag `INET_DIAG_...` `idiag_if`).
    #[serde(default)]
    pub bound_iface: Option<String>,
    /// Connections waiting in the accept queue now (sock_diag `idiag_rqueue` of a listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u32>,
    /// The listen backlog (`idiag_wqueue` of a listener): the queue is full above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub addrs: Vec<IfAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `global`, `link`, `host` (as `ip -j addr` says).
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DefaultRoute {
    pub family: crate::firewall::Family,
    pub iface: String,
    pub gateway: Option<IpAddr>,
}

/// One thing that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadError {
    /// What we tried to read, e.g. `iptables-legacy (IPv4)`, `listening sockets`.
    pub what: String,
    /// The command or path used, e.g. `iptables-legacy-save`, `/proc/net/tcp`.
    pub source: String,
    /// Why it failed and, where known, the fix ("run as root / needs CAP_NET_ADMIN").
    pub message: String,
    /// True when this leaves the firewall itself unread (status becomes `unknown`).
    pub firewall: bool,
}
