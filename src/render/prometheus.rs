//! The node_exporter textfile-collector format (`check --prometheus-textfile PATH`).
//!
//! Owns: the metric names, labels and HELP texts below — a contract like the JSON format
//! (dashboards and alerts key on them; add, never rename):
//!
//! ```text
//! origin_audit_status                          0 ok, 1 warning, 2 critical, 3 unknown (= exit code)
//! origin_audit_build_info{version}             1; the version of origin-audit that wrote this
//! origin_audit_findings{code,severity}         open findings (accepted ones not counted); every
//!                                              code is written with its default severity, 0
//!                                              when clean (alerts on absent series misfire)
//! origin_audit_accepted_findings{code,severity} findings an [[accept]] exception covers (every
//!                                              code, zeros included, as above)
//! origin_audit_blocked_ranges{port,verdict}    provider ranges (as published) any part of which
//!                                              gets this verdict on this port; verdict is drop,
//!                                              reject, rate_limited or conditional; every
//!                                              audited port × verdict is written, zeros included
//! origin_audit_blocked_addresses_ratio{port,family,verdict}  share (0..1) of the provider's
//!                                              published addresses of that family that get the
//!                                              verdict on the port: a banned /32 weighs what it
//!                                              is, not like a dropped /13; zeros included
//! origin_audit_listener_up{port,family}        1 when a socket accepts the port at the audited
//!                                              address (0.0.0.0/[::] or that address); only when
//!                                              listeners were read (not for offline dumps)
//! origin_audit_ranges_age_seconds              age of the provider range list used
//! origin_audit_fix_pending                     1 while a change `fix --apply --confirm-timeout`
//!                                              made waits for `fix --confirm` (it rolls back
//!                                              otherwise), else 0; written on every report
//! origin_audit_fix_rollback_timestamp_seconds  when that pending change rolls back, Unix time;
//!                                              only while one is pending
//! origin_audit_tls_handshake_ok{address,port,hostname}  1 when the TLS handshake with that
//!                                              listener and SNI completed, else 0 (absent when
//!                                              TLS was not checked)
//! origin_audit_tls_cert_expiry_seconds{address,port,hostname}  seconds until the presented
//!                                              certificate expires (negative: expired)
//! origin_audit_last_run_timestamp_seconds      end of this run, Unix time
//! origin_audit_run_duration_seconds            wall time of this run
//! ```
//! Must not: do I/O (main.rs writes the text atomically: temp file + rename, so the collector
//! never reads half a file).

use crate::analysis::{Report, VerdictKind};
use crate::firewall::Family;
use crate::firewall::addr::AddrRange;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

/// Label value escaping per the exposition format: backslash, double quote, newline.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(o: &mut String, name: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} gauge");
}

/// Timing of the run, measured by the caller.
#[derive(Debug, Clone, Copy)]
pub struct RunTimes {
    /// Unix time (seconds) the run ended.
    pub finished: f64,
    pub duration: f64,
}

/// The metrics for a finished report. `rollback` is the Unix time at which a pending
/// unconfirmed `fix --apply` change rolls back, when one is pending.
pub fn report(
    r: &Report,
    now: time::OffsetDateTime,
    times: RunTimes,
    rollback: Option<u64>,
) -> String {
    let mut o = String::new();
    header(
        &mut o,
        "origin_audit_status",
        "Audit result: 0 ok, 1 warning, 2 critical, 3 unknown (the exit code).",
    );
    let _ = writeln!(o, "origin_audit_status {}", r.status.exit_code());
    header(
        &mut o,
        "origin_audit_build_info",
        "The version of origin-audit that wrote these metrics (always 1).",
    );
    let _ = writeln!(
        o,
        "origin_audit_build_info{{version=\"{}\"}} 1",
        esc(env!("CARGO_PKG_VERSION"))
    );

    header(
        &mut o,
        "origin_audit_findings",
        "Open findings by code and severity (accepted exceptions not counted).",
    );
    let mut counts = zero_counts();
    for f in &r.findings {
        *counts
            .entry((f.code.id(), f.severity.as_str()))
            .or_default() += 1;
    }
    for ((code, s), n) in &counts {
        let _ = writeln!(
            o,
            "origin_audit_findings{{code=\"{}\",severity=\"{s}\"}} {n}",
            esc(code)
        );
    }

    header(
        &mut o,
        "origin_audit_accepted_findings",
        "Findings covered by an [[accept]] exception of the configuration.",
    );
    let mut acc = zero_counts();
    for a in &r.accepted {
        *acc.entry((a.finding.code.id(), a.finding.severity.as_str()))
            .or_default() += 1;
    }
    for ((code, s), n) in &acc {
        let _ = writeln!(
            o,
            "origin_audit_accepted_findings{{code=\"{}\",severity=\"{s}\"}} {n}",
            esc(code)
        );
    }

    header(
        &mut o,
        "origin_audit_blocked_ranges",
        "Cloudflare ranges (as published) any part of which gets this verdict on this port.",
    );
    let ranges = r.provider_ranges();
    for &port in &r.ports {
        for v in [
            VerdictKind::Drop,
            VerdictKind::Reject,
            VerdictKind::RateLimited,
            VerdictKind::Conditional,
        ] {
            let n = ranges
                .iter()
                .filter(|range| r.verdicts_within(port, range).contains(&v))
                .count();
            let _ = writeln!(
                o,
                "origin_audit_blocked_ranges{{port=\"{port}\",verdict=\"{}\"}} {n}",
                v.as_str()
            );
        }
    }

    blocked_ratio(&mut o, r);

    if let Some(listeners) = &r.listeners {
        header(
            &mut o,
            "origin_audit_listener_up",
            "1 when a socket accepts connections on the port at the audited address.",
        );
        for &port in &r.ports {
            for &fam in &r.target.families {
                let dest = r.target.dest(fam);
                let up = listeners.iter().any(|l| {
                    if l.port != port {
                        return false;
                    }
                    if Some(l.address) == dest {
                        return true;
                    }
                    match (l.address, fam) {
                        (IpAddr::V4(a), Family::V4) => a.is_unspecified(),
                        (IpAddr::V6(a), Family::V6) => a.is_unspecified(),
                        // A [::] socket without IPV6_V6ONLY takes IPv4 too (ipv6(7)); Linux's
                        // default net.ipv6.bindv6only is 0.
                        (IpAddr::V6(a), Family::V4) => {
                            a.is_unspecified() && !l.v6only.unwrap_or(false)
                        }
                        _ => false,
                    }
                });
                let _ = writeln!(
                    o,
                    "origin_audit_listener_up{{port=\"{port}\",family=\"{fam}\"}} {}",
                    u8::from(up)
                );
            }
        }
    }

    if let Some(age) = crate::ranges::parse_as_of(&r.ranges.as_of) {
        header(
            &mut o,
            "origin_audit_ranges_age_seconds",
            "Age of the Cloudflare range list used.",
        );
        let _ = writeln!(
            o,
            "origin_audit_ranges_age_seconds {}",
            (now - age).whole_seconds()
        );
    }
    header(
        &mut o,
        "origin_audit_fix_pending",
        "1 while a change of fix --apply --confirm-timeout waits for confirmation (it rolls back otherwise).",
    );
    let _ = writeln!(
        o,
        "origin_audit_fix_pending {}",
        u8::from(rollback.is_some())
    );
    if let Some(at) = rollback {
        header(
            &mut o,
            "origin_audit_fix_rollback_timestamp_seconds",
            "When the pending unconfirmed change rolls back unless confirmed (Unix time).",
        );
        let _ = writeln!(o, "origin_audit_fix_rollback_timestamp_seconds {at}");
    }
    timing(&mut o, times);
    header(
        &mut o,
        "origin_audit_tls_handshake_ok",
        "1 when a TLS handshake with this listener, SNI = hostname, completed (absent: TLS not checked).",
    );
    for t in r.tls.iter().flatten() {
        let _ = writeln!(
            o,
            "origin_audit_tls_handshake_ok{{address=\"{}\",port=\"{}\",hostname=\"{}\"}} {}",
            t.address,
            t.port,
            esc(&t.hostname),
            u8::from(t.handshake == "ok")
        );
    }
    header(
        &mut o,
        "origin_audit_tls_cert_expiry_seconds",
        "Seconds until the certificate this listener presents for the hostname expires (negative: expired).",
    );
    for t in r.tls.iter().flatten() {
        if let Some(c) = &t.certificate {
            let _ = writeln!(
                o,
                "origin_audit_tls_cert_expiry_seconds{{address=\"{}\",port=\"{}\",hostname=\"{}\"}} {}",
                t.address,
                t.port,
                esc(&t.hostname),
                c.not_after_unix - now.unix_timestamp()
            );
        }
    }
    o
}

/// Every finding code at its default severity, counted 0: the series exist on a clean host.
fn zero_counts() -> BTreeMap<(&'static str, &'static str), u64> {
    crate::findings::Code::ALL
        .iter()
        .map(|c| ((c.id(), c.default_severity().as_str()), 0))
        .collect()
}

/// `origin_audit_blocked_addresses_ratio`: the reachability rows partition the provider's
/// ranges per port, so the share is the rows' sizes over the published space of the family.
fn blocked_ratio(o: &mut String, r: &Report) {
    header(
        o,
        "origin_audit_blocked_addresses_ratio",
        "Share of the provider's published addresses of the family that get this verdict on this port.",
    );
    let size = |a: &AddrRange| (a.end - a.start) as f64 + 1.0;
    let mut total: BTreeMap<Family, f64> = BTreeMap::new();
    for a in r.provider_ranges() {
        *total.entry(a.family).or_default() += size(&a);
    }
    let mut share: BTreeMap<(u16, Family, VerdictKind), f64> = BTreeMap::new();
    for row in &r.reachability {
        if let Ok(a) = AddrRange::parse(&row.source) {
            *share.entry((row.port, a.family, row.verdict)).or_default() += size(&a);
        }
    }
    for &port in &r.ports {
        for (&fam, &t) in &total {
            for v in [
                VerdictKind::Drop,
                VerdictKind::Reject,
                VerdictKind::RateLimited,
                VerdictKind::Conditional,
            ] {
                let n = share.get(&(port, fam, v)).copied().unwrap_or(0.0);
                let _ = writeln!(
                    o,
                    "origin_audit_blocked_addresses_ratio{{port=\"{port}\",family=\"{fam}\",verdict=\"{}\"}} {}",
                    v.as_str(),
                    if t > 0.0 { n / t } else { 0.0 }
                );
            }
        }
    }
}

/// The metrics when no report could be made (bad configuration, lock busy...): status 3, so
/// a fleet dashboard sees the host is not audited rather than a stale all clear.
pub fn failure(times: RunTimes) -> String {
    let mut o = String::new();
    header(
        &mut o,
        "origin_audit_status",
        "Audit result: 0 ok, 1 warning, 2 critical, 3 unknown (the exit code).",
    );
    let _ = writeln!(o, "origin_audit_status 3");
    timing(&mut o, times);
    o
}

fn timing(o: &mut String, t: RunTimes) {
    header(
        o,
        "origin_audit_last_run_timestamp_seconds",
        "When the last audit finished (Unix time).",
    );
    let _ = writeln!(
        o,
        "origin_audit_last_run_timestamp_seconds {:.3}",
        t.finished
    );
    header(
        o,
        "origin_audit_run_duration_seconds",
        "How long the last audit took.",
    );
    let _ = writeln!(o, "origin_audit_run_duration_seconds {:.3}", t.duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
