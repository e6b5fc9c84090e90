//! Splitting provider ranges into blocks every rule treats alike.
//!
//! Owns: [`Cuts`], the sorted boundaries (first address of a range, address after its end) of
//! every address range any rule, set, map or ipset mentions. Between two consecutive cuts no
//! address match can change its answer, so one representative address decides for the whole
//! block. This is what lets the analysis answer for every address without looping over them:
//! the work is O(boundaries · log) to build and O(cuts inside the provider ranges) to split.
//! Must not: evaluate rules.

use crate::firewall::addr::{AddrRange, family_max};
use crate::firewall::{Family, KeyValue, Match, Ruleset, SetElem, SetRef, Verdict};

pub struct Cuts {
    v4: Vec<u128>,
    v6: Vec<u128>,
}

impl Cuts {
    pub fn new(rs: &Ruleset) -> Self {
        let mut c = Collector::default();
        for t in &rs.tables {
            for s in &t.sets {
                c.elems(&s.elements);
            }
            for ch in &t.chains {
                for r in &ch.rules {
                    for m in &r.matches {
                        match m {
                            Match::Addr { set, .. } | Match::CtOrigAddr { set, .. } => {
                                for x in &set.ranges {
                                    c.range(x);
                                }
                            }
                            Match::Set {
                                set: SetRef::Anonymous(e),
                                ..
                            } => c.elems(e),
                            _ => {}
                        }
                    }
                    if let Verdict::Map(vm) = &r.verdict
                        && let SetRef::Anonymous(e) = &vm.map
                    {
                        c.elems(e);
                    }
                }
            }
        }
        for s in &rs.ipsets {
            c.elems(&s.elements);
        }
        c.v4.sort_unstable();
        c.v4.dedup();
        c.v6.sort_unstable();
        c.v6.dedup();
        Cuts { v4: c.v4, v6: c.v6 }
    }

    /// Adds the boundaries of ranges drawn outside netfilter (routes, policy rules, tc).
    pub fn add(&mut self, ranges: &[AddrRange]) {
        for r in ranges {
            let (v, max) = match r.family {
                Family::V4 => (&mut self.v4, family_max(Family::V4)),
                Family::V6 => (&mut self.v6, family_max(Family::V6)),
            };
            v.push(r.start);
            if r.end < max {
                v.push(r.end + 1);
            }
        }
        for v in [&mut self.v4, &mut self.v6] {
            v.sort_unstable();
            v.dedup();
        }
    }

    /// Splits each range at every cut inside it.
    pub fn split(&self, ranges: &[AddrRange]) -> Vec<AddrRange> {
        let mut out = Vec::new();
        for r in ranges {
            let cuts = match r.family {
                Family::V4 => &self.v4,
                Family::V6 => &self.v6,
            };
            let lo = cuts.partition_point(|&c| c <= r.start);
            let hi = cuts.partition_point(|&c| c <= r.end);
            let mut start = r.start;
            for &c in &cuts[lo..hi] {
                out.push(AddrRange {
                    family: r.family,
                    start,
                    end: c - 1,
                });
                start = c;
            }
            out.push(AddrRange {
                family: r.family,
                start,
                end: r.end,
            });
        }
        out
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Default)]
struct Collector {
    v4: Vec<u128>,
    v6: Vec<u128>,
}

impl Collector {
    fn range(&mut self, r: &AddrRange) {
        let v = match r.family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        };
        v.push(r.start);
        if r.end < family_max(r.family) {
            v.push(r.end + 1);
        }
    }
    fn elems(&mut self, e: &[SetElem]) {
        for el in e {
            for k in &el.key {
                if let KeyValue::Addr(r) = k {
                    self.range(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{AddrSet, Backend, Chain, Dir, Rule, RuleRef, Table, TableFamily};

    fn rule(set: &str) -> Rule {
        Rule {
            matches: vec![Match::Addr {
                dir: Dir::Src,
                set: AddrSet::single(AddrRange::parse(set).expect("range")),
                negate: false,
            }],
            effects: vec![],
            verdict: Verdict::Drop,
            source: RuleRef {
                direction: Default::default(),
                backend: Backend::Nft,
                family: TableFamily::Ip,
                table: "t".into(),
                chain: "c".into(),
                position: 1,
                handle: None,
                text: String::new(),
            },
        }
    }

    #[test]
    fn splits_only_where_rules_draw_lines() {
        let rs = Ruleset {
            tables: vec![Table {
                backend: Backend::Nft,
                family: TableFamily::Ip,
                name: "t".into(),
                chains: vec![Chain {
                    name: "c".into(),
                    base: None,
                    rules: vec![rule("173.245.48.0/24"), rule("10.0.0.0/8")],
                }],
                sets: vec![],
            }],
            ipsets: vec![],
        };
        let cuts = Cuts::new(&rs);
        let r = AddrRange::parse("173.245.48.0/20").expect("cf");
        let b = cuts.split(&[r]);
        let s: Vec<String> = b.iter().map(|x| x.to_string()).collect();
        assert_eq!(s, ["173.245.48.0/24", "173.245.49.0-173.245.63.255"]);
        // A range no rule touches stays whole.
        let r = AddrRange::parse("104.16.0.0/13").expect("cf");
        assert_eq!(cuts.split(&[r]), vec![r]);
    }
}
