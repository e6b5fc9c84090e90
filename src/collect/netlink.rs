//! A bounded netlink dump: send one `NLM_F_DUMP` request, collect the replies until NLMSG_DONE.
//!
//! Owns: [`dump`] and the `nlmsghdr` framing (encoded and parsed by hand; no unsafe code here,
//! `netlink-sys` owns the socket). Used by `sockets` (sock_diag) and `firewall` (nf_tables table
//! list). Must not: interpret the payloads.

use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::time::{Duration, Instant};
use thiserror::Error;

/// include/uapi/linux/netlink.h
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_DUMP: u16 = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLMSG_HDRLEN: usize = 16;
/// recv(2) flag (Linux value): return the real datagram length even when it did not fit, so a
/// truncated reply is detected instead of silently losing data.
const MSG_TRUNC: i32 = 0x20;

/// Upper bounds so a misbehaving reply cannot loop us forever.
const DUMP_DEADLINE: Duration = Duration::from_secs(5);
const MAX_DATAGRAMS: usize = 100_000;
const RECV_BUF: usize = 1 << 16;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel answered NLMSG_ERROR; `errno` is positive (1 = EPERM).
    #[error("{what}: kernel returned {}", io::Error::from_raw_os_error(*errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("{what}: malformed reply: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("{what}: no complete reply within {} s", limit.as_secs_f64())]
    TimedOut { what: &'static str, limit: Duration },
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// `struct nlmsghdr` followed by `payload`, with `NLM_F_REQUEST | NLM_F_DUMP`.
pub fn encode(msg_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&msg_type.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid 0: the kernel
    b.extend_from_slice(payload);
    b
}

/// Open a socket of `protocol`, send `request` (from [`encode`]) and return every reply
/// message as (type, payload) until NLMSG_DONE. `what` names the request in errors.
pub fn dump(
    protocol: isize,
    request: &[u8],
    what: &'static str,
) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
    dump_within(protocol, request, what, DUMP_DEADLINE)
}

/// [`dump`] that gives up after `limit`. The deadline is checked after every datagram too:
/// the kernel builds each part of a dump inside the `recv` that asks for it, and some dumps
/// grow quadratically (a set's elements: each part walks the set from its start), so a dump
/// can run for minutes without ever blocking.
pub fn dump_within(
    protocol: isize,
    request: &[u8],
    what: &'static str,
    limit: Duration,
) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
    let io_err = |source| NetlinkError::Io { what, source };
    let socket = Socket::new(protocol).map_err(io_err)?;
    socket.set_non_blocking(true).map_err(io_err)?;
    socket
        .send_to(request, &SocketAddr::new(0, 0), 0)
        .map_err(io_err)?;
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    for _ in 0..MAX_DATAGRAMS {
        buf.clear();
        match socket.recv(&mut buf, MSG_TRUNC) {
            Ok(n) if n > buf.len() => {
                return Err(NetlinkError::Malformed {
                    what,
                    message: format!("datagram of {n} bytes truncated to {}", buf.len()),
                });
            }
            Ok(_) => {
                if parse_datagram(&buf, &mut out)
                    .map_err(|message| NetlinkError::Malformed { what, message })?
                    .map_err(|errno| NetlinkError::Kernel { what, errno })?
                {
                    return Ok(out);
                }
                if Instant::now() >= deadline {
                    return Err(NetlinkError::TimedOut { what, limit });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(NetlinkError::TimedOut { what, limit });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(NetlinkError::Io { what, source }),
        }
    }
    Err(NetlinkError::Malformed {
        what,
        message: format!("no NLMSG_DONE after {MAX_DATAGRAMS} datagrams"),
    })
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub use crate::nlattr::align4;

/// Split one datagram into messages. Outer error: malformed framing; inner error: the kernel's
/// NLMSG_ERROR errno (positive). `Ok(Ok(true))` at NLMSG_DONE.
pub fn parse_datagram(
    buf: &[u8],
    out: &mut Vec<(u16, Vec<u8>)>,
) -> Result<Result<bool, i32>, String> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_ne(buf, off).unwrap_or(0) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!("message length {len} at byte {off}"));
        }
        let payload = &buf[off + NLMSG_HDRLEN..off + len];
        match ty {
            NLMSG_DONE => {
                // NLMSG_DONE carries an int: a negative errno when the dump itself failed.
                let err = u32_ne(payload, 0).unwrap_or(0) as i32;
                return Ok(if err < 0 { Err(-err) } else { Ok(true) });
            }
            NLMSG_ERROR => {
                let errno = u32_ne(payload, 0)
                    .ok_or_else(|| format!("short NLMSG_ERROR at byte {off}"))?
                    as i32;
                // errno 0 is an ACK, not an error.
                if errno != 0 {
                    return Ok(Err(-errno));
                }
            }
            1 => {} // NLMSG_NOOP
            _ => out.push((ty, payload.to_vec())),
        }
        off += align4(len);
    }
    Ok(Ok(false))
}

pub use crate::nlattr::attrs;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    fn msg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn messages_until_done() {
        let mut d = msg(20, &[1, 2, 3, 4, 5]);
        d.extend([0, 0, 0]); // padding to 4
        d.extend(msg(20, &[9; 4]));
        let mut out = Vec::new();
        assert_eq!(parse_datagram(&d, &mut out), Ok(Ok(false)));
        assert_eq!(out, vec![(20, vec![1, 2, 3, 4, 5]), (20, vec![9; 4])]);
        assert_eq!(
            parse_datagram(&msg(NLMSG_DONE, &[0; 4]), &mut out),
            Ok(Ok(true))
        );
    }

    #[test]
    fn kernel_error_and_bad_length() {
        let mut p = (-1i32).to_ne_bytes().to_vec();
        p.extend([0u8; 16]);
        assert_eq!(
            parse_datagram(&msg(NLMSG_ERROR, &p), &mut Vec::new()),
            Ok(Err(1))
        );
        let mut m = msg(20, &[0; 8]);
        m.truncate(20);
        assert!(parse_datagram(&m, &mut Vec::new()).is_err());
    }

    #[test]
    fn attribute_walk() {
        let p = [8, 0, 1, 0, b'a', b'b', 0, 0, 5, 0, 0x02, 0x80, 7, 0, 0, 0];
        let a = attrs(&p).unwrap();
        assert_eq!(a, vec![(1, &b"ab\0\0"[..]), (2, &[7u8][..])]);
        assert!(attrs(&[200, 0, 1, 0]).is_err());
    }
}
