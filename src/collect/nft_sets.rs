//! Elements of nft sets, straight from the kernel: the `NFT_MSG_GETSETELEM` dump `nft` itself
//! sends, instead of `nft -j list ruleset` printing every element as JSON (72 s and 1.3 GB for
//! a 1M-element ban list; the dump of the same set takes well under a second).
//!
//! Owns: the request and the bounded dump over NETLINK_NETFILTER. Must not: interpret the
//! elements (`firewall::nft_setelem` decodes them, from the verbatim replies kept in the
//! snapshot).

use super::netlink::{self, NetlinkError};
use crate::snapshot::NftSetElements;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;

/// NFPROTO_* (include/uapi/linux/netfilter.h) and the nft family name of each.
pub(super) const NFPROTO: [(u8, &str); 6] = [
    (1, "inet"),
    (2, "ip"),
    (3, "arp"),
    (5, "netdev"),
    (7, "bridge"),
    (10, "ip6"),
];

fn nfproto(family: &str) -> Option<u8> {
    NFPROTO.iter().find(|(_, n)| *n == family).map(|(p, _)| *p)
}

/// A string attribute, NUL-terminated and padded to 4 bytes.
fn put_str(out: &mut Vec<u8>, ty: u16, s: &str) {
    let len = 4 + s.len() + 1;
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out.resize(out.len() + netlink::align4(len) - len, 0);
}

/// Every element of set `set` in table `family table`, as the kernel's replies.
pub fn read_set(family: &str, table: &str, set: &str) -> Result<NftSetElements, NetlinkError> {
    const WHAT: &str = "netlink NFT_MSG_GETSETELEM (NETLINK_NETFILTER)";
    let fam = nfproto(family).ok_or(NetlinkError::Malformed {
        what: WHAT,
        message: format!("unknown nft family {family:?}"),
    })?;
    // struct nfgenmsg { u8 nfgen_family; u8 version; __be16 res_id; }
    let mut payload = vec![fam, 0, 0, 0];
    put_str(&mut payload, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut payload, NFTA_SET_ELEM_LIST_SET, set);
    let req = netlink::encode(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        1,
        &payload,
    );
    // The tools' timeout bounds it like a command: the kernel's dump of a set is quadratic in
    // its size (each part re-walks the set), 100 s of system time for a million elements.
    let msgs = netlink::dump_within(
        netlink_sys::protocols::NETLINK_NETFILTER,
        &req,
        WHAT,
        super::cmd::timeout(),
    )?;
    let messages = msgs
        .into_iter()
        .filter(|(ty, p)| *ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM && p.len() >= 4)
        .map(|(_, p)| crate::nlattr::hex(&p[4..]))
        .collect();
    Ok(NftSetElements {
        family: family.to_string(),
        table: table.to_string(),
        set: set.to_string(),
        messages,
        error: None,
    })
}
