//! The Nagios / monitoring-plugins output of `check --nagios`.
//!
//! Owns: the plugin's status line — `STATUS - summary | perfdata`, one line of at most
//! [`MAX_LINE`] characters — and the long output (one finding per line) after it, per the
//! Monitoring Plugins Development Guidelines ("Plugin Output", "Performance data"):
//! `'label'=value[UOM];[warn];[crit];[min];[max]`, labels without `=` or `'`, space separated.
//! The summary never holds `|` (it would start the perfdata) nor a newline.
//!
//! Perfdata (a contract like the metrics; add, never rename):
//! ```text
//! dropped=N;;0            provider ranges (as published) any part of which is dropped on an
//!                         audited port (critical above 0)
//! rejected=N;;0           … rejected
//! rate_limited=N;0        … rate-limited (warning above 0)
//! conditional=N;0         … decided by something the host cannot tell
//! no_listener=N;;0        audited ports with a listener finding (nothing, loopback only,
//!                         another address, queue full)
//! ranges_age_days=N;MAX   age of the range list, warning above the configured maximum
//! cert_days_left=N;W:;0:  days until the first of the checked TLS certificates expires
//!                         (warning below tls.expiry_warning_days, critical once expired);
//!                         only when TLS was checked
//! ```
//! Must not: do I/O.

use crate::analysis::{Report, Status, VerdictKind};
use crate::findings::Code;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The longest status line written (the guidelines' limit for what Nagios 3 shows is 4 KiB,
/// but dashboards, SMS and mail subjects cut far earlier).
pub const MAX_LINE: usize = 200;

/// Perfdata label: value and thresholds.
struct Perf {
    label: &'static str,
    value: i64,
    /// Nagios threshold ranges (`0`: above 0; `14:`: below 14).
    warn: Option<String>,
    crit: Option<String>,
}

/// The plugin output: the status line, then (unless `short`) one line per open finding.
pub fn report(r: &Report, max_age_days: i64, expiry_warning_days: i64, short: bool) -> String {
    let perf = perfdata(r, max_age_days, expiry_warning_days);
    let status = status_word(r.status);
    let perf_s: Vec<String> = perf.iter().map(perf_text).collect();
    let perf_s = perf_s.join(" ");
    // Room left for the summary once the status word and the perfdata are in.
    let room = MAX_LINE.saturating_sub(status.len() + 3 + 3 + perf_s.len());
    let summary = summary(r, room);
    let mut o = format!("{status} - {} | {perf_s}\n", clip(&summary, room));
    if !short {
        for f in &r.findings {
            let _ = writeln!(
                o,
                "{} {}: {}",
                f.severity.as_str(),
                f.code.id(),
                one_line(&f.message)
            );
        }
    }
    o
}

/// The one line for a run that could not audit (exit 3).
pub fn failure(message: &str) -> String {
    format!("UNKNOWN - {}\n", clip(&one_line(message), MAX_LINE - 10))
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::Warning => "WARNING",
        Status::Critical => "CRITICAL",
        Status::Unknown => "UNKNOWN",
    }
}

fn summary(r: &Report, room: usize) -> String {
    let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
    match r.findings.first() {
        None => format!(
            "every Cloudflare range reaches {}{}",
            ports.join(","),
            if r.accepted.is_empty() {
                String::new()
            } else {
                format!(" ({} finding(s) accepted)", r.accepted.len())
            }
        ),
        Some(f) => {
            let head = compact(f).unwrap_or_else(|| f.message.clone());
            let more = match r.findings.len() - 1 {
                0 => String::new(),
                n => format!(" (+{n} more)"),
            };
            format!("{}{more}", clip(&head, room.saturating_sub(more.len())))
        }
    }
}

/// "14 Cloudflare ranges dropped on 80,443 (iptables-nft filter INPUT policy)" for a finding
/// about provider ranges: the count and the culprit fit the line where the CIDR list does not.
fn compact(f: &crate::findings::Finding) -> Option<String> {
    let verb = match f.code {
        Code::RangeDropped => "dropped",
        Code::RangeRejected => "rejected",
        Code::RangeRateLimited => "rate-limited",
        Code::RangeConditional => "conditional",
        _ => return None,
    };
    if f.sources.is_empty() {
        return None;
    }
    let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
    let n = f.sources.len();
    let what = if n == 1 {
        format!("Cloudflare {}", f.sources[0])
    } else {
        format!("{n} Cloudflare ranges")
    };
    let by = f
        .rules
        .first()
        .map(|r| format!(" ({})", crate::analysis::rule_label(r)))
        .unwrap_or_default();
    Some(format!("{what} {verb} on {}{by}", ports.join(",")))
}

/// `s` on one line, without the perfdata separator.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}

/// At most `n` characters, ending in `…` when cut.
fn clip(s: &str, n: usize) -> String {
    let s = one_line(s);
    if s.chars().count() <= n {
        return s;
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn perfdata(r: &Report, max_age_days: i64, expiry_warning_days: i64) -> Vec<Perf> {
    let ranges = r.provider_ranges();
    let count = |v: VerdictKind| -> i64 {
        let n = ranges
            .iter()
            .filter(|range| {
                r.ports
                    .iter()
                    .any(|&p| r.verdicts_within(p, range).contains(&v))
            })
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    };
    let listener_ports: BTreeSet<u16> = r
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.code,
                Code::NoListener
                    | Code::ListenerLoopbackOnly
                    | Code::ListenerWrongAddress
                    | Code::ListenQueueFull
            )
        })
        .flat_map(|f| f.ports.iter().copied())
        .collect();
    let mut p = vec![
        Perf {
            label: "dropped",
            value: count(VerdictKind::Drop),
            warn: None,
            crit: Some("0".into()),
        },
        Perf {
            label: "rejected",
            value: count(VerdictKind::Reject),
            warn: None,
            crit: Some("0".into()),
        },
        Perf {
            label: "rate_limited",
            value: count(VerdictKind::RateLimited),
            warn: Some("0".into()),
            crit: None,
        },
        Perf {
            label: "conditional",
            value: count(VerdictKind::Conditional),
            warn: Some("0".into()),
            crit: None,
        },
        Perf {
            label: "no_listener",
            value: i64::try_from(listener_ports.len()).unwrap_or(i64::MAX),
            warn: None,
            crit: Some("0".into()),
        },
    ];
    if let Some(age) = r.ranges_age_days {
        p.push(Perf {
            label: "ranges_age_days",
            value: age,
            warn: Some(max_age_days.to_string()),
            crit: None,
        });
    }
    // The certificate that expires first among the listeners checked (warning below the
    // configured window, critical once expired).
    if let Some(d) = r
        .tls
        .iter()
        .flatten()
        .filter_map(|t| t.certificate.as_ref().map(|c| c.days_left))
        .min()
    {
        p.push(Perf {
            label: "cert_days_left",
            value: d,
            warn: Some(format!("{expiry_warning_days}:")),
            crit: Some("0:".into()),
        });
    }
    p
}

/// `label=value;warn;crit`, trailing empty fields left out (min and max are optional).
fn perf_text(p: &Perf) -> String {
    let t = |x: &Option<String>| x.clone().unwrap_or_default();
    let s = format!("{}={};{};{}", p.label, p.value, t(&p.warn), t(&p.crit));
    s.trim_end_matches(';').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_one_line_without_a_pipe() {
        assert_eq!(one_line("a\nb | c\r\n"), "a b / c");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert!(failure(&"x".repeat(500)).chars().count() <= MAX_LINE + 1);
    }
}
