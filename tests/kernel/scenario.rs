//! The `.scn` scenario format (documented in `tests/scenarios/README.md`): parse a file into a
//! [`Scenario`] and answer "what verdict do the expectations give this (port, address)?".
//!
//! Owns: the text format, its validation, and the expectation lookup.
//! Must not: touch the host, run commands, or know anything about origin-audit's output.

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

/// What the firewall does to a new TCP connection, in origin-audit's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    RateLimited,
    Conditional,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "reject" => Verdict::Reject,
            "rate_limited" => Verdict::RateLimited,
            "conditional" => Verdict::Conditional,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
            Verdict::RateLimited => "rate_limited",
            Verdict::Conditional => "conditional",
        }
    }

    /// The Cloudflare error visitors see: a dropped SYN times out (522), an active refusal is
    /// 521. `None` where the contract does not pin it down.
    pub fn cf_error(self) -> Option<u16> {
        match self {
            Verdict::Drop => Some(522),
            Verdict::Reject => Some(521),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the web server listens on one port in the origin namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenMode {
    /// `0.0.0.0:PORT` and `[::]:PORT` (IPV6_V6ONLY).
    All,
    /// `127.0.0.1:PORT` only.
    Loopback,
    /// Nothing listens.
    None,
    /// `device=IFACE`: `0.0.0.0:PORT` and `[::]:PORT` with SO_BINDTODEVICE IFACE, so only
    /// connections arriving on IFACE find them.
    Device(String),
    /// `v6any`: `[::]:PORT` with IPV6_V6ONLY=1 only; nothing on IPv4.
    V6Any,
    /// `full`: `0.0.0.0:PORT` and `[::]:PORT` with backlog 0 that never accept; the harness
    /// fills both accept queues from inside the origin before probing, so the kernel drops
    /// every further SYN (tcp_conn_request: sk_acceptq_is_full) and probes time out.
    Full,
    /// `reuseport-full`: on each of `0.0.0.0:PORT` and `[::]:PORT` two SO_REUSEPORT sockets, one
    /// that accepts and one with backlog 0 that never accepts, filled like `full`: the kernel
    /// picks the member by the connection's hash (inet_lookup_reuseport), so some probes connect
    /// and some time out.
    ReuseportFull,
}

impl ListenMode {
    /// Whether a connection from outside in this family, arriving on `iface`, is taken by a
    /// socket that completes the handshake.
    pub fn reachable(&self, v6: bool, iface: &str) -> bool {
        match self {
            ListenMode::All | ListenMode::ReuseportFull => true,
            ListenMode::V6Any => v6,
            ListenMode::Device(d) => d == iface,
            ListenMode::Loopback | ListenMode::None | ListenMode::Full => false,
        }
    }
}

/// Rule fields an expectation pins down; `None` = not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleExpect {
    pub backend: Option<String>,
    pub family: Option<String>,
    pub table: Option<String>,
    pub chain: Option<String>,
    /// Substring of the rule's `text`.
    pub text: Option<String>,
}

impl RuleExpect {
    pub fn is_empty(&self) -> bool {
        *self == RuleExpect::default()
    }
}

impl fmt::Display for RuleExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("backend", &self.backend),
            ("family", &self.family),
            ("table", &self.table),
            ("chain", &self.chain),
            ("text~", &self.text),
        ];
        let mut first = true;
        for (k, v) in parts {
            if let Some(v) = v {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                write!(f, "{k}={v:?}")?;
            }
        }
        Ok(())
    }
}

/// `PORT CIDR VERDICT [rule fields]`.
#[derive(Debug, Clone)]
pub struct Expect {
    pub line: usize,
    pub port: u16,
    pub cidr: IpNet,
    pub verdict: Verdict,
    pub rule: RuleExpect,
}

/// `finding CODE [port=N] [source=CIDR] [severity=S] [says=WORD]` or `nofinding CODE [port=N]`
/// (`says`: the message contains WORD).
#[derive(Debug, Clone)]
pub struct FindingExpect {
    pub line: usize,
    pub present: bool,
    pub code: String,
    pub port: Option<u16>,
    pub source: Option<IpNet>,
    pub severity: Option<String>,
    pub says: Option<String>,
}

/// Which tool loads a ruleset section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    Nft,
    IptablesNft,
    IptablesLegacy,
    Ip6tablesNft,
    Ip6tablesLegacy,
    Ipset,
}

impl Loader {
    /// The command (and arguments) that reads the section text on stdin.
    pub fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Loader::Nft => ("nft", &["-f", "-"]),
            Loader::IptablesNft => ("iptables-nft-restore", &[]),
            Loader::IptablesLegacy => ("iptables-legacy-restore", &[]),
            Loader::Ip6tablesNft => ("ip6tables-nft-restore", &[]),
            Loader::Ip6tablesLegacy => ("ip6tables-legacy-restore", &[]),
            Loader::Ipset => ("ipset", &["restore"]),
        }
    }

    /// Load order: sets before the rules that name them.
    fn order(self) -> u8 {
        match self {
            Loader::Ipset => 0,
            Loader::Nft => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ruleset {
    pub loader: Loader,
    pub text: String,
}

/// `container = ADDR/LEN gw GW iface NAME ports P,P`: a third namespace behind the origin, as
/// Docker's bridge network puts one (the origin end of the link is `iface`, holding `gw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's address and prefix (its end of the link), e.g. `172.17.0.2/16`.
    pub addr: ipnet::Ipv4Net,
    /// The origin's address on the link, the container's default gateway.
    pub gw: std::net::Ipv4Addr,
    /// Name of the origin's end of the link (`docker0`).
    pub iface: String,
    /// Ports the container listens on (`0.0.0.0:PORT`).
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    /// Origin's public interface (the veth end), default `eth0`.
    pub iface: String,
    /// Extra dummy interfaces in the origin namespace (for `-i` rules that must not apply).
    pub dummies: Vec<String>,
    pub ports: Vec<u16>,
    pub listeners: BTreeMap<u16, ListenMode>,
    /// `lands = 443:8443`: connections to the first port are redirected (DNAT/REDIRECT) to the
    /// second, so the second port's listener decides "connected" vs "refused".
    pub lands: BTreeMap<u16, u16>,
    pub rulesets: Vec<Ruleset>,
    /// Per-CIDR expectations; where they nest, the most specific one wins.
    pub expects: Vec<Expect>,
    /// Verdict for everything no expectation covers, per port.
    pub defaults: BTreeMap<u16, Verdict>,
    pub findings: Vec<FindingExpect>,
    /// `[run]`: a shell script (bash -e) run in the origin after the ruleset sections, so real
    /// firewall managers (ufw, fail2ban, ...) build the rules.
    pub run: Option<String>,
    /// `etc = ufw,default`: entries of the host's `/etc` copied into the origin namespace's
    /// private `/etc/netns/NS/` overlay (ip-netns(8)) before `[run]`, so tools write there.
    pub etc: Vec<String>,
    pub container: Option<Container>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        parse(&name, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The listener that answers a connection to `port`, after any `lands` redirect.
    pub fn landing_mode(&self, port: u16) -> ListenMode {
        self.listen_mode(self.lands.get(&port).copied().unwrap_or(port))
    }

    pub fn listen_mode(&self, port: u16) -> ListenMode {
        self.listeners
            .get(&port)
            .cloned()
            .unwrap_or(ListenMode::All)
    }

    /// The most specific expectation covering `addr` on `port` (if any) and the verdict it
    /// gives.
    pub fn expected(&self, port: u16, addr: IpAddr) -> (Verdict, Option<&Expect>) {
        match self
            .expects
            .iter()
            .filter(|e| e.port == port && e.cidr.contains(&addr))
            .max_by_key(|e| e.cidr.prefix_len())
        {
            Some(e) => (e.verdict, Some(e)),
            None => (self.default_for(port), None),
        }
    }

    /// Whether a connection from outside to `port` in this family reaches a socket: the
    /// origin's listener, or (IPv4 only, the container has no IPv6 address) the container's,
    /// where a DNAT sends it.
    pub fn serves(&self, port: u16, v6: bool) -> bool {
        self.landing_mode(port).reachable(v6, &self.iface)
            || (!v6
                && self
                    .container
                    .as_ref()
                    .is_some_and(|c| c.ports.contains(&port)))
    }

    pub fn default_for(&self, port: u16) -> Verdict {
        self.defaults.get(&port).copied().unwrap_or(Verdict::Accept)
    }
}

fn parse(name: &str, text: &str) -> Result<Scenario, String> {
    let mut lines = text.lines().enumerate();
    let what = match lines.next() {
        Some((_, l)) if l.starts_with("# what:") => l["# what:".len()..].trim().to_string(),
        _ => return Err("line 1: must be `# what: <description>`".into()),
    };
    let mut sc = Scenario {
        name: name.to_string(),
        what,
        iface: "eth0".into(),
        dummies: vec![],
        ports: vec![80, 443],
        listeners: BTreeMap::new(),
        lands: BTreeMap::new(),
        rulesets: vec![],
        expects: vec![],
        defaults: BTreeMap::new(),
        findings: vec![],
        run: None,
        etc: vec![],
        container: None,
    };
    let mut backend_legacy = false;
    // Ruleset sections hold raw text; keep the section names until `backend` is known.
    let mut raw_sections: Vec<(String, usize, String)> = vec![];
    let mut expect_lines: Vec<(usize, String)> = vec![];
    let mut section: Option<(String, usize)> = None;
    let mut listeners_raw: Option<(usize, String)> = None;

    for (i, line) in lines {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            let s = trimmed[1..trimmed.len() - 1].to_string();
            if s != "expect" {
                raw_sections.push((s.clone(), n, String::new()));
            }
            section = Some((s, n));
            continue;
        }
        match &section {
            None => {
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let (k, v) = trimmed
                    .split_once('=')
                    .ok_or_else(|| format!("line {n}: expected `key = value`"))?;
                let (k, v) = (k.trim(), v.trim());
                match k {
                    "iface" => sc.iface = v.to_string(),
                    "dummy" => sc.dummies = v.split(',').map(|s| s.trim().to_string()).collect(),
                    "ports" => {
                        sc.ports = v
                            .split(',')
                            .map(|p| p.trim().parse::<u16>())
                            .collect::<Result<_, _>>()
                            .map_err(|e| format!("line {n}: ports: {e}"))?
                    }
                    "listeners" => listeners_raw = Some((n, v.to_string())),
                    "lands" => {
                        for item in v.split_whitespace() {
                            let (a, b) = item.split_once(':').ok_or_else(|| {
                                format!("line {n}: lands item `{item}` is not PORT:PORT")
                            })?;
                            let a: u16 = a.parse().map_err(|e| format!("line {n}: {a}: {e}"))?;
                            let b: u16 = b.parse().map_err(|e| format!("line {n}: {b}: {e}"))?;
                            sc.lands.insert(a, b);
                        }
                    }
                    "etc" => {
                        sc.etc = v.split(',').map(|s| s.trim().to_string()).collect();
                        if let Some(bad) = sc
                            .etc
                            .iter()
                            .find(|e| e.is_empty() || e.contains('/') || e.starts_with('.'))
                        {
                            return Err(format!(
                                "line {n}: etc entry `{bad}` is not a name in /etc"
                            ));
                        }
                    }
                    "container" => {
                        sc.container =
                            Some(parse_container(v).map_err(|e| format!("line {n}: {e}"))?)
                    }
                    "backend" => {
                        backend_legacy = match v {
                            "nft" => false,
                            "legacy" => true,
                            _ => return Err(format!("line {n}: backend is `nft` or `legacy`")),
                        }
                    }
                    _ => return Err(format!("line {n}: unknown setting `{k}`")),
                }
            }
            Some((s, _)) if s == "expect" => {
                if !(trimmed.is_empty() || trimmed.starts_with('#')) {
                    expect_lines.push((n, trimmed.to_string()));
                }
            }
            Some(_) => {
                if let Some(last) = raw_sections.last_mut() {
                    last.2.push_str(line);
                    last.2.push('\n');
                }
            }
        }
    }

    if let Some((n, v)) = listeners_raw {
        for item in v.split_whitespace() {
            let (p, m) = item
                .split_once(':')
                .ok_or_else(|| format!("line {n}: listeners item `{item}` is not PORT:MODE"))?;
            let port: u16 = p.parse().map_err(|e| format!("line {n}: {p}: {e}"))?;
            let mode = match m {
                "all" => ListenMode::All,
                "loopback" => ListenMode::Loopback,
                "none" => ListenMode::None,
                "v6any" => ListenMode::V6Any,
                "full" => ListenMode::Full,
                "reuseport-full" => ListenMode::ReuseportFull,
                _ => match m.strip_prefix("device=") {
                    Some(d) if !d.is_empty() && d.len() <= 15 && !d.contains('/') => {
                        ListenMode::Device(d.to_string())
                    }
                    _ => {
                        return Err(format!(
                            "line {n}: listen mode is all|loopback|none|v6any|full|reuseport-full|device=IFACE"
                        ));
                    }
                },
            };
            sc.listeners.insert(port, mode);
        }
    }

    for (s, n, text) in raw_sections {
        if s == "run" {
            if sc.run.is_some() {
                return Err(format!("line {n}: a second [run] section"));
            }
            sc.run = Some(text);
            continue;
        }
        let loader = match s.as_str() {
            "nft" => Loader::Nft,
            "ipset" => Loader::Ipset,
            "iptables" if backend_legacy => Loader::IptablesLegacy,
            "iptables" => Loader::IptablesNft,
            "ip6tables" if backend_legacy => Loader::Ip6tablesLegacy,
            "ip6tables" => Loader::Ip6tablesNft,
            "iptables-nft" => Loader::IptablesNft,
            "iptables-legacy" => Loader::IptablesLegacy,
            "ip6tables-nft" => Loader::Ip6tablesNft,
            "ip6tables-legacy" => Loader::Ip6tablesLegacy,
            _ => return Err(format!("line {n}: unknown section [{s}]")),
        };
        sc.rulesets.push(Ruleset { loader, text });
    }
    sc.rulesets.sort_by_key(|r| r.loader.order());

    for (n, l) in expect_lines {
        parse_expect_line(&mut sc, n, &l)?;
    }
    // Nested expectations are fine (the most specific wins); the same CIDR twice is ambiguous.
    for (i, a) in sc.expects.iter().enumerate() {
        for b in &sc.expects[i + 1..] {
            if a.port == b.port && a.cidr == b.cidr {
                return Err(format!(
                    "lines {} and {}: {} on port {} twice",
                    a.line, b.line, a.cidr, a.port
                ));
            }
        }
    }
    if sc.expects.is_empty() && sc.defaults.is_empty() && sc.findings.is_empty() {
        return Err("no [expect] lines".into());
    }
    for (p, m) in &sc.listeners {
        if let ListenMode::Device(d) = m
            && *d != sc.iface
            && !sc.dummies.contains(d)
        {
            return Err(format!(
                "listeners: {p}:device={d} names no interface of the origin (iface or dummy)"
            ));
        }
    }
    if let Some(c) = &sc.container
        && (c.iface == sc.iface || sc.dummies.contains(&c.iface))
    {
        return Err(format!("container iface {} is already used", c.iface));
    }
    Ok(sc)
}

/// `ADDR/LEN gw GW iface NAME ports P,P`.
fn parse_container(v: &str) -> Result<Container, String> {
    let t: Vec<&str> = v.split_whitespace().collect();
    let usage = "container = ADDR/LEN gw GW iface NAME ports P,P";
    if t.len() != 7 || t[1] != "gw" || t[3] != "iface" || t[5] != "ports" {
        return Err(format!("expected `{usage}`"));
    }
    let addr: ipnet::Ipv4Net = t[0]
        .parse()
        .map_err(|e| format!("container {}: {e}", t[0]))?;
    let gw: std::net::Ipv4Addr = t[2].parse().map_err(|e| format!("gw {}: {e}", t[2]))?;
    if !addr.contains(&gw) || gw == addr.addr() {
        return Err(format!("gw {gw} must be another address in {addr}"));
    }
    let iface = t[4].to_string();
    if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
        return Err(format!("iface `{iface}` is not an interface name"));
    }
    let ports = t[6]
        .split(',')
        .map(|p| p.trim().parse::<u16>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ports: {e}"))?;
    Ok(Container {
        addr,
        gw,
        iface,
        ports,
    })
}

/// Split on whitespace, keeping `key~"quoted text"` together.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

fn parse_expect_line(sc: &mut Scenario, n: usize, line: &str) -> Result<(), String> {
    let toks = tokens(line).map_err(|e| format!("line {n}: {e}"))?;
    let first = toks.first().map(String::as_str).unwrap_or("");
    if first == "finding" || first == "nofinding" {
        let code = toks
            .get(1)
            .ok_or_else(|| format!("line {n}: finding needs a code"))?
            .clone();
        let mut f = FindingExpect {
            line: n,
            present: first == "finding",
            code,
            port: None,
            source: None,
            severity: None,
            says: None,
        };
        for t in &toks[2..] {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| format!("line {n}: `{t}` is not key=value"))?;
            match k {
                "port" => f.port = Some(v.parse().map_err(|e| format!("line {n}: {e}"))?),
                "source" => f.source = Some(v.parse().map_err(|e| format!("line {n}: {e}"))?),
                "severity" => f.severity = Some(v.to_string()),
                "says" => f.says = Some(v.to_string()),
                _ => return Err(format!("line {n}: unknown finding field `{k}`")),
            }
        }
        sc.findings.push(f);
        return Ok(());
    }
    if toks.len() < 3 {
        return Err(format!("line {n}: expected `PORT CIDR VERDICT [fields]`"));
    }
    let ports: Vec<u16> = if toks[0] == "*" {
        sc.ports.clone()
    } else {
        toks[0]
            .split(',')
            .map(|p| p.parse::<u16>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("line {n}: port: {e}"))?
    };
    for p in &ports {
        if !sc.ports.contains(p) {
            return Err(format!("line {n}: port {p} is not in `ports`"));
        }
    }
    let verdict =
        Verdict::parse(&toks[2]).ok_or_else(|| format!("line {n}: unknown verdict {}", toks[2]))?;
    let mut rule = RuleExpect::default();
    for t in &toks[3..] {
        if let Some(v) = t.strip_prefix("text~") {
            rule.text = Some(unquote(v));
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| format!("line {n}: `{t}` is not key=value"))?;
        let v = unquote(v);
        match k {
            "rule" => {
                let parts: Vec<&str> = v.split(':').collect();
                if parts.len() != 3 {
                    return Err(format!("line {n}: rule=BACKEND:TABLE:CHAIN"));
                }
                rule.backend = Some(parts[0].to_string());
                rule.table = Some(parts[1].to_string());
                rule.chain = Some(parts[2].to_string());
            }
            "backend" => rule.backend = Some(v),
            "family" => rule.family = Some(v),
            "table" => rule.table = Some(v),
            "chain" => rule.chain = Some(v),
            _ => return Err(format!("line {n}: unknown field `{k}`")),
        }
    }
    if toks[1] == "*" {
        if !rule.is_empty() {
            return Err(format!("line {n}: a default line takes no rule fields"));
        }
        for p in ports {
            // A port-specific default beats `* *` whatever the line order.
            if toks[0] == "*" {
                sc.defaults.entry(p).or_insert(verdict);
            } else {
                sc.defaults.insert(p, verdict);
            }
        }
        return Ok(());
    }
    let cidr: IpNet = toks[1]
        .parse()
        .map_err(|e| format!("line {n}: {}: {e}", toks[1]))?;
    if cidr != cidr.trunc() {
        return Err(format!("line {n}: {cidr} has host bits set"));
    }
    for port in ports {
        sc.expects.push(Expect {
            line: n,
            port,
            cidr,
            verdict,
            rule: rule.clone(),
        });
    }
    Ok(())
}
