//! Reading the routing state: `ip -j -4/-6 route show table all`, `ip -j -4/-6 rule show`, and
//! the sysctls the routing model needs, into a [`RoutingDumps`] stored verbatim in the snapshot.
//!
//! Owns: [`read_routing`]. Every command runs through [`cmd::run`] (the configured timeout, like
//! `netif`); every sysctl is a file under `/proc/sys/net/ipv{4,6}/conf/{all,IF}/`.
//! Must not: parse or judge anything (`crate::routing` does); abort on a failure — each one
//! becomes a [`ReadError`] naming the command or path, and the field stays `None` / absent so
//! the model answers "undecided" rather than guessing.

use super::cmd;
use crate::routing::{ROUTES_V4_CMD, ROUTES_V6_CMD, RULES_V4_CMD, RULES_V6_CMD, RoutingDumps};
use crate::snapshot::ReadError;

/// IPv4 per-interface sysctls read for `all` and each interface: the rp_filter inputs
/// (ip-sysctl.rst) and the linkdown switch of `fib_table_lookup`.
pub const IPV4_CONF_KEYS: &[&str] = &[
    "rp_filter",
    "src_valid_mark",
    "accept_local",
    "ignore_routes_with_linkdown",
];
/// IPv6 per-interface sysctls (IPv6 has no rp_filter).
pub const IPV6_CONF_KEYS: &[&str] = &["ignore_routes_with_linkdown"];

/// Read the routing dumps of this network namespace. `ifaces` are the interface names whose
/// `conf/IF` sysctls are read besides `conf/all`.
pub fn read_routing(ifaces: &[String]) -> (RoutingDumps, Vec<ReadError>) {
    read_routing_from("/proc/sys", ifaces)
}

fn read_routing_from(proc_sys: &str, ifaces: &[String]) -> (RoutingDumps, Vec<ReadError>) {
    let mut errors = Vec::new();
    let mut run = |what: &str, cmdline: &str| -> Option<String> {
        let args: Vec<&str> = cmdline.split_whitespace().skip(1).collect();
        match cmd::run("ip", &args) {
            Ok(o) => Some(o.stdout),
            Err(e) => {
                errors.push(ReadError {
                    what: what.into(),
                    source: cmdline.into(),
                    message: e.to_string(),
                    firewall: false,
                });
                None
            }
        }
    };
    let mut d = RoutingDumps {
        routes_v4: run("IPv4 routes (all tables)", ROUTES_V4_CMD),
        routes_v6: run("IPv6 routes (all tables)", ROUTES_V6_CMD),
        rules_v4: run("IPv4 policy rules", RULES_V4_CMD),
        rules_v6: run("IPv6 policy rules", RULES_V6_CMD),
        ..Default::default()
    };
    let has_v6 = std::path::Path::new(&format!("{proc_sys}/net/ipv6")).exists();
    let names = std::iter::once("all").chain(ifaces.iter().map(String::as_str));
    for iface in names {
        // A name is one path component; anything else is not an interface.
        if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
            errors.push(ReadError {
                what: "routing sysctls".into(),
                source: format!("{proc_sys}/net/ipv4/conf/{iface}"),
                message: format!("{iface:?} is not an interface name"),
                firewall: false,
            });
            continue;
        }
        let families: &[(&str, &[&str])] = if has_v6 {
            &[("ipv4", IPV4_CONF_KEYS), ("ipv6", IPV6_CONF_KEYS)]
        } else {
            &[("ipv4", IPV4_CONF_KEYS)]
        };
        for (fam, keys) in families {
            for key in *keys {
                let path = format!("{proc_sys}/net/{fam}/conf/{iface}/{key}");
                match std::fs::read_to_string(&path) {
                    Ok(s) => {
                        d.sysctls.insert(
                            format!("net.{fam}.conf.{iface}.{key}"),
                            s.trim().to_string(),
                        );
                    }
                    Err(e) => errors.push(ReadError {
                        what: format!("sysctl net.{fam}.conf.{iface}.{key}"),
                        source: path,
                        message: e.to_string(),
                        firewall: false,
                    }),
                }
            }
        }
    }
    (d, errors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    #[test]
    fn sysctls_from_a_proc_tree_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        for (iface, rp) in [("all", "2"), ("eth0", "1")] {
            let d = format!("{root}/net/ipv4/conf/{iface}");
            std::fs::create_dir_all(&d).unwrap();
            for k in IPV4_CONF_KEYS {
                let v = if *k == "rp_filter" { rp } else { "0" };
                std::fs::write(format!("{d}/{k}"), format!("{v}\n")).unwrap();
            }
        }
        let (d, errs) = read_routing_from(&root, &["eth0".into(), "../x".into(), "gone0".into()]);
        assert_eq!(d.sysctls["net.ipv4.conf.all.rp_filter"], "2");
        assert_eq!(d.sysctls["net.ipv4.conf.eth0.rp_filter"], "1");
        // No ipv6 directory: IPv6 sysctls are not read and not errors.
        assert!(!d.sysctls.keys().any(|k| k.starts_with("net.ipv6")));
        let sources: Vec<&str> = errs.iter().map(|e| e.source.as_str()).collect();
        assert!(
            sources.iter().any(|s| s.ends_with("conf/../x")),
            "{sources:?}"
        );
        assert!(
            sources
                .iter()
                .any(|s| s.ends_with("net/ipv4/conf/gone0/rp_filter")),
            "{sources:?}"
        );
        assert!(errs.iter().all(|e| !e.firewall));
    }
}
