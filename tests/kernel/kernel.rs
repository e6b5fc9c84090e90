//! Steps a and b: probe the origin from the client with real connects, and check that the
//! scenario's expectations are kernel truth before anything is compared with origin-audit.
//!
//! Owns: the probes — the expectation-derived sources (first, middle and last of every expected
//! CIDR, two non-Cloudflare controls, one Cloudflare range per family the scenario does not
//! mention) and the extra sources `audit` derives from origin-audit's rows (added with
//! [`add_probes`]) — their AnyIP routes, bursts for rate limits, the retry of timeouts, and the
//! mapping expected verdict ↔ connect outcome.
//! Must not: judge origin-audit's output (that is `audit`).

use crate::netns::{self, Lab, ORIGIN_V4, ORIGIN_V6};
use crate::scenario::{Scenario, Verdict};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Cloudflare's published ranges, used only to pick one the scenario does not mention (the
/// harness must not depend on origin-audit's list). Staleness does not matter here.
const CLOUDFLARE: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// Non-Cloudflare sources: what any visitor from elsewhere gets.
const CONTROLS: &[&str] = &["198.51.100.7", "2001:db8:ffff::7"];
const CONTROL_BLOCKS: &[&str] = &["198.51.100.0/24", "2001:db8:ffff::/48"];

/// Longer than TCP's initial RTO (1 s, RFC 6298): over a veth the ICMP error answering the
/// first SYN arrives while connect() still holds the socket lock, so the kernel keeps it only as
/// a soft error (nstat TcpExtLockDroppedIcmps) — IPv6 always, IPv4 for blocking connects — and
/// only the retransmitted SYN, ~1 s later, gets the hard ECONNREFUSED/EHOSTUNREACH. With a 1 s
/// timeout every ICMP reject would look like a drop.
pub const CONNECT_TIMEOUT_MS: u64 = 1500;
pub const BURST: usize = 30;
/// Singles mostly wait (timeouts), so many run at once; bursts use the same pool.
const PROBE_THREADS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    Refused,
    Unreachable,
    Timeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Connected => "connected",
            Outcome::Refused => "refused",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
        })
    }
}

/// One source address and port, and what the kernel did with it (several outcomes for a burst).
#[derive(Debug, Clone)]
pub struct Probe {
    pub src: IpAddr,
    pub port: u16,
    pub expected: Verdict,
    /// Line of the expectation that gives `expected` (None: the port's default).
    pub line: Option<usize>,
    pub burst: bool,
    pub outcomes: Vec<Outcome>,
    /// Timeouts of a single probe are sent once more (a SYN lost under load must not look like
    /// a drop); true when this probe's result comes from that second try.
    pub retried: bool,
}

impl Probe {
    pub fn kernel_summary(&self) -> String {
        if !self.burst {
            return self
                .outcomes
                .first()
                .map(|o| o.to_string())
                .unwrap_or_else(|| "not probed".into());
        }
        let n = |o: Outcome| self.outcomes.iter().filter(|x| **x == o).count();
        format!(
            "burst of {}: {} connected, {} refused, {} unreachable, {} timeout",
            self.outcomes.len(),
            n(Outcome::Connected),
            n(Outcome::Refused),
            n(Outcome::Unreachable),
            n(Outcome::Timeout)
        )
    }
}

pub fn first_mid_last(net: IpNet) -> Vec<IpAddr> {
    let v = match net {
        IpNet::V4(n) => {
            let a = u32::from(n.network());
            let b = u32::from(n.broadcast());
            [a, a + (b - a) / 2 + u32::from(a != b), b]
                .map(|x| IpAddr::from(std::net::Ipv4Addr::from(x)))
                .to_vec()
        }
        IpNet::V6(n) => {
            let a = u128::from(n.network());
            let b = u128::from(n.broadcast());
            [a, a + (b - a) / 2 + u128::from(a != b), b]
                .map(|x| IpAddr::from(std::net::Ipv6Addr::from(x)))
                .to_vec()
        }
    };
    let mut out: Vec<IpAddr> = vec![];
    for a in v {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn parse_net(s: &str) -> IpNet {
    // The constants above are valid CIDRs; a typo there is a harness bug worth a loud stop.
    s.parse()
        .unwrap_or_else(|e| panic!("bad constant {s}: {e}"))
}

/// Probes to run and the client's source blocks (AnyIP `local` routes) they need.
pub fn plan(sc: &Scenario) -> (Vec<Probe>, Vec<IpNet>) {
    // Every source is probed on every audited port: "only that range, only that port".
    let mut sources: Vec<IpAddr> = vec![];
    let mut blocks: BTreeSet<IpNet> = BTreeSet::new();
    let mut bursts: Vec<(IpAddr, u16)> = vec![];
    let mut burst_for: BTreeSet<(Option<usize>, u16)> = BTreeSet::new();
    for e in &sc.expects {
        // A catch-all such as 0.0.0.0/0 is probed through the controls and the unmentioned
        // range instead: its first and last addresses are no sources, and a `local` route for
        // it would swallow the origin itself.
        let huge = match e.cidr {
            IpNet::V4(n) => n.prefix_len() < 8,
            IpNet::V6(n) => n.prefix_len() < 16,
        };
        if huge {
            continue;
        }
        let addrs = first_mid_last(e.cidr);
        blocks.insert(e.cidr);
        sources.extend(addrs);
    }
    for (c, b) in CONTROLS.iter().zip(CONTROL_BLOCKS) {
        if let Ok(a) = c.parse::<IpAddr>() {
            sources.push(a);
            blocks.insert(parse_net(b));
        }
    }
    // One Cloudflare range per family that no expectation touches: the "everything else" rows.
    for v6 in [false, true] {
        let pick = CLOUDFLARE.iter().map(|s| parse_net(s)).find(|n| {
            matches!(n, IpNet::V6(_)) == v6
                && !sc.expects.iter().any(|e| {
                    e.cidr.prefix_len() >= 8 && (e.cidr.contains(n) || n.contains(&e.cidr))
                })
        });
        if let Some(n) = pick {
            let fml = first_mid_last(n);
            let mid = fml[fml.len() / 2];
            sources.push(mid);
            blocks.insert(n);
        }
    }
    let mut probes = vec![];
    for src in sources {
        for &port in &sc.ports {
            let (expected, e) = sc.expected(port, src);
            if expected == Verdict::RateLimited {
                // One burst per limited expectation (or port default), from the first source
                // probed inside it (its first address, or a control for a catch-all): bursts
                // from several addresses would share the rule's tokens and starve each other.
                let key = (e.map(|e| e.line), port);
                if !burst_for.contains(&key) {
                    burst_for.insert(key);
                    bursts.push((src, port));
                }
                continue;
            }
            if probes
                .iter()
                .any(|p: &Probe| p.src == src && p.port == port)
            {
                continue;
            }
            probes.push(Probe {
                src,
                port,
                expected,
                line: e.map(|e| e.line),
                burst: false,
                outcomes: vec![],
                retried: false,
            });
        }
    }
    for (src, port) in bursts {
        let (expected, e) = sc.expected(port, src);
        probes.push(Probe {
            src,
            port,
            expected,
            line: e.map(|e| e.line),
            burst: true,
            outcomes: vec![],
            retried: false,
        });
    }
    (probes, blocks.into_iter().collect())
}

/// Add probes for sources derived from origin-audit's rows: `(source, port, burst)`. Returns
/// the source addresses that are new (they need an AnyIP route in the client).
pub fn add_probes(
    sc: &Scenario,
    probes: &mut Vec<Probe>,
    reqs: &[(IpAddr, u16, bool)],
) -> Vec<IpAddr> {
    let known: BTreeSet<IpAddr> = probes.iter().map(|p| p.src).collect();
    let mut fresh = BTreeSet::new();
    for &(src, port, burst) in reqs {
        if probes
            .iter()
            .any(|p| p.src == src && p.port == port && p.burst == burst)
        {
            continue;
        }
        let (expected, e) = sc.expected(port, src);
        probes.push(Probe {
            src,
            port,
            expected,
            line: e.map(|e| e.line),
            burst,
            outcomes: vec![],
            retried: false,
        });
        if !known.contains(&src) {
            fresh.insert(src);
        }
    }
    fresh.into_iter().collect()
}

/// AnyIP host routes in the client for `addrs`, in one `ip -batch` call (`replace`, so a
/// source already covered is harmless).
pub fn route_sources(lab: &Lab, addrs: &[IpAddr]) -> Result<(), String> {
    if addrs.is_empty() {
        return Ok(());
    }
    let mut batch = String::new();
    for a in addrs {
        let len = if a.is_ipv6() { 128 } else { 32 };
        batch.push_str(&format!("route replace local {a}/{len} dev lo\n"));
    }
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["-n", &lab.client, "-batch", "-"]);
    netns::must(&mut cmd, Some(&batch)).map(|_| ())
}

/// Run the probes from the client namespace: singles first (timeouts tried once more), then
/// the bursts one after another (a burst must not share a rate limit's tokens with other
/// probes).
pub fn run_probes(lab: &Lab, exe: &str, probes: &mut [Probe]) -> Result<(), String> {
    let singles: Vec<usize> = (0..probes.len()).filter(|&i| !probes[i].burst).collect();
    run_batch(lab, exe, probes, &singles, 1)?;
    // Only timeouts are retried: a lost SYN can only turn an answer into silence, never the
    // other way round, so a second try cannot hide a real refusal or connection.
    let timeouts: Vec<usize> = singles
        .iter()
        .copied()
        .filter(|&i| probes[i].outcomes.first() == Some(&Outcome::Timeout))
        .collect();
    for &i in &timeouts {
        probes[i].outcomes.clear();
        probes[i].retried = true;
    }
    run_batch(lab, exe, probes, &timeouts, 1)?;
    let bursts: Vec<usize> = (0..probes.len()).filter(|&i| probes[i].burst).collect();
    for i in bursts {
        run_batch(lab, exe, probes, &[i], BURST)?;
    }
    Ok(())
}

fn run_batch(
    lab: &Lab,
    exe: &str,
    probes: &mut [Probe],
    which: &[usize],
    repeat: usize,
) -> Result<(), String> {
    if which.is_empty() {
        return Ok(());
    }
    let mut input = String::new();
    for &i in which {
        let p = &probes[i];
        let dst = if p.src.is_ipv6() {
            ORIGIN_V6
        } else {
            ORIGIN_V4
        };
        for _ in 0..repeat {
            input.push_str(&format!("{i} {} {dst} {}\n", p.src, p.port));
        }
    }
    let n = which.len() * repeat;
    // Every connect ends within its timeout; the rounds bound the whole batch.
    let rounds = n.div_ceil(PROBE_THREADS) as u64;
    let limit = Duration::from_millis(rounds * (CONNECT_TIMEOUT_MS + 500) + 10_000);
    let mut cmd = lab.in_client(exe);
    cmd.arg(crate::ROLE_ARG).args([
        "probe",
        &CONNECT_TIMEOUT_MS.to_string(),
        &PROBE_THREADS.to_string(),
    ]);
    let out = netns::run(&mut cmd, Some(&input), limit)?;
    if !out.ok() {
        return Err(format!("probe helper failed: {}", out.stderr.trim()));
    }
    let mut seen = 0;
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = f.first().and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        let Some(p) = probes.get_mut(i) else { continue };
        let o = match f.get(1).copied() {
            Some("connected") => Outcome::Connected,
            Some("refused") => Outcome::Refused,
            Some("unreachable") => Outcome::Unreachable,
            Some("timeout") => Outcome::Timeout,
            _ => {
                return Err(format!(
                    "probe from {} to port {} could not run: {line}",
                    p.src, p.port
                ));
            }
        };
        p.outcomes.push(o);
        seen += 1;
    }
    if seen != n {
        return Err(format!("probe helper answered {seen} of {n} probes"));
    }
    Ok(())
}

/// Step b: does the kernel agree with the expectations? One message per disagreement; `bad[i]`
/// is set for each probe that disagrees.
pub fn check(sc: &Scenario, probes: &[Probe], bad: &mut [bool]) -> Vec<String> {
    let mut fails = vec![];
    for (i, p) in probes.iter().enumerate() {
        let listening = sc.serves(p.port, p.src.is_ipv6());
        let ok = if p.burst {
            let good = p
                .outcomes
                .iter()
                .filter(|o| **o == Outcome::Connected)
                .count();
            match p.expected {
                // Some get through, some do not: that is what a rate limit looks like.
                Verdict::RateLimited if listening => good > 0 && good < p.outcomes.len(),
                Verdict::RateLimited => p.outcomes.contains(&Outcome::Timeout),
                _ => true,
            }
        } else {
            let o = p.outcomes.first().copied();
            match p.expected {
                // Accept means a socket completed the handshake. Where nothing takes the
                // connection (no socket, loopback-only, bound to another device or family) the
                // kernel answers RST: that cell is `reject` (521), not `accept`.
                Verdict::Accept => listening && o == Some(Outcome::Connected),
                Verdict::Drop => o == Some(Outcome::Timeout),
                Verdict::Reject => matches!(o, Some(Outcome::Refused | Outcome::Unreachable)),
                Verdict::RateLimited | Verdict::Conditional => true,
            }
        };
        if !ok {
            if let Some(b) = bad.get_mut(i) {
                *b = true;
            }
            let why = match p.line {
                Some(l) => format!("expectation on line {l}"),
                None => format!("default for port {}", p.port),
            };
            fails.push(format!(
                "kernel disagrees with the scenario: port {} from {}: expected {} ({why}{}), kernel: {}",
                p.port,
                p.src,
                p.expected,
                if listening {
                    ""
                } else if p.expected == Verdict::Accept {
                    ", but nothing takes the connection there: such a cell is `reject`"
                } else {
                    ", nothing listens"
                },
                p.kernel_summary()
            ));
        }
    }
    fails
}

/// Wait until the link carries both families end to end (neighbour discovery done): the very
/// first SYN over a fresh veth can be lost, and its retransmission comes only after our connect
/// timeout — it would look like a drop. Runs before any ruleset is loaded, to a port nothing
/// listens on, so "refused" means the path works.
pub fn wait_link(lab: &Lab, exe: &str) -> Result<(), String> {
    let input = format!(
        "0 {} {ORIGIN_V4} 9\n1 {} {ORIGIN_V6} 9\n",
        netns::CLIENT_V4,
        netns::CLIENT_V6
    );
    let mut last = String::new();
    for _ in 0..10 {
        let mut cmd = lab.in_client(exe);
        cmd.arg(crate::ROLE_ARG).args(["probe", "1000", "2"]);
        let out = netns::run(&mut cmd, Some(&input), Duration::from_secs(10))?;
        let refused = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("refused"))
            .count();
        if refused == 2 {
            return Ok(());
        }
        last = out.stdout;
    }
    Err(format!(
        "the veth link did not come up in 10 tries: {}",
        last.trim()
    ))
}
