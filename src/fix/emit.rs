//! Text forms of a [`Plan`]: an `nft -f` file, an `ipset restore` + `iptables-restore --noflush`
//! script, ufw and firewalld commands, ban-list configuration (fail2ban, CrowdSec, nginx,
//! Apache), and the human report of the plan with its proof.
//!
//! Owns: the exact syntax origin-audit writes. Every rule carries the comment
//! [`COMMENT`](super::COMMENT) so `fix --revert` finds exactly what it added.
//! Must not: do I/O, run commands, or decide anything — the plan has decided.
//!
//! Syntax sources: nft(8) ("RULES": `insert rule … position HANDLE` puts the rule before the
//! rule with that handle, `add rule` appends; "SETS": `flags interval`), iptables-restore(8)
//! (`--noflush`, `-I CHAIN N`), ipset(8) ("restore": every command but list/help/restore is
//! allowed; `swap` exchanges two sets atomically), ufw(8) (`insert NUM`, `prepend`),
//! firewall-cmd(1) (`--new-ipset`, rich rules with `source ipset=`).

use super::{Addition, Anchor, COMMENT, Manager, Plan, ProviderSet, SetHome};
use crate::analysis::{RICH_PRIORITY, ReachRow, firewalld_zone, rule_label};
use crate::firewall::{Backend, Direction, Family, TableFamily};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The forms `fix --emit` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Nft,
    Iptables,
    Ufw,
    Firewalld,
}

fn ports_nft(p: &[u16]) -> String {
    match p {
        [one] => one.to_string(),
        _ => format!(
            "{{ {} }}",
            p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The ban tool's own command that lifts its bans of Cloudflare addresses (so its state
/// agrees with the firewall): fail2ban's jail from its chain (`f2b-JAIL`), ipset (`f2b-JAIL`)
/// or nft set (`addr-set-JAIL`, `addr6-set-JAIL`); CrowdSec's and CSF's per address.
pub fn unban_command(b: &super::BanList) -> Option<String> {
    if b.provider_elements.is_empty() {
        return None;
    }
    let elems = &b.provider_elements;
    let words =
        |f: &dyn Fn(&String) -> String| elems.iter().map(f).collect::<Vec<_>>().join(" && ");
    match b.tool.as_str() {
        "fail2ban" => {
            let set = b.set.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
            let jail = [set, b.culprit.chain.as_str()].iter().find_map(|n| {
                n.strip_prefix("f2b-")
                    .or_else(|| n.strip_prefix("addr-set-"))
                    .or_else(|| n.strip_prefix("addr6-set-"))
                    .filter(|j| !j.is_empty())
            })?;
            let addrs: Vec<String> = elems.iter().map(|e| shell_word(e)).collect();
            Some(format!(
                "fail2ban-client set {} unbanip {}",
                shell_word(jail),
                addrs.join(" ")
            ))
        }
        "crowdsec" => Some(words(&|e| {
            let flag = if e.contains('/') || e.contains('-') {
                "--range"
            } else {
                "--ip"
            };
            format!("cscli decisions delete {flag} {}", shell_word(e))
        })),
        "csf" => Some(words(&|e| format!("csf -dr {}", shell_word(e)))),
        _ => None,
    }
}

/// `s` as one word for a POSIX shell: as is when it holds only characters no shell treats
/// specially, else single-quoted (`'` written as `'\''`), so a printed command pastes as one.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=+,@%-".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The rule's statement as nft or iptables-save would show it (for the model and the report).
pub fn rule_text(a: &Addition) -> String {
    match a.backend {
        Backend::Nft => nft_rule(a),
        _ => format!("-A {} {}", a.chain, ipt_spec(a)),
    }
}

/// nft rule body (after `… chain`).
pub fn nft_rule(a: &Addition) -> String {
    let (addr, port) = match a.direction {
        Direction::In => ("saddr", "dport"),
        Direction::Reply => ("daddr", "sport"),
    };
    let sel = match a.family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    // nft(8) CONNTRACK EXPRESSIONS: `ct status dnat` — the connection's destination was
    // translated (DNAT, REDIRECT).
    format!(
        "{sel} {addr} @{} tcp {port} {}{} accept comment \"{COMMENT}\"",
        a.set,
        ports_nft(&a.ports),
        if a.dnat { " ct status dnat" } else { "" }
    )
}

/// iptables rule spec (after `-I CHAIN N` / `-A CHAIN`).
pub fn ipt_spec(a: &Addition) -> String {
    let (side, port) = match a.direction {
        Direction::In => ("src", "dport"),
        Direction::Reply => ("dst", "sport"),
    };
    let dport = match a.ports.as_slice() {
        [one] => format!("-m tcp --{port} {one}"),
        p => format!(
            "-m multiport --{port}s {}",
            p.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    // iptables-extensions(8) conntrack: `--ctstate DNAT`, "a virtual state, matching if the
    // original destination differs from the reply source" (DNAT, REDIRECT). (`--ctstatus`
    // knows no DNAT.)
    format!(
        "-p tcp -m set --match-set {} {side} {dport}{} -m comment --comment {COMMENT} -j ACCEPT",
        a.set,
        if a.dnat {
            " -m conntrack --ctstate DNAT"
        } else {
            ""
        }
    )
}

/// `iptables-nft-restore` / `ip6tables-legacy-restore` … for a backend and table family.
pub fn restore_bin(backend: Backend, tf: TableFamily) -> &'static str {
    match (backend, tf) {
        (Backend::IptablesLegacy, TableFamily::Ip6) => "ip6tables-legacy-restore",
        (Backend::IptablesLegacy, _) => "iptables-legacy-restore",
        (_, TableFamily::Ip6) => "ip6tables-nft-restore",
        _ => "iptables-nft-restore",
    }
}

/// `iptables-nft-save` … for a backend and table family.
pub fn save_bin(backend: Backend, tf: TableFamily) -> &'static str {
    match (backend, tf) {
        (Backend::IptablesLegacy, TableFamily::Ip6) => "ip6tables-legacy-save",
        (Backend::IptablesLegacy, _) => "iptables-legacy-save",
        (_, TableFamily::Ip6) => "ip6tables-nft-save",
        _ => "iptables-nft-save",
    }
}

fn nft_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// The `nft -f` transaction for native tables: sets refreshed, accepts inserted, and (with
/// `--remove-banned`) provider elements deleted from nft ban sets. Empty when nothing is native.
pub fn nft_file(plan: &Plan) -> String {
    let mut body = String::new();
    for s in &plan.sets {
        if let SetHome::Nft { family, table } = &s.home {
            let _ = writeln!(
                body,
                "add set {family} {table} {} {{ type {}; flags interval; }}",
                s.name,
                nft_type(s.family)
            );
            // Flush and refill in the same transaction: a range update replaces the list
            // without a moment where the set is empty (nft -f is atomic).
            let _ = writeln!(body, "flush set {family} {table} {}", s.name);
            if !s.elements.is_empty() {
                let _ = writeln!(
                    body,
                    "add element {family} {table} {} {{ {} }}",
                    s.name,
                    s.elements.join(", ")
                );
            }
        }
    }
    for a in plan.additions.iter().filter(|a| a.backend == Backend::Nft) {
        let head = match &a.anchor {
            Anchor::Before {
                handle: Some(h), ..
            } => format!(
                "insert rule {} {} {} position {h}",
                a.table_family, a.table, a.chain
            ),
            Anchor::Before { position, .. } => format!(
                "# no handle known for the culprit (#{position}); inserted at the top instead\ninsert rule {} {} {}",
                a.table_family, a.table, a.chain
            ),
            Anchor::End => format!("add rule {} {} {}", a.table_family, a.table, a.chain),
        };
        let _ = writeln!(
            body,
            "# before {}: {}\n{head} {}",
            rule_label(&a.culprit),
            a.culprit.text,
            nft_rule(a)
        );
    }
    if plan.remove_banned {
        for b in &plan.bans {
            if let Some((SetHome::Nft { family, table }, name)) = &b.set
                && !b.provider_elements.is_empty()
            {
                let _ = writeln!(
                    body,
                    "delete element {family} {table} {name} {{ {} }}",
                    b.provider_elements.join(", ")
                );
            }
        }
    }
    if body.is_empty() {
        return String::new();
    }
    format!(
        "#!/usr/sbin/nft -f\n# origin-audit fix: accept Cloudflare before the rules that block it (one atomic transaction).\n# Apply: nft -f FILE. Persist: include this file from /etc/nftables.conf after the tables it edits.\n{body}"
    )
}

/// `ipset restore` text: provider sets refreshed by build-and-swap (no empty moment), and with
/// `--remove-banned` provider entries deleted from ipset ban lists.
pub fn ipset_restore(plan: &Plan) -> String {
    let mut out = String::new();
    for s in plan.sets.iter().filter(|s| s.home == SetHome::Ipset) {
        ipset_set(&mut out, s);
    }
    if plan.remove_banned {
        for b in &plan.bans {
            if let Some((SetHome::Ipset, name)) = &b.set {
                for e in &b.provider_elements {
                    let _ = writeln!(out, "del {name} {e} -exist");
                }
            }
        }
    }
    out
}

fn ipset_set(out: &mut String, s: &ProviderSet) {
    let fam = match s.family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let tmp = format!("{}.new", s.name);
    let _ = writeln!(out, "create {} hash:net family {fam} -exist", s.name);
    let _ = writeln!(out, "create {tmp} hash:net family {fam} -exist");
    let _ = writeln!(out, "flush {tmp}");
    for e in &s.elements {
        let _ = writeln!(out, "add {tmp} {e} -exist");
    }
    let _ = writeln!(out, "swap {tmp} {}", s.name);
    let _ = writeln!(out, "destroy {tmp}");
}

/// `iptables-restore --noflush` files, one per (backend, IP family): `-I CHAIN N` before each
/// culprit in the order the plan computed the positions, `-A CHAIN` for policies.
pub fn iptables_files(plan: &Plan) -> Vec<((Backend, TableFamily), String)> {
    let mut per: BTreeMap<(Backend, TableFamily), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    // Tables keep the plan's order of additions within them (positions depend on it).
    let mut table_order: BTreeMap<(Backend, TableFamily), Vec<String>> = BTreeMap::new();
    for a in plan.additions.iter().filter(|a| a.backend != Backend::Nft) {
        let key = (a.backend, a.table_family);
        let line = match &a.anchor {
            Anchor::Before { position, .. } => {
                format!("-I {} {position} {}", a.chain, ipt_spec(a))
            }
            Anchor::End => format!("-A {} {}", a.chain, ipt_spec(a)),
        };
        let order = table_order.entry(key).or_default();
        if !order.contains(&a.table) {
            order.push(a.table.clone());
        }
        per.entry(key)
            .or_default()
            .entry(a.table.clone())
            .or_default()
            .push(format!(
                "# before {}: {}\n{line}",
                rule_label(&a.culprit),
                a.culprit.text
            ));
    }
    let mut out = Vec::new();
    for (key, tables) in per {
        let mut s = format!(
            "# origin-audit fix for {} ({}): apply with `{} -w 10 --noflush FILE` after the ipsets exist\n",
            key.0,
            key.1,
            restore_bin(key.0, key.1)
        );
        for t in table_order.get(&key).into_iter().flatten() {
            let _ = writeln!(s, "*{t}");
            for l in tables.get(t).into_iter().flatten() {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "COMMIT");
        }
        out.push((key, s));
    }
    out
}

/// Where an iptables backend persists across boots (netfilter-persistent).
fn persist_ipt(tf: TableFamily) -> &'static str {
    if tf == TableFamily::Ip6 {
        "/etc/iptables/rules.v6"
    } else {
        "/etc/iptables/rules.v4"
    }
}

/// The iptables form: one shell script (ipset first, then each backend's restore file).
pub fn iptables_script(plan: &Plan) -> String {
    let files = iptables_files(plan);
    let ipset = ipset_restore(plan);
    if files.is_empty() && ipset.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "#!/bin/sh\n# origin-audit fix (iptables form): ipsets first, then one atomic --noflush restore per backend.\nset -e\n",
    );
    if !ipset.is_empty() {
        let _ = write!(s, "ipset restore <<'EOF'\n{ipset}EOF\n");
    }
    for ((b, tf), text) in &files {
        let _ = write!(
            s,
            "{} -w 10 --noflush <<'EOF'\n{text}EOF\n",
            restore_bin(*b, *tf)
        );
    }
    let mut persist: Vec<&str> = files.iter().map(|((_, tf), _)| persist_ipt(*tf)).collect();
    persist.dedup();
    let _ = writeln!(s, "{}", persist_note(plan.manager, &persist));
    s
}

/// How the iptables form outlives a reboot on this host. netfilter-persistent restores a saved
/// ruleset at boot, which on a ufw or firewalld host fights the manager's own boot-time load
/// (and is lost at its next reload anyway), and on a Docker host saves Docker's chains too,
/// which Docker recreates at start.
fn persist_note(manager: Manager, files: &[&str]) -> String {
    match manager {
        Manager::Ufw => "# Persist: not with netfilter-persistent (it conflicts with ufw, which loads its own files at boot; `ufw reload` drops rules added with iptables): use the ufw form (`origin-audit fix --emit ufw`) for the rules in ufw's chains.".into(),
        Manager::Firewalld => "# Persist: not with netfilter-persistent (firewalld loads its own configuration at boot and `firewall-cmd --reload` drops rules added with iptables): use the firewalld form (`origin-audit fix --emit firewalld`).".into(),
        Manager::Docker => "# Persist: Docker recreates its chains when it starts, and `netfilter-persistent save` would save them too: run this script from a unit ordered After=docker.service instead.".into(),
        _ => format!(
            "# Persist: `netfilter-persistent save` (writes {}) and `ipset save > /etc/iptables/ipsets` (ipset-persistent loads it before the rules).",
            files.join(", ")
        ),
    }
}

/// The ufw form: one `allow` per range and port, at the top of ufw's user rules. ufw stores
/// them in /etc/ufw/user.rules and user6.rules, so they survive `ufw reload`.
pub fn ufw_commands(plan: &Plan) -> String {
    let mut s = String::from(
        "# origin-audit fix (ufw form). ufw keeps these in /etc/ufw/user.rules and /etc/ufw/user6.rules.\n# Note: ufw's user rules run after /etc/ufw/before.rules; a drop there needs editing that file.\n",
    );
    s.push_str(&translated_note(plan));
    for args in ufw_args(plan) {
        let words: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
        let _ = writeln!(s, "ufw {}", words.join(" "));
    }
    s
}

/// The ufw invocations (arguments after `ufw`) of the plan: per family the provider ranges on
/// the ports the additions open, inbound and, for answers, outbound.
pub fn ufw_args(plan: &Plan) -> Vec<Vec<String>> {
    let mut v = Vec::new();
    for ps in dedup_families(plan) {
        // `insert 1` is refused for IPv6 when rule 1 is IPv4 (ufw numbers both lists
        // together); `prepend` puts each family's rule at the top of its own list.
        let verb: &[&str] = match ps.0 {
            Family::V4 => &["insert", "1"],
            Family::V6 => &["prepend"],
        };
        let words =
            |w: &[&str]| -> Vec<String> { verb.iter().chain(w).map(|s| s.to_string()).collect() };
        for e in &ps.1 {
            for p in &plan.ports_needed_dir(ps.0, Direction::In) {
                let p = p.to_string();
                // `port 1:65535` on the provider's side (TCP never uses port 0): without it a
                // rule of the admin's with the same addresses and port but another action
                // (`ufw reject from CIDR to any port 443`) makes ufw print "Skipping inserting
                // existing rule" and exit 0, adding nothing.
                v.push(words(&[
                    "allow", "proto", "tcp", "from", e, "port", "1:65535", "to", "any", "port", &p,
                    "comment", COMMENT,
                ]));
            }
            // The answer leaves from the web port toward the provider (ufw-user-output).
            for p in &plan.ports_needed_dir(ps.0, Direction::Reply) {
                let p = p.to_string();
                v.push(words(&[
                    "allow", "out", "proto", "tcp", "from", "any", "port", &p, "to", e, "port",
                    "1:65535", "comment", COMMENT,
                ]));
            }
        }
    }
    v
}

/// firewalld's zones filter what arrives, not what this host sends: an accept for the answers
/// (SYN-ACK, RST) cannot be written as a zone rich rule.
fn firewalld_reply_note(plan: &Plan) -> String {
    if !plan
        .additions
        .iter()
        .any(|a| a.direction == Direction::Reply)
    {
        return String::new();
    }
    "# Note: this host's answers to the provider are dropped on their way out (OUTPUT/postrouting),
# which firewalld's zones do not filter: the change for them is in the nft/iptables form below.
"
    .into()
}

/// The firewalld form: a permanent ipset per family and rich rules in the zones whose chains
/// block (else the default zone), ahead of the zones' own rules.
pub fn firewalld_commands(plan: &Plan) -> String {
    let mut s = String::from(
        "# origin-audit fix (firewalld form). ipsets can only be created permanently, so this\n# writes the permanent configuration and reloads (the runtime follows). Running it again\n# changes nothing (firewall-cmd only warns ALREADY_ENABLED).\n",
    );
    s.push_str(&translated_note(plan));
    s.push_str(&firewalld_reply_note(plan));
    // The zones whose chains block (firewalld's own table); else the default zone.
    let mut zones: Vec<String> = plan
        .additions
        .iter()
        .filter(|a| a.backend == Backend::Nft && a.table == "firewalld")
        .filter_map(|a| firewalld_zone(&a.chain))
        .map(|z| format!(" --zone={z}"))
        .collect();
    zones.sort();
    zones.dedup();
    if zones.is_empty() {
        zones.push(String::new());
    }
    for (f, elems) in dedup_families(plan) {
        let (name, fam, rich) = match f {
            Family::V4 => ("cloudflare_v4", "inet", "ipv4"),
            Family::V6 => ("cloudflare_v6", "inet6", "ipv6"),
        };
        let _ = writeln!(
            s,
            "firewall-cmd --permanent --info-ipset={name} >/dev/null 2>&1 || firewall-cmd --permanent --new-ipset={name} --type=hash:net --option=family={fam}"
        );
        for e in &elems {
            let _ = writeln!(s, "firewall-cmd --permanent --ipset={name} --add-entry={e}");
        }
        for zone in &zones {
            for p in plan.ports_needed_dir(f, Direction::In) {
                let _ = writeln!(
                    s,
                    "firewall-cmd --permanent{zone} --add-rich-rule='rule priority=\"{RICH_PRIORITY}\" family=\"{rich}\" source ipset=\"{name}\" port port=\"{p}\" protocol=\"tcp\" accept'"
                );
            }
        }
    }
    s.push_str("firewall-cmd --reload\n");
    s
}

/// For the ufw and firewalld forms, which cannot say `ct status dnat`: the ports they open
/// for translated connections are opened for direct ones too.
fn translated_note(plan: &Plan) -> String {
    let ports = port_list(
        plan.additions
            .iter()
            .filter(|a| a.dnat)
            .flat_map(|a| a.ports.iter().copied()),
    );
    if ports.is_empty() {
        return String::new();
    }
    format!(
        "# Note: {ports} is where a DNAT/REDIRECT sends an audited port. This form cannot limit an allow to\n# redirected connections, so it also opens {} to direct connections from Cloudflare.\n",
        if ports.contains(',') { "them" } else { "it" }
    )
}

/// Ports sorted, each once, as `80, 443`.
fn port_list(ports: impl Iterator<Item = u16>) -> String {
    let set: std::collections::BTreeSet<u16> = ports.collect();
    set.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn dedup_families(plan: &Plan) -> Vec<(Family, Vec<String>)> {
    let mut v: Vec<(Family, Vec<String>)> = Vec::new();
    for s in &plan.sets {
        if !v.iter().any(|(f, _)| *f == s.family) {
            v.push((s.family, s.elements.clone()));
        }
    }
    v
}

impl Plan {
    /// Ports the additions of one family and direction open.
    pub fn ports_needed_dir(&self, f: Family, d: Direction) -> Vec<u16> {
        let mut p: Vec<u16> = self
            .additions
            .iter()
            .filter(|a| a.family == f && a.direction == d)
            .flat_map(|a| a.ports.iter().copied())
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

/// One form as text.
pub fn form(plan: &Plan, f: Form) -> String {
    match f {
        Form::Nft => nft_file(plan),
        Form::Iptables => iptables_script(plan),
        Form::Ufw => ufw_commands(plan),
        Form::Firewalld => firewalld_commands(plan),
    }
}

/// The form for the detected manager, and a note on persistence.
pub fn default_forms(plan: &Plan) -> Vec<(Form, String)> {
    let has_nft = plan.additions.iter().any(|a| a.backend == Backend::Nft);
    let has_ipt = plan.additions.iter().any(|a| a.backend != Backend::Nft);
    let mut v = Vec::new();
    match plan.manager {
        Manager::Ufw => v.push((
            Form::Ufw,
            "ufw manages this firewall: rules added with iptables are lost at the next `ufw reload`; use these".into(),
        )),
        Manager::Firewalld => v.push((
            Form::Firewalld,
            "firewalld manages this firewall: use its own configuration so a reload keeps it".into(),
        )),
        Manager::Docker => v.push((
            Form::Iptables,
            "Docker manages the FORWARD/DOCKER chains; these accepts go into the chains that block (INPUT / DOCKER-USER), which Docker leaves alone".into(),
        )),
        _ => {}
    }
    if has_nft && !v.iter().any(|(f, _)| *f == Form::Nft) {
        v.push((
            Form::Nft,
            "native nftables tables: one `nft -f` transaction".into(),
        ));
    }
    if has_ipt && !v.iter().any(|(f, _)| *f == Form::Iptables) {
        v.push((
            Form::Iptables,
            "iptables rules: ipset + one `iptables-restore --noflush` per backend".into(),
        ));
    }
    v
}

/// Configuration that stops ban lists from banning the provider (the cause, not the symptom).
pub fn ban_advice(plan: &Plan, v4: &[String], v6: &[String]) -> String {
    if plan.bans.is_empty() {
        return String::new();
    }
    let all: Vec<&String> = v4.iter().chain(v6).collect();
    let mut s = String::new();
    let tools: Vec<&str> = {
        let mut t: Vec<&str> = plan.bans.iter().map(|b| b.tool.as_str()).collect();
        t.dedup();
        t
    };
    let _ = writeln!(
        s,
        "Ban lists ({}) hold Cloudflare addresses. An accept in front of them only hides the symptom:\n\
         behind Cloudflare every visitor arrives from Cloudflare's addresses, so the ban tool sees\n\
         Cloudflare as the attacker. Make the web server log the real visitor address and exempt\n\
         Cloudflare from bans:",
        tools.join(", ")
    );
    for b in &plan.bans {
        let _ = writeln!(
            s,
            "  - {} ({}){}",
            rule_label(&b.culprit),
            b.tool,
            match &b.set {
                Some((_, n)) if !b.provider_elements.is_empty() => format!(
                    ": set {n} holds {} Cloudflare entr{} — `origin-audit fix --remove-banned` deletes {}",
                    b.provider_elements.len(),
                    if b.provider_elements.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    if b.provider_elements.len() == 1 {
                        "it"
                    } else {
                        "them"
                    }
                ),
                _ => String::new(),
            }
        );
        if let Some(cmd) = unban_command(b) {
            let _ = writeln!(s, "    unban now with the tool itself: {cmd}");
        }
    }
    let joined: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    let _ = writeln!(
        s,
        "\n# fail2ban: /etc/fail2ban/jail.local\n[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 {}\n",
        joined.join(" ")
    );
    let _ = writeln!(
        s,
        "# CrowdSec (1.6.8+): a centralized allowlist\ncscli allowlists create cloudflare -d 'Cloudflare proxies (origin-audit)'\ncscli allowlists add cloudflare {}\n",
        joined.join(" ")
    );
    let _ = writeln!(
        s,
        "# CrowdSec (older): /etc/crowdsec/parsers/s02-enrich/cloudflare-whitelist.yaml\nname: origin-audit/cloudflare-whitelist\ndescription: \"Cloudflare proxies are not attackers\"\nwhitelist:\n  reason: \"Cloudflare proxy ranges\"\n  cidr:"
    );
    for e in &all {
        let _ = writeln!(s, "    - \"{e}\"");
    }
    let _ = writeln!(s, "\n# nginx (http {{}}): log the visitor, not Cloudflare");
    for e in &all {
        let _ = writeln!(s, "set_real_ip_from {e};");
    }
    let _ = writeln!(s, "real_ip_header CF-Connecting-IP;\n");
    let _ = writeln!(
        s,
        "# Apache (mod_remoteip)\nRemoteIPHeader CF-Connecting-IP"
    );
    for e in &all {
        let _ = writeln!(s, "RemoteIPTrustedProxy {e}");
    }
    s
}

fn rows_table(rows: &[ReachRow], only_bad: bool) -> String {
    let mut s = String::new();
    for r in rows.iter().filter(|r| !only_bad || !r.past_the_firewall()) {
        let _ = writeln!(
            s,
            "    {:>5}  {:<22} {:<12}{}",
            r.port,
            r.source,
            r.verdict.as_str(),
            r.rule
                .as_ref()
                .map(|x| format!(" {}", rule_label(x)))
                .unwrap_or_default()
        );
    }
    s
}

/// Rows past the firewall that no socket takes: a listener problem, named so nobody mistakes
/// the firewall's all clear for the site's.
fn socket_note(rows: &[ReachRow]) -> String {
    let ports = port_list(rows.iter().filter(|r| r.socket_refused()).map(|r| r.port));
    if ports.is_empty() {
        return String::new();
    }
    format!(
        "Note: on port {ports} nothing listens for some of them (the kernel answers RST: Cloudflare 521) — a listener problem `origin-audit check` reports; no firewall change fixes it.\n"
    )
}

/// The human report of a plan: what blocks, what will be added where, the proof, the form.
pub fn human(plan: &Plan, v4: &[String], v6: &[String]) -> String {
    let mut s = String::new();
    let bad_before = plan
        .before
        .iter()
        .filter(|r| !r.past_the_firewall())
        .count();
    if plan.is_noop() && plan.problems.is_empty() {
        let ports = plan
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if plan.after.iter().any(ReachRow::socket_refused) {
            let _ = writeln!(
                s,
                "Nothing to fix in the firewall: every Cloudflare range gets through it on every audited port ({ports})."
            );
        } else {
            let _ = writeln!(
                s,
                "Nothing to fix: every Cloudflare range is accepted on every audited port ({ports})."
            );
        }
        s.push_str(&socket_note(&plan.after));
        if !plan.bans.is_empty() {
            s.push('\n');
            s.push_str(&ban_advice(plan, v4, v6));
        }
        return s;
    }
    let _ = writeln!(s, "Before ({bad_before} Cloudflare rows not accepted):");
    s.push_str(&rows_table(&plan.before, true));
    let _ = writeln!(
        s,
        "\nChange ({} rule{} in {} round{}; provider sets {}):",
        plan.additions.len(),
        if plan.additions.len() == 1 { "" } else { "s" },
        plan.rounds,
        if plan.rounds == 1 { "" } else { "s" },
        if plan.sets.is_empty() {
            "none".to_string()
        } else {
            plan.sets
                .iter()
                .map(|p| match &p.home {
                    SetHome::Nft { family, table } => format!("nft {family} {table} @{}", p.name),
                    SetHome::Ipset => format!("ipset {}", p.name),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for a in &plan.additions {
        let at = match &a.anchor {
            Anchor::Before { position, .. } => format!("before #{position}"),
            Anchor::End => "at the end (before the policy)".into(),
        };
        let _ = writeln!(
            s,
            "  + {} {} {} {} {at}: {}\n      culprit {}: {}",
            a.backend,
            a.table_family,
            a.table,
            a.chain,
            rule_text(a),
            rule_label(&a.culprit),
            a.culprit.text
        );
    }
    if plan.remove_banned {
        for b in plan.bans.iter().filter(|b| !b.provider_elements.is_empty()) {
            if let Some((_, n)) = &b.set {
                let _ = writeln!(s, "  - remove from {n}: {}", b.provider_elements.join(", "));
            }
        }
    }
    let _ = writeln!(s, "\nProof (on the model, before touching anything):");
    let _ = writeln!(
        s,
        "  Cloudflare: {}",
        if plan.proof.provider_all_accept {
            "every range accepted on every audited port".to_string()
        } else {
            format!("{} rows still not accepted", plan.proof.remaining.len())
        }
    );
    s.push_str(&rows_table(&plan.proof.remaining, false));
    let _ = writeln!(
        s,
        "  Everyone else: {} ({} address blocks × ports compared, split at every boundary the rules draw)",
        if plan.proof.control_changes.is_empty() {
            "unchanged".to_string()
        } else {
            format!("{} blocks CHANGE", plan.proof.control_changes.len())
        },
        plan.proof.control_blocks
    );
    for c in plan.proof.control_changes.iter().take(20) {
        let _ = writeln!(
            s,
            "    port {} {}: {} → {}",
            c.port,
            c.source,
            c.before.as_str(),
            c.after.as_str()
        );
    }
    for p in &plan.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    if !plan.offerable() {
        let _ = writeln!(s, "\nNo fix is offered: the proof does not hold.");
        return s;
    }
    if plan.after.iter().any(ReachRow::socket_refused) {
        let _ = writeln!(
            s,
            "\nAfter: every Cloudflare row gets through the firewall."
        );
        s.push_str(&socket_note(&plan.after));
    } else {
        let _ = writeln!(s, "\nAfter: every Cloudflare row accept.");
    }
    if !plan.bans.is_empty() {
        s.push('\n');
        s.push_str(&ban_advice(plan, v4, v6));
    }
    for (f, why) in default_forms(plan) {
        let _ = writeln!(s, "\n# {why} (`origin-audit fix --emit {}`):", form_name(f));
        s.push_str(&form(plan, f));
    }
    let _ = writeln!(
        s,
        "\nApply it with `origin-audit fix --apply` (backup, one transaction per backend, re-read, automatic rollback)."
    );
    s
}

pub fn form_name(f: Form) -> &'static str {
    match f {
        Form::Nft => "nft",
        Form::Iptables => "iptables",
        Form::Ufw => "ufw",
        Form::Firewalld => "firewalld",
    }
}

#[cfg(test)]
mod tests {
    use super::{firewalld_zone, shell_word};

    #[test]
    fn firewalld_zones_from_chain_names() {
        assert_eq!(firewalld_zone("filter_IN_public_deny"), Some("public"));
        assert_eq!(firewalld_zone("filter_IN_public"), Some("public"));
        assert_eq!(firewalld_zone("nat_PRE_dmz_allow"), Some("dmz"));
        assert_eq!(firewalld_zone("filter_INPUT"), None);
        assert_eq!(firewalld_zone("filter_INPUT_ZONES"), None);
        assert_eq!(firewalld_zone("filter_IN_"), None);
    }

    #[test]
    fn shell_words_paste_as_one_word() {
        assert_eq!(shell_word("/var/lib/origin-audit"), "/var/lib/origin-audit");
        assert_eq!(shell_word("/tmp/my state"), "'/tmp/my state'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
