//! Address ranges and sets of them: the one representation of every prefix, dotted mask,
//! `iprange` and nft interval the parsers meet, so the analysis can split provider ranges at
//! every boundary any rule draws.
//!
//! Owns: [`AddrRange`] (an inclusive range of one family, as integers), [`AddrSet`] (a sorted
//! union of ranges), and the parsers for `a.b.c.d/len`, `a.b.c.d/255.255.0.0`, `a-b`.
//! Must not: know about rules or packets.

use super::Family;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of addresses of one family. IPv4 addresses use the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddrRange {
    pub family: Family,
    pub start: u128,
    pub end: u128,
}

pub fn addr_to_int(a: IpAddr) -> (Family, u128) {
    match a {
        IpAddr::V4(v4) => (Family::V4, u32::from(v4) as u128),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

pub fn int_to_addr(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

pub fn family_max(family: Family) -> u128 {
    match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

fn bits(family: Family) -> u32 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

impl AddrRange {
    pub fn single(a: IpAddr) -> Self {
        let (family, v) = addr_to_int(a);
        AddrRange {
            family,
            start: v,
            end: v,
        }
    }

    pub fn from_net(n: IpNet) -> Self {
        let (family, v) = addr_to_int(n.network());
        let host_bits = bits(family) - u32::from(n.prefix_len());
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        AddrRange {
            family,
            start: v,
            end: v | span,
        }
    }

    /// Inclusive range between two addresses of the same family (`iprange`, nft `a-b`).
    pub fn between(a: IpAddr, b: IpAddr) -> Option<Self> {
        let (fa, va) = addr_to_int(a);
        let (fb, vb) = addr_to_int(b);
        (fa == fb && va <= vb).then_some(AddrRange {
            family: fa,
            start: va,
            end: vb,
        })
    }

    /// Everything of one family (`0.0.0.0/0`).
    pub fn all(family: Family) -> Self {
        AddrRange {
            family,
            start: 0,
            end: family_max(family),
        }
    }

    pub fn contains(&self, family: Family, v: u128) -> bool {
        self.family == family && self.start <= v && v <= self.end
    }

    /// Parse `addr`, `addr/len`, `addr/dotted-mask` (non-contiguous masks rejected), `a-b`.
    /// A prefix with host bits set is normalized like the kernel does (`10.0.0.1/8` → 10/8).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
            let b: IpAddr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
            return AddrRange::between(a, b).ok_or_else(|| format!("bad range {s:?}"));
        }
        let (addr, len) = match s.split_once('/') {
            None => {
                let a: IpAddr = s.parse().map_err(|_| format!("bad address {s:?}"))?;
                return Ok(AddrRange::single(a));
            }
            Some(x) => x,
        };
        let a: IpAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
        let family = addr_to_int(a).0;
        let plen: u32 = if let Ok(n) = len.parse::<u32>() {
            n
        } else {
            // Dotted mask, e.g. 192.168.122.0/255.255.255.0 (iptables-save prints this form for
            // non-CIDR masks only, but admins' scripts use it too).
            let m: IpAddr = len
                .parse()
                .map_err(|_| format!("bad mask {len:?} in {s:?}"))?;
            let (mf, mv) = addr_to_int(m);
            if mf != family {
                return Err(format!("mask family differs from address in {s:?}"));
            }
            let ones = mv.count_ones();
            let b = bits(family);
            let expect = if ones == 0 {
                0
            } else {
                (family_max(family) >> (b - ones)) << (b - ones)
            };
            if mv != expect {
                return Err(format!(
                    "non-contiguous mask {len:?} in {s:?} is not supported"
                ));
            }
            ones
        };
        if plen > bits(family) {
            return Err(format!("prefix length {plen} too long in {s:?}"));
        }
        let net = IpNet::new(a, plen as u8).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(AddrRange::from_net(net.trunc()))
    }

    /// The fewest CIDR prefixes covering exactly this range.
    pub fn to_cidrs(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        let b = bits(self.family);
        let mut cur = self.start;
        loop {
            // Largest aligned block starting at cur that fits in [cur, end].
            let mut host = if cur == 0 {
                b
            } else {
                cur.trailing_zeros().min(b)
            };
            loop {
                let span = if host >= 128 {
                    u128::MAX
                } else {
                    (1u128 << host) - 1
                };
                if cur.checked_add(span).is_some_and(|e| e <= self.end) {
                    break;
                }
                host -= 1;
            }
            let addr = int_to_addr(self.family, cur);
            if let Ok(n) = IpNet::new(addr, (b - host) as u8) {
                out.push(n);
            }
            let block_end = cur
                | if host >= 128 {
                    u128::MAX
                } else {
                    (1u128 << host) - 1
                };
            if block_end >= self.end {
                break;
            }
            cur = block_end + 1;
        }
        out
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.to_cidrs();
        if c.len() == 1 {
            write!(f, "{}", c[0])
        } else {
            write!(
                f,
                "{}-{}",
                int_to_addr(self.family, self.start),
                int_to_addr(self.family, self.end)
            )
        }
    }
}

/// A union of address ranges, kept sorted and merged. Used for address matches and for
/// reporting (fewest CIDRs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrSet {
    pub ranges: Vec<AddrRange>,
}

impl AddrSet {
    pub fn new(mut ranges: Vec<AddrRange>) -> Self {
        ranges.sort();
        let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if let Some(last) = out.last_mut()
                && last.family == r.family
                && (r.start <= last.end || last.end.checked_add(1) == Some(r.start))
            {
                last.end = last.end.max(r.end);
                continue;
            }
            out.push(r);
        }
        AddrSet { ranges: out }
    }

    pub fn single(r: AddrRange) -> Self {
        AddrSet { ranges: vec![r] }
    }

    /// `addr/mask` with a non-contiguous dotted mask (iptables accepts `10.0.0.0/255.0.255.0`):
    /// the addresses `a` with `a & mask == addr & mask`, as ranges. Each zero bit of the mask
    /// above its lowest one doubles the number of ranges; past `max_ranges` this returns `None`
    /// and the caller keeps the match as unknown rather than guess.
    pub fn masked(addr: IpAddr, mask: IpAddr, max_ranges: usize) -> Option<Self> {
        let (family, a) = addr_to_int(addr);
        let (mf, m) = addr_to_int(mask);
        if mf != family {
            return None;
        }
        let width = bits(family);
        let low = m.trailing_zeros().min(width);
        let block = if low >= 128 {
            u128::MAX
        } else {
            (1u128 << low) - 1
        };
        let free: Vec<u32> = (low..width).filter(|b| m & (1u128 << b) == 0).collect();
        if free.len() >= 64 || (1usize << free.len()) > max_ranges {
            return None;
        }
        let net = a & m;
        let ranges = (0u64..(1u64 << free.len()))
            .map(|combo| {
                let start = free
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| combo & (1 << i) != 0)
                    .fold(net, |acc, (_, b)| acc | (1u128 << b));
                AddrRange {
                    family,
                    start,
                    end: start | block,
                }
            })
            .collect();
        Some(AddrSet::new(ranges))
    }

    /// Binary search: O(log n) membership, so a 100k-element set costs nothing per block.
    pub fn contains(&self, family: Family, v: u128) -> bool {
        let idx = self
            .ranges
            .partition_point(|r| (r.family, r.end) < (family, v));
        self.ranges.get(idx).is_some_and(|r| r.contains(family, v))
    }

    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.ranges.iter().map(|r| r.family)
    }

    pub fn to_cidrs(&self) -> Vec<IpNet> {
        self.ranges.iter().flat_map(|r| r.to_cidrs()).collect()
    }
}

impl fmt::Display for AddrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<String> = self.to_cidrs().iter().map(|n| n.to_string()).collect();
        f.write_str(&v.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidr_mask_range_and_single() {
        let r = AddrRange::parse("192.168.122.0/255.255.255.0").expect("dotted");
        assert_eq!(r, AddrRange::parse("192.168.122.0/24").expect("cidr"));
        let r = AddrRange::parse("10.1.2.3/8").expect("host bits");
        assert_eq!(r.to_string(), "10.0.0.0/8");
        let r = AddrRange::parse("10.0.0.5-10.0.0.9").expect("range");
        assert_eq!((r.end - r.start), 4);
        assert!(AddrRange::parse("10.0.0.0/255.0.255.0").is_err());
        assert!(AddrRange::parse("10.0.0.0/33").is_err());
        assert!(AddrRange::parse("2400:cb00::/32").is_ok());
        assert!(AddrRange::parse("nonsense").is_err());
    }

    #[test]
    fn cidr_cover_is_minimal_and_exact() {
        let r = AddrRange::parse("10.0.0.1-10.0.0.6").expect("range");
        let c: Vec<String> = r.to_cidrs().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            c,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        let all = AddrRange::all(Family::V4);
        assert_eq!(all.to_cidrs().len(), 1);
        let all6 = AddrRange::all(Family::V6);
        assert_eq!(all6.to_cidrs()[0].to_string(), "::/0");
        let top = AddrRange::parse("255.255.255.254/31").expect("top");
        assert_eq!(top.to_cidrs().len(), 1);
    }

    #[test]
    fn non_contiguous_masks_expand_exactly() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let s = AddrSet::masked(ip("173.245.48.0"), ip("255.255.255.253"), 4096).expect("small");
        assert_eq!(s.to_string(), "173.245.48.0/32,173.245.48.2/32");
        let s = AddrSet::masked(ip("10.0.5.0"), ip("255.0.255.0"), 4096).expect("256 ranges");
        assert_eq!(s.ranges.len(), 256);
        let (f, v) = addr_to_int(ip("10.77.5.9"));
        assert!(s.contains(f, v));
        let (f, v) = addr_to_int(ip("10.77.6.9"));
        assert!(!s.contains(f, v));
        assert!(AddrSet::masked(ip("10.0.0.0"), ip("255.0.0.255"), 4096).is_none());
    }

    #[test]
    fn set_merges_and_searches() {
        let s = AddrSet::new(vec![
            AddrRange::parse("10.0.1.0/24").expect("a"),
            AddrRange::parse("10.0.0.0/24").expect("b"),
            AddrRange::parse("2001:db8::/32").expect("c"),
        ]);
        assert_eq!(s.ranges.len(), 2);
        let (f, v) = addr_to_int("10.0.1.7".parse().expect("ip"));
        assert!(s.contains(f, v));
        let (f, v) = addr_to_int("10.0.2.0".parse().expect("ip"));
        assert!(!s.contains(f, v));
        let (f, v) = addr_to_int("2001:db8::1".parse().expect("ip"));
        assert!(s.contains(f, v));
    }
}
