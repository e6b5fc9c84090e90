//! Step c: run origin-audit (`check`, `explain`, `snapshot` + `check --snapshot`) against the
//! lab and compare its answers with the kernel and with the kernel-confirmed expectations.
//!
//! Owns: the reading of origin-audit's JSON contract (`origin-audit/1`); which of its rows are
//! sampled for extra probe sources ([`row_sources`]: every non-accept row and its neighbours
//! first, at most [`MAX_ROWS`]); the comparison of every probe with the row covering its
//! address; `explain` live and offline for a sample of at most [`MAX_EXPLAIN`] addresses (plus
//! every probe in a `conditional` row, whose kernel result must be one of explain's outcomes);
//! and the report checks (rows vs expectations, findings, listeners, snapshot round trip).
//! Must not: probe the kernel or change the lab.

use crate::kernel::{Outcome, Probe, first_mid_last};
use crate::netns::{self, Lab};
use crate::scenario::{Expect, ListenMode, RuleExpect, Scenario, Verdict};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUN_LIMIT: Duration = Duration::from_secs(60);
const EXPLAIN_THREADS: usize = 3;
/// Rows of `check` whose first, middle and last addresses are probed, per scenario.
pub const MAX_ROWS: usize = 64;
/// Probed addresses explained live and offline, per scenario (every distinct verdict first).
pub const MAX_EXPLAIN: usize = 8;
/// Findings that explain an accepted connection being refused: nothing listens where it lands.
const LISTENER_CODES: &[&str] = &[
    "no-listener",
    "listener-loopback-only",
    "listener-wrong-address",
];

fn ports_arg(sc: &Scenario) -> String {
    sc.ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Run origin-audit and parse its JSON stdout; Err names the command and what went wrong.
fn run_json(cmd: &mut Command, what: &str) -> Result<(Option<i32>, Value), String> {
    let out = netns::run(cmd, None, RUN_LIMIT).map_err(|e| format!("{what}: {e}"))?;
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| {
        format!(
            "{what}: exit {:?}, stdout is not JSON ({e}); stderr: {}",
            out.code,
            out.stderr.trim()
        )
    })?;
    Ok((out.code, v))
}

/// One reachability row of `check --format json`.
#[derive(Debug)]
pub struct Row {
    pub port: u16,
    pub source: IpNet,
    pub verdict: String,
    pub cf_error: Option<u64>,
    pub rule: Value,
}

/// `check` run in the origin namespace before any probe: its rows give probe sources.
pub struct Check {
    pub code: Option<i32>,
    pub report: Value,
    pub rows: Vec<Row>,
}

pub fn rows(report: &Value) -> Result<Vec<Row>, String> {
    let arr = report
        .get("reachability")
        .and_then(Value::as_array)
        .ok_or("report has no `reachability` array")?;
    let mut out = vec![];
    for (i, r) in arr.iter().enumerate() {
        let port = r
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(format!("reachability[{i}]: no port"))?;
        let source = r
            .get("source")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpNet>().ok())
            .ok_or(format!("reachability[{i}]: no CIDR `source`"))?;
        let verdict = r
            .get("verdict")
            .and_then(Value::as_str)
            .ok_or(format!("reachability[{i}]: no verdict"))?
            .to_string();
        out.push(Row {
            port,
            source,
            verdict,
            cf_error: r.get("cf_error").and_then(Value::as_u64),
            rule: r.get("rule").cloned().unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn size(n: &IpNet) -> u128 {
    let host_bits = u32::from(n.max_prefix_len() - n.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The expectations that decide the addresses of `row` on its port, and whether some part of
/// it falls to the port's default. Expectations nest (most specific wins): the base is the most
/// specific one containing the whole row; inner ones lie strictly inside the row.
fn deciding<'a>(sc: &'a Scenario, row: &IpNet, port: u16) -> (Vec<&'a Expect>, bool) {
    let mine: Vec<&Expect> = sc.expects.iter().filter(|e| e.port == port).collect();
    let base = mine
        .iter()
        .filter(|e| e.cidr.contains(row))
        .max_by_key(|e| e.cidr.prefix_len())
        .copied();
    let inner: Vec<&Expect> = mine
        .iter()
        .filter(|e| row.contains(&e.cidr) && e.cidr != *row)
        .copied()
        .collect();
    // Outermost inner ones do not overlap each other: their sizes add up.
    let inner_size: u128 = inner
        .iter()
        .filter(|e| {
            !inner
                .iter()
                .any(|o| o.cidr != e.cidr && o.cidr.contains(&e.cidr))
        })
        .map(|e| size(&e.cidr))
        .fold(0u128, u128::saturating_add);
    let rest_visible = inner_size < size(row);
    let mut out = inner;
    let mut default_part = false;
    if rest_visible {
        match base {
            Some(b) => out.push(b),
            None => default_part = true,
        }
    }
    (out, default_part)
}

fn rule_matches(want: &RuleExpect, got: &Value) -> bool {
    let field = |k: &str| got.get(k).and_then(Value::as_str).unwrap_or("");
    let eq = |w: &Option<String>, k: &str| w.as_ref().is_none_or(|w| w == field(k));
    eq(&want.backend, "backend")
        && eq(&want.family, "family")
        && eq(&want.table, "table")
        && eq(&want.chain, "chain")
        && want.text.as_ref().is_none_or(|t| field("text").contains(t))
}

fn short(v: &Value) -> String {
    if v.is_null() {
        return "no rule".into();
    }
    let s = v.to_string();
    if s.len() > 400 {
        format!("{}…", &s[..400])
    } else {
        s
    }
}

fn kernel_in(probes: &[Probe], port: u16, net: &IpNet) -> String {
    let v: Vec<String> = probes
        .iter()
        .filter(|p| p.port == port && net.contains(&p.src))
        .take(4)
        .map(|p| format!("{} → {}", p.src, p.kernel_summary()))
        .collect();
    if v.is_empty() {
        "not probed".into()
    } else {
        v.join("; ")
    }
}

/// `check --format json --offline --ports …` inside the origin namespace.
pub fn run_check(sc: &Scenario, lab: &Lab, bin: &str) -> Result<Check, String> {
    let mut cmd = lab.in_origin(bin);
    cmd.args([
        "check",
        "--format",
        "json",
        "--offline",
        "--ports",
        &ports_arg(sc),
    ]);
    let (code, report) = run_json(&mut cmd, "origin-audit check (in the origin namespace)")?;
    let rows = rows(&report).map_err(|e| format!("check: {e}"))?;
    Ok(Check { code, report, rows })
}

/// Indices of the rows to probe: every non-accept row, then its neighbours (same port and
/// family, the rows either side of a boundary the analysis draws), then the rest spread evenly
/// — at most [`MAX_ROWS`].
fn sample_rows(rows: &[Row]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| (rows[a].port, rows[a].source).cmp(&(rows[b].port, rows[b].source)));
    let same_side = |a: usize, b: usize| {
        rows[a].port == rows[b].port
            && rows[a].source.network().is_ipv6() == rows[b].source.network().is_ipv6()
    };
    let mut first: Vec<usize> = vec![];
    let mut second: Vec<usize> = vec![];
    for (k, &i) in order.iter().enumerate() {
        if rows[i].verdict != "accept" {
            first.push(i);
            for n in [k.checked_sub(1), Some(k + 1)].into_iter().flatten() {
                if let Some(&j) = order.get(n)
                    && same_side(i, j)
                {
                    second.push(j);
                }
            }
        }
    }
    let mut pick: Vec<usize> = vec![];
    for i in first.into_iter().chain(second) {
        if pick.len() < MAX_ROWS && !pick.contains(&i) {
            pick.push(i);
        }
    }
    let rest: Vec<usize> = order.into_iter().filter(|i| !pick.contains(i)).collect();
    let slots = MAX_ROWS - pick.len();
    if rest.len() <= slots {
        pick.extend(rest);
    } else {
        // Evenly spread over the sorted rows, so both families and every port keep samples.
        pick.extend((0..slots).map(|k| rest[k * rest.len() / slots]));
    }
    pick.sort_unstable();
    pick
}

fn rule_key(v: &Value) -> String {
    v.to_string()
}

/// Probe sources derived from origin-audit's own rows: first, middle and last address of each
/// sampled row on its port; for `rate_limited` rows one burst per (port, rule) from the first
/// such row's first address (bursts sharing a limit would starve each other), unless a burst
/// from the expectations already lies in a row with that rule.
pub fn row_sources(chk: &Check, probes: &[Probe]) -> Vec<(IpAddr, u16, bool)> {
    let mut out = vec![];
    let mut burst_groups: BTreeSet<(u16, String)> = BTreeSet::new();
    for p in probes.iter().filter(|p| p.burst) {
        if let Some(r) = row_for(&chk.rows, p.port, p.src) {
            burst_groups.insert((r.port, rule_key(&r.rule)));
        }
    }
    for i in sample_rows(&chk.rows) {
        let r = &chk.rows[i];
        if r.verdict == "rate_limited" {
            if burst_groups.insert((r.port, rule_key(&r.rule))) {
                out.push((r.source.network(), r.port, true));
            }
            continue;
        }
        for a in first_mid_last(r.source) {
            out.push((a, r.port, false));
        }
    }
    out
}

fn row_for(rows: &[Row], port: u16, addr: IpAddr) -> Option<&Row> {
    rows.iter()
        .find(|r| r.port == port && r.source.contains(&addr))
}

fn label(rule: &Value) -> String {
    if rule.is_null() || !rule.is_object() {
        return "no rule".into();
    }
    let f = |k: &str| match &rule[k] {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        v => v.to_string(),
    };
    let pos = match rule["position"].as_u64() {
        Some(0) => "policy".to_string(),
        Some(n) => format!("#{n}"),
        None => "#?".into(),
    };
    format!(
        "{} {} {} {} {pos} `{}`",
        f("backend"),
        f("family"),
        f("table"),
        f("chain"),
        f("text")
    )
}

fn path_label(path: &Value) -> String {
    let v: Vec<String> = path.as_array().into_iter().flatten().map(label).collect();
    if v.is_empty() {
        "[]".into()
    } else {
        v.join(" → ")
    }
}

/// Whether nothing listens where accepted packets to `port` land (per the report's findings):
/// then "refused" is what an accept looks like from outside.
fn listener_gap(report: &Value, port: u16) -> bool {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| {
            f["code"]
                .as_str()
                .is_some_and(|c| LISTENER_CODES.contains(&c))
                && f["ports"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x.as_u64() == Some(u64::from(port))))
        })
}

/// Kernel results that mean `verdict`, for a single probe. `None` for verdicts a single probe
/// cannot show (rate_limited, conditional).
fn allowed(verdict: &str, gap: bool) -> Option<Vec<Outcome>> {
    Some(match verdict {
        "accept" if gap => vec![Outcome::Connected, Outcome::Refused],
        "accept" => vec![Outcome::Connected],
        "drop" => vec![Outcome::Timeout],
        "reject" => vec![Outcome::Refused, Outcome::Unreachable],
        _ => return None,
    })
}

/// Maps one of explain's `outcomes` lines to the kernel results it stands for; Err when the
/// text is not understood (the comparison must never guess).
fn outcome_classes(text: &str, gap: bool) -> Result<Vec<Outcome>, String> {
    if text.starts_with("accepted, delivered") {
        Ok(allowed("accept", gap).unwrap_or_default())
    } else if text.starts_with("accepted, forwarded") {
        // Whatever the forward target is, an accepted SYN reaches a TCP stack that answers.
        Ok(vec![Outcome::Connected, Outcome::Refused])
    } else if text.starts_with("dropped") {
        Ok(vec![Outcome::Timeout])
    } else if text.starts_with("rejected") {
        Ok(vec![Outcome::Refused, Outcome::Unreachable])
    } else {
        Err(format!(
            "cannot map explain outcome {text:?} to a kernel result"
        ))
    }
}

/// Does the kernel's result for `p` show `verdict`? `outcomes` are explain's outcome lines
/// (needed for `conditional`). Err: the comparison itself is impossible.
fn kernel_shows(
    p: &Probe,
    verdict: &str,
    gap: bool,
    outcomes: Option<&Value>,
) -> Result<bool, String> {
    if verdict == "conditional" {
        let lines: Vec<&str> = outcomes
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if lines.is_empty() {
            return Err("conditional, but explain names no outcomes".into());
        }
        let mut ok: BTreeSet<String> = BTreeSet::new();
        for l in lines {
            for o in outcome_classes(l, gap)? {
                ok.insert(o.to_string());
            }
        }
        return Ok(p.outcomes.iter().all(|o| ok.contains(&o.to_string())) && !p.outcomes.is_empty());
    }
    if verdict == "rate_limited" {
        if !p.burst {
            return Err("rate_limited is only judged by a burst".into());
        }
        let good = p
            .outcomes
            .iter()
            .filter(|o| **o == Outcome::Connected)
            .count();
        return Ok(if gap {
            p.outcomes.iter().any(|o| *o != Outcome::Refused)
                && p.outcomes.contains(&Outcome::Refused)
        } else {
            good > 0 && good < p.outcomes.len()
        });
    }
    let ok = allowed(verdict, gap).ok_or_else(|| format!("unknown verdict {verdict:?}"))?;
    Ok(!p.outcomes.is_empty() && p.outcomes.iter().all(|o| ok.contains(o)))
}

/// What step c found: messages, and per probe whether it disagreed or could not be compared.
pub struct Judged {
    pub fails: Vec<String>,
    pub bad: Vec<bool>,
    /// Singles inside `rate_limited` rows: a single connect cannot show a limit; their row is
    /// judged by its burst.
    pub uncompared: Vec<bool>,
}

/// Step c.
pub fn check(sc: &Scenario, lab: &Lab, bin: &str, probes: &[Probe], chk: &Check) -> Judged {
    let mut j = Judged {
        fails: vec![],
        bad: vec![false; probes.len()],
        uncompared: vec![false; probes.len()],
    };
    check_report(sc, probes, chk.code, &chk.report, &mut j.fails);
    let snap = check_snapshot(sc, lab, bin, &chk.report, &mut j.fails);
    compare_probes(
        sc,
        lab,
        bin,
        probes,
        chk,
        snap.as_ref().map(|f| f.path()),
        &mut j,
    );
    j
}

fn check_report(
    sc: &Scenario,
    probes: &[Probe],
    code: Option<i32>,
    report: &Value,
    fails: &mut Vec<String>,
) {
    if report.get("schema").and_then(Value::as_str) != Some("origin-audit/1") {
        fails.push(format!("check: schema is {}", short(&report["schema"])));
    }
    let status = report.get("status").and_then(Value::as_str).unwrap_or("");
    let want_code = match status {
        "ok" => Some(0),
        "warning" => Some(1),
        "critical" => Some(2),
        "unknown" => Some(3),
        _ => None,
    };
    if want_code.is_none() || want_code != code {
        fails.push(format!("check: status {status:?} but exit code {code:?}"));
    }
    let rows = match rows(report) {
        Ok(r) => r,
        Err(e) => {
            fails.push(format!("check: {e}"));
            return;
        }
    };
    let cf: Vec<IpNet> = ["ipv4", "ipv6"]
        .iter()
        .flat_map(|k| {
            report["ranges"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().and_then(|s| s.parse::<IpNet>().ok()))
        })
        .collect();
    if cf.is_empty() {
        fails.push("check: report lists no Cloudflare ranges".into());
    }

    for row in &rows {
        if !sc.ports.contains(&row.port) {
            fails.push(format!("check: row for unaudited port {}", row.port));
            continue;
        }
        let (exps, default_part) = deciding(sc, &row.source, row.port);
        let mut want: BTreeSet<Verdict> = exps.iter().map(|e| e.verdict).collect();
        if default_part {
            want.insert(sc.default_for(row.port));
        }
        let got = Verdict::parse(&row.verdict);
        let lines: Vec<String> = exps.iter().map(|e| e.line.to_string()).collect();
        let whence = if lines.is_empty() {
            "the port's default".to_string()
        } else {
            format!("line {}", lines.join(","))
        };
        if want.len() != 1 || got != want.first().copied() {
            let want_s: Vec<&str> = want.iter().map(|v| v.as_str()).collect();
            fails.push(format!(
                "port {} {}: origin-audit says {} ({}), expected {} ({whence}); kernel: {}",
                row.port,
                row.source,
                row.verdict,
                short(&row.rule),
                want_s.join(" and "),
                kernel_in(probes, row.port, &row.source)
            ));
            continue;
        }
        for e in &exps {
            if !e.rule.is_empty() && !rule_matches(&e.rule, &row.rule) {
                fails.push(format!(
                    "port {} {}: verdict {} is right but the rule is {}, expected {} (line {})",
                    row.port,
                    row.source,
                    row.verdict,
                    short(&row.rule),
                    e.rule,
                    e.line
                ));
            }
        }
        if let Some(v) = got
            && let Some(cfe) = v.cf_error()
            && row.cf_error != Some(u64::from(cfe))
        {
            fails.push(format!(
                "port {} {}: verdict {v} but cf_error {:?}, expected {cfe}",
                row.port, row.source, row.cf_error
            ));
        }
    }
    // Every audited port and every expected Cloudflare CIDR must show up in the rows.
    for &p in &sc.ports {
        if !cf.is_empty() && !rows.iter().any(|r| r.port == p) {
            fails.push(format!("check: no reachability rows for port {p}"));
        }
    }
    for e in &sc.expects {
        let in_cf = cf.iter().any(|c| c.contains(&e.cidr));
        if in_cf
            && !rows
                .iter()
                .any(|r| r.port == e.port && overlaps(&r.source, &e.cidr))
        {
            fails.push(format!(
                "check: no reachability row covers port {} {} (line {})",
                e.port, e.cidr, e.line
            ));
        }
    }

    check_findings(sc, report, fails);
    check_listeners(sc, report, fails);
}

fn check_findings(sc: &Scenario, report: &Value, fails: &mut Vec<String>) {
    let empty = vec![];
    let findings = report
        .get("findings")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let summary = || {
        let v: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{}({}, ports {})",
                    f["code"].as_str().unwrap_or("?"),
                    f["severity"].as_str().unwrap_or("?"),
                    f["ports"]
                )
            })
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    for fe in &sc.findings {
        let hit = findings.iter().any(|f| {
            f["code"].as_str() == Some(fe.code.as_str())
                && fe.port.is_none_or(|p| {
                    f["ports"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|x| x.as_u64() == Some(u64::from(p))))
                })
                && fe.source.is_none_or(|s| {
                    f["sources"].as_array().is_some_and(|ss| {
                        ss.iter().any(|x| {
                            x.as_str()
                                .and_then(|x| x.parse::<IpNet>().ok())
                                .is_some_and(|x| overlaps(&x, &s))
                        })
                    })
                })
                && fe
                    .severity
                    .as_ref()
                    .is_none_or(|s| f["severity"].as_str() == Some(s.as_str()))
                && fe.says.as_ref().is_none_or(|w| {
                    f["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(w.as_str()))
                })
        });
        if hit != fe.present {
            fails.push(format!(
                "findings: {} `{}`{}{} (line {}) — report has: {}",
                if fe.present { "missing" } else { "unexpected" },
                fe.code,
                fe.port.map(|p| format!(" port={p}")).unwrap_or_default(),
                fe.says
                    .as_ref()
                    .map(|w| format!(" says={w}"))
                    .unwrap_or_default(),
                fe.line,
                summary()
            ));
        }
    }
    let expected: BTreeSet<&str> = sc
        .findings
        .iter()
        .filter(|f| f.present)
        .map(|f| f.code.as_str())
        .collect();
    for f in findings {
        let code = f["code"].as_str().unwrap_or("?");
        if f["severity"].as_str() == Some("critical") && !expected.contains(code) {
            fails.push(format!(
                "findings: unexpected critical `{code}`: {}",
                f["message"].as_str().unwrap_or("")
            ));
        }
    }
}

fn check_listeners(sc: &Scenario, report: &Value, fails: &mut Vec<String>) {
    let empty = vec![];
    let ls = report
        .get("listeners")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let has = |port: u16, addr: &str| {
        ls.iter().any(|l| {
            l["port"].as_u64() == Some(u64::from(port))
                && l["address"]
                    .as_str()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| a.to_string() == addr)
        })
    };
    for &p in &sc.ports {
        let ok = match sc.listen_mode(p) {
            ListenMode::All => has(p, "0.0.0.0") && has(p, "::"),
            ListenMode::Loopback => has(p, "127.0.0.1") && !has(p, "0.0.0.0"),
            // Nothing reachable from outside: no wildcard socket and none on the origin's public
            // addresses (a `[run]` may start one on another local address, such as 10.9.9.9).
            ListenMode::None => !["0.0.0.0", "::", netns::ORIGIN_V4, netns::ORIGIN_V6]
                .iter()
                .any(|a| has(p, a)),
            // Bound to a device or with a full queue, the sockets are still listed.
            ListenMode::Device(_) | ListenMode::Full | ListenMode::ReuseportFull => {
                has(p, "0.0.0.0") && has(p, "::")
            }
            ListenMode::V6Any => has(p, "::") && !has(p, "0.0.0.0"),
        };
        if !ok {
            fails.push(format!(
                "listeners: port {p} should be {:?}, report lists {}",
                sc.listen_mode(p),
                short(&Value::Array(ls.clone()))
            ));
        }
    }
}

/// `snapshot` in the origin, `check --snapshot` outside: same rows and findings. Returns the
/// snapshot file for the offline explains.
fn check_snapshot(
    sc: &Scenario,
    lab: &Lab,
    bin: &str,
    live: &Value,
    fails: &mut Vec<String>,
) -> Option<tempfile::NamedTempFile> {
    let mut cmd = lab.in_origin(bin);
    cmd.args(["snapshot", "--offline"]);
    let out = match netns::run(&mut cmd, None, RUN_LIMIT) {
        Ok(o) if o.ok() => o,
        Ok(o) => {
            fails.push(format!("snapshot: exit {:?}: {}", o.code, o.stderr.trim()));
            return None;
        }
        Err(e) => {
            fails.push(format!("snapshot: {e}"));
            return None;
        }
    };
    let file = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => {
            fails.push(format!("snapshot: cannot create a temp file: {e}"));
            return None;
        }
    };
    if let Err(e) = std::fs::write(file.path(), &out.stdout) {
        fails.push(format!(
            "snapshot: cannot write {}: {e}",
            file.path().display()
        ));
        return None;
    }
    // Outside the namespace: the snapshot alone must give the same answer.
    let mut cmd = Command::new(bin);
    cmd.arg("check").arg("--snapshot").arg(file.path()).args([
        "--format",
        "json",
        "--offline",
        "--ports",
        &ports_arg(sc),
    ]);
    let offline = match run_json(&mut cmd, "check --snapshot (root namespace)") {
        Ok((_, v)) => v,
        Err(e) => {
            fails.push(e);
            return Some(file);
        }
    };
    // Cumulative counters cited as evidence grow between the two reads (every dropped probe).
    let steady = |v: &Value| {
        let mut v = v.clone();
        for f in v["findings"].as_array_mut().into_iter().flatten() {
            if let Some(m) = f["message"].as_str() {
                f["message"] = Value::String(crate::volatile::normalise_evidence(m));
            }
        }
        v
    };
    let (live, offline) = (steady(live), steady(&offline));
    for key in ["reachability", "findings"] {
        if live[key] != offline[key] {
            let a: Vec<&Value> = live[key].as_array().into_iter().flatten().collect();
            let b: Vec<&Value> = offline[key].as_array().into_iter().flatten().collect();
            let only_live: Vec<String> = a
                .iter()
                .filter(|x| !b.contains(x))
                .take(5)
                .map(|x| short(x))
                .collect();
            let only_snap: Vec<String> = b
                .iter()
                .filter(|x| !a.contains(x))
                .take(5)
                .map(|x| short(x))
                .collect();
            fails.push(format!(
                "snapshot: `{key}` differs between live check and check --snapshot; \
                 only live: [{}]; only snapshot: [{}]",
                only_live.join(", "),
                only_snap.join(", ")
            ));
        }
    }
    Some(file)
}

type Key = (IpAddr, u16);

/// At most [`MAX_EXPLAIN`] probes to explain live and offline: one per distinct (row verdict,
/// kernel result) — outside Cloudflare's ranges (expected verdict, kernel result) — then one
/// per distinct deciding rule, in probe order (the expectation-derived sources come first).
fn explain_sample(probes: &[Probe], chk: &Check) -> Vec<usize> {
    let mut pick: Vec<usize> = vec![];
    let mut seen_verdict: BTreeSet<String> = BTreeSet::new();
    let mut seen_rule: BTreeSet<String> = BTreeSet::new();
    let comparable = |p: &Probe| {
        row_for(&chk.rows, p.port, p.src).is_none_or(|r| r.verdict != "rate_limited" || p.burst)
    };
    for (i, p) in probes.iter().enumerate() {
        if pick.len() >= MAX_EXPLAIN || !comparable(p) {
            continue;
        }
        // Each (verdict, kernel result) pair once: when origin-audit wrongly sees one verdict
        // everywhere, the kernel's other results still get explained.
        let kernel = p
            .outcomes
            .first()
            .map(|o| o.to_string())
            .unwrap_or_default();
        let key = match row_for(&chk.rows, p.port, p.src) {
            Some(r) => format!("{}|{kernel}", r.verdict),
            None => format!("outside:{}|{kernel}", p.expected),
        };
        if seen_verdict.insert(key) {
            pick.push(i);
            if let Some(r) = row_for(&chk.rows, p.port, p.src) {
                seen_rule.insert(rule_key(&r.rule));
            }
        }
    }
    for (i, p) in probes.iter().enumerate() {
        if pick.len() >= MAX_EXPLAIN || !comparable(p) || pick.contains(&i) {
            continue;
        }
        if let Some(r) = row_for(&chk.rows, p.port, p.src)
            && seen_rule.insert(rule_key(&r.rule))
        {
            pick.push(i);
        }
    }
    pick
}

/// `explain ADDR PORT --format json --offline`, live in the origin (`snapshot` None) or against
/// the snapshot file outside the namespace. A few threads; every command has a time limit.
fn run_explains(
    lab: &Lab,
    bin: &str,
    keys: &[Key],
    snapshot: Option<&Path>,
) -> BTreeMap<Key, Result<Value, String>> {
    let chunk = keys.len().div_ceil(EXPLAIN_THREADS).max(1);
    std::thread::scope(|s| {
        let hs: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&(a, port)| {
                            let mut cmd = match snapshot {
                                None => lab.in_origin(bin),
                                Some(_) => Command::new(bin),
                            };
                            cmd.args(["explain", &a.to_string(), &port.to_string()]);
                            if let Some(f) = snapshot {
                                cmd.arg("--snapshot").arg(f);
                            }
                            cmd.args(["--format", "json", "--offline"]);
                            let what = format!(
                                "explain {a} {port}{}",
                                if snapshot.is_some() {
                                    " --snapshot (root namespace)"
                                } else {
                                    " (live, in the origin namespace)"
                                }
                            );
                            ((a, port), run_json(&mut cmd, &what).map(|(_, v)| v))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn said(v: &Value) -> String {
    format!(
        "{} by {}; path {}",
        v["verdict"].as_str().unwrap_or("?"),
        label(&v["rule"]),
        path_label(&v["path"])
    )
}

/// Every probe against the row covering its address; the explain sample live vs offline vs
/// kernel vs row.
fn compare_probes(
    sc: &Scenario,
    lab: &Lab,
    bin: &str,
    probes: &[Probe],
    chk: &Check,
    snap: Option<&Path>,
    j: &mut Judged,
) {
    let cf: Vec<IpNet> = ["ipv4", "ipv6"]
        .iter()
        .flat_map(|k| {
            chk.report["ranges"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().and_then(|s| s.parse::<IpNet>().ok()))
        })
        .collect();
    let sample = explain_sample(probes, chk);
    let mut live_keys: BTreeSet<Key> = sample
        .iter()
        .map(|&i| (probes[i].src, probes[i].port))
        .collect();
    for p in probes {
        if row_for(&chk.rows, p.port, p.src).is_some_and(|r| r.verdict == "conditional") {
            live_keys.insert((p.src, p.port));
        }
    }
    let live_keys: Vec<Key> = live_keys.into_iter().collect();
    let live = run_explains(lab, bin, &live_keys, None);
    let off_keys: Vec<Key> = sample
        .iter()
        .map(|&i| (probes[i].src, probes[i].port))
        .collect();
    let offline = match snap {
        Some(f) => run_explains(lab, bin, &off_keys, Some(f)),
        None => BTreeMap::new(),
    };

    for (i, p) in probes.iter().enumerate() {
        let gap = listener_gap(&chk.report, p.port);
        let Some(r) = row_for(&chk.rows, p.port, p.src) else {
            if cf.iter().any(|c| c.contains(&p.src)) {
                j.bad[i] = true;
                j.fails.push(format!(
                    "port {} from {}: inside Cloudflare's ranges but no reachability row covers it; kernel: {}",
                    p.port,
                    p.src,
                    p.kernel_summary()
                ));
            }
            continue;
        };
        if r.verdict == "rate_limited" && !p.burst {
            j.uncompared[i] = true;
            continue;
        }
        let ex = live.get(&(p.src, p.port));
        let outs = ex.and_then(|x| x.as_ref().ok()).map(|v| &v["outcomes"]);
        let res = match (r.verdict.as_str(), ex) {
            ("conditional", Some(Err(e))) => Err(e.clone()),
            _ => kernel_shows(p, &r.verdict, gap, outs),
        };
        let outcome_note = if r.verdict == "conditional" {
            format!(
                " (explain's outcomes: {})",
                outs.map(|o| o.to_string()).unwrap_or_default()
            )
        } else {
            String::new()
        };
        match res {
            Ok(true) => {}
            Ok(false) => {
                j.bad[i] = true;
                j.fails.push(format!(
                    "port {} from {}: kernel {}; origin-audit row {} says {} by {}{outcome_note}",
                    p.port,
                    p.src,
                    p.kernel_summary(),
                    r.source,
                    r.verdict,
                    label(&r.rule)
                ));
            }
            Err(e) => {
                j.bad[i] = true;
                j.fails.push(format!(
                    "port {} from {}: cannot compare with row {} ({}): {e}; kernel {}",
                    p.port,
                    p.src,
                    r.source,
                    r.verdict,
                    p.kernel_summary()
                ));
            }
        }
    }

    for &i in &sample {
        let p = &probes[i];
        let key = (p.src, p.port);
        let gap = listener_gap(&chk.report, p.port);
        let mut mine: Vec<String> = vec![];
        let l = match live.get(&key) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                j.bad[i] = true;
                j.fails.push(e.clone());
                continue;
            }
            None => continue,
        };
        match offline.get(&key) {
            Some(Ok(o)) => {
                for k in ["verdict", "rule", "path"] {
                    if l[k] != o[k] {
                        mine.push(format!(
                            "live and offline explain differ in `{k}`: live {}; offline {}",
                            said(l),
                            said(o)
                        ));
                        break;
                    }
                }
            }
            Some(Err(e)) => mine.push(e.clone()),
            None if snap.is_some() => mine.push("offline explain did not run".into()),
            None => {}
        }
        let v = l["verdict"].as_str().unwrap_or("?");
        let kernel_ok = if v == "rate_limited" && !p.burst {
            Ok(true)
        } else {
            kernel_shows(p, v, gap, Some(&l["outcomes"]))
        };
        match kernel_ok {
            Ok(true) => {}
            Ok(false) => mine.push(format!(
                "explain says {}{}; kernel {}",
                said(l),
                if v == "conditional" {
                    format!(" (outcomes {})", l["outcomes"])
                } else {
                    String::new()
                },
                p.kernel_summary()
            )),
            Err(e) => mine.push(format!("explain says {}: cannot compare: {e}", said(l))),
        }
        // A redirected port: explain must say where the connection lands.
        if let Some(q) = sc.lands.get(&p.port)
            && v == "accept"
            && !l["lands"]
                .as_str()
                .is_some_and(|t| t.contains(&format!(":{q}")))
        {
            mine.push(format!(
                "explain says it lands at {}, but the scenario redirects port {} to {q}",
                l["lands"], p.port
            ));
        }
        if let Some(r) = row_for(&chk.rows, p.port, p.src)
            && r.verdict != v
        {
            mine.push(format!(
                "explain says {} but check's row {} says {} by {}",
                said(l),
                r.source,
                r.verdict,
                label(&r.rule)
            ));
        }
        if !mine.is_empty() {
            j.bad[i] = true;
            for m in mine {
                j.fails.push(format!("explain {} {}: {m}", p.src, p.port));
            }
        }
    }
}
