//! Listening TCP sockets of this network namespace, with their owning process.
//!
//! Owns: the sock_diag netlink dump ([`listeners_netlink`]: request encoded and replies parsed by
//! hand), the `/proc/net/tcp{,6}` fallback ([`parse_proc_net_tcp`], pure), the inode → pid map
//! from `/proc/*/fd`, and [`read_listeners`] which puts them together and deduplicates.
//! Must not: decide whether a listener is reachable (the analysis does, with `bindv6only`).

use super::netlink::{self, NetlinkError};
use crate::snapshot::Listener;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use thiserror::Error;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
/// include/net/tcp_states.h
const TCP_LISTEN: u8 = 10;
/// include/uapi/linux/sock_diag.h
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// include/uapi/linux/inet_diag.h: `enum { INET_DIAG_NONE, MEMINFO, INFO, VEGASINFO, CONG, TOS,
/// TCLASS, SKMEMINFO, SHUTDOWN, DCTCPINFO, PROTOCOL, SKV6ONLY, … }`.
const INET_DIAG_SKV6ONLY: u16 = 11;
/// sizeof(struct inet_diag_msg): family, state, timer, retrans (4) + inet_diag_sockid (48) +
/// expires, rqueue, wqueue, uid, inode (20).
const INET_DIAG_MSG_LEN: usize = 72;

#[derive(Debug, Error)]
pub enum SocketsError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{path}: {source}")]
    Proc {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} line {line}: {message}")]
    ProcParse {
        path: String,
        line: usize,
        message: String,
    },
}

/// One listening socket as the kernel reports it, before process lookup and deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    pub address: IpAddr,
    pub port: u16,
    pub inode: u64,
    pub uid: u32,
    /// `idiag_if` (SO_BINDTODEVICE), 0 = any.
    pub ifindex: u32,
    pub v6only: Option<bool>,
    /// Listener's accept queue length and backlog (`idiag_rqueue`/`idiag_wqueue` of a LISTEN
    /// socket, inet_diag.c); `None` from /proc/net/tcp, which shows no backlog.
    pub accept_queue: Option<(u32, u32)>,
}

/// What [`read_listeners`] found, and whether it had to fall back.
#[derive(Debug)]
pub struct ListenerRead {
    pub listeners: Vec<Listener>,
    /// Set when sock_diag failed and `/proc/net/tcp{,6}` was used instead (no v6only, no
    /// bound interface).
    pub netlink_error: Option<SocketsError>,
}

/// Listening TCP sockets (IPv4 and IPv6) via sock_diag, falling back to `/proc/net/tcp{,6}`.
/// `ifnames` maps interface index → name for SO_BINDTODEVICE sockets.
pub fn read_listeners(ifnames: &HashMap<u32, String>) -> Result<ListenerRead, SocketsError> {
    let (raw, netlink_error) = match listeners_netlink() {
        Ok(v) => (v, None),
        Err(e) => (listeners_proc()?, Some(e)),
    };
    let wanted: HashSet<u64> = raw.iter().map(|s| s.inode).filter(|&i| i != 0).collect();
    let owners = socket_owners(Path::new("/proc"), &wanted);
    Ok(ListenerRead {
        listeners: assemble(raw, &owners, ifnames),
        netlink_error,
    })
}

/// One listener per address, port, bound device and accept-queue state. SO_REUSEPORT gives
/// several sockets (often of several processes) on the same address:port; which of them takes a
/// SYN is the connection's hash, so members that behave alike are one entry (the first whose
/// owner is known, else the first), while a member whose accept queue is full stays apart from
/// the members that accept. Sorted by port, then address.
pub fn assemble(
    raw: Vec<RawSocket>,
    owners: &HashMap<u64, (u32, Option<String>)>,
    ifnames: &HashMap<u32, String>,
) -> Vec<Listener> {
    type Key = (u16, IpAddr, Option<String>, bool);
    let mut by_key: BTreeMap<Key, Listener> = BTreeMap::new();
    for s in raw {
        let owner = owners.get(&s.inode);
        let l = Listener {
            address: s.address,
            port: s.port,
            pid: owner.map(|o| o.0),
            process: owner.and_then(|o| o.1.clone()),
            v6only: s.v6only,
            accept_queue: s.accept_queue.map(|q| q.0),
            backlog: s.accept_queue.map(|q| q.1),
            bound_iface: (s.ifindex != 0).then(|| {
                ifnames
                    .get(&s.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex {}", s.ifindex))
            }),
        };
        let full = matches!(s.accept_queue, Some((q, b)) if q > b);
        let key = (s.port, s.address, l.bound_iface.clone(), full);
        match by_key.get_mut(&key) {
            Some(existing) if existing.pid.is_none() && l.pid.is_some() => *existing = l,
            Some(_) => {}
            None => {
                by_key.insert(key, l);
            }
        }
    }
    by_key.into_values().collect()
}

/// Both families via sock_diag.
pub fn listeners_netlink() -> Result<Vec<RawSocket>, SocketsError> {
    let mut out = listeners_netlink_family(AF_INET)?;
    out.extend(listeners_netlink_family(AF_INET6)?);
    Ok(out)
}

const WHAT: &str = "netlink sock_diag (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY)";

fn listeners_netlink_family(family: u8) -> Result<Vec<RawSocket>, SocketsError> {
    let req = netlink::encode(SOCK_DIAG_BY_FAMILY, 1, &encode_request(family));
    let mut out = Vec::new();
    for (ty, payload) in netlink::dump(NETLINK_SOCK_DIAG, &req, WHAT)? {
        if ty != SOCK_DIAG_BY_FAMILY {
            continue;
        }
        let parsed = parse_inet_diag_msg(&payload).map_err(|message| NetlinkError::Malformed {
            what: WHAT,
            message,
        })?;
        out.extend(parsed);
    }
    Ok(out)
}

/// `struct inet_diag_req_v2` (include/uapi/linux/inet_diag.h), native endian except the
/// (zeroed) socket id ports/addresses, which are network order.
///
/// `idiag_ext` stays 0: INET_DIAG_SKV6ONLY (11) does not fit the 8-bit extension mask, and the
/// kernel adds it unasked to every AF_INET6 socket in LISTEN or CLOSE state
/// (net/ipv4/inet_diag.c, `inet_diag_msg_attrs_fill`).
pub fn encode_request(family: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(56);
    b.push(family); // sdiag_family
    b.push(IPPROTO_TCP); // sdiag_protocol
    b.push(0); // idiag_ext
    b.push(0); // pad
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // idiag_states
    b.extend_from_slice(&[0u8; 48]); // struct inet_diag_sockid id
    b
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// `struct inet_diag_msg` and its attributes. `None` for a socket not in LISTEN (the kernel
/// filters by `idiag_states`, so that would only be a kernel quirk).
pub fn parse_inet_diag_msg(p: &[u8]) -> Result<Option<RawSocket>, String> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(format!("inet_diag_msg of {} bytes", p.len()));
    }
    let family = p[0];
    if p[1] != TCP_LISTEN {
        return Ok(None);
    }
    let port = u16::from_be_bytes([p[4], p[5]]);
    let src = &p[8..24];
    let address = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(src);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        f => return Err(format!("unexpected address family {f}")),
    };
    let ifindex = u32_ne(p, 40).unwrap_or(0);
    // struct inet_diag_msg: ... idiag_expires @52, idiag_rqueue @56, idiag_wqueue @60,
    // idiag_uid @64, idiag_inode @68. For a listener rqueue is sk_ack_backlog and wqueue
    // sk_max_ack_backlog (tcp_diag_get_info).
    let accept_queue = u32_ne(p, 56).zip(u32_ne(p, 60));
    let uid = u32_ne(p, 64).unwrap_or(0);
    let inode = u64::from(u32_ne(p, 68).unwrap_or(0));
    let mut v6only = None;
    for (ty, data) in netlink::attrs(&p[INET_DIAG_MSG_LEN..])? {
        if ty == INET_DIAG_SKV6ONLY {
            v6only = data.first().map(|&b| b != 0);
        }
    }
    Ok(Some(RawSocket {
        address,
        port,
        inode,
        uid,
        ifindex,
        v6only,
        accept_queue,
    }))
}

/// Fallback: `/proc/net/tcp` and `/proc/net/tcp6` of this process's network namespace.
pub fn listeners_proc() -> Result<Vec<RawSocket>, SocketsError> {
    let mut out = Vec::new();
    for (path, family) in [("/proc/net/tcp", AF_INET), ("/proc/net/tcp6", AF_INET6)] {
        match std::fs::read_to_string(path) {
            Ok(text) => out.extend(parse_proc_net_tcp(&text, family == AF_INET6, path)?),
            // No IPv6 in this kernel: no IPv6 listeners.
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == AF_INET6 => {}
            Err(source) => {
                return Err(SocketsError::Proc {
                    path: path.to_string(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Parse `/proc/net/tcp` (`v6 = false`) or `/proc/net/tcp6` text; keep sockets in state `0A`
/// (TCP_LISTEN). Addresses are printed by the kernel as the raw in-memory words with `%08X`
/// (net/ipv4/tcp_ipv4.c `get_tcp4_sock`), so each 32-bit word is turned back into bytes in this
/// machine's byte order: the text must come from a host of the same endianness, which it does
/// (it is read live, never stored in a snapshot). Ports are printed in host order.
pub fn parse_proc_net_tcp(
    text: &str,
    v6: bool,
    path: &str,
) -> Result<Vec<RawSocket>, SocketsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let err = |message: String| SocketsError::ProcParse {
            path: path.to_string(),
            line: i + 1,
            message,
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 10 {
            return Err(err(format!("expected at least 10 fields, got {}", f.len())));
        }
        if f[3] != "0A" {
            continue;
        }
        let (addr_hex, port_hex) = f[1]
            .split_once(':')
            .ok_or_else(|| err(format!("local address {:?} has no port", f[1])))?;
        let port = u16::from_str_radix(port_hex, 16)
            .map_err(|e| err(format!("port {port_hex:?}: {e}")))?;
        let address =
            parse_hex_addr(addr_hex, v6).ok_or_else(|| err(format!("address {addr_hex:?}")))?;
        let uid = f[7]
            .parse()
            .map_err(|e| err(format!("uid {:?}: {e}", f[7])))?;
        let inode = f[9]
            .parse()
            .map_err(|e| err(format!("inode {:?}: {e}", f[9])))?;
        out.push(RawSocket {
            address,
            port,
            inode,
            uid,
            ifindex: 0,
            v6only: None,
            accept_queue: None,
        });
    }
    Ok(out)
}

fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let words = if v6 { 4 } else { 1 };
    if hex.len() != words * 8 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = Vec::with_capacity(words * 4);
    for w in 0..words {
        let v = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).ok()?;
        bytes.extend_from_slice(&v.to_ne_bytes());
    }
    Some(if v6 {
        let a: [u8; 16] = bytes.try_into().ok()?;
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        let a: [u8; 4] = bytes.try_into().ok()?;
        IpAddr::V4(Ipv4Addr::from(a))
    })
}

/// Map socket inodes to (pid, comm) by reading the `/proc/PID/fd/*` links (`socket:[INODE]`).
/// Processes of other users are unreadable without root and are skipped silently: their
/// listeners then simply have no owner. The lowest pid holding a socket wins (for a forked
/// server that is usually the parent).
pub fn socket_owners(
    proc_root: &Path,
    wanted: &HashSet<u64>,
) -> HashMap<u64, (u32, Option<String>)> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return found;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        let mut comm: Option<Option<String>> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if !wanted.contains(&inode) || found.contains_key(&inode) {
                continue;
            }
            let name = comm
                .get_or_insert_with(|| {
                    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                        .ok()
                        .map(|s| s.trim_end().to_string())
                })
                .clone();
            found.insert(inode, (pid, name));
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    // Real text: `ip netns exec oa-fix-N cat /proc/net/tcp` and `.../tcp6` on this machine
    // (Linux 6.18.44 x86_64, little endian), with a python3 process listening on
    // 127.0.0.1:8443, [::]:80 (v6only 0) and [::]:443 (v6only 1). `ss -ltnpe` showed inodes
    // 14837, 14839, 14838 respectively.
    const PROC_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 14837 1 00000000ee3d57aa 100 0 0 10 0                     
";
    const PROC_TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 14839 1 00000000f3cae2c1 100 0 0 10 0
   1: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 14838 1 0000000091ccc9cb 100 0 0 10 0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_tcp_listeners() {
        let v = parse_proc_net_tcp(PROC_TCP, false, "/proc/net/tcp").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v[0].port, 8443);
        assert_eq!(v[0].inode, 14837);
        let v = parse_proc_net_tcp(PROC_TCP6, true, "/proc/net/tcp6").unwrap();
        let got: Vec<(String, u16, u64)> = v
            .iter()
            .map(|s| (s.address.to_string(), s.port, s.inode))
            .collect();
        assert_eq!(
            got,
            vec![("::".into(), 80, 14839), ("::".into(), 443, 14838)]
        );
    }

    #[test]
    fn proc_tcp_skips_non_listen_and_reports_bad_lines() {
        // An established connection (state 01) from the same machine's format.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   1: 0100007F:20FB 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1\n";
        assert!(
            parse_proc_net_tcp(text, false, "/proc/net/tcp")
                .unwrap()
                .is_empty()
        );
        let bad = "header\n   0: 0100007F 00000000:0000 0A 0 0 0 0 0 1\n";
        let e = parse_proc_net_tcp(bad, false, "/proc/net/tcp").unwrap_err();
        assert!(e.to_string().contains("/proc/net/tcp line 2"), "{e}");
    }

    fn diag_msg(
        family: u8,
        port: u16,
        addr: &[u8],
        ifindex: u32,
        inode: u32,
        v6only: Option<u8>,
    ) -> Vec<u8> {
        let mut p = vec![family, TCP_LISTEN, 0, 0];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        let mut src = [0u8; 16];
        src[..addr.len()].copy_from_slice(addr);
        p.extend_from_slice(&src);
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&ifindex.to_ne_bytes());
        p.extend_from_slice(&[0u8; 8]);
        p.extend_from_slice(&[0u8; 12]); // expires, rqueue, wqueue
        p.extend_from_slice(&1000u32.to_ne_bytes());
        p.extend_from_slice(&inode.to_ne_bytes());
        if let Some(v) = v6only {
            p.extend_from_slice(&5u16.to_ne_bytes());
            p.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
            p.extend_from_slice(&[v, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn inet_diag_msg_parsing() {
        let a = parse_inet_diag_msg(&diag_msg(AF_INET6, 443, &[0; 16], 3, 77, Some(1)))
            .unwrap()
            .unwrap();
        assert_eq!(a.address, "::".parse::<IpAddr>().unwrap());
        assert_eq!(
            (a.port, a.ifindex, a.inode, a.v6only),
            (443, 3, 77, Some(true))
        );
        let b = parse_inet_diag_msg(&diag_msg(AF_INET, 80, &[10, 0, 0, 1], 0, 78, None))
            .unwrap()
            .unwrap();
        assert_eq!(b.address, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((b.port, b.v6only, b.uid), (80, None, 1000));
        let mut short = diag_msg(AF_INET, 80, &[10, 0, 0, 1], 0, 1, None);
        short.truncate(40);
        assert!(parse_inet_diag_msg(&short).is_err());
    }

    #[test]
    fn dedup_keeps_one_per_address_port_with_an_owner() {
        let s = |inode, addr: &str, port| RawSocket {
            address: addr.parse().unwrap(),
            port,
            inode,
            uid: 0,
            ifindex: 0,
            v6only: None,
            accept_queue: None,
        };
        // SO_REUSEPORT: three sockets on 0.0.0.0:443, the first of another user (no owner).
        let raw = vec![
            s(1, "0.0.0.0", 443),
            s(2, "0.0.0.0", 443),
            s(3, "0.0.0.0", 443),
            s(4, "::", 443),
        ];
        let owners = HashMap::from([
            (2, (200, Some("nginx".into()))),
            (3, (300, Some("nginx".into()))),
        ]);
        let v = assemble(raw, &owners, &HashMap::new());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].address.to_string(), "0.0.0.0");
        assert_eq!(v[0].pid, Some(200));
        assert_eq!(v[0].process.as_deref(), Some("nginx"));
        assert_eq!(v[1].pid, None);
    }

    #[test]
    fn a_full_reuseport_member_and_devices_stay_apart() {
        let s = |inode, ifindex, q: Option<(u32, u32)>| RawSocket {
            address: "0.0.0.0".parse().unwrap(),
            port: 443,
            inode,
            uid: 0,
            ifindex,
            v6only: None,
            accept_queue: q,
        };
        let raw = vec![
            s(1, 0, Some((0, 511))),
            s(2, 0, Some((512, 511))),
            s(3, 0, Some((3, 511))),
            s(4, 7, Some((0, 511))),
        ];
        let v = assemble(raw, &HashMap::new(), &HashMap::new());
        let got: Vec<(Option<&str>, Option<u32>)> = v
            .iter()
            .map(|l| (l.bound_iface.as_deref(), l.accept_queue))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, Some(0)),
                (None, Some(512)),
                (Some("ifindex 7"), Some(0))
            ]
        );
    }

    #[test]
    fn bound_interface_is_named() {
        let raw = vec![RawSocket {
            address: "0.0.0.0".parse().unwrap(),
            port: 80,
            inode: 9,
            uid: 0,
            ifindex: 4,
            v6only: None,
            accept_queue: None,
        }];
        let v = assemble(
            raw,
            &HashMap::new(),
            &HashMap::from([(4, "eth0".to_string())]),
        );
        assert_eq!(v[0].bound_iface.as_deref(), Some("eth0"));
    }

    #[test]
    fn request_layout() {
        let r = encode_request(AF_INET6);
        assert_eq!(r.len(), 56);
        assert_eq!(&r[..4], &[AF_INET6, IPPROTO_TCP, 0, 0]);
        assert_eq!(u32_ne(&r, 4), Some(1 << 10));
    }
}
