//! The findings catalogue: stable codes, titles, default severities and what each means.
//!
//! Owns: [`Code`] (the kebab-case ids external tools and `[[accept]]` exceptions key on — never
//! rename one without a migration note), [`Severity`], [`Finding`]. The `codes_unique` test keeps
//! the list in review: a renamed or added code shows up there.
//! Must not: decide anything (analysis does) or format for a terminal (render does).

use crate::firewall::RuleRef;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    /// Something that leaves the verdict unknown (the firewall could not be read or parsed).
    Unknown,
}

impl Severity {
    /// The wire name (as in the JSON report and Prometheus labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Unknown => "unknown",
        }
    }
}

macro_rules! codes {
    ($( $variant:ident = $id:literal, $sev:ident, $cf:expr, $title:literal, $doc:literal; )*) => {
        /// Stable finding codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Code { $( #[serde(rename = $id)] $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            /// The stable kebab-case id.
            pub fn id(self) -> &'static str { match self { $( Code::$variant => $id, )* } }
            pub fn title(self) -> &'static str { match self { $( Code::$variant => $title, )* } }
            pub fn default_severity(self) -> Severity { match self { $( Code::$variant => Severity::$sev, )* } }
            /// The Cloudflare error visitors see because of this finding, if any.
            pub fn cf_error(self) -> Option<u16> { match self { $( Code::$variant => $cf, )* } }
            /// Cause and fix, for `--help`-style docs and the README.
            pub fn description(self) -> &'static str { match self { $( Code::$variant => $doc, )* } }
        }
    };
}

codes! {
    RangeDropped = "range-dropped", Critical, Some(522),
        "Cloudflare range dropped",
        "A firewall rule or chain policy silently drops new connections from a Cloudflare range \
         to a web port. Cloudflare waits for a SYN-ACK that never comes and shows 522. Fix: accept \
         the provider's ranges before the dropping rule, in the same chain.";
    RangeRejected = "range-rejected", Critical, Some(521),
        "Cloudflare range rejected",
        "A REJECT rule answers Cloudflare's SYN with a TCP reset or ICMP error: Cloudflare shows \
         521. Fix: accept the provider's ranges before the rejecting rule, in the same chain.";
    RangeRateLimited = "range-rate-limited", Warning, None,
        "Cloudflare range rate-limited",
        "A rate limit (limit, hashlimit, connlimit, recent, meter, ct count) applies to Cloudflare \
         addresses. Cloudflare concentrates many visitors on few addresses, so the limit trips \
         under normal load and visitors get 522 (drop) or 521 (reject). Fix: accept the \
         provider's ranges before the limit.";
    RangeConditional = "range-conditional", Warning, None,
        "Verdict depends on something the host cannot tell",
        "The verdict for a Cloudflare range depends on a condition origin-audit cannot decide \
         from this host (an unknown match, MAC of the upstream router, string/time matches, a \
         userspace queue). Both outcomes are shown; check the named rule.";
    EstablishedBlocked = "established-blocked", Critical, Some(522),
        "Packets of established connections blocked",
        "New connections are let in but later packets of the same connection are not (for \
         example a stateless rule set without an ESTABLISHED accept). Connections stall; \
         Cloudflare shows 522 or 524.";
    NoListener = "no-listener", Critical, Some(521),
        "Nothing listens on a web port",
        "No TCP socket listens on this port for the address Cloudflare connects to: the kernel \
         answers with a reset and Cloudflare shows 521. Fix: start the web server or make it \
         listen on this port.";
    ListenerLoopbackOnly = "listener-loopback-only", Critical, Some(521),
        "Web port listens on loopback only",
        "The web server listens on 127.0.0.1/::1 only: connections from Cloudflare to the public \
         address are refused (521). Fix: listen on 0.0.0.0/[::] or the public address.";
    ListenerWrongAddress = "listener-wrong-address", Critical, Some(521),
        "Web port listens on another address",
        "The web server listens only on an address other than the one Cloudflare's packets \
         arrive at: they are refused (521). Fix: listen on 0.0.0.0/[::] or that address.";
    ListenQueueFull = "listen-queue-full", Critical, Some(522),
        "A web port's accept queue is full",
        "The listening socket holds more connections than its backlog: the application does not \
         accept them. The kernel drops new SYNs (tcp_conn_request, ListenOverflows) and \
         Cloudflare shows 522. Fix: find why the server stopped accepting (overload, hang), \
         raise its backlog and net.core.somaxconn.";
    AsymmetricRoute = "asymmetric-route", Warning, None,
        "Replies leave by another interface",
        "The route back to a Cloudflare range leaves by another interface than the one its SYN \
         arrives on: the SYN-ACK reaches Cloudflare only if that interface leads to the \
         internet too (and its upstream does not filter by source). Fix: remove the more \
         specific route or add a policy rule (ip rule from PUBLIC-ADDRESS lookup TABLE).";
    ConntrackFull = "conntrack-full", Critical, Some(522),
        "Connection tracking table (nearly) full",
        "nf_conntrack_count is at 90 % or more of nf_conntrack_max: when the table is full the \
         kernel drops new connections (\"nf_conntrack: table full, dropping packet\") and \
         Cloudflare shows 522. Fix: raise net.netfilter.nf_conntrack_max, shorten timeouts.";
    FixPending = "fix-pending", Warning, None,
        "A firewall change waits for confirmation",
        "`origin-audit fix --apply --confirm-timeout` changed the firewall and waits for `fix \
         --confirm`: unless confirmed before the deadline shown, the change is rolled back and \
         the audit's verdicts may change with it. Fix: confirm it, or let it roll back.";
    MixedBackends = "mixed-backends", Warning, None,
        "iptables-legacy and nf_tables rules both loaded",
        "Rules are loaded through both the legacy and the nf_tables iptables backends. Both \
         apply to every packet, but each tool shows only its own: easy to miss a drop. Fix: \
         migrate to one backend (update-alternatives --config iptables).";
    RangesStale = "ranges-stale", Warning, None,
        "Provider ranges are old",
        "The Cloudflare range list used is older than 30 days: new ranges may be missing from \
         the audit and from fixes. Fix: let origin-audit fetch (network access to \
         api.cloudflare.com) or pass --ranges-file.";
    RangesFallback = "ranges-fallback", Warning, None,
        "Provider ranges fell back",
        "The fresh list could not be fetched or was refused by validation; the cache or the \
         bundled snapshot was used instead.";
    ReadFailed = "read-failed", Warning, None,
        "Something could not be read",
        "A reader failed (not root, binary missing, tool error or timeout). If it is the \
         firewall, the verdict is unknown (exit 3). Fix: run as root, install the named tool.";
    TlsHandshakeFailed = "tls-handshake-failed", Critical, Some(525),
        "TLS handshake with the origin fails",
        "In Full and Full (strict) mode Cloudflare connects to the origin over TLS, with the \
         zone's hostname as SNI. This listener ends the handshake (an alert such as \
         unrecognized_name or handshake_failure: no certificate for the name, no common version \
         or cipher), or never answers it: Cloudflare shows 525. Fix: configure a certificate for \
         the hostname on this port, TLS 1.2 or 1.3. A refusal that may only mean the server \
         speaks nothing but TLS 1.0/1.1 or RSA/CBC suites (which Cloudflare offers and this \
         check cannot) is a warning without 525, with the openssl command that tells.";
    HttpOnHttpsPort = "http-on-https-port", Critical, Some(525),
        "Plain HTTP on an HTTPS port",
        "The listener answers Cloudflare's TLS ClientHello in plain HTTP (`HTTP/1.1 400`): TLS \
         is not enabled on this port, and Cloudflare in Full or Full (strict) mode shows 525. \
         Fix: enable TLS on the port, or use Flexible mode (HTTP to the origin).";
    TlsCertExpired = "tls-cert-expired", Critical, Some(526),
        "Origin certificate outside its validity window",
        "The certificate the origin presents has expired (or is not valid yet: check the \
         clock). Full (strict) refuses it: 526. Full mode accepts it (a warning here). Fix: \
         renew it (certbot renew, or a Cloudflare Origin CA certificate) and reload.";
    TlsCertNameMismatch = "tls-cert-name-mismatch", Critical, Some(526),
        "Origin certificate does not cover the hostname",
        "No subjectAltName of the certificate matches the zone's hostname (RFC 6125: a \
         wildcard covers exactly one left-most label). Full (strict) refuses it: 526; Full \
         accepts it. Fix: a certificate for the hostname.";
    TlsCertUntrusted = "tls-cert-untrusted", Critical, Some(526),
        "Origin certificate not trusted",
        "The chain reaches neither a publicly trusted root (Mozilla's root program, \
         webpki-roots) nor the Cloudflare Origin CA, or the certificate is self-signed, or an \
         intermediate is missing. Full (strict) refuses it: 526; Full accepts it. Fix: a \
         Cloudflare Origin CA certificate, or a public one with its intermediates.";
    TlsCertExpiring = "tls-cert-expiring", Warning, None,
        "Origin certificate expires soon",
        "The certificate expires within the warning window (tls.expiry_warning_days, 14 by \
         default); after that, Full (strict) shows 526. Fix: renew it.";
    TlsClientCertRequested = "tls-client-cert-requested", Info, None,
        "Origin asks for a client certificate",
        "The listener asks for (or requires) a client certificate: right when the zone uses \
         Authenticated Origin Pulls, where Cloudflare presents its own; every other client is \
         refused.";
    TlsNotChecked = "tls-not-checked", Warning, None,
        "TLS could not be checked",
        "origin-audit could not open a TCP connection from this host to its own HTTPS listener \
         (often this host's firewall on the loopback path), so the certificate Cloudflare \
         would see is unknown. Fix: accept loopback traffic, or check by hand with openssl \
         s_client.";
    DumpUnparsable = "dump-unparsable", Unknown, None,
        "A firewall dump could not be parsed",
        "A ruleset dump could not be parsed, so the rules in it are not known. Nothing is \
         concluded from the other rules alone. The message names the dump and line.";
}

/// One finding, ready for rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub ports: Vec<u16>,
    /// Affected provider ranges, merged into the fewest CIDRs.
    pub sources: Vec<String>,
    pub cf_error: Option<u16>,
    /// The deciding rule(s), quoted.
    pub rules: Vec<RuleRef>,
    /// A one-line fix hint.
    pub fix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Snapshot of the catalogue: a renamed, removed or added code must show up in review.
    #[test]
    fn codes_unique() {
        let ids: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate code id");
        assert_eq!(
            ids.join("\n"),
            "range-dropped\nrange-rejected\nrange-rate-limited\nrange-conditional\n\
             established-blocked\nno-listener\nlistener-loopback-only\nlistener-wrong-address\n\
             listen-queue-full\nasymmetric-route\nconntrack-full\nfix-pending\n\
             mixed-backends\nranges-stale\nranges-fallback\nread-failed\n\
             tls-handshake-failed\nhttp-on-https-port\ntls-cert-expired\n\
             tls-cert-name-mismatch\ntls-cert-untrusted\ntls-cert-expiring\n\
             tls-client-cert-requested\ntls-not-checked\ndump-unparsable"
        );
        for c in Code::ALL {
            let json = serde_json::to_string(c).expect("serialize");
            assert_eq!(json, format!("\"{}\"", c.id()));
            assert!(!c.title().is_empty() && c.description().len() > 40);
        }
    }
}
