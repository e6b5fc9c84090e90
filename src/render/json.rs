//! The JSON wire format (`--format json`). This is a contract: external tools (configuration
//! management, monitoring) read it. Fields are only ever added, never renamed or removed
//! without bumping `schema`.
//!
//! `check --format json` (schema `origin-audit/1`):
//! ```text
//! {
//!   "schema": "origin-audit/1",
//!   "status": "ok" | "warning" | "critical" | "unknown",
//!   "ranges": { "provider": "cloudflare", "source": "fetched|cache|bundled|file",
//!               "as_of": "<RFC 3339 or YYYY-MM-DD>", "age_days": n|null,
//!               "ipv4": [CIDR…], "ipv6": [CIDR…] },
//!   "listeners": [ { "address": "0.0.0.0", "port": 443, "process": "nginx"|null, "pid": 812|null } ],
//!                                                   // null when unknown (offline dumps)
//!   "reachability": [ { "port": 443, "source": "173.245.48.0/20",
//!                       "verdict": "accept|drop|reject|rate_limited|conditional",
//!                       "cf_error": 521 | 522 | null,
//!                       "rule": null | RULE,
//!                       "conditions": [string…]   // only for rate_limited / conditional
//!                     } ],
//!   "findings": [ { "code": "range-dropped", "severity": "info|warning|critical|unknown",
//!                   "message": string, "ports": [u16…], "sources": [CIDR…],
//!                   "cf_error": 521|522|null, "rules": [RULE…], "fix": string|null } ],
//!   "accepted": [ { "finding": FINDING (as in "findings"), "reason": string,
//!                   "until": "YYYY-MM-DD"|null, "origin": "file:line" } ],
//!                                                   // findings an [[accept]] exception covers:
//!                                                   // shown, not counted in "status"
//!   "target": { "ifaces": [..], "dest_v4": addr|null, "dest_v6": addr|null,
//!               "families": ["ipv4","ipv6"], "notes": [..] },
//!   "ports": [u16…], "rule_count": n,
//!   "tls": [ TLSROW… ] | null,                      // null: TLS not checked ("tls_note" says why)
//!   "tls_note": string | null
//! }
//! TLSROW = { "address": addr, "port": 443, "hostname": "example.com",
//!            "handshake": "ok|no-connection|timeout|alert|plain-http|failed",
//!            "detail": string (the alert name, the HTTP status line, the error; absent when ok),
//!            "versions": ["TLSv1.2","TLSv1.3"] (each completed when offered alone),
//!            "negotiated": "TLSv1.3 TLS13_AES_256_GCM_SHA384" (absent when no handshake),
//!            "certificate": { "subject", "issuer", "san": [..], "not_before", "not_after"
//!                             (RFC 3339), "days_left": n, "not_before_unix", "not_after_unix" }
//!                           (absent when none was presented),
//!            "name_match": bool, "trust": "public|origin-ca|self-signed|untrusted",
//!            "client_cert": "no|requested|required", "codes": [finding code…] }
//! RULE = { "backend": "nft|iptables-nft|iptables-legacy|route|tc|xdp|socket|kernel",
//!          "family": "ip|ip6|inet|netdev|arp|bridge",
//!          "table": string, "chain": string, "position": n (1-based; 0 = chain policy),
//!          "handle": n|null (nft), "text": the rule as written,
//!          "direction": "in" | "reply" }
//! // backend: the netfilter backends name a firewall rule; "route" a route (table = the
//! // routing table, chain = "route") or an `ip rule` (table = "rules", chain = "rule"), text = as `ip` prints
//! // it; "tc" a tc filter (table = device, chain = ingress|egress, position = pref); "xdp" an
//! // XDP program (table = device, chain = "xdp"); "socket" the listening socket layer
//! // (table = "tcp", chain = "listen"); "kernel" a sysctl-driven decision (table = "sysctl",
//! // e.g. text = `net.ipv4.conf.IF.rp_filter = N: …`).
//! // direction: "in" = the rule decided Cloudflare's SYN; "reply" = it decided this host's
//! // answer (the SYN-ACK, or the RST / ICMP error of a refusal) on its way out.
//! ```
//! Reachability rows cover every provider range on every audited port, merged into the fewest
//! CIDRs per (port, verdict, rule, conditions).
//!
//! `explain --format json`: `{ "address", "port", "verdict", "cf_error", "rule", "path": [RULE…],
//! "established", "chains": [string…], "conditions": [..], "outcomes": [..], "lands",
//! "answer": [string…], "in_provider_range" }` — `path` lists every rule that matched on the
//! decisive path, in order, both ways: the SYN's rules (`direction: "in"`), then those that
//! decided this host's answer (`"reply"`); `chains` likewise; `answer` says how the answer
//! (SYN-ACK, RST or ICMP error) leaves, or why it cannot (empty: the SYN never got one).

use crate::analysis::{Explanation, Report};
use serde::Serialize;
use serde_json::{Value, json};

pub const SCHEMA: &str = "origin-audit/1";

/// The `check --format json` document, borrowed from the report: serialised straight to the
/// output as it is produced, never built as a `serde_json::Value` first (a report with 200k
/// reachability rows cost a gigabyte that way). Top-level keys in the order a `Value` printed
/// them (sorted), so the document reads as it did.
#[derive(Serialize)]
pub struct ReportDoc<'a> {
    accepted: &'a [crate::analysis::AcceptedFinding],
    findings: &'a [crate::findings::Finding],
    listeners: Option<Vec<ListenerDoc<'a>>>,
    ports: &'a [u16],
    ranges: RangesDoc<'a>,
    reachability: &'a [crate::analysis::ReachRow],
    rule_count: usize,
    schema: &'static str,
    status: crate::analysis::Status,
    target: &'a crate::analysis::Target,
    tls: &'a Option<Vec<crate::analysis::tls::TlsRow>>,
    tls_note: &'a Option<String>,
}

#[derive(Serialize)]
struct ListenerDoc<'a> {
    address: &'a std::net::IpAddr,
    pid: &'a Option<u32>,
    port: u16,
    process: &'a Option<String>,
}

#[derive(Serialize)]
struct RangesDoc<'a> {
    age_days: Option<i64>,
    as_of: &'a str,
    ipv4: &'a [ipnet::Ipv4Net],
    ipv6: &'a [ipnet::Ipv6Net],
    provider: &'a str,
    source: &'a crate::ranges::RangeSource,
}

pub fn report(r: &Report) -> ReportDoc<'_> {
    ReportDoc {
        accepted: &r.accepted,
        findings: &r.findings,
        listeners: r.listeners.as_ref().map(|ls| {
            ls.iter()
                .map(|l| ListenerDoc {
                    address: &l.address,
                    pid: &l.pid,
                    port: l.port,
                    process: &l.process,
                })
                .collect()
        }),
        ports: &r.ports,
        ranges: RangesDoc {
            age_days: r.ranges_age_days,
            as_of: &r.ranges.as_of,
            ipv4: &r.ranges.ipv4,
            ipv6: &r.ranges.ipv6,
            provider: &r.ranges.provider,
            source: &r.ranges.source,
        },
        reachability: &r.reachability,
        rule_count: r.rule_count,
        schema: SCHEMA,
        status: r.status,
        target: &r.target,
        tls: &r.tls,
        tls_note: &r.tls_note,
    }
}

pub fn explanation(e: &Explanation) -> Value {
    json!({
        "address": e.address,
        "port": e.port,
        "established": e.established,
        "verdict": e.verdict,
        "cf_error": e.cf_error,
        "rule": e.rule,
        "path": e.path,
        "chains": e.chains,
        "conditions": e.conditions,
        "outcomes": e.outcomes,
        "lands": e.lands,
        "answer": e.answer,
        "in_provider_range": e.in_provider_range,
    })
}
