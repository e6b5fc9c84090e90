//! Interfaces, their addresses, the default routes, and `net.ipv6.bindv6only`.
//!
//! Owns: running `ip -j addr show` / `ip -j [-6] route show default` and the pure parsers of
//! their JSON ([`parse_ip_addr`], [`parse_default_routes`]); reading
//! `/proc/sys/net/ipv6/bindv6only`.
//! Must not: choose which interface Cloudflare's packets arrive on (the analysis does, from
//! `--iface` or these default routes).

use super::cmd::{self, CmdError};
use crate::firewall::Family;
use crate::snapshot::{DefaultRoute, IfAddr, Interface};
use serde::Deserialize;
use std::net::IpAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetifError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("`{cmd}`: output is not the expected JSON: {source}")]
    Json {
        cmd: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{cmd}`: interface {iface}: address {addr:?} is not an IP address")]
    BadAddr {
        cmd: String,
        iface: String,
        addr: String,
    },
    #[error("{path}: {message}")]
    Proc { path: String, message: String },
}

/// An interface and its kernel index (for naming SO_BINDTODEVICE listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetIf {
    pub index: u32,
    pub iface: Interface,
}

#[derive(Deserialize)]
struct JsonLink {
    #[serde(default)]
    ifindex: u32,
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

#[derive(Deserialize)]
struct JsonAddr {
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct JsonRoute {
    /// Absent for unicast; `unreachable`, `blackhole`, `prohibit`… carry no traffic in.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    nexthops: Vec<JsonNexthop>,
}

#[derive(Deserialize)]
struct JsonNexthop {
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

const IP_ADDR_CMD: &str = "ip -j addr show";

/// `ip -j addr show`, parsed.
pub fn read_interfaces() -> Result<Vec<NetIf>, NetifError> {
    let out = cmd::run("ip", &["-j", "addr", "show"])?;
    parse_ip_addr(&out.stdout, IP_ADDR_CMD)
}

/// Parse `ip -j addr show`. `up` is the administrative `UP` flag (what `ip link set up` sets);
/// an interface without carrier is still "up" here, as it still has its addresses.
pub fn parse_ip_addr(json: &str, cmd: &str) -> Result<Vec<NetIf>, NetifError> {
    let links: Vec<JsonLink> = serde_json::from_str(json).map_err(|source| NetifError::Json {
        cmd: cmd.to_string(),
        source,
    })?;
    links
        .into_iter()
        // iproute2 prints an empty object for a link filtered out mid-dump.
        .filter(|l| !l.ifname.is_empty())
        .map(|l| {
            let addrs = l
                .addr_info
                .into_iter()
                .filter_map(|a| a.local.map(|local| (local, a.prefixlen, a.scope)))
                .map(|(local, prefix_len, scope)| {
                    let addr: IpAddr = local.parse().map_err(|_| NetifError::BadAddr {
                        cmd: cmd.to_string(),
                        iface: l.ifname.clone(),
                        addr: local.clone(),
                    })?;
                    Ok(IfAddr {
                        addr,
                        prefix_len,
                        scope,
                    })
                })
                .collect::<Result<Vec<_>, NetifError>>()?;
            Ok(NetIf {
                index: l.ifindex,
                iface: Interface {
                    up: l.flags.iter().any(|f| f == "UP"),
                    name: l.ifname,
                    addrs,
                },
            })
        })
        .collect()
}

/// Default routes of both families (main table), from `ip -j route show default` and
/// `ip -j -6 route show default`.
pub fn read_default_routes() -> Result<Vec<DefaultRoute>, NetifError> {
    let v4 = cmd::run("ip", &["-j", "route", "show", "default"])?;
    let mut routes = parse_default_routes(&v4.stdout, Family::V4, "ip -j route show default")?;
    let v6 = cmd::run("ip", &["-j", "-6", "route", "show", "default"])?;
    routes.extend(parse_default_routes(
        &v6.stdout,
        Family::V6,
        "ip -j -6 route show default",
    )?);
    Ok(routes)
}

/// Parse `ip -j [-6] route show default`: one [`DefaultRoute`] per device (per nexthop for a
/// multipath route). Routes that are not unicast (`unreachable`, `blackhole`, `prohibit`) are
/// skipped: no traffic arrives over them. An unparsable gateway is kept as `None` rather than
/// dropping the route, since the interface is what the analysis uses.
pub fn parse_default_routes(
    json: &str,
    family: Family,
    cmd: &str,
) -> Result<Vec<DefaultRoute>, NetifError> {
    // `ip -j` prints nothing at all (not `[]`) on some versions when there is no route.
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<JsonRoute> = serde_json::from_str(json).map_err(|source| NetifError::Json {
        cmd: cmd.to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for r in routes {
        if r.kind.as_deref().is_some_and(|k| k != "unicast") {
            continue;
        }
        let hops: Vec<(Option<String>, Option<String>)> = if r.nexthops.is_empty() {
            vec![(r.dev, r.gateway)]
        } else {
            r.nexthops.into_iter().map(|h| (h.dev, h.gateway)).collect()
        };
        for (dev, gw) in hops {
            let Some(iface) = dev else { continue };
            out.push(DefaultRoute {
                family,
                iface,
                gateway: gw.and_then(|g| g.parse().ok()),
            });
        }
    }
    Ok(out)
}

pub const BINDV6ONLY_PATH: &str = "/proc/sys/net/ipv6/bindv6only";

/// `net.ipv6.bindv6only`; `Ok(None)` when the kernel has no IPv6.
pub fn read_bindv6only() -> Result<Option<bool>, NetifError> {
    read_proc_bool(BINDV6ONLY_PATH)
}

pub const IPV4_FORWARD_PATH: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARD_PATH: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// A 0/1 sysctl of this network namespace; `None` when the file does not exist (no IPv6).
pub fn read_proc_bool(path: &str) -> Result<Option<bool>, NetifError> {
    match std::fs::read_to_string(path) {
        Ok(s) => parse_proc_bool(path, &s).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetifError::Proc {
            path: path.to_string(),
            message: e.to_string(),
        }),
    }
}

fn parse_proc_bool(path: &str, s: &str) -> Result<bool, NetifError> {
    match s.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(NetifError::Proc {
            path: path.to_string(),
            message: format!("expected 0 or 1, found {other:?}"),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;

    // Real output, iproute2-6.1.0 on this machine: `ip -j addr show` in the root namespace.
    const ADDR_ROOT: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":2,"ifname":"ifb0","flags":["BROADCAST","NOARP"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":32,"link_type":"ether","address":"56:ed:36:98:16:33","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]},{"ifindex":3,"ifname":"ifb1","flags":["BROADCAST","NOARP"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":32,"link_type":"ether","address":"c2:d6:c5:03:32:9d","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]},{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"pfifo_fast","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"02:fc:00:00:00:01","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255","scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::fc:ff:fe00:1","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;

    // Real output, iproute2-6.1.0: `ip -n oa-fix-N -j addr show` in a throwaway namespace with
    // a veth pair, veth0 up (no carrier) with 198.51.100.2/24 and 2001:db8::2/64, veth1 down.
    const ADDR_NS: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":2,"link":"veth0","ifname":"veth1","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"ae:c8:3f:eb:8a:3a","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]},{"ifindex":3,"link":"veth1","ifname":"veth0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","group":"default","txqlen":1000,"link_type":"ether","address":"fa:49:aa:c3:f7:ae","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"198.51.100.2","prefixlen":24,"scope":"global","label":"veth0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"2001:db8::2","prefixlen":64,"scope":"global","nodad":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;

    #[test]
    fn root_namespace_interfaces() {
        let v = parse_ip_addr(ADDR_ROOT, IP_ADDR_CMD).unwrap();
        let names: Vec<(u32, &str, bool)> = v
            .iter()
            .map(|n| (n.index, n.iface.name.as_str(), n.iface.up))
            .collect();
        assert_eq!(
            names,
            vec![
                (1, "lo", true),
                (2, "ifb0", false),
                (3, "ifb1", false),
                (4, "eth0", true)
            ]
        );
        let eth0 = &v[3].iface;
        let addrs: Vec<String> = eth0
            .addrs
            .iter()
            .map(|a| format!("{}/{} {}", a.addr, a.prefix_len, a.scope))
            .collect();
        assert_eq!(
            addrs,
            vec![
                "192.0.2.2/24 global",
                "fd00::2/64 global",
                "fe80::fc:ff:fe00:1/64 link"
            ]
        );
    }

    #[test]
    fn no_carrier_interface_is_up_with_addresses() {
        let v = parse_ip_addr(ADDR_NS, IP_ADDR_CMD).unwrap();
        let veth0 = v.iter().find(|n| n.iface.name == "veth0").unwrap();
        assert_eq!(veth0.index, 3);
        assert!(veth0.iface.up);
        assert_eq!(veth0.iface.addrs.len(), 2);
        let veth1 = v.iter().find(|n| n.iface.name == "veth1").unwrap();
        assert!(!veth1.iface.up);
    }

    #[test]
    fn bad_json_names_the_command() {
        let e = parse_ip_addr("Object \"addr\" is unknown", IP_ADDR_CMD).unwrap_err();
        assert!(e.to_string().contains("ip -j addr show"), "{e}");
    }

    #[test]
    fn default_routes() {
        // Real: `ip -j route show default` / `ip -j -6 route show default`, root namespace.
        let v4 = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]"#;
        let v6 = r#"[{"dst":"default","gateway":"fd00::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"}]"#;
        let mut r = parse_default_routes(v4, Family::V4, "ip").unwrap();
        r.extend(parse_default_routes(v6, Family::V6, "ip").unwrap());
        assert_eq!(
            r,
            vec![
                DefaultRoute {
                    family: Family::V4,
                    iface: "eth0".into(),
                    gateway: Some("192.0.2.1".parse().unwrap())
                },
                DefaultRoute {
                    family: Family::V6,
                    iface: "eth0".into(),
                    gateway: Some("fd00::1".parse().unwrap())
                },
            ]
        );
    }

    #[test]
    fn multipath_and_unreachable_defaults() {
        // Real, iproute2-6.1.0 in a namespace: `ip route add default nexthop via 203.0.113.1
        // dev d0 nexthop via 198.51.100.1 dev d1` and `ip -6 route add unreachable default`.
        let mp = r#"[{"dst":"default","flags":[],"nexthops":[{"gateway":"203.0.113.1","dev":"d0","weight":1,"flags":[]},{"gateway":"198.51.100.1","dev":"d1","weight":1,"flags":[]}]}]"#;
        let unreach = r#"[{"type":"unreachable","dst":"default","dev":"lo","metric":1024,"flags":[],"pref":"medium"}]"#;
        let r = parse_default_routes(mp, Family::V4, "ip").unwrap();
        let devs: Vec<&str> = r.iter().map(|d| d.iface.as_str()).collect();
        assert_eq!(devs, vec!["d0", "d1"]);
        assert!(
            parse_default_routes(unreach, Family::V6, "ip")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_default_routes("[]", Family::V6, "ip")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_default_routes("", Family::V6, "ip")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bindv6only_values() {
        assert!(!parse_proc_bool(BINDV6ONLY_PATH, "0\n").unwrap());
        assert!(parse_proc_bool(BINDV6ONLY_PATH, "1\n").unwrap());
        assert!(parse_proc_bool(BINDV6ONLY_PATH, "x").is_err());
    }
}
