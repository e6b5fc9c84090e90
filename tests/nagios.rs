//! `check --nagios` as a monitoring plugin: exit code = state, one status line of at most 200
//! characters `STATUS - text | perfdata` whose perfdata follows the Monitoring Plugins
//! Development Guidelines grammar (checked here by a parser of that grammar, not by
//! substring), then the long output. Against a real kernel (a namespace with a listener and
//! iptables), offline dumps, a broken configuration and a run that hangs (`--timeout`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_support;

use package_support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One perfdata item, parsed: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug)]
struct Perf {
    label: String,
    value: f64,
    warn: String,
    crit: String,
}

/// A threshold range per the guidelines: `[@][start:][end]`, start may be `~`; empty allowed.
fn valid_range(s: &str) -> bool {
    let s = s.strip_prefix('@').unwrap_or(s);
    let num = |x: &str| x.is_empty() || x.parse::<f64>().is_ok();
    match s.split_once(':') {
        Some((a, b)) => (a == "~" || num(a)) && num(b),
        None => num(s),
    }
}

/// Parses the perfdata part of a plugin's first line, or says what breaks the grammar.
fn parse_perfdata(p: &str) -> Result<Vec<Perf>, String> {
    let mut out = vec![];
    for item in p.split(' ').filter(|s| !s.is_empty()) {
        let (label, rest) = item
            .rsplit_once('=')
            .ok_or_else(|| format!("{item:?}: no '='"))?;
        let label = label.trim_matches('\'');
        if label.is_empty() || label.contains('=') || label.contains('\'') {
            return Err(format!("{item:?}: bad label"));
        }
        let fields: Vec<&str> = rest.split(';').collect();
        if fields.len() > 5 {
            return Err(format!("{item:?}: more than 5 fields"));
        }
        let v = fields[0];
        let num_end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(v.len());
        let (num, uom) = v.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{item:?}: value not a number"))?;
        if !["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom) {
            return Err(format!("{item:?}: unit {uom:?}"));
        }
        let f = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
        for (i, x) in fields.iter().enumerate().skip(1) {
            let ok = if i <= 2 {
                valid_range(x)
            } else {
                x.is_empty() || x.parse::<f64>().is_ok()
            };
            if !ok {
                return Err(format!("{item:?}: field {i} {x:?}"));
            }
        }
        out.push(Perf {
            label: label.to_string(),
            value,
            warn: f(1),
            crit: f(2),
        });
    }
    Ok(out)
}

/// Splits a plugin's output as Nagios does: the first line is status text and perfdata.
fn status_line(stdout: &str) -> (String, String, Vec<Perf>) {
    let first = stdout.lines().next().expect("a first line");
    assert!(
        first.chars().count() <= 200,
        "line over 200 characters: {first}"
    );
    let (text, perf) = first.split_once(" | ").expect("perfdata after ' | '");
    assert!(!text.contains('|'), "a '|' in the text: {first}");
    let (state, _) = text.split_once(" - ").expect("'STATE - text'");
    let perf = parse_perfdata(perf).unwrap_or_else(|e| panic!("perfdata: {e}: {first}"));
    (state.to_string(), text.to_string(), perf)
}

fn perf<'a>(p: &'a [Perf], label: &str) -> &'a Perf {
    p.iter()
        .find(|x| x.label == label)
        .unwrap_or_else(|| panic!("no {label} in {p:?}"))
}

fn fixture(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/iptables")
        .join(p)
        .display()
        .to_string()
}

#[test]
fn the_perfdata_parser_refuses_what_nagios_would() {
    assert!(parse_perfdata("a=1;;0;0; b=2s;1:5;@~:10;;").is_ok());
    assert!(parse_perfdata("a=x").is_err());
    assert!(parse_perfdata("a=1;;;;;;").is_err());
    assert!(parse_perfdata("a=1;abc").is_err());
    assert!(parse_perfdata("a=1widgets").is_err());
}

#[test]
fn offline_dumps_give_one_critical_line_with_perfdata() {
    let (v4, v6) = (fixture("ufw-v4.nft.rules"), fixture("ufw-v6.nft.rules"));
    let o = Command::new(BIN)
        .args(["check", "--nagios", "--offline", "--iptables-save", &v4])
        .args(["--ip6tables-save", &v6, "--iface", "eth0"])
        .args(["--dest", "203.0.113.2", "--dest", "2001:db8:1::2"])
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}{}", text(&o.stderr));
    let (state, txt, p) = status_line(&out);
    assert_eq!(state, "CRITICAL", "{out}");
    assert!(txt.contains("more)"), "{txt}");
    // Every range (v4 and v6) is dropped on port 80 in this fixture.
    assert!(perf(&p, "dropped").value >= 15.0, "{p:?}");
    assert_eq!(perf(&p, "dropped").crit, "0");
    assert_eq!(perf(&p, "rejected").value, 0.0);
    assert_eq!(perf(&p, "ranges_age_days").warn, "30");
    // Long output: one line per finding after the status line.
    assert!(
        out.lines()
            .skip(1)
            .any(|l| l.starts_with("critical range-dropped")),
        "{out}"
    );

    // --quiet: the status line only, still printed.
    let o = Command::new(BIN)
        .args([
            "check",
            "--nagios",
            "--quiet",
            "--offline",
            "--iptables-save",
            &v4,
        ])
        .args(["--ip6tables-save", &v6, "--iface", "eth0"])
        .args(["--dest", "203.0.113.2", "--dest", "2001:db8:1::2"])
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(
        (o.status.code(), out.lines().count()),
        (Some(2), 1),
        "{out}"
    );
}

#[test]
fn errors_and_usage_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["check", "--nagios", "--offline", "--iptables-save"])
        .arg(&bad)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.starts_with("UNKNOWN - "), "{out}");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[audit]\nports = \"eighty\"\n").unwrap();
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["check", "--nagios", "--offline", "--iptables-save"])
        .arg(fixture("ufw-v4.nft.rules"))
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("UNKNOWN - ") && out.contains("c.toml"),
        "{out}"
    );
    let o = Command::new(BIN)
        .args(["check", "--nagios", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
}

/// A range server that accepts and never answers: without --timeout the fetch would wait its
/// own 20 s deadline; with --timeout 2 the run ends near 2 s as UNKNOWN.
#[test]
fn timeout_bounds_the_whole_run() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(25));
        drop(s);
    });
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = Command::new(BIN)
        .args(["check", "--nagios", "--timeout", "2", "--iptables-save"])
        .arg(fixture("ufw-v4.nft.rules"))
        .args(["--ranges-url", &format!("https://127.0.0.1:{port}/ips")])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let took = t.elapsed();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", text(&o.stderr));
    assert!(
        out.starts_with("UNKNOWN - ") && out.contains("timed out after 2 s"),
        "{out}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    drop(hold);
}

#[test]
fn live_origin_ok_then_critical() {
    if let Some(why) = netns_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::web_origin("nagios");
    let ranges = fresh_ranges(dir.path());
    let run = |ns: &Netns| {
        let mut c = ns.cmd(BIN);
        c.args(["check", "--nagios", "--quiet", "--ranges-file"])
            .arg(&ranges)
            .arg("--lock-file")
            .arg(dir.path().join("lock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        run_bounded(&mut c, 60)
    };
    let o = run(&ns);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    let (state, _, p) = status_line(&out);
    assert_eq!(state, "OK", "{out}");
    assert_eq!(perf(&p, "dropped").value, 0.0);
    assert_eq!(perf(&p, "no_listener").value, 0.0);
    ns.iptables(&[
        "-A",
        "INPUT",
        "-s",
        "173.245.48.0/20",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "DROP",
    ]);
    let o = run(&ns);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}{}", text(&o.stderr));
    let (state, txt, p) = status_line(&out);
    assert_eq!(state, "CRITICAL");
    assert!(txt.contains("173.245.48.0/20"), "{txt}");
    assert_eq!(perf(&p, "dropped").value, 1.0, "{out}");
}
