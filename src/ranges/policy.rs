//! Whether a syntactically valid list is plausibly the provider's: every prefix inside the
//! provider's allocations, none in special-purpose space, a plausible number of prefixes per
//! family, and no more than a bounded change from the last good list.
//!
//! Owns: the special-purpose address tables, [`Limits`] (read from `rules/<provider>.toml`,
//! `[allocations]` and `[limits]`), [`check_static`] and [`check_change`].
//! Must not: do I/O or parse text (that is `validate`); it receives finished [`Lists`].
//!
//! Why: `validate` only proves a list is well-formed. A hostile or broken mirror can serve a
//! well-formed list of someone else's space (`10.0.0.0/8`, documentation prefixes, one entry,
//! 50,000 /24s); the analysis would then audit the firewall against it and could call a ruleset
//! that drops Cloudflare "OK". Such a list must be refused before it is used or cached.

use super::validate::{Lists, RangesError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

/// `[limits]` of a provider file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub ipv4_count: CountBounds,
    pub ipv6_count: CountBounds,
    /// The largest share (percent of the last good list's address space, per family) one
    /// fetch may add, or remove.
    pub max_change_percent: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountBounds {
    pub min: usize,
    pub max: usize,
}

/// `[allocations]` of a provider file: the blocks every listed prefix must lie inside.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocations {
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
}

/// IPv4 special-purpose blocks: IANA IPv4 Special-Purpose Address Registry (RFC 6890 and the
/// RFCs it lists), plus multicast (RFC 5771) and the former class E (RFC 1112).
const SPECIAL_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (RFC 791)"),
    ("10.0.0.0/8", "private-use (RFC 1918)"),
    ("100.64.0.0/10", "shared CGNAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private-use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    (
        "192.88.99.0/24",
        "6to4 relay anycast, deprecated (RFC 7526)",
    ),
    ("192.168.0.0/16", "private-use (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112) and limited broadcast"),
];

/// IPv6 special-purpose blocks: IANA IPv6 Special-Purpose Address Registry and IPv6 Address
/// Space (RFC 4291: global unicast is 2000::/3; everything outside it that is not named below is
/// still refused as "not global unicast").
const SPECIAL_V6: &[(&str, &str)] = &[
    ("::1/128", "loopback (RFC 4291)"),
    ("::ffff:0:0/96", "IPv4-mapped (RFC 4291)"),
    ("64:ff9b::/96", "NAT64 well-known prefix (RFC 6052)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4 (RFC 3056)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique local, ULA (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

fn overlaps<N: PartialOrd + Copy>(a: (N, N), b: (N, N)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// The special-purpose class an IPv4 prefix overlaps, with the registry block.
pub fn special_v4(net: &Ipv4Net) -> Option<(&'static str, Ipv4Net)> {
    SPECIAL_V4.iter().find_map(|(block, class)| {
        let b: Ipv4Net = block.parse().ok()?;
        overlaps(
            (net.network(), net.broadcast()),
            (b.network(), b.broadcast()),
        )
        .then_some((*class, b))
    })
}

/// The special-purpose class an IPv6 prefix overlaps, with the registry block; a prefix
/// outside 2000::/3 that no named block covers is "not global unicast".
pub fn special_v6(net: &Ipv6Net) -> Option<(&'static str, Ipv6Net)> {
    let named = SPECIAL_V6.iter().find_map(|(block, class)| {
        let b: Ipv6Net = block.parse().ok()?;
        overlaps(
            (net.network(), net.broadcast()),
            (b.network(), b.broadcast()),
        )
        .then_some((*class, b))
    });
    if named.is_some() {
        return named;
    }
    let global: Ipv6Net = "2000::/3".parse().ok()?;
    (!global.contains(net)).then_some(("reserved, not global unicast (RFC 4291)", global))
}

fn special(net: &IpNet) -> Option<(&'static str, String)> {
    match net {
        IpNet::V4(n) => special_v4(n).map(|(c, b)| (c, b.to_string())),
        IpNet::V6(n) => special_v6(n).map(|(c, b)| (c, b.to_string())),
    }
}

/// The checks that need no history: special-purpose space, allocations, counts. Applied to
/// every list (fetched, cached, `--ranges-file`, bundled). `provider` names the provider in
/// messages; `origin` is where the list came from.
pub fn check_static(
    origin: &str,
    provider: &str,
    allocations: &Allocations,
    limits: &Limits,
    lists: &Lists,
) -> Result<(), RangesError> {
    let all = lists
        .ipv4
        .iter()
        .map(|n| IpNet::V4(*n))
        .chain(lists.ipv6.iter().map(|n| IpNet::V6(*n)));
    for net in all {
        if let Some((class, block)) = special(&net) {
            return Err(RangesError::SpecialPurpose {
                origin: origin.to_string(),
                entry: net.to_string(),
                class,
                block,
            });
        }
        let inside = match net {
            IpNet::V4(n) => allocations.ipv4.iter().any(|a| a.contains(&n)),
            IpNet::V6(n) => allocations.ipv6.iter().any(|a| a.contains(&n)),
        };
        if !inside {
            return Err(RangesError::OutsideAllocations {
                origin: origin.to_string(),
                entry: net.to_string(),
                provider: provider.to_string(),
            });
        }
    }
    for (family, count, b) in [
        ("IPv4", lists.ipv4.len(), limits.ipv4_count),
        ("IPv6", lists.ipv6.len(), limits.ipv6_count),
    ] {
        if count < b.min || count > b.max {
            return Err(RangesError::Count {
                origin: origin.to_string(),
                provider: provider.to_string(),
                family,
                count,
                min: b.min,
                max: b.max,
            });
        }
    }
    Ok(())
}

/// Inclusive address intervals as u128 (both families fit), merged and sorted.
fn intervals(nets: impl IntoIterator<Item = (u128, u128)>) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = nets.into_iter().collect();
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn size(iv: &[(u128, u128)]) -> u128 {
    iv.iter()
        .map(|(s, e)| (e - s).saturating_add(1))
        .fold(0, u128::saturating_add)
}

/// Addresses in both interval sets (each merged and sorted).
fn common(a: &[(u128, u128)], b: &[(u128, u128)]) -> u128 {
    let (mut i, mut j, mut n) = (0, 0, 0u128);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s <= e {
            n = n.saturating_add((e - s).saturating_add(1));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    n
}

fn v4_iv(n: &Ipv4Net) -> (u128, u128) {
    (
        u128::from(u32::from(n.network())),
        u128::from(u32::from(n.broadcast())),
    )
}

fn v6_iv(n: &Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

/// How one family's list differs from the last good one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyChange {
    /// Prefixes in the new list and not in the old one (as written), and the reverse.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Addresses covered by the new list and not by the old one, and the reverse.
    pub added_addresses: u128,
    pub removed_addresses: u128,
    /// Addresses the old list covers.
    pub old_addresses: u128,
}

impl FamilyChange {
    fn new<N: Ord + Copy + ToString>(
        old: &[N],
        new: &[N],
        iv: impl Fn(&N) -> (u128, u128),
    ) -> FamilyChange {
        let o = intervals(old.iter().map(&iv));
        let n = intervals(new.iter().map(&iv));
        let both = common(&o, &n);
        FamilyChange {
            added: new
                .iter()
                .filter(|x| !old.contains(x))
                .map(ToString::to_string)
                .collect(),
            removed: old
                .iter()
                .filter(|x| !new.contains(x))
                .map(ToString::to_string)
                .collect(),
            added_addresses: size(&n).saturating_sub(both),
            removed_addresses: size(&o).saturating_sub(both),
            old_addresses: size(&o),
        }
    }

    /// Percent of the old space, rounded up (so "50.1 %" never shows as an allowed 50);
    /// saturating (adding a /16 to a few /32s is a very large percentage).
    fn percent(&self, part: u128) -> u32 {
        if self.old_addresses == 0 {
            return if part == 0 { 0 } else { 100 };
        }
        u32::try_from(part.saturating_mul(100).div_ceil(self.old_addresses)).unwrap_or(u32::MAX)
    }

    /// More than `limit` percent of the old space added, or removed.
    fn exceeds(&self, limit: u8) -> bool {
        let limit = u128::from(limit);
        let over = |part: u128| part.saturating_mul(100) > self.old_addresses.saturating_mul(limit);
        over(self.added_addresses) || over(self.removed_addresses)
    }
}

/// Refuse a list that adds or removes more than `limit_percent` of either family's address
/// space compared with `baseline` (the last good list; `baseline_name` says which, e.g. "the
/// cache from 2026-03-01T00:00:00Z"). The error shows the diff.
pub fn check_change(
    origin: &str,
    baseline: &Lists,
    baseline_name: &str,
    new: &Lists,
    limit_percent: u8,
) -> Result<(), RangesError> {
    let families = [
        ("IPv4", FamilyChange::new(&baseline.ipv4, &new.ipv4, v4_iv)),
        ("IPv6", FamilyChange::new(&baseline.ipv6, &new.ipv6, v6_iv)),
    ];
    for (family, c) in families {
        if c.exceeds(limit_percent) {
            return Err(RangesError::TooMuchChange {
                origin: origin.to_string(),
                family,
                baseline: baseline_name.to_string(),
                added_percent: c.percent(c.added_addresses),
                removed_percent: c.percent(c.removed_addresses),
                limit_percent,
                added: c.added,
                removed: c.removed,
            });
        }
    }
    Ok(())
}

/// A list of prefixes for a message: the first few, then how many more.
pub fn shortened(list: &[String]) -> String {
    const SHOW: usize = 6;
    if list.is_empty() {
        return "none".to_string();
    }
    let mut s = list
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOW {
        s.push_str(&format!(" … and {} more", list.len() - SHOW));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap in a test is a failed test
mod tests {
    use super::*;
    use crate::ranges::cloudflare;

    fn lists(v4: &[&str], v6: &[&str]) -> Lists {
        let mut l = Lists {
            ipv4: v4.iter().map(|s| s.parse().unwrap()).collect(),
            ipv6: v6.iter().map(|s| s.parse().unwrap()).collect(),
        };
        l.ipv4.sort_unstable();
        l.ipv6.sort_unstable();
        l
    }

    fn bundled() -> Lists {
        let r = cloudflare().bundled_ranges().unwrap();
        Lists {
            ipv4: r.ipv4,
            ipv6: r.ipv6,
        }
    }

    fn check(l: &Lists) -> Result<(), RangesError> {
        let p = cloudflare();
        check_static(
            "https://mirror.example/ips",
            &p.name,
            &p.allocations,
            &p.limits,
            l,
        )
    }

    fn bundled_with(v4: &[&str], v6: &[&str]) -> Lists {
        let mut l = bundled();
        l.ipv4
            .extend(v4.iter().map(|s| s.parse::<Ipv4Net>().unwrap()));
        l.ipv6
            .extend(v6.iter().map(|s| s.parse::<Ipv6Net>().unwrap()));
        l
    }

    #[test]
    fn the_bundled_list_and_the_pre_2021_real_list_pass() {
        check(&bundled()).unwrap();
        // Cloudflare's list before April 2021: 104.16.0.0/12 instead of /13 + /14.
        let mut old = bundled();
        old.ipv4
            .retain(|n| !["104.16.0.0/13", "104.24.0.0/14"].contains(&n.to_string().as_str()));
        old.ipv4.push("104.16.0.0/12".parse().unwrap());
        check(&old).unwrap();
        check_change("u", &bundled(), "the bundled list", &old, 50).unwrap();
        check_change("u", &old, "the cache", &bundled(), 50).unwrap();
    }

    #[test]
    fn special_purpose_space_is_refused_naming_prefix_and_class() {
        for (v4, v6, entry, class) in [
            (
                vec!["10.0.0.0/8"],
                vec![],
                "10.0.0.0/8",
                "private-use (RFC 1918)",
            ),
            (
                vec!["198.51.100.0/24"],
                vec![],
                "198.51.100.0/24",
                "documentation TEST-NET-2",
            ),
            (vec!["100.64.0.0/10"], vec![], "100.64.0.0/10", "CGNAT"),
            (vec!["100.0.0.0/8"], vec![], "100.0.0.0/8", "CGNAT"),
            (vec!["127.0.0.0/8"], vec![], "127.0.0.0/8", "loopback"),
            (
                vec!["169.254.0.0/16"],
                vec![],
                "169.254.0.0/16",
                "link-local",
            ),
            (vec!["224.0.0.0/8"], vec![], "224.0.0.0/8", "multicast"),
            (vec!["250.0.0.0/8"], vec![], "250.0.0.0/8", "reserved"),
            (vec![], vec!["fd00::/16"], "fd00::/16", "unique local, ULA"),
            (
                vec![],
                vec!["2001:db8::/32"],
                "2001:db8::/32",
                "documentation",
            ),
            (vec![], vec!["fe80::/16"], "fe80::/16", "link-local"),
            (vec![], vec!["ff02::/16"], "ff02::/16", "multicast"),
            (vec![], vec!["::1/128"], "::1/128", "loopback"),
            (vec![], vec!["4000::/16"], "4000::/16", "not global unicast"),
        ] {
            let e = check(&bundled_with(&v4, &v6)).unwrap_err();
            assert!(
                matches!(e, RangesError::SpecialPurpose { entry: ref en, .. } if en == entry),
                "{entry}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.starts_with("https://mirror.example/ips: "), "{msg}");
            assert!(msg.contains(entry) && msg.contains(class), "{msg}");
        }
    }

    #[test]
    fn outside_the_allocations_is_refused() {
        let e = check(&bundled_with(&["8.8.8.0/24"], &[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "https://mirror.example/ips: 8.8.8.0/24 is outside every allocation of cloudflare \
             (rules/cloudflare.toml [allocations]): not cloudflare's range"
        );
        // Wider than an allocation, though overlapping it.
        let e = check(&bundled_with(&[], &["2606::/16"])).unwrap_err();
        assert!(matches!(e, RangesError::OutsideAllocations { .. }), "{e}");
    }

    #[test]
    fn counts_per_family() {
        let e = check(&lists(
            &["173.245.48.0/20"],
            &["2400:cb00::/32", "2606:4700::/32"],
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "https://mirror.example/ips: 1 IPv4 ranges, outside the plausible 5..=200 for \
             cloudflare (rules/cloudflare.toml [limits])"
        );
        // 50,000 prefixes, all inside an allocation (/28s of 104.16.0.0/12, which holds only
        // 4096 /24s): refused by their count.
        let many: Vec<String> = (0..50_000u32)
            .map(|i| {
                let a = u32::from(std::net::Ipv4Addr::new(104, 16, 0, 0)) + i * 16;
                format!("{}/28", std::net::Ipv4Addr::from(a))
            })
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = check(&lists(&many, &["2400:cb00::/32", "2606:4700::/32"])).unwrap_err();
        assert!(
            matches!(
                e,
                RangesError::Count {
                    count: 50_000,
                    family: "IPv4",
                    ..
                }
            ),
            "{e}"
        );
        let mut one_v6 = bundled();
        one_v6.ipv6.truncate(1);
        let e = check(&one_v6).unwrap_err();
        assert!(
            matches!(e, RangesError::Count { family: "IPv6", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_big_change_is_refused_with_the_diff() {
        // Dropping 104.16.0.0/13, 104.24.0.0/14 and 162.158.0.0/15 removes well over half of
        // the IPv4 space.
        let mut cut = bundled();
        cut.ipv4.retain(|n| {
            ![
                "104.16.0.0/13",
                "104.24.0.0/14",
                "162.158.0.0/15",
                "172.64.0.0/13",
            ]
            .contains(&n.to_string().as_str())
        });
        let e = check_change(
            "https://m/ips",
            &bundled(),
            "the bundled list of 2026-07-02",
            &cut,
            50,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "https://m/ips: the IPv4 list changes too much at once compared with the \
                 bundled list of 2026-07-02: +0% / -"
            ),
            "{msg}"
        );
        assert!(
            msg.contains(
                "added: none; removed: 104.16.0.0/13, 104.24.0.0/14, 162.158.0.0/15, 172.64.0.0/13"
            ),
            "{msg}"
        );
        // Doubling the space (adding one allocation the size of all the rest) is refused too.
        let mut grown = bundled();
        grown.ipv4.retain(|n| n.to_string() != "172.64.0.0/13");
        let e = check_change("u", &grown, "the cache", &bundled(), 50).unwrap_err();
        assert!(
            matches!(e, RangesError::TooMuchChange { ref added, .. } if added == &vec!["172.64.0.0/13".to_string()]),
            "{e}"
        );
        // A small change passes.
        let mut small = bundled();
        small.ipv4.retain(|n| n.to_string() != "131.0.72.0/22");
        check_change("u", &bundled(), "the cache", &small, 50).unwrap();
        // IPv6: cut to one /32 of the fourteen /32s' worth (the /29 counts as eight).
        let v6 = lists(&[], &["2400:cb00::/32"]);
        let mut swapped = bundled();
        swapped.ipv6 = v6.ipv6;
        let e = check_change("u", &bundled(), "the cache", &swapped, 50).unwrap_err();
        assert!(
            matches!(e, RangesError::TooMuchChange { family: "IPv6", .. }),
            "{e}"
        );
    }

    #[test]
    fn long_diffs_are_shortened() {
        let l: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        assert_eq!(shortened(&l), "n0, n1, n2, n3, n4, n5 … and 4 more");
        assert_eq!(shortened(&[]), "none");
    }

    #[test]
    fn interval_arithmetic() {
        let a = intervals([(0, 9), (5, 14), (20, 29)]);
        assert_eq!(a, vec![(0, 14), (20, 29)]);
        assert_eq!(size(&a), 25);
        let b = intervals([(10, 24)]);
        assert_eq!(common(&a, &b), 10);
        // Nested prefixes count once.
        let c = FamilyChange::new(
            &["104.16.0.0/12".parse::<Ipv4Net>().unwrap()],
            &[
                "104.16.0.0/12".parse::<Ipv4Net>().unwrap(),
                "104.16.0.0/13".parse().unwrap(),
            ],
            v4_iv,
        );
        assert_eq!((c.added_addresses, c.removed_addresses), (0, 0));
        assert_eq!(c.old_addresses, 1 << 20);
    }
}
