//! Mutation fuzzing on stable Rust: the real fixtures (tests/fixtures, each produced by the real
//! tools), mutated by a seeded generator, through the four dump parsers (iptables-save, nft -j,
//! ipset save, the provider range list) and the snapshot reader followed by the whole analysis.
//! No input may panic or hang; noise that is no dump at all must be refused, never accepted as
//! an empty ruleset.
//!
//! Deterministic: the seed is fixed (`OA_FUZZ_SEED` overrides it), the case count bounded
//! (`OA_FUZZ_CASES` per target, default 400: a few seconds). A watchdog ends the process if one
//! case runs away (a hang is a failure, reported with the target and case). Longer run: see the
//! README ("Fuzzing").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use origin_audit::analysis::{self, Options};
use origin_audit::firewall::{Backend, Family, ipset, iptables_save, nft_json};
use origin_audit::snapshot::{Dumps, SNAPSHOT_SCHEMA, Snapshot};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn fixture(p: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn cases() -> usize {
    std::env::var("OA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn seed() -> u64 {
    std::env::var("OA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
}

/// Tokens that make parsers take unusual paths.
const TOKENS: &[&str] = &[
    "-A",
    "-I",
    "-N",
    ":",
    "[0:0]",
    "COMMIT",
    "*filter",
    "*nat",
    "-j",
    "-m",
    "--dport",
    "!",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "0x",
    "/",
    "/33",
    "/129",
    "-",
    "255.255.255.255",
    "::",
    "ffff:",
    "65536",
    "-1",
    "4294967296",
    "99999999999999999999",
    "null",
    "true",
    "\"elem\"",
    "\"set\"",
    "\"prefix\"",
    "\"range\"",
    "\\",
    "\t",
    "\0",
    "é",
    "create",
    "add",
    "timeout",
    "hash:net",
    "family",
    "inet6",
    "@",
    "%",
    "--match-set",
    "src,dst",
    "COMMIT\n",
    "\n",
    "#",
];

/// One mutation of `seed_text`: byte flips, token insertions, line deletions, duplications and
/// swaps, truncation, splices with another fixture.
fn mutate(rng: &mut Rng, text: &str, other: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(6) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(8) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(rng.below(lines.len() + 1), l);
            }
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                let tok = TOKENS[rng.below(TOKENS.len())];
                let l = &mut lines[i];
                let mut at = rng.below(l.len() + 1);
                while !l.is_char_boundary(at) {
                    at -= 1;
                }
                l.insert_str(at, tok);
            }
            4 => {
                // Cut the line (a file cut off mid-write).
                let l = &mut lines[i];
                let mut at = rng.below(l.len() + 1);
                while !l.is_char_boundary(at) {
                    at -= 1;
                }
                l.truncate(at);
            }
            5 => {
                let bytes: Vec<u8> = lines[i]
                    .bytes()
                    .map(|b| {
                        if rng.below(8) == 0 {
                            b ^ (1 << rng.below(7))
                        } else {
                            b
                        }
                    })
                    .collect();
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
            6 => {
                let o: Vec<&str> = other.lines().collect();
                if !o.is_empty() {
                    lines.insert(i, o[rng.below(o.len())].to_string());
                }
            }
            _ => {
                // Replace a number with an extreme one.
                let l = &mut lines[i];
                if let Some(p) = l.find(|c: char| c.is_ascii_digit()) {
                    let end = l[p..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(l.len(), |e| p + e);
                    let n =
                        ["0", "4294967295", "18446744073709551616", "65535", "-0"][rng.below(5)];
                    l.replace_range(p..end, n);
                }
            }
        }
    }
    let mut out = lines.join("\n");
    if rng.below(4) != 0 {
        out.push('\n');
    }
    if rng.below(10) == 0 {
        let mut at = rng.below(out.len() + 1);
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    out
}

static CURRENT: AtomicU64 = AtomicU64::new(0);

/// Runs `cases()` mutations of every seed through `f`; a panic fails with the input that
/// caused it. A watchdog aborts the process when one case takes more than 20 s.
fn fuzz(target: &str, seeds: &[String], f: &dyn Fn(&str)) -> usize {
    let mut rng = Rng(seed() ^ target.len() as u64 ^ 0xABCD);
    let n = cases();
    let t = target.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let watchdog = std::thread::spawn(move || {
        let mut last = (u64::MAX, Instant::now());
        while !stop2.load(Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_millis(200));
            let c = CURRENT.load(Ordering::Relaxed);
            if c != last.0 {
                last = (c, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(20) {
                eprintln!("fuzz {t}: case {c} ran for more than 20 s (hang)");
                std::process::abort();
            }
        }
    });
    let mut run = 0;
    for case in 0..n {
        let s = &seeds[case % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, s, other);
        CURRENT.store((case as u64) << 8 | target.len() as u64, Ordering::Relaxed);
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            stop.store(true, Ordering::Relaxed);
            panic!("fuzz {target}: case {case} panicked; input:\n{input}");
        }
        run += 1;
    }
    stop.store(true, Ordering::Relaxed);
    watchdog.thread().unpark();
    watchdog.join().unwrap();
    run
}

/// Line noise: no dump of any kind (never only comments and blank lines, which is a real,
/// empty dump).
fn noise(rng: &mut Rng) -> String {
    loop {
        let t = noise_once(rng);
        if !t
            .lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with('#'))
        {
            return t;
        }
    }
}

fn noise_once(rng: &mut Rng) -> String {
    (0..1 + rng.below(20))
        .map(|_| {
            (0..rng.below(60))
                .map(|_| char::from(b"!#$%&()*+<=>?@^_`|~qzxjkv"[rng.below(25)]))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn iptables_save_never_panics_on_mutated_dumps() {
    let seeds: Vec<String> = [
        "iptables/ufw-v4.nft.rules",
        "iptables/ufw-v6.nft.rules",
        "iptables/server-v4.legacy.rules",
        "iptables/server-v4.nft.rules",
        "iptables/server-v6.nft.rules",
        "iptables/fail2ban-v4.nft.rules",
    ]
    .iter()
    .map(|p| fixture(p))
    .collect();
    let n = fuzz("iptables-save", &seeds, &|t| {
        let _ = iptables_save::parse(t, Backend::IptablesNft, Family::V4, "fuzz");
    });
    assert_eq!(n, cases());
    let mut rng = Rng(seed());
    for _ in 0..50 {
        let t = noise(&mut rng);
        assert!(
            iptables_save::parse(&t, Backend::IptablesNft, Family::V4, "noise").is_err(),
            "noise accepted as an iptables-save dump:\n{t}"
        );
    }
}

#[test]
fn nft_json_never_panics_on_mutated_dumps() {
    let seeds: Vec<String> = [
        "nft/crowdsec.json",
        "nft/families.json",
        "nft/firewalld.json",
        "nft/iptables-nft.json",
        "nft/matches.json",
        "nft/nat.json",
        "nft/rejects.json",
        "nft/vmaps.json",
    ]
    .iter()
    .map(|p| fixture(p))
    .collect();
    // nft -j prints one line: mutate a pretty-printed form so line mutations reach inside.
    let seeds: Vec<String> = seeds
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            serde_json::to_string_pretty(&v).unwrap()
        })
        .collect();
    fuzz("nft -j", &seeds, &|t| {
        let _ = nft_json::parse(t, "fuzz");
    });
    let mut rng = Rng(seed());
    for _ in 0..50 {
        let t = noise(&mut rng);
        assert!(
            nft_json::parse(&t, "noise").is_err(),
            "noise accepted:\n{t}"
        );
    }
}

/// The kernel's set-element replies (hex) beside the terse listing they complete: mutated as
/// pretty JSON, so a mutation can hit the hex, the names or the structure.
#[test]
fn nft_set_elements_never_panic_the_decoder() {
    let terse = fixture("nft/setelem.terse.json");
    let kernel: serde_json::Value =
        serde_json::from_str(&fixture("nft/setelem.kernel.json")).unwrap();
    let seeds = vec![serde_json::to_string_pretty(&kernel).unwrap()];
    fuzz("nft set elements", &seeds, &|t| {
        if let Ok(k) = serde_json::from_str::<Vec<origin_audit::snapshot::NftSetElements>>(t) {
            let _ = nft_json::parse_with_elements(&terse, "fuzz", &k);
        }
    });
}

#[test]
fn ipset_never_panics_on_mutated_dumps() {
    let seeds: Vec<String> = ["ipset/fail2ban.ipset", "ipset/sets.ipset"]
        .iter()
        .map(|p| fixture(p))
        .collect();
    fuzz("ipset", &seeds, &|t| {
        let _ = ipset::parse(t, "fuzz");
    });
    let mut rng = Rng(seed());
    for _ in 0..50 {
        let t = noise(&mut rng);
        assert!(ipset::parse(&t, "noise").is_err(), "noise accepted:\n{t}");
    }
}

#[test]
fn range_lists_never_panic_and_noise_is_refused() {
    let provider = origin_audit::ranges::cloudflare();
    let b = provider.bundled_ranges().unwrap();
    let text: String = b
        .ipv4
        .iter()
        .map(|n| n.to_string())
        .chain(b.ipv6.iter().map(|n| n.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let api = serde_json::to_string_pretty(&serde_json::json!({
        "result": {
            "ipv4_cidrs": b.ipv4.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "ipv6_cidrs": b.ipv6.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "etag": "abc"
        },
        "success": true, "errors": [], "messages": []
    }))
    .unwrap();
    fuzz("ranges", &[text, api], &|t| {
        let _ = origin_audit::ranges::validate::parse_any("fuzz", t);
    });
    let mut rng = Rng(seed());
    for _ in 0..50 {
        let t = noise(&mut rng);
        assert!(
            origin_audit::ranges::validate::parse_any("noise", &t).is_err(),
            "noise accepted as a range list:\n{t}"
        );
    }
}

#[test]
fn snapshots_never_panic_the_reader_or_the_analysis() {
    let provider = origin_audit::ranges::cloudflare();
    let snap = Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        taken_at: "2026-11-26T00:00:00Z".into(),
        hostname: Some("origin".into()),
        listeners: None,
        interfaces: vec![],
        default_routes: vec![],
        bindv6only: None,
        forwarding: Default::default(),
        dumps: Dumps {
            iptables_nft_save: Some(fixture("iptables/ufw-v4.nft.rules")),
            ipset_save: Some(fixture("ipset/sets.ipset")),
            nft_json: vec![fixture("nft/vmaps.json")],
            ..Default::default()
        },
        ranges: provider.bundled_ranges().unwrap(),
        routing: None,
        netdev: None,
        conntrack: None,
        counters: None,
        read_errors: vec![],
        tls: None,
    };
    let seed_text = serde_json::to_string_pretty(&snap).unwrap();
    let mut opts = Options::new(time::OffsetDateTime::now_utc());
    opts.ports = vec![80, 443];
    let path = std::path::Path::new("fuzz.json");
    // Fewer cases: each accepted one runs the whole analysis.
    let n = fuzz("snapshot", &[seed_text], &|t| {
        if let Ok(s) = origin_audit::collect::offline::parse_snapshot(t, path) {
            let _ = analysis::analyze(&s, &opts);
        }
    });
    assert_eq!(n, cases());
}
