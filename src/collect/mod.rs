//! Readers of the host: the only code that runs commands or reads /proc to build a Snapshot.
//!
//! Owns: [`snapshot`] (snapshot file, offline dumps, or the live host) and [`read_host`] (the
//! live part without provider ranges). One file per concern: `cmd` (running tools with a
//! timeout), `netlink` (bounded dumps), `sockets` (listeners), `netif` (interfaces, routes,
//! bindv6only), `firewall` (raw rule dumps), `offline` (files given on the command line).
//! Must not: parse rules or decide anything; every failure becomes a [`ReadError`] in the
//! snapshot rather than an abort, except unreadable input files the user named.

pub mod cmd;
pub mod firewall;
pub mod netif;
pub mod netlink;
pub mod nft_sets;
pub mod offline;
pub mod routing;
pub mod sockets;
pub mod tc;
pub mod tls;

use crate::cli::InputArgs;
use crate::ranges::ProviderRanges;
use crate::ranges::fetch::LoadOptions;
use crate::snapshot::{
    DefaultRoute, Dumps, Interface, Listener, ReadError, SNAPSHOT_SCHEMA, Snapshot,
};
use std::collections::HashMap;

/// Build the snapshot `check`/`explain`/`snapshot` work on: a snapshot file, offline dumps, or
/// the live host (the network namespace this process runs in).
pub fn snapshot(input: &InputArgs) -> anyhow::Result<Snapshot> {
    if let Some(path) = &input.snapshot {
        if input.has_offline_dumps() {
            anyhow::bail!(
                "--snapshot cannot be combined with --iptables-save/--ip6tables-save/--nft-json/--ipset-save"
            );
        }
        // The snapshot carries the ranges it was taken with; they are not re-fetched.
        return Ok(offline::read_snapshot(path)?);
    }
    if input.has_offline_dumps() {
        let (dumps, read_errors) = offline::read_dumps(
            &input.iptables_save,
            &input.ip6tables_save,
            &input.nft_json,
            &input.ipset_save,
        )?;
        return Ok(Snapshot {
            schema: SNAPSHOT_SCHEMA.to_string(),
            taken_at: now_rfc3339(),
            hostname: None,
            listeners: None,
            interfaces: Vec::new(),
            default_routes: Vec::new(),
            bindv6only: None,
            forwarding: Default::default(),
            dumps,
            routing: None,
            netdev: None,
            conntrack: None,
            counters: None,
            ranges: load_ranges(input)?,
            read_errors,
            tls: None,
        });
    }
    let host = read_host();
    Ok(Snapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        taken_at: now_rfc3339(),
        hostname: host.hostname,
        listeners: host.listeners,
        interfaces: host.interfaces,
        default_routes: host.default_routes,
        bindv6only: host.bindv6only,
        forwarding: host.forwarding,
        dumps: host.dumps,
        routing: host.routing,
        netdev: host.netdev,
        conntrack: host.conntrack,
        counters: host.counters,
        ranges: load_ranges(input)?,
        read_errors: host.read_errors,
        tls: None,
    })
}

/// Provider ranges per the command line. Fails only for an explicit `--ranges-file` that cannot
/// be read or validated: the admin asked for that list, so it is never silently replaced.
fn load_ranges(input: &InputArgs) -> anyhow::Result<ProviderRanges> {
    let opts = LoadOptions {
        offline: input.offline,
        file: input.ranges_file.clone(),
        url: input.ranges_url.clone(),
        cache_dir: input.cache_dir.clone(),
        ca_file: input.ranges_ca.clone(),
        ..Default::default()
    };
    Ok(crate::ranges::fetch::load(
        &crate::ranges::cloudflare(),
        &opts,
    )?)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        // Formatting the current UTC time as RFC 3339 cannot fail for years 0..=9999.
        .unwrap_or_default()
}

/// Everything read from the live host except provider ranges.
#[derive(Debug, Clone)]
pub struct HostState {
    pub hostname: Option<String>,
    pub listeners: Option<Vec<Listener>>,
    pub interfaces: Vec<Interface>,
    pub default_routes: Vec<DefaultRoute>,
    pub bindv6only: Option<bool>,
    pub forwarding: crate::snapshot::Forwarding,
    pub dumps: Dumps,
    pub routing: Option<crate::routing::RoutingDumps>,
    pub netdev: Option<crate::tc::NetdevDumps>,
    pub conntrack: Option<crate::snapshot::ConntrackUsage>,
    pub counters: Option<crate::kstat::KernelCounters>,
    pub read_errors: Vec<ReadError>,
}

const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";

/// Read this host (this network namespace). Never fails: what could not be read is listed in
/// `read_errors`; only firewall gaps carry `firewall: true`.
pub fn read_host() -> HostState {
    let mut read_errors = Vec::new();
    let hostname = std::fs::read_to_string(HOSTNAME_PATH)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());

    let mut ifnames = HashMap::new();
    let interfaces = match netif::read_interfaces() {
        Ok(v) => v
            .into_iter()
            .map(|n| {
                ifnames.insert(n.index, n.iface.name.clone());
                n.iface
            })
            .collect(),
        Err(e) => {
            read_errors.push(ReadError {
                what: "interfaces and addresses".into(),
                source: "ip -j addr show".into(),
                message: e.to_string(),
                firewall: false,
            });
            Vec::new()
        }
    };
    let default_routes = netif::read_default_routes().unwrap_or_else(|e| {
        read_errors.push(ReadError {
            what: "default routes".into(),
            source: "ip -j route show default".into(),
            message: e.to_string(),
            firewall: false,
        });
        Vec::new()
    });
    let bindv6only = netif::read_bindv6only().unwrap_or_else(|e| {
        read_errors.push(ReadError {
            what: "net.ipv6.bindv6only".into(),
            source: netif::BINDV6ONLY_PATH.into(),
            message: e.to_string(),
            firewall: false,
        });
        None
    });

    let mut sysctl = |what: &str, path: &str| {
        netif::read_proc_bool(path).unwrap_or_else(|e| {
            read_errors.push(ReadError {
                what: what.into(),
                source: path.into(),
                message: e.to_string(),
                firewall: false,
            });
            None
        })
    };
    let forwarding = crate::snapshot::Forwarding {
        ipv4: sysctl("net.ipv4.ip_forward", netif::IPV4_FORWARD_PATH),
        ipv6: sysctl("net.ipv6.conf.all.forwarding", netif::IPV6_FORWARD_PATH),
    };

    // The remaining readers are independent (each its own netlink socket or process): they run
    // at once, and the slowest of them, not their sum, sets the time of a run.
    let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
    let (listeners, (dumps, fw_errors), (routing, route_errors), (netdev, tc_errors)) =
        std::thread::scope(|sc| {
            let fw = sc.spawn(|| firewall::read_firewall(&firewall::LiveHost));
            let routing = sc.spawn(|| routing::read_routing(&names));
            let tc = sc.spawn(tc::read_netdev);
            let listeners = read_listeners(&ifnames, &mut read_errors);
            (
                listeners,
                joined(fw, "firewall rules", true),
                joined(routing, "routes and routing rules", false),
                joined(tc, "tc filters and XDP programs", false),
            )
        });
    read_errors.extend(fw_errors);
    read_errors.extend(route_errors);
    read_errors.extend(tc_errors);
    let conntrack = read_conntrack();

    HostState {
        hostname,
        listeners,
        interfaces,
        default_routes,
        bindv6only,
        forwarding,
        dumps,
        routing: Some(routing),
        netdev: Some(netdev),
        conntrack,
        counters: Some(read_counters()),
        read_errors,
    }
}

/// The listening sockets (sock_diag, else /proc/net/tcp*), with what went wrong on the way.
fn read_listeners(
    ifnames: &HashMap<u32, String>,
    read_errors: &mut Vec<ReadError>,
) -> Option<Vec<Listener>> {
    match sockets::read_listeners(ifnames) {
        Ok(read) => {
            if let Some(e) = read.netlink_error {
                read_errors.push(ReadError {
                    what: "listening sockets (IPV6_V6ONLY, bound interface)".into(),
                    source: "netlink sock_diag".into(),
                    message: format!(
                        "{e}; listeners were read from /proc/net/tcp and /proc/net/tcp6 \
                         instead, without IPV6_V6ONLY or SO_BINDTODEVICE"
                    ),
                    firewall: false,
                });
            }
            Some(read.listeners)
        }
        Err(e) => {
            read_errors.push(ReadError {
                what: "listening sockets".into(),
                source: "netlink sock_diag, /proc/net/tcp".into(),
                message: e.to_string(),
                firewall: false,
            });
            None
        }
    }
}

/// A reader thread's result. One that panicked leaves nothing read and an error that says so:
/// a reader's bug must not pass for "nothing there", nor take the other readers with it.
fn joined<T: Default>(
    h: std::thread::ScopedJoinHandle<'_, (T, Vec<ReadError>)>,
    what: &str,
    firewall: bool,
) -> (T, Vec<ReadError>) {
    h.join().unwrap_or_else(|_| {
        (
            T::default(),
            vec![ReadError {
                what: what.into(),
                source: "origin-audit reader thread".into(),
                message: "the reader failed unexpectedly (a bug: please report it)".into(),
                firewall,
            }],
        )
    })
}

/// The listen-queue and conntrack drop counters of this namespace (columns missing on this
/// kernel, or conntrack not loaded, stay `None`).
fn read_counters() -> crate::kstat::KernelCounters {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (listen_overflows, listen_drops) = crate::kstat::parse_netstat(&read("/proc/net/netstat"));
    let (conntrack_drop, conntrack_early_drop, conntrack_insert_failed) =
        crate::kstat::parse_conntrack_stat(&read("/proc/net/stat/nf_conntrack"));
    crate::kstat::KernelCounters {
        listen_overflows,
        listen_drops,
        conntrack_drop,
        conntrack_early_drop,
        conntrack_insert_failed,
    }
}

/// `nf_conntrack_count` and `nf_conntrack_max`, when conntrack is loaded (absent otherwise:
/// nothing is tracked, nothing can fill up).
fn read_conntrack() -> Option<crate::snapshot::ConntrackUsage> {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    Some(crate::snapshot::ConntrackUsage {
        count: read("/proc/sys/net/netfilter/nf_conntrack_count")?,
        max: read("/proc/sys/net/netfilter/nf_conntrack_max")?,
    })
}
