//! Human report: a one-line verdict, the findings most severe first (each quoting its rule and
//! the command that fixes it), listeners, then a compact matrix of ranges × ports.
//! Colour only when asked to (the caller decides: on a TTY, or `--color always`).

use crate::analysis::{Explanation, Report, Status, VerdictKind, rule_label, source_name};
use crate::findings::Severity;
use std::fmt::Write;

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn sev(&self, s: Severity) -> String {
        match s {
            Severity::Critical => self.wrap("1;31", "CRITICAL"),
            Severity::Warning => self.wrap("1;33", "WARNING "),
            Severity::Unknown => self.wrap("1;35", "UNKNOWN "),
            Severity::Info => self.wrap("2", "info    "),
        }
    }
    fn verdict(&self, v: VerdictKind, width: usize) -> String {
        let (s, c) = match v {
            VerdictKind::Accept => ("ok", "32"),
            VerdictKind::Drop => ("DROP", "1;31"),
            VerdictKind::Reject => ("REJECT", "1;31"),
            VerdictKind::RateLimited => ("LIMIT", "1;33"),
            VerdictKind::Conditional => ("COND", "1;35"),
        };
        self.wrap(c, &format!("{s:<width$}"))
    }
}

pub fn report(r: &Report, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let headline = match r.findings.first() {
        None if !r.accepted.is_empty() => format!(
            "no open findings; {} accepted by the configuration (listed below)",
            r.accepted.len()
        ),
        None => format!(
            "every Cloudflare range reaches port{} {}{}",
            if r.ports.len() == 1 { "" } else { "s" },
            join(&r.ports),
            if r.listeners.is_some() {
                " and something listens"
            } else {
                ""
            }
        ),
        Some(f) => {
            let more = r.findings.len() - 1;
            format!(
                "{}{}",
                f.message,
                if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                }
            )
        }
    };
    let st = match r.status {
        Status::Ok => p.wrap("1;32", "OK"),
        Status::Warning => p.wrap("1;33", "WARNING"),
        Status::Critical => p.wrap("1;31", "CRITICAL"),
        Status::Unknown => p.wrap("1;35", "UNKNOWN"),
    };
    let _ = writeln!(o, "origin-audit {st}: {headline}");
    let dests: Vec<String> = [r.target.dest_v4, r.target.dest_v6]
        .iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let _ = writeln!(
        o,
        "  audited: TCP to {} on {} via {} · {} rules · ranges: {} {} list as of {}{} ({} IPv4, {} IPv6)",
        if dests.is_empty() {
            "this host".to_string()
        } else {
            dests.join(", ")
        },
        join(&r.ports),
        if r.target.ifaces.is_empty() {
            "?".to_string()
        } else {
            r.target.ifaces.join(",")
        },
        r.rule_count,
        r.ranges.provider,
        source_name(&r.ranges),
        r.ranges.as_of,
        r.ranges_age_days
            .map(|d| format!(", {d} days old"))
            .unwrap_or_default(),
        r.ranges.ipv4.len(),
        r.ranges.ipv6.len(),
    );
    for n in &r.target.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o, "\nFindings");
        for f in &r.findings {
            let _ = writeln!(o, "  {} {}  {}", p.sev(f.severity), f.code.id(), f.message);
            for rule in &f.rules {
                let _ = writeln!(o, "           rule: {}  [{}]", rule.text, rule_label(rule));
            }
            if let Some(fix) = &f.fix {
                let _ = writeln!(o, "           fix:  {fix}");
            }
        }
    }
    if !r.accepted.is_empty() {
        // Accepted findings are never hidden: only the exit status ignores them.
        let _ = writeln!(o, "\nAccepted (exceptions in the configuration)");
        for a in &r.accepted {
            let f = &a.finding;
            let _ = writeln!(o, "  accepted {}  {}", f.code.id(), f.message);
            let _ = writeln!(
                o,
                "           reason: {}{}  [{}]",
                a.reason,
                a.until
                    .as_ref()
                    .map(|u| format!(" (until {u})"))
                    .unwrap_or_default(),
                a.origin
            );
        }
    }
    if let Some(ls) = &r.listeners {
        let _ = writeln!(o, "\nListeners on audited ports");
        let mut any = false;
        for l in ls.iter().filter(|l| r.ports.contains(&l.port)) {
            any = true;
            let addr = match l.address {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", l.port),
                a => format!("{a}:{}", l.port),
            };
            let _ = writeln!(
                o,
                "  {addr:<24} {}{}",
                l.process.as_deref().unwrap_or("?"),
                l.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
        }
        if !any {
            let _ = writeln!(o, "  (none)");
        }
    }
    o.push_str(&tls_section(r));
    let _ = writeln!(o, "\nNew connections from Cloudflare, by range and port");
    o.push_str(&matrix(r, &p));
    o
}

/// One block per listener × hostname: handshake, versions, certificate, trust.
fn tls_section(r: &Report) -> String {
    let mut o = String::new();
    let Some(rows) = &r.tls else {
        if let Some(n) = &r.tls_note {
            let _ = writeln!(o, "\n{n}");
        }
        return o;
    };
    let _ = writeln!(o, "\nTLS (as Cloudflare's edge connects: SNI = hostname)");
    if let Some(n) = &r.tls_note {
        let _ = writeln!(o, "  {n}");
    }
    for t in rows {
        let addr = match t.address {
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", t.port),
            a => format!("{a}:{}", t.port),
        };
        let _ = writeln!(
            o,
            "  {addr} {}: handshake {}{}{}",
            t.hostname,
            t.handshake,
            t.detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            if t.versions.is_empty() {
                String::new()
            } else {
                format!(", {}", t.versions.join(" "))
            }
        );
        if let Some(c) = &t.certificate {
            let _ = writeln!(o, "      subject {}  issuer {}", c.subject, c.issuer);
            let _ = writeln!(
                o,
                "      SAN [{}]  valid {} → {} ({} days left)  name {}  trust {}",
                c.san.join(", "),
                c.not_before,
                c.not_after,
                c.days_left,
                match t.name_match {
                    Some(true) => "matches",
                    Some(false) => "DOES NOT MATCH",
                    None => "?",
                },
                t.trust.as_deref().unwrap_or("?")
            );
        }
    }
    o
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ranges × ports; a range split between verdicts shows the worst with a `*`.
fn matrix(r: &Report, p: &Paint) -> String {
    let mut o = String::new();
    let ranges = r.provider_ranges();
    let _ = write!(o, "  {:<20}", "range");
    for port in &r.ports {
        let _ = write!(o, " {port:<8}");
    }
    o.push('\n');
    for range in ranges {
        let _ = write!(o, "  {:<20}", range.to_string());
        for port in &r.ports {
            let vs = r.verdicts_within(*port, &range);
            let worst = vs.iter().copied().max_by_key(|v| severity_rank(*v));
            match worst {
                None => {
                    let _ = write!(o, " {:<8}", "-");
                }
                Some(w) => {
                    let mixed = vs.iter().any(|v| *v != w);
                    let cell = p.verdict(w, if mixed { 7 } else { 8 });
                    let _ = write!(o, " {cell}{}", if mixed { "*" } else { "" });
                }
            }
        }
        o.push('\n');
    }
    if o.contains('*') {
        let _ = writeln!(
            o,
            "  (* only part of the range; `--format json` lists the exact CIDRs)"
        );
    }
    o
}

fn severity_rank(v: VerdictKind) -> u8 {
    match v {
        VerdictKind::Accept => 0,
        VerdictKind::Conditional => 1,
        VerdictKind::RateLimited => 2,
        VerdictKind::Reject => 3,
        VerdictKind::Drop => 4,
    }
}

pub fn explanation(e: &Explanation, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let v = match e.verdict {
        VerdictKind::Accept => p.wrap("1;32", "ACCEPT"),
        VerdictKind::Drop => p.wrap("1;31", "DROP"),
        VerdictKind::Reject => p.wrap("1;31", "REJECT"),
        VerdictKind::RateLimited => p.wrap("1;33", "RATE-LIMITED"),
        VerdictKind::Conditional => p.wrap("1;35", "CONDITIONAL"),
    };
    let _ = writeln!(
        o,
        "{} {} → port {}: {v}{}",
        if e.established {
            "established packet from"
        } else {
            "new connection from"
        },
        e.address,
        e.port,
        e.cf_error
            .map(|c| format!(" (Cloudflare {c})"))
            .unwrap_or_default()
    );
    if !e.in_provider_range {
        let _ = writeln!(o, "  note: {} is not in the provider's ranges", e.address);
    }
    if let Some(r) = &e.rule {
        let _ = writeln!(o, "  decided by {}: {}", rule_label(r), r.text);
    }
    for c in &e.conditions {
        let _ = writeln!(o, "  depends on: {c}");
    }
    let _ = writeln!(o, "\nPath");
    if e.trace.is_empty() {
        let _ = writeln!(o, "  (no base chain on the path)");
    }
    for line in &e.trace {
        let _ = writeln!(o, "  {line}");
    }
    if e.outcomes.len() > 1 {
        let _ = writeln!(o, "\nPossible outcomes");
        for l in &e.outcomes {
            let _ = writeln!(o, "  - {l}");
        }
    }
    if let Some(l) = &e.lands {
        let _ = writeln!(o, "\nLands at {l}");
    }
    o
}
