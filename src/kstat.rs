//! Kernel counters that findings cite as evidence: pure parsing of `/proc/net/netstat` (the
//! TcpExt `ListenOverflows` / `ListenDrops` counters) and `/proc/net/stat/nf_conntrack` (the
//! per-CPU `drop`, `early_drop` and `insert_failed` counters).
//!
//! Owns: the counters' meaning and their parsing. Must not: do I/O (collect reads the files) or
//! decide anything (the counters are cumulative since boot, or since the namespace was created:
//! they say a problem happened, never that it is happening now).

use serde::{Deserialize, Serialize};

/// Cumulative counters of the network namespace, as read (absent when a file or a column is
/// missing: an older kernel, conntrack not loaded).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelCounters {
    /// TcpExt `ListenOverflows`: SYNs and handshake ACKs dropped because a listener's accept
    /// queue was full (tcp_conn_request, tcp_v4_syn_recv_sock).
    #[serde(default)]
    pub listen_overflows: Option<u64>,
    /// TcpExt `ListenDrops`: every drop of a packet meant for a listener (includes the
    /// overflows).
    #[serde(default)]
    pub listen_drops: Option<u64>,
    /// nf_conntrack `drop`, summed over CPUs: packets dropped because no entry could be
    /// created (the table was full and nothing could be evicted).
    #[serde(default)]
    pub conntrack_drop: Option<u64>,
    /// nf_conntrack `early_drop`, summed over CPUs: entries evicted to make room.
    #[serde(default)]
    pub conntrack_early_drop: Option<u64>,
    /// nf_conntrack `insert_failed`, summed over CPUs.
    #[serde(default)]
    pub conntrack_insert_failed: Option<u64>,
}

/// The TcpExt counters of `/proc/net/netstat` (a line of names followed by a line of values,
/// per group). Returns `(ListenOverflows, ListenDrops)`.
pub fn parse_netstat(text: &str) -> (Option<u64>, Option<u64>) {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else { break };
        let (Some(n), Some(v)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        let pairs: Vec<(&str, &str)> = n.split_whitespace().zip(v.split_whitespace()).collect();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.parse().ok())
        };
        return (get("ListenOverflows"), get("ListenDrops"));
    }
    (None, None)
}

/// `/proc/net/stat/nf_conntrack`: a header of column names, then one line of hexadecimal
/// values per CPU. Returns `(drop, early_drop, insert_failed)` summed over the CPUs.
pub fn parse_conntrack_stat(text: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (None, None, None);
    };
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let wanted = [col("drop"), col("early_drop"), col("insert_failed")];
    let mut sums = [Some(0u64); 3];
    let mut rows = 0;
    for line in lines {
        let vals: Vec<&str> = line.split_whitespace().collect();
        if vals.is_empty() {
            continue;
        }
        rows += 1;
        for (sum, idx) in sums.iter_mut().zip(wanted) {
            let v = idx
                .and_then(|i| vals.get(i))
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            *sum = match (*sum, v) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                _ => None,
            };
        }
    }
    if rows == 0 {
        return (None, None, None);
    }
    (sums[0], sums[1], sums[2])
}

impl KernelCounters {
    /// "ListenOverflows 12, ListenDrops 12 since boot", when read.
    pub fn listen_evidence(&self) -> Option<String> {
        let o = self.listen_overflows?;
        let d = self
            .listen_drops
            .map(|d| format!(", ListenDrops {d}"))
            .unwrap_or_default();
        Some(format!(
            "kernel counters: ListenOverflows {o}{d} (/proc/net/netstat, since boot)"
        ))
    }

    /// "conntrack drop 3, early_drop 40, insert_failed 0 since boot", when read.
    pub fn conntrack_evidence(&self) -> Option<String> {
        let d = self.conntrack_drop?;
        let e = self
            .conntrack_early_drop
            .map(|e| format!(", early_drop {e}"))
            .unwrap_or_default();
        let i = self
            .conntrack_insert_failed
            .map(|i| format!(", insert_failed {i}"))
            .unwrap_or_default();
        Some(format!(
            "kernel counters: drop {d}{e}{i} (/proc/net/stat/nf_conntrack, all CPUs, since boot)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpext_listen_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                    TcpExt: 0 17 19 4\n\
                    IpExt: InNoRoutes InTruncatedPkts\n\
                    IpExt: 0 0\n";
        assert_eq!(parse_netstat(text), (Some(17), Some(19)));
        assert_eq!(parse_netstat("IpExt: A\nIpExt: 1\n"), (None, None));
        assert_eq!(parse_netstat("TcpExt: ListenOverflows\n"), (None, None));
        assert_eq!(
            parse_netstat("TcpExt: ListenOverflows\nTcpExt: x\n"),
            (None, None)
        );
    }

    #[test]
    fn conntrack_drops_are_hex_and_summed_over_cpus() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 0000000a 00000002 00000000  00000000 00000000 00000000 00000000\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000006 00000000 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(parse_conntrack_stat(text), (Some(16), Some(2), Some(1)));
        assert_eq!(parse_conntrack_stat("entries drop\n"), (None, None, None));
        assert_eq!(parse_conntrack_stat(""), (None, None, None));
        // A cut-off row is not a zero.
        assert_eq!(
            parse_conntrack_stat("drop early_drop insert_failed\n00000001\n"),
            (Some(1), None, None)
        );
        let c = KernelCounters {
            conntrack_drop: Some(16),
            conntrack_early_drop: Some(2),
            ..Default::default()
        };
        assert_eq!(
            c.conntrack_evidence().unwrap(),
            "kernel counters: drop 16, early_drop 2 (/proc/net/stat/nf_conntrack, all CPUs, since boot)"
        );
        assert_eq!(c.listen_evidence(), None);
    }
}
