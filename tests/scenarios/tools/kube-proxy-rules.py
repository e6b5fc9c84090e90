#!/usr/bin/env python3
"""Print an iptables-restore ruleset shaped like kube-proxy's iptables mode (Kubernetes 1.28+
chain layout: KUBE-SERVICES / KUBE-SVC-* / KUBE-SEP-* with `-m statistic` and DNAT,
KUBE-NODEPORTS, KUBE-EXT-*, KUBE-MARK-MASQ, KUBE-POSTROUTING in nat; KUBE-FIREWALL,
KUBE-PROXY-FIREWALL with a loadBalancerSourceRanges KUBE-FW-* chain, KUBE-FORWARD in filter).

Used by the kernel scenario 88-kube-proxy-thousands (its [run] section pipes this into
iptables-restore inside the origin namespace). Deterministic: the same arguments always give the
same rules (chain hashes are derived from the service name like kube-proxy's, sha256 → base32).

Besides SERVICES cluster-IP services (each 1-3 endpoints) it writes, on the node address
203.0.113.2:
  - 443: a LoadBalancer service (ingress-nginx, hostNetwork: its one endpoint is the node
    itself) whose loadBalancerSourceRanges list Cloudflare's IPv4 ranges except 131.0.72.0/22
    (a stale list): that range, and every non-Cloudflare source, is dropped in KUBE-FW-*.
  - 8443: an externalIPs service with two endpoints picked by `-m statistic --mode random`:
    the node itself and a pod that does not exist here.

Usage: kube-proxy-rules.py [SERVICES]   (default 700)
"""

import base64
import hashlib
import sys

NODE = "203.0.113.2"
CF_ALLOWED = [
    "173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",
    "141.101.64.0/18", "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20",
    "197.234.240.0/22", "198.41.128.0/17", "162.158.0.0/15", "104.16.0.0/13",
    "104.24.0.0/14", "172.64.0.0/13",
    # 131.0.72.0/22 missing: the list was copied before Cloudflare added it.
]


def h(prefix, *parts):
    """kube-proxy's servicePortChainName: base32(sha256(...))[:16]."""
    d = hashlib.sha256("".join(parts).encode()).digest()
    return prefix + base64.b32encode(d).decode()[:16]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 700
    nat_chains, nat_rules = [], []
    flt_chains, flt_rules = [], []

    def svc(name, port_name, vip, port, endpoints, comment_kind="cluster IP", ext=None):
        key = name + ":" + port_name
        svc_chain = h("KUBE-SVC-", key, "tcp")
        nat_chains.append(svc_chain)
        nat_rules.append(
            f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "{key} {comment_kind}" '
            f"-m tcp --dport {port} -j {ext or svc_chain}"
        )
        count = len(endpoints)
        for i, (ip, eport) in enumerate(endpoints):
            sep = h("KUBE-SEP-", key, "tcp", f"{ip}:{eport}")
            nat_chains.append(sep)
            left = count - i
            if left > 1:
                nat_rules.append(
                    f'-A {svc_chain} -m comment --comment "{key} -> {ip}:{eport}" '
                    f"-m statistic --mode random --probability {1.0 / left:.11f} -j {sep}"
                )
            else:
                nat_rules.append(f'-A {svc_chain} -m comment --comment "{key} -> {ip}:{eport}" -j {sep}')
            nat_rules.append(f'-A {sep} -s {ip}/32 -m comment --comment "{key}" -j KUBE-MARK-MASQ')
            nat_rules.append(
                f'-A {sep} -p tcp -m comment --comment "{key}" -m tcp -j DNAT --to-destination {ip}:{eport}'
            )
        return svc_chain

    for i in range(n):
        ns = f"team{i % 37}"
        name = f"{ns}/svc-{i}"
        vip = f"10.96.{(i // 250) % 256}.{i % 250 + 1}"
        eps = [(f"10.244.{(i + k) % 200}.{(i * 7 + k) % 250 + 2}", 8080) for k in range(1 + i % 3)]
        svc_chain = svc(name, "http", vip, 80, eps)
        if i % 10 == 0:
            nodeport = 30000 + i
            ext = h("KUBE-EXT-", name + ":http", "tcp")
            nat_chains.append(ext)
            nat_rules.append(
                f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}:http" -m tcp --dport {nodeport} -j {ext}'
            )
            nat_rules.append(
                f'-A {ext} -m comment --comment "masquerade traffic for {name}:http external destinations" -j KUBE-MARK-MASQ'
            )
            nat_rules.append(f"-A {ext} -j {svc_chain}")

    # 443: LoadBalancer on the node address with loadBalancerSourceRanges.
    key = "ingress-nginx/ingress-nginx-controller:https"
    ext = h("KUBE-EXT-", key, "tcp")
    nat_chains.append(ext)
    svc_chain = svc("ingress-nginx/ingress-nginx-controller", "https", NODE, 443,
                    [(NODE, 443)], "loadbalancer IP", ext)
    nat_rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {key} external destinations" -j KUBE-MARK-MASQ')
    nat_rules.append(f"-A {ext} -j {svc_chain}")
    fw = h("KUBE-FW-", key, "tcp")
    flt_chains.append(fw)
    flt_rules.append(
        f'-A KUBE-PROXY-FIREWALL -d {NODE}/32 -p tcp -m comment --comment "{key} loadbalancer IP" '
        f"-m tcp --dport 443 -j {fw}"
    )
    for cidr in CF_ALLOWED:
        flt_rules.append(f'-A {fw} -s {cidr} -m comment --comment "{key} loadbalancer IP" -j RETURN')
    flt_rules.append(f'-A {fw} -m comment --comment "{key} loadbalancer IP" -j DROP')

    # 8443: externalIPs with two endpoints, one of them this node.
    key = "shop/api:https-alt"
    ext = h("KUBE-EXT-", key, "tcp")
    nat_chains.append(ext)
    svc_chain = svc("shop/api", "https-alt", NODE, 8443,
                    [(NODE, 8443), ("10.244.77.9", 8443)], "external IP", ext)
    nat_rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {key} external destinations" -j KUBE-MARK-MASQ')
    nat_rules.append(f"-A {ext} -j {svc_chain}")

    out = []
    out.append("*nat")
    for c in ["PREROUTING ACCEPT", "INPUT ACCEPT", "OUTPUT ACCEPT", "POSTROUTING ACCEPT"]:
        out.append(f":{c} [0:0]")
    for c in ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"] + sorted(set(nat_chains)):
        out.append(f":{c} - [0:0]")
    out.append('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    out.append('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    out.append('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING')
    out.append("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000")
    out.append("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN")
    out.append("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0")
    out.append('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully')
    out.extend(nat_rules)
    out.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    )
    out.append("COMMIT")
    out.append("*filter")
    for c in ["INPUT ACCEPT", "FORWARD ACCEPT", "OUTPUT ACCEPT"]:
        out.append(f":{c} [0:0]")
    for c in ["KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-NODEPORTS",
              "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"] + sorted(set(flt_chains)):
        out.append(f":{c} - [0:0]")
    out.append('-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
    out.append('-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS')
    out.append('-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
    out.append("-A INPUT -j KUBE-FIREWALL")
    out.append('-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
    out.append('-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')
    out.append('-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    out.append('-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
    out.append('-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
    out.append('-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    out.append("-A OUTPUT -j KUBE-FIREWALL")
    out.append(
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" '
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    )
    out.append('-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP')
    out.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT')
    out.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    out.extend(flt_rules)
    out.append("COMMIT")
    print("\n".join(out))


if __name__ == "__main__":
    main()
