//! Raw firewall dumps of the live host, and what could not be read.
//!
//! Owns: which tool to run for which backend (`ip[6]tables-nft-save`, `ip[6]tables-legacy-save`
//! only when the legacy backend holds tables, plain `ip[6]tables-save` on older iptables,
//! `ipset save`; `nft -j -t list ruleset` plus the referenced sets' elements over netlink, only
//! when nf_tables holds a table no iptables-nft dump shows), the nf_tables table list, running
//! the independent readers at once, and turning every failure into a [`ReadError`] that says
//! whether rules were left unread.
//! Must not: parse rules (the `firewall` parsers do, from these verbatim dumps) or change
//! anything: no `-restore`, no module loading (see [`read_legacy`]).
//!
//! All host access goes through [`Host`] so the decisions here are unit-tested with a fake host.

use super::cmd::{self, CmdError, Output};
use super::netlink::{self, NetlinkError};
use crate::snapshot::{Dumps, NftSetElements, ReadError};
use std::io;

/// The host as this module sees it.
pub trait Host {
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, CmdError>;
    /// `Ok(None)` when the file does not exist.
    fn read_file(&self, path: &str) -> io::Result<Option<String>>;
    fn exists(&self, path: &str) -> bool;
    /// (family, name) of every nf_tables table, straight from the kernel.
    fn nft_tables(&self) -> Result<Vec<(String, String)>, NetlinkError>;
    /// The elements of one nft set, straight from the kernel.
    fn nft_set_elements(
        &self,
        family: &str,
        table: &str,
        set: &str,
    ) -> Result<NftSetElements, NetlinkError>;
}

/// The real host: this process's network namespace.
pub struct LiveHost;

impl Host for LiveHost {
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, CmdError> {
        cmd::run(program, args)
    }
    fn read_file(&self, path: &str) -> io::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }
    fn nft_tables(&self) -> Result<Vec<(String, String)>, NetlinkError> {
        list_nft_tables()
    }
    fn nft_set_elements(
        &self,
        family: &str,
        table: &str,
        set: &str,
    ) -> Result<NftSetElements, NetlinkError> {
        super::nft_sets::read_set(family, table, set)
    }
}

const NEEDS_ROOT: &str = "needs root (CAP_NET_ADMIN)";

/// Read every firewall backend present. Never fails: what could not be read is in the errors.
///
/// The iptables dumps (both families), `ipset save` and the kernel's nf_tables table list are
/// independent: they run at once, so the slowest of them, not their sum, sets the time. `nft`
/// runs only when nf_tables holds a table that no iptables-nft dump shows (see [`nft_needed`]):
/// on a host where nf_tables holds only iptables-nft's own tables it would print the same rules
/// again, and it is by far the slowest reader (seconds on large rulesets).
pub fn read_firewall(host: &(dyn Host + Sync)) -> (Dumps, Vec<ReadError>) {
    let mut dumps = Dumps::default();
    let mut errors = Vec::new();
    // Decided before any tool runs: iptables-nft-save itself loads the nf_tables module.
    let may_hold_tables = nf_tables_may_hold_tables(host);
    let (v4, v6, ipset, tables) = std::thread::scope(|sc| {
        let v4 = sc.spawn(|| read_iptables(host, false));
        let v6 = sc.spawn(|| read_iptables(host, true));
        let ipset = sc.spawn(|| read_ipset(host));
        let tables = may_hold_tables.then(|| host.nft_tables());
        (
            super::joined(v4, "iptables (IPv4)", true),
            super::joined(v6, "ip6tables (IPv6)", true),
            super::joined(ipset, "ipset sets", true),
            tables,
        )
    });
    for (v6, ((nft, legacy), family_errors)) in [(false, v4), (true, v6)] {
        let (nft_slot, legacy_slot) = if v6 {
            (
                &mut dumps.ip6tables_nft_save,
                &mut dumps.ip6tables_legacy_save,
            )
        } else {
            (
                &mut dumps.iptables_nft_save,
                &mut dumps.iptables_legacy_save,
            )
        };
        *nft_slot = nft;
        *legacy_slot = legacy;
        errors.extend(family_errors);
    }
    let (ipset_save, ipset_errors) = ipset;
    dumps.ipset_save = ipset_save;
    errors.extend(ipset_errors);

    if !nft_needed(tables.as_ref(), &dumps) {
        return (dumps, errors);
    }
    match read_nft(host, &mut errors) {
        Ok((json, elements)) => {
            if nft_json_has_content(&json) {
                // nft 1.0.x's JSON omits the device of ingress chains; its text listing has it
                // (`hook ingress device "eth0"`), so read that too when ingress chains exist
                // (terse: the devices are all it is read for).
                if json.contains("\"ingress\"") || json.contains("\"egress\"") {
                    match host.run("nft", &["-t", "list", "ruleset"]) {
                        Ok(text) => dumps.nft_text = Some(text.stdout),
                        Err(e) => {
                            errors.push(cmd_error("nft ingress devices", "nft -t list ruleset", &e))
                        }
                    }
                }
                dumps.nft_json.push(json);
                dumps.nft_set_elements = elements;
            }
        }
        Err((_, e)) if e.is_not_installed() => {
            if let Some(tables) = tables {
                report_unread_nft_tables(tables, &dumps, &mut errors);
            }
        }
        Err((source, e)) => errors.push(cmd_error("native nftables", source, &e)),
    }
    (dumps, errors)
}

/// The nft ruleset as JSON, with the elements of the sets its rules reference. The terse
/// listing (`nft -j -t`, no set elements) and one netlink dump per referenced set replace
/// `nft -j list ruleset`, which takes minutes to print a million-element set. Sets no rule
/// references are not read at all. When a referenced set is a map or has a key type
/// [`nft_setelem`](crate::firewall::nft_setelem) does not decode, the full listing is read
/// instead: slower, never less. A set whose dump fails (or outlasts the tools' timeout) is
/// recorded as unread, with a read error: the full listing would run the same kernel dump.
fn read_nft(
    host: &dyn Host,
    errors: &mut Vec<ReadError>,
) -> Result<(String, Vec<NftSetElements>), (&'static str, CmdError)> {
    const FULL: &str = "nft -j list ruleset";
    let full = || {
        host.run("nft", &["-j", "list", "ruleset"])
            .map(|o| (o.stdout, Vec::new()))
            .map_err(|e| (FULL, e))
    };
    let terse = match host.run("nft", &["-j", "-t", "list", "ruleset"]) {
        Ok(o) => o.stdout,
        // Missing, hung or denied: the full listing would be no better.
        Err(
            e @ (CmdError::NotInstalled { .. }
            | CmdError::TimedOut { .. }
            | CmdError::PermissionDenied { .. }),
        ) => return Err(("nft -j -t list ruleset", e)),
        // An nft that refuses -t, or another failure the full listing may not have: try it.
        Err(_) => return full(),
    };
    let Some(sets) = referenced_sets(&terse) else {
        return full();
    };
    let mut elements = Vec::with_capacity(sets.len());
    for (family, table, set) in sets {
        match host.nft_set_elements(&family, &table, &set) {
            Ok(e) => elements.push(e),
            // The full listing runs the same kernel dump (and prints it as JSON): no better.
            // The set is unknown; the rest of the ruleset is still read.
            Err(e) => {
                let message =
                    format!("{e}; rules that look packets up in this set are undecidable");
                errors.push(ReadError {
                    what: format!("elements of nft set {family} {table} {set}"),
                    source: "netlink NFT_MSG_GETSETELEM".into(),
                    message: message.clone(),
                    firewall: false,
                });
                elements.push(NftSetElements {
                    family,
                    table,
                    set,
                    messages: Vec::new(),
                    error: Some(message),
                });
            }
        }
    }
    Ok((terse, elements))
}

/// (family, table, name) of every named set a rule of this terse listing references (`"@name"`
/// in its JSON), or `None` when one of them cannot be read over netlink here: a map, or a key
/// type the decoder does not know. Text that is not `nft -j` output: `None` (the full listing
/// is read, and its parser reports what is wrong).
fn referenced_sets(terse: &str) -> Option<Vec<(String, String, String)>> {
    let doc: serde_json::Value = serde_json::from_str(terse).ok()?;
    let mut out = Vec::new();
    for item in doc.get("nftables")?.as_array()? {
        let (kind, body) = match (item.get("set"), item.get("map")) {
            (Some(b), _) => ("set", b),
            (None, Some(b)) => ("map", b),
            _ => continue,
        };
        let field = |k: &str| body.get(k).and_then(|v| v.as_str());
        let (Some(family), Some(table), Some(name)) =
            (field("family"), field("table"), field("name"))
        else {
            return None;
        };
        if !terse.contains(&format!("\"@{name}\"")) {
            continue;
        }
        let decodable = field("type").and_then(crate::firewall::nft_setelem::KeyType::from_nft);
        if kind == "map" || decodable.is_none() {
            return None;
        }
        out.push((family.to_string(), table.to_string(), name.to_string()));
    }
    Some(out)
}

/// (nft dump, legacy dump) of one family's iptables, and what went wrong.
type FamilyRead = ((Option<String>, Option<String>), Vec<ReadError>);

fn read_iptables(host: &dyn Host, v6: bool) -> FamilyRead {
    let tools = IptablesTools::probe(host, v6);
    let (mut nft, mut legacy, mut errors) = (None, None, Vec::new());
    read_iptables_nft(host, &tools, &mut nft, &mut errors);
    read_legacy(host, &tools, &mut legacy, &mut errors);
    ((nft, legacy), errors)
}

fn read_ipset(host: &dyn Host) -> (Option<String>, Vec<ReadError>) {
    match host.run("ipset", &["save"]) {
        Ok(out) => (non_empty(out.stdout), Vec::new()),
        // No ipset tool: rules that name a set find it undefined, which the analysis reports
        // as undecidable; nothing else to say here.
        Err(e) if e.is_not_installed() => (None, Vec::new()),
        Err(e) => (None, vec![cmd_error("ipset sets", "ipset save", &e)]),
    }
}

/// Whether `nft -j list ruleset` can show anything the other readers did not. `tables` is the
/// kernel's table list: `None` when nf_tables is not loaded (no table can exist; asking would
/// load it), `Some(Err)` when it could not be listed (then nft is asked, and reports its own
/// error). A table is covered when it is an `ip`/`ip6` table that the matching
/// iptables-nft-save dump prints as `*name` and does not call incompatible ("use 'nft' tool"):
/// a native `table ip filter` with nft-only rules or base chains is such a table.
fn nft_needed(tables: Option<&Result<Vec<(String, String)>, NetlinkError>>, dumps: &Dumps) -> bool {
    match tables {
        None => false,
        Some(Err(_)) => true,
        Some(Ok(list)) => list.iter().any(|(f, n)| !covered(dumps, f, n)),
    }
}

fn covered(dumps: &Dumps, family: &str, name: &str) -> bool {
    let dump = match family {
        "ip" => &dumps.iptables_nft_save,
        "ip6" => &dumps.ip6tables_nft_save,
        _ => return false,
    };
    dump.as_deref().is_some_and(|d| {
        d.lines().any(|l| l.strip_prefix('*') == Some(name))
            && !crate::firewall::iptables_save::incompatible_tables(d).contains(name)
    })
}

/// Which save tools this host has for one family. iptables ≥ 1.8 ships `-nft-save` and
/// `-legacy-save`; older (or minimal) installs have only `iptables-save`, whose backend its
/// `--version` names: `iptables-save v1.8.9 (nf_tables)` or `… (legacy)`; before 1.8 it prints
/// no backend and is always legacy.
struct IptablesTools {
    v6: bool,
    nft_save: String,
    legacy_save: String,
    /// `ip[6]tables-save` and its backend, when `-nft-save`/`-legacy-save` are missing.
    plain: Option<(String, PlainBackend)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlainBackend {
    Nft,
    Legacy,
}

impl IptablesTools {
    fn probe(host: &dyn Host, v6: bool) -> Self {
        let p = if v6 { "ip6tables" } else { "iptables" };
        let plain_name = format!("{p}-save");
        let plain = host
            .run(&plain_name, &["--version"])
            .ok()
            .map(|o| o.stdout + &o.stderr)
            .map(|v| {
                if v.contains("(nf_tables)") {
                    PlainBackend::Nft
                } else {
                    PlainBackend::Legacy
                }
            })
            .map(|b| (plain_name, b));
        IptablesTools {
            v6,
            nft_save: format!("{p}-nft-save"),
            legacy_save: format!("{p}-legacy-save"),
            plain,
        }
    }
    fn label(&self, backend: &str) -> String {
        format!(
            "{}-{backend} ({})",
            if self.v6 { "ip6tables" } else { "iptables" },
            if self.v6 { "IPv6" } else { "IPv4" }
        )
    }
    fn plain_for(&self, b: PlainBackend) -> Option<&str> {
        self.plain
            .as_ref()
            .filter(|(_, pb)| *pb == b)
            .map(|(n, _)| n.as_str())
    }
}

fn read_iptables_nft(
    host: &dyn Host,
    tools: &IptablesTools,
    slot: &mut Option<String>,
    errors: &mut Vec<ReadError>,
) {
    let what = tools.label("nft");
    let mut result = host.run(&tools.nft_save, &[]);
    let mut source = tools.nft_save.clone();
    if matches!(&result, Err(e) if e.is_not_installed()) {
        match tools.plain_for(PlainBackend::Nft) {
            Some(plain) => {
                source = plain.to_string();
                result = host.run(plain, &[]);
            }
            // No nf_tables flavour of iptables here. Tables it would show can still exist
            // (made by another tool or container); `nft -j` shows them, and when `nft` is
            // missing too, `check_unread_nft_tables` reports them.
            None => return,
        }
    }
    match result {
        // Prints only tables that exist; nothing = no iptables-nft tables.
        Ok(out) => *slot = non_empty(out.stdout),
        // A kernel without nf_tables cannot hold iptables-nft tables.
        Err(CmdError::Failed { ref stderr, .. }) if stderr.contains("Protocol not supported") => {}
        Err(e) => errors.push(cmd_error(&what, &source, &e)),
    }
}

/// The legacy backend is read only when `/proc/net/ip{,6}_tables_names` lists tables (per
/// network namespace). Running `iptables-legacy-save` on a host without legacy tables would
/// load the x_tables modules as a side effect; reading the proc file loads nothing. The file is
/// absent when `ip_tables` is not loaded (then no legacy tables can exist) and readable by root
/// only (mode 0440), so without root the legacy backend is unknown.
fn read_legacy(
    host: &dyn Host,
    tools: &IptablesTools,
    slot: &mut Option<String>,
    errors: &mut Vec<ReadError>,
) {
    let what = tools.label("legacy");
    let names_path = if tools.v6 {
        "/proc/net/ip6_tables_names"
    } else {
        "/proc/net/ip_tables_names"
    };
    let names = match host.read_file(names_path) {
        Ok(None) => return,
        Ok(Some(s)) if s.trim().is_empty() => return,
        Ok(Some(s)) => s.split_whitespace().collect::<Vec<_>>().join(", "),
        Err(e) => {
            let message = if e.kind() == io::ErrorKind::PermissionDenied {
                format!("cannot read {names_path}: {e}: {NEEDS_ROOT}")
            } else {
                format!("cannot read {names_path}: {e}")
            };
            errors.push(ReadError {
                what,
                source: names_path.to_string(),
                message,
                firewall: true,
            });
            return;
        }
    };
    let mut source = tools.legacy_save.clone();
    let mut result = host.run(&tools.legacy_save, &[]);
    if matches!(&result, Err(e) if e.is_not_installed())
        && let Some(plain) = tools.plain_for(PlainBackend::Legacy)
    {
        source = plain.to_string();
        result = host.run(plain, &[]);
    }
    match result {
        Ok(out) => *slot = non_empty(out.stdout),
        Err(e) if e.is_not_installed() => errors.push(ReadError {
            what,
            source,
            message: format!(
                "legacy tables present ({names} in {names_path}) but neither {} nor a legacy {} \
                 is installed; install iptables",
                tools.legacy_save,
                if tools.v6 {
                    "ip6tables-save"
                } else {
                    "iptables-save"
                }
            ),
            firewall: true,
        }),
        Err(e) => errors.push(cmd_error(&what, &source, &e)),
    }
}

/// Whether nf_tables can hold tables right now. Listing them is made only when it cannot load a
/// module: nfnetlink asks for the nf_tables module on demand. If nf_tables is a module and not
/// loaded, no table can exist (creating one loads it), so there is nothing to list — and
/// nothing for `nft` to show either.
fn nf_tables_may_hold_tables(host: &dyn Host) -> bool {
    let loaded = host.exists("/sys/module/nf_tables");
    // No /proc/modules: a kernel without module support, where nothing can be loaded.
    let no_modules = !host.exists("/proc/modules");
    let builtin = host
        .read_file("/proc/sys/kernel/osrelease")
        .ok()
        .flatten()
        .and_then(|rel| {
            host.read_file(&format!("/lib/modules/{}/modules.builtin", rel.trim()))
                .ok()
                .flatten()
        })
        .is_some_and(|b| b.lines().any(|l| l.ends_with("/nf_tables.ko")));
    loaded || no_modules || builtin
}

/// `nft` is missing. Only nft can show native tables (iptables-nft-save shows its own tables
/// only), so the kernel's table list minus those the iptables-nft dumps cover is a ruleset
/// nobody read → `firewall: true`. Nothing left → not an error at all (the common Ubuntu/ufw
/// host without the nftables package).
fn report_unread_nft_tables(
    tables: Result<Vec<(String, String)>, NetlinkError>,
    dumps: &Dumps,
    errors: &mut Vec<ReadError>,
) {
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            let message = if e.errno() == Some(1) {
                format!("nft is not installed, and listing nf_tables tables {NEEDS_ROOT}")
            } else {
                format!("nft is not installed, and listing nf_tables tables failed: {e}")
            };
            errors.push(ReadError {
                what: "native nftables".into(),
                source: "nft (not installed); netlink NFT_MSG_GETTABLE".into(),
                message,
                firewall: true,
            });
            return;
        }
    };
    let unread: Vec<String> = tables
        .iter()
        .filter(|(f, n)| !covered(dumps, f, n))
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    if !unread.is_empty() {
        errors.push(ReadError {
            what: "native nftables".into(),
            source: "nft (not installed)".into(),
            message: format!(
                "nft is not installed, and nf_tables holds tables no other tool can show: {}; \
                 install the nftables package",
                unread.join(", ")
            ),
            firewall: true,
        });
    }
}

/// include/uapi/linux/netfilter/nfnetlink.h, nf_tables.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;

/// Every nf_tables table as (family, name), via NETLINK_NETFILTER `NFT_MSG_GETTABLE` dump with
/// `NFPROTO_UNSPEC` (all families). Needs CAP_NET_ADMIN (nfnetlink checks it for every message).
pub fn list_nft_tables() -> Result<Vec<(String, String)>, NetlinkError> {
    const WHAT: &str = "netlink NFT_MSG_GETTABLE (NETLINK_NETFILTER)";
    // struct nfgenmsg { u8 nfgen_family; u8 version; __be16 res_id; }
    let req = netlink::encode(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        1,
        &[0, 0, 0, 0],
    );
    let msgs = netlink::dump(netlink_sys::protocols::NETLINK_NETFILTER, &req, WHAT)?;
    let mut out = Vec::new();
    for (ty, payload) in msgs {
        if ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE || payload.len() < 4 {
            continue;
        }
        let family = nfproto_name(payload[0]);
        let attrs = netlink::attrs(&payload[4..]).map_err(|message| NetlinkError::Malformed {
            what: WHAT,
            message,
        })?;
        if let Some((_, name)) = attrs.iter().find(|(t, _)| *t == NFTA_TABLE_NAME) {
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            out.push((family, String::from_utf8_lossy(name).into_owned()));
        }
    }
    Ok(out)
}

/// NFPROTO_* (include/uapi/linux/netfilter.h) as nft spells the family.
fn nfproto_name(p: u8) -> String {
    match super::nft_sets::NFPROTO.iter().find(|(n, _)| *n == p) {
        Some((_, name)) => (*name).to_string(),
        None => format!("family {p}"),
    }
}

/// `nft -j list ruleset` always prints a `metainfo` object; with nothing else the ruleset is
/// empty. Text that is not JSON is kept, so the parser reports it rather than us hiding it.
pub fn nft_json_has_content(s: &str) -> bool {
    if s.trim().is_empty() {
        return false;
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => match v.get("nftables").and_then(|a| a.as_array()) {
            Some(items) => items.iter().any(|i| i.get("metainfo").is_none()),
            None => true,
        },
        Err(_) => true,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn cmd_error(what: &str, source: &str, e: &CmdError) -> ReadError {
    ReadError {
        what: what.to_string(),
        source: source.to_string(),
        message: e.to_string(),
        // Every failure that reaches here leaves that backend's rules unread: denied, failed,
        // timed out. (Missing tools are decided by the callers.)
        firewall: true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap their own fixtures
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A scripted host: commands by their full command line; files by path.
    #[derive(Default)]
    struct Fake {
        cmds: HashMap<String, Result<String, &'static str>>,
        files: HashMap<String, Result<String, io::ErrorKind>>,
        tables: Option<Result<Vec<(String, String)>, i32>>,
        /// What every netlink set-element dump returns (`None`: it fails).
        set_elements: Option<String>,
        ran: std::sync::Mutex<Vec<String>>,
    }

    impl Fake {
        fn cmd(mut self, line: &str, out: Result<&str, &'static str>) -> Self {
            self.cmds.insert(line.to_string(), out.map(str::to_string));
            self
        }
        fn file(mut self, path: &str, content: Result<&str, io::ErrorKind>) -> Self {
            self.files
                .insert(path.to_string(), content.map(str::to_string));
            self
        }
    }

    impl Host for Fake {
        fn run(&self, program: &str, args: &[&str]) -> Result<Output, CmdError> {
            let line = std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            self.ran.lock().unwrap().push(line.clone());
            match self.cmds.get(&line) {
                None => Err(CmdError::NotInstalled { cmd: line }),
                Some(Ok(s)) => Ok(Output {
                    stdout: s.clone(),
                    stderr: String::new(),
                }),
                Some(Err("eperm")) => Err(CmdError::PermissionDenied {
                    cmd: line,
                    stderr: "Permission denied (you must be root)".into(),
                }),
                Some(Err(msg)) => Err(CmdError::Failed {
                    cmd: line,
                    status: "exit status: 1".into(),
                    stderr: msg.to_string(),
                }),
            }
        }
        fn read_file(&self, path: &str) -> io::Result<Option<String>> {
            match self.files.get(path) {
                None => Ok(None),
                Some(Ok(s)) => Ok(Some(s.clone())),
                Some(Err(k)) => Err(io::Error::from(*k)),
            }
        }
        fn exists(&self, path: &str) -> bool {
            self.files.contains_key(path)
        }
        fn nft_set_elements(
            &self,
            family: &str,
            table: &str,
            set: &str,
        ) -> Result<NftSetElements, NetlinkError> {
            self.ran
                .lock()
                .unwrap()
                .push(format!("netlink set {family} {table} {set}"));
            match &self.set_elements {
                Some(ok) => Ok(NftSetElements {
                    family: family.into(),
                    table: table.into(),
                    set: set.into(),
                    messages: vec![ok.clone()],
                    error: None,
                }),
                None => Err(NetlinkError::Kernel {
                    what: "test",
                    errno: 1,
                }),
            }
        }
        fn nft_tables(&self) -> Result<Vec<(String, String)>, NetlinkError> {
            match self.tables.clone() {
                None => panic!("nft_tables must not be queried here"),
                Some(Ok(t)) => Ok(t),
                Some(Err(errno)) => Err(NetlinkError::Kernel {
                    what: "test",
                    errno,
                }),
            }
        }
    }

    // Real header lines, iptables 1.8.9 in a throwaway namespace.
    const NFT_SAVE: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 10:54:57 2026\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 23 -j ACCEPT\nCOMMIT\n# Completed on Thu Nov 26 10:54:57 2026\n";
    const LEGACY_SAVE: &str = "# Generated by iptables-save v1.8.9 on Thu Nov 26 10:54:57 2026\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n# Completed on Thu Nov 26 10:54:57 2026\n";
    // Real: `nft -j list ruleset` of an empty namespace, nft 1.0.6.
    const NFT_EMPTY: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#;

    fn debian_root() -> Fake {
        Fake {
            tables: Some(Ok(vec![("ip".into(), "filter".into())])),
            ..Fake::default()
        }
        .cmd("nft -j list ruleset", Ok(NFT_EMPTY))
        .cmd("nft -j -t list ruleset", Ok(NFT_EMPTY))
        .cmd("iptables-nft-save", Ok(NFT_SAVE))
        .cmd("ip6tables-nft-save", Ok(""))
        .cmd("iptables-legacy-save", Ok(LEGACY_SAVE))
        .cmd("ip6tables-legacy-save", Ok(""))
        .cmd(
            "iptables-save --version",
            Ok("iptables-save v1.8.9 (nf_tables)\n"),
        )
        .cmd("ipset save", Ok(""))
    }

    #[test]
    fn legacy_read_only_when_tables_listed() {
        let host = debian_root();
        let (d, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.iptables_nft_save.as_deref(), Some(NFT_SAVE));
        assert_eq!(d.ip6tables_nft_save, None);
        assert_eq!(d.iptables_legacy_save, None);
        assert!(
            d.nft_json.is_empty(),
            "metainfo-only nft output is no ruleset"
        );
        assert!(
            !host
                .ran
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.contains("legacy")),
            "{:?}",
            host.ran.lock().unwrap()
        );

        let host = debian_root().file("/proc/net/ip_tables_names", Ok("filter\n"));
        let (d, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.iptables_legacy_save.as_deref(), Some(LEGACY_SAVE));
        assert!(
            !host
                .ran
                .lock()
                .unwrap()
                .iter()
                .any(|c| c == "ip6tables-legacy-save")
        );
    }

    #[test]
    fn unreadable_legacy_names_is_needs_root() {
        let host = debian_root().cmd("iptables-nft-save", Err("eperm")).file(
            "/proc/net/ip_tables_names",
            Err(io::ErrorKind::PermissionDenied),
        );
        let (_, e) = read_firewall(&host);
        let nft = e.iter().find(|e| e.source == "iptables-nft-save").unwrap();
        assert!(
            nft.firewall && nft.message.contains("needs root"),
            "{nft:?}"
        );
        let legacy = e
            .iter()
            .find(|e| e.source == "/proc/net/ip_tables_names")
            .unwrap();
        assert!(
            legacy.firewall && legacy.message.contains("needs root"),
            "{legacy:?}"
        );
        assert_eq!(legacy.what, "iptables-legacy (IPv4)");
    }

    #[test]
    fn legacy_tables_without_legacy_tool_is_firewall_error() {
        let host = Fake {
            tables: Some(Ok(Vec::new())),
            ..Fake::default()
        }
        .cmd("nft -j list ruleset", Ok(NFT_EMPTY))
        .cmd("iptables-nft-save", Ok(""))
        .cmd("ip6tables-nft-save", Ok(""))
        .file("/proc/net/ip_tables_names", Ok("filter\n"));
        let (_, e) = read_firewall(&host);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].firewall);
        assert!(e[0].message.contains("filter"), "{}", e[0].message);
    }

    #[test]
    fn old_iptables_plain_save_by_version() {
        // iptables < 1.8: only iptables-save, legacy.
        let host = Fake::default()
            .cmd("iptables-save --version", Ok("iptables-save v1.6.1\n"))
            .cmd("iptables-save", Ok(LEGACY_SAVE))
            .file("/proc/net/ip_tables_names", Ok("filter\n"))
            .file("/proc/modules", Ok(""));
        let (d, e) = read_firewall(&host);
        assert_eq!(d.iptables_legacy_save.as_deref(), Some(LEGACY_SAVE));
        assert_eq!(d.iptables_nft_save, None);
        // nft missing, nf_tables not loaded, modules supported: nothing to report.
        assert!(e.is_empty(), "{e:?}");

        // A minimal nf_tables install: plain iptables-save is the nft one.
        let host = Fake {
            tables: Some(Ok(vec![("ip".into(), "filter".into())])),
            ..Fake::default()
        }
        .cmd("nft -j list ruleset", Ok(NFT_EMPTY))
        .cmd(
            "iptables-save --version",
            Ok("iptables-save v1.8.9 (nf_tables)\n"),
        )
        .cmd("iptables-save", Ok(NFT_SAVE));
        let (d, _) = read_firewall(&host);
        assert_eq!(d.iptables_nft_save.as_deref(), Some(NFT_SAVE));
        assert_eq!(d.iptables_legacy_save, None);
    }

    #[test]
    fn missing_nft_with_unread_native_tables() {
        let mut host = debian_root()
            .file("/sys/module/nf_tables", Ok(""))
            .file("/proc/modules", Ok(""));
        host.cmds.remove("nft -j list ruleset");
        host.cmds.remove("nft -j -t list ruleset");
        // The iptables-nft filter table is covered by its dump; inet firewalld is not.
        host.tables = Some(Ok(vec![
            ("ip".into(), "filter".into()),
            ("inet".into(), "firewalld".into()),
        ]));
        let (_, e) = read_firewall(&host);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].firewall);
        assert!(e[0].message.contains("inet firewalld"));
        assert!(!e[0].message.contains("ip filter"));

        host.tables = Some(Ok(vec![("ip".into(), "filter".into())]));
        let (_, e) = read_firewall(&host);
        assert!(e.is_empty(), "only iptables-nft's own table: {e:?}");

        host.tables = Some(Err(1));
        let (_, e) = read_firewall(&host);
        assert!(
            e[0].firewall && e[0].message.contains("needs root"),
            "{e:?}"
        );
    }

    #[test]
    fn missing_nft_module_not_loaded_is_not_queried() {
        // `tables: None` panics if queried: the query could load nf_tables.
        let mut host = debian_root().file("/proc/modules", Ok(""));
        host.cmds.remove("nft -j list ruleset");
        host.cmds.remove("nft -j -t list ruleset");
        host.cmds
            .insert("iptables-nft-save".into(), Ok(String::new()));
        let (_, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn failures_name_the_command() {
        let mut host = debian_root();
        host.tables = Some(Ok(vec![("inet".into(), "filter".into())]));
        let host = host
            .cmd(
                "nft -j -t list ruleset",
                Err("netlink: Error: cache initialization failed"),
            )
            .cmd(
                "nft -j list ruleset",
                Err("netlink: Error: cache initialization failed"),
            )
            .cmd("ipset save", Err("eperm"));
        let (_, e) = read_firewall(&host);
        let nft = e
            .iter()
            .find(|e| e.source == "nft -j list ruleset")
            .unwrap();
        assert!(nft.firewall && nft.message.contains("cache initialization"));
        let ipset = e.iter().find(|e| e.source == "ipset save").unwrap();
        assert!(ipset.message.contains("needs root (CAP_NET_ADMIN)"));
    }

    #[test]
    fn nft_without_nf_tables_kernel_is_no_error() {
        let host = debian_root().cmd(
            "iptables-nft-save",
            Err("iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Protocol not supported"),
        );
        let (d, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.iptables_nft_save, None);
    }

    fn ran(host: &Fake) -> Vec<String> {
        host.ran.lock().unwrap().clone()
    }

    #[test]
    fn nft_runs_only_for_tables_no_iptables_dump_shows() {
        // nf_tables holds only iptables-nft's filter table, which its dump shows: nft is not run.
        let host = debian_root().file("/sys/module/nf_tables", Ok(""));
        let (d, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert!(
            !ran(&host).iter().any(|c| c.starts_with("nft")),
            "{:?}",
            ran(&host)
        );
        assert_eq!(d.iptables_nft_save.as_deref(), Some(NFT_SAVE));

        // A native table (inet, arp, bridge, netdev), an ip6 table with no ip6tables dump, or a
        // table the dump calls incompatible: nft is run.
        let incompatible = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 10:54:57 2026\n# Table `filter' is incompatible, use 'nft' tool.\n";
        for (tables, v4) in [
            (vec![("inet", "firewalld")], NFT_SAVE),
            (vec![("ip", "filter"), ("bridge", "filter")], NFT_SAVE),
            (vec![("ip6", "filter")], NFT_SAVE),
            (vec![("ip", "nat")], NFT_SAVE),
            (vec![("ip", "filter")], incompatible),
        ] {
            let mut host = debian_root().cmd("iptables-nft-save", Ok(v4));
            host.tables = Some(Ok(tables
                .iter()
                .map(|(f, n)| (f.to_string(), n.to_string()))
                .collect()));
            let _ = read_firewall(&host);
            assert!(
                ran(&host).iter().any(|c| c.starts_with("nft -j")),
                "{tables:?}: {:?}",
                ran(&host)
            );
        }

        // The table list cannot be read: nft is asked (and reports its own error).
        let mut host = debian_root()
            .cmd("nft -j -t list ruleset", Err("eperm"))
            .cmd("nft -j list ruleset", Err("eperm"));
        host.tables = Some(Err(1));
        let (_, e) = read_firewall(&host);
        assert!(
            e.iter()
                .any(|e| e.source == "nft -j -t list ruleset" && e.firewall),
            "{e:?}"
        );
        // Denied: the full listing would be denied too, and is not tried.
        assert!(
            !ran(&host).iter().any(|c| c == "nft -j list ruleset"),
            "{:?}",
            ran(&host)
        );

        // nf_tables not loaded (modules supported, not built in): no table can exist; neither
        // the list nor nft is asked (`tables: None` panics if queried).
        let mut host = debian_root().file("/proc/modules", Ok(""));
        host.tables = None;
        let (_, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert!(
            !ran(&host).iter().any(|c| c.starts_with("nft")),
            "{:?}",
            ran(&host)
        );
    }

    #[test]
    fn referenced_sets_come_from_netlink_and_anything_else_from_the_full_listing() {
        // Real shapes (nft 1.0.6 -j -t): a referenced interval set, an unreferenced one.
        let terse = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "cs", "handle": 1}}, {"set": {"family": "inet", "name": "bans4", "table": "cs", "type": "ipv4_addr", "handle": 2, "flags": ["interval"]}}, {"set": {"family": "inet", "name": "unused", "table": "cs", "type": "ipv4_addr", "handle": 3}}, {"chain": {"family": "inet", "table": "cs", "name": "input", "handle": 4, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}, {"rule": {"family": "inet", "table": "cs", "chain": "input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@bans4"}}, {"drop": null}]}}]}"#;
        let full = r#"{"nftables": [{"table": {"family": "inet", "name": "cs", "handle": 1}}]}"#;
        let base = || {
            let mut h = debian_root()
                .cmd("nft -j -t list ruleset", Ok(terse))
                .cmd("nft -j list ruleset", Ok(full));
            h.tables = Some(Ok(vec![("inet".into(), "cs".into())]));
            h
        };
        let mut host = base();
        host.set_elements = Some("00".into());
        let (d, e) = read_firewall(&host);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.nft_json, vec![terse.to_string()]);
        assert_eq!(d.nft_set_elements.len(), 1);
        assert_eq!(d.nft_set_elements[0].set, "bans4");
        let r = ran(&host);
        assert!(
            r.contains(&"netlink set inet cs bans4".to_string()),
            "{r:?}"
        );
        assert!(
            !r.iter()
                .any(|c| c.contains("unused") || c == "nft -j list ruleset"),
            "{r:?}"
        );

        // The dump fails: the set is recorded as unread (and said so), the listing stays the
        // terse one (the full listing would run the same kernel dump).
        let host = base();
        let (d, e) = read_firewall(&host);
        assert_eq!(d.nft_json, vec![terse.to_string()]);
        assert!(
            d.nft_set_elements[0].error.is_some(),
            "{:?}",
            d.nft_set_elements
        );
        assert!(
            e.iter()
                .any(|e| e.what == "elements of nft set inet cs bans4"
                    && e.message.contains("undecidable")),
            "{e:?}"
        );

        // A referenced map (or a key type the decoder does not read): the full listing.
        let mapped = terse.replace(
            r#""type": "ipv4_addr", "handle": 2"#,
            r#""type": "ether_addr", "handle": 2"#,
        );
        let mut host = base().cmd("nft -j -t list ruleset", Ok(&mapped));
        host.set_elements = Some("00".into());
        let (d, _) = read_firewall(&host);
        assert_eq!(d.nft_json, vec![full.to_string()]);
        assert!(!ran(&host).iter().any(|c| c.starts_with("netlink set")));
    }
}
