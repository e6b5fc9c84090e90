//! Netlink attributes (`struct nlattr` / `struct rtattr`: u16 length, u16 type, payload,
//! 4-byte aligned), walked without I/O: shared by the readers in `collect::netlink` and the
//! pure decoders of replies kept in a snapshot (`firewall::nft_setelem`), and the hex form
//! those replies are kept in.

/// Attributes starting at `p[0]`, as (type without the NLA_F_NESTED / NLA_F_NET_BYTEORDER
/// bits, payload).
pub fn attrs(p: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= p.len() {
        let alen = usize::from(u16::from_ne_bytes([p[off], p[off + 1]]));
        // NLA_F_NESTED / NLA_F_NET_BYTEORDER are the top two bits.
        let aty = u16::from_ne_bytes([p[off + 2], p[off + 3]]) & 0x3fff;
        if alen < 4 || off + alen > p.len() {
            return Err(format!("attribute length {alen} at byte {off}"));
        }
        out.push((aty, &p[off + 4..off + alen]));
        off += align4(alen);
    }
    // 1-3 bytes left over: not an attribute, not padding (the kernel pads every attribute).
    if off < p.len() {
        return Err(format!("{} stray bytes at byte {off}", p.len() - off));
    }
    Ok(out)
}

/// `n` rounded up to a multiple of 4 (NLMSG_ALIGN / NLA_ALIGN).
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `b` as lowercase hex (how a snapshot keeps a kernel reply verbatim).
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(D[usize::from(x >> 4)]));
        s.push(char::from(D[usize::from(x & 15)]));
    }
    s
}

/// The bytes of [`hex`] text; `None` for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let d = |c: u8| char::from(c).to_digit(16).map(|v| v as u8);
    b.chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}
