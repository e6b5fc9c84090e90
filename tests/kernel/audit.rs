//! Step c: run origin-audit (`check`, `explain`, `snapshot` + `check --snapshot`) against the
//! lab and compare its answers with the kernel-confirmed expectations.
//!
//! Owns: the reading of origin-audit's JSON contract (`origin-audit/1`) and every comparison.
//! Must not: probe the kernel or change the lab.

use crate::kernel::Probe;
use crate::netns::{self, Lab};
use crate::scenario::{Expect, ListenMode, RuleExpect, Scenario, Verdict};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

const RUN_LIMIT: Duration = Duration::from_secs(60);
const EXPLAIN_THREADS: usize = 4;

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

#[derive(Debug)]
struct Row {
    port: u16,
    source: IpNet,
    verdict: String,
    cf_error: Option<u64>,
    rule: Value,
}

fn rows(report: &Value) -> Result<Vec<Row>, String> {
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

/// Step c. One message per disagreement.
pub fn check(sc: &Scenario, lab: &Lab, bin: &str, probes: &[Probe]) -> Vec<String> {
    let mut fails = vec![];
    let ports = ports_arg(sc);
    let mut cmd = lab.in_origin(bin);
    cmd.args(["check", "--format", "json", "--offline", "--ports", &ports]);
    let (code, report) = match run_json(&mut cmd, "origin-audit check (in the origin namespace)") {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    check_report(sc, probes, code, &report, &mut fails);
    check_explain(sc, lab, bin, probes, &mut fails);
    check_snapshot(sc, lab, bin, &report, &mut fails);
    fails
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
        });
        if hit != fe.present {
            fails.push(format!(
                "findings: {} `{}`{} (line {}) — report has: {}",
                if fe.present { "missing" } else { "unexpected" },
                fe.code,
                fe.port.map(|p| format!(" port={p}")).unwrap_or_default(),
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
            ListenMode::None => !ls.iter().any(|l| l["port"].as_u64() == Some(u64::from(p))),
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

fn check_explain(sc: &Scenario, lab: &Lab, bin: &str, probes: &[Probe], fails: &mut Vec<String>) {
    let _ = sc;
    let jobs: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.expected != Verdict::Conditional)
        .collect();
    let chunk = jobs.len().div_ceil(EXPLAIN_THREADS).max(1);
    let results: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut out = vec![];
                    for p in part {
                        let mut cmd = lab.in_origin(bin);
                        cmd.args([
                            "explain",
                            &p.src.to_string(),
                            &p.port.to_string(),
                            "--format",
                            "json",
                            "--offline",
                        ]);
                        match run_json(&mut cmd, &format!("explain {} {}", p.src, p.port)) {
                            Err(e) => out.push(e),
                            Ok((_, v)) => {
                                let got = v["verdict"].as_str().unwrap_or("?");
                                if Verdict::parse(got) != Some(p.expected) {
                                    out.push(format!(
                                        "explain {} {}: origin-audit says {got} via {}, path {}; \
                                         expected {}; kernel: {}",
                                        p.src,
                                        p.port,
                                        short(&v["rule"]),
                                        short(&v["path"]),
                                        p.expected,
                                        p.kernel_summary()
                                    ));
                                }
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["explain thread panicked".into()])
            })
            .collect()
    });
    fails.extend(results);
}

fn check_snapshot(sc: &Scenario, lab: &Lab, bin: &str, live: &Value, fails: &mut Vec<String>) {
    let mut cmd = lab.in_origin(bin);
    cmd.args(["snapshot", "--offline"]);
    let out = match netns::run(&mut cmd, None, RUN_LIMIT) {
        Ok(o) if o.ok() => o,
        Ok(o) => {
            fails.push(format!("snapshot: exit {:?}: {}", o.code, o.stderr.trim()));
            return;
        }
        Err(e) => {
            fails.push(format!("snapshot: {e}"));
            return;
        }
    };
    let file = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => {
            fails.push(format!("snapshot: cannot create a temp file: {e}"));
            return;
        }
    };
    if let Err(e) = std::fs::write(file.path(), &out.stdout) {
        fails.push(format!(
            "snapshot: cannot write {}: {e}",
            file.path().display()
        ));
        return;
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
            return;
        }
    };
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
}
