//! Decoding nft set elements from the kernel's `NFT_MSG_NEWSETELEM` replies (kept verbatim in
//! the snapshot by `collect::nft_sets`) into the model's [`SetElem`]s.
//!
//! Owns: the element attribute layout (include/uapi/linux/netfilter/nf_tables.h) and the
//! kernel's interval encoding. Must not: do I/O.
//!
//! Kernel facts used here:
//! - A reply carries `NFTA_SET_ELEM_LIST_ELEMENTS`, a list of `NFTA_LIST_ELEM`, each with its
//!   key in `NFTA_SET_ELEM_KEY` → `NFTA_DATA_VALUE` (the key's bytes as the set stores them:
//!   addresses and ports in network order, marks in host order).
//! - An interval set without concatenation (the rbtree backend) stores each interval as a
//!   start element and an end element flagged `NFT_SET_ELEM_INTERVAL_END` whose key is the
//!   first value *after* the interval; adjacent intervals share it, so a start may follow a
//!   start, and a last start without an end runs to the top of the key space (nft's own
//!   `interval_map_decompose` reads them back the same way).
//! - A pipapo set (concatenations with intervals) gives each element its inclusive end in
//!   `NFTA_SET_ELEM_KEY_END`.
//! - `NFT_SET_ELEM_CATCHALL` is the catch-all element (`*`): it matches everything.

use super::addr::AddrRange;
use super::{Family, KeyValue, SetElem};
use crate::nlattr::{attrs, unhex};
use crate::snapshot::NftSetElements;

const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_SET_ELEM_CATCHALL: u32 = 2;

/// The key types decoded here (nft's datatype names, as `nft -j` prints a set's `"type"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ipv4,
    Ipv6,
    /// `inet_service`: a port, network order.
    Service,
    /// `inet_proto`: one byte.
    Proto,
    /// `mark`: host order.
    Mark,
}

impl KeyType {
    pub fn from_nft(name: &str) -> Option<KeyType> {
        Some(match name {
            "ipv4_addr" => KeyType::Ipv4,
            "ipv6_addr" => KeyType::Ipv6,
            "inet_service" => KeyType::Service,
            "inet_proto" => KeyType::Proto,
            "mark" => KeyType::Mark,
            _ => return None,
        })
    }
    fn len(self) -> usize {
        match self {
            KeyType::Ipv4 | KeyType::Mark => 4,
            KeyType::Ipv6 => 16,
            KeyType::Service => 2,
            KeyType::Proto => 1,
        }
    }
    fn max(self) -> u128 {
        match self {
            KeyType::Ipv6 => u128::MAX,
            t => (1u128 << (8 * t.len())) - 1,
        }
    }
    /// The key's numeric value (addresses and ports compare as big-endian numbers).
    fn value(self, b: &[u8]) -> Result<u128, String> {
        if b.len() < self.len() {
            return Err(format!("key of {} bytes, expected {}", b.len(), self.len()));
        }
        let b = &b[..self.len()];
        Ok(match self {
            KeyType::Mark => u128::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            _ => b.iter().fold(0u128, |v, x| (v << 8) | u128::from(*x)),
        })
    }
    fn elem(self, lo: u128, hi: u128) -> SetElem {
        let key = match self {
            KeyType::Ipv4 => KeyValue::Addr(AddrRange {
                family: Family::V4,
                start: lo,
                end: hi,
            }),
            KeyType::Ipv6 => KeyValue::Addr(AddrRange {
                family: Family::V6,
                start: lo,
                end: hi,
            }),
            // Ports, protocols and marks fit in 32 bits.
            _ => KeyValue::Int(lo as u64, hi as u64),
        };
        SetElem {
            key: vec![key],
            nomatch: false,
            verdict: None,
        }
    }
}

/// One element as the kernel listed it.
struct Raw {
    key: u128,
    end: Option<u128>,
    interval_end: bool,
}

/// The elements of one set. `interval`: the set has `flags interval`. An element the decoder
/// cannot read is an error naming the set: a set read partly must never pass for complete.
pub fn decode(d: &NftSetElements, ty: KeyType, interval: bool) -> Result<Vec<SetElem>, String> {
    let name = format!("set {} {} {}", d.family, d.table, d.set);
    let err = |m: String| format!("{name}: kernel elements: {m}");
    let mut raw = Vec::new();
    let mut catchall = false;
    for m in &d.messages {
        let bytes = unhex(m).ok_or_else(|| err("reply is not hex".into()))?;
        for (t, list) in attrs(&bytes).map_err(err)? {
            if t != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (t, e) in attrs(list).map_err(err)? {
                if t != NFTA_LIST_ELEM {
                    continue;
                }
                let (mut key, mut end, mut flags) = (None, None, 0u32);
                for (t, v) in attrs(e).map_err(err)? {
                    match t {
                        NFTA_SET_ELEM_KEY => key = Some(data_value(v, ty).map_err(err)?),
                        NFTA_SET_ELEM_KEY_END => end = Some(data_value(v, ty).map_err(err)?),
                        NFTA_SET_ELEM_FLAGS if v.len() >= 4 => {
                            flags = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                        }
                        NFTA_SET_ELEM_DATA => {
                            return Err(err("a map's data is not decoded here".into()));
                        }
                        _ => {}
                    }
                }
                if flags & NFT_SET_ELEM_CATCHALL != 0 {
                    catchall = true;
                    continue;
                }
                let key = key.ok_or_else(|| err("an element without a key".into()))?;
                raw.push(Raw {
                    key,
                    end,
                    interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
                });
            }
        }
    }
    if catchall {
        return Ok(vec![ty.elem(0, ty.max())]);
    }
    if !interval || raw.iter().any(|r| r.end.is_some()) {
        return raw
            .into_iter()
            .map(|r| match r.end {
                Some(e) if e < r.key => Err(err(format!("interval ends ({e}) before it starts"))),
                Some(e) => Ok(ty.elem(r.key, e)),
                None if r.interval_end => {
                    Err(err("an interval end in a set without intervals".into()))
                }
                None => Ok(ty.elem(r.key, r.key)),
            })
            .collect();
    }
    // rbtree intervals: sort, then pair each start with what follows it. At one key an end
    // sorts before a start (the end of one interval, the start of the next).
    raw.sort_unstable_by_key(|r| (r.key, !r.interval_end));
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for r in raw {
        match (open, r.interval_end) {
            (Some(s), true) => {
                if r.key > s {
                    out.push(ty.elem(s, r.key - 1));
                }
                open = None;
            }
            // An end with nothing open: the padding end at 0, or a repeated end.
            (None, true) => {}
            (Some(s), false) => {
                if r.key > s {
                    out.push(ty.elem(s, r.key - 1));
                }
                open = Some(r.key);
            }
            (None, false) => open = Some(r.key),
        }
    }
    if let Some(s) = open {
        out.push(ty.elem(s, ty.max()));
    }
    Ok(out)
}

fn data_value(nested: &[u8], ty: KeyType) -> Result<u128, String> {
    for (t, v) in attrs(nested)? {
        if t == NFTA_DATA_VALUE {
            return ty.value(v);
        }
    }
    Err("a key without NFTA_DATA_VALUE".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;
    use crate::firewall::nft_json;

    /// tests/fixtures/nft/setelem.*: one namespace (regen.sh), listed three ways: `nft -j`
    /// (full), `nft -j -t` (terse), and the kernel's GETSETELEM replies for the sets the rules
    /// reference, as `origin-audit snapshot` recorded them.
    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/nft/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    #[test]
    fn kernel_elements_decode_to_what_nft_itself_lists() {
        let full = nft_json::parse(&fixture("setelem.json"), "full").unwrap();
        let kernel: Vec<NftSetElements> =
            serde_json::from_str(&fixture("setelem.kernel.json")).unwrap();
        let terse = nft_json::parse_with_elements(&fixture("setelem.terse.json"), "terse", &kernel)
            .unwrap();
        let (f, t) = (&full[0], &terse[0]);
        for name in [
            "bans4", "bans6", "hosts4", "ports", "portr", "marks", "protos",
        ] {
            let mut want = f.set(name).unwrap().elements.clone();
            let mut got = t.set(name).unwrap().elements.clone();
            // nft lists elements in its own order; membership is what matters.
            let key = |e: &SetElem| format!("{:?}", e.key);
            want.sort_by_key(key);
            got.sort_by_key(key);
            assert!(!want.is_empty(), "{name}");
            assert_eq!(got, want, "{name}");
        }
        // Not referenced by any rule: never read, so empty in the terse model.
        assert!(t.set("unused").unwrap().elements.is_empty());
        assert!(kernel.iter().all(|k| k.set != "unused"));
    }

    #[test]
    fn interval_edges() {
        // Built by hand in the kernel's encoding: [10, 20) then adjacent [20, 30), and an
        // open start at 250 (runs to the top); a padding end at 0.
        let mut elems = Vec::new();
        for (key, end) in [
            (0u8, true),
            (10, false),
            (20, false),
            (30, true),
            (250, false),
        ] {
            elems.extend(list_elem(&[192, 0, 2, key], end));
        }
        let d = NftSetElements {
            family: "ip".into(),
            table: "t".into(),
            set: "s".into(),
            messages: vec![crate::nlattr::hex(&nest(3, &elems))],
            error: None,
        };
        let got = decode(&d, KeyType::Ipv4, true).unwrap();
        let base = 0xc000_0200u128;
        let r = |a: u128, b: u128| KeyType::Ipv4.elem(base + a, base + b);
        assert_eq!(
            got,
            vec![
                r(10, 19),
                r(20, 29),
                KeyType::Ipv4.elem(base + 250, u128::from(u32::MAX))
            ]
        );
        // Garbage is an error naming the set, never an empty set.
        let bad = NftSetElements {
            messages: vec!["0800".into()],
            ..d.clone()
        };
        assert!(
            decode(&bad, KeyType::Ipv4, true)
                .unwrap_err()
                .contains("set ip t s")
        );
        let odd = NftSetElements {
            messages: vec!["abc".into()],
            ..d
        };
        assert!(decode(&odd, KeyType::Ipv4, true).is_err());
    }

    fn nest(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + body.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&(ty | 0x8000).to_ne_bytes());
        v.extend_from_slice(body);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    fn list_elem(key: &[u8], end: bool) -> Vec<u8> {
        let mut e = nest(NFTA_SET_ELEM_KEY, &nest(NFTA_DATA_VALUE, key));
        if end {
            let mut f = Vec::new();
            f.extend_from_slice(&8u16.to_ne_bytes());
            f.extend_from_slice(&NFTA_SET_ELEM_FLAGS.to_ne_bytes());
            f.extend_from_slice(&NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
            e.extend(f);
        }
        nest(NFTA_LIST_ELEM, &e)
    }
}
