//! Parser for `iptables-save` / `ip6tables-save` text (both backends) into the model.
//!
//! Owns: the grammar of a `*-save` dump (`*table` … `COMMIT` blocks, `:CHAIN POLICY [p:b]`
//! declarations, `-N CHAIN` and `-A CHAIN …` commands, `#` comments, read in order as
//! iptables-restore runs them), the tokenizer for its quoted arguments, and
//! the mapping of every match module and target iptables-extensions(8) documents onto
//! [`Match`], [`Effect`] and [`Verdict`].
//!
//! Must not: run commands, read files, or decide anything about a packet. A module or target the
//! model cannot express exactly becomes [`Match::Undecidable`] / [`Match::Unknown`] /
//! [`Verdict::Unknown`] carrying its text — never silently dropped.
//!
//! The analysed packet is a new TCP connection (a SYN, unicast, not a fragment) arriving from a
//! provider range; a few mappings below use that to stay exact (`-f`, `pkttype unicast`).

use super::{
    AddrRange, AddrSet, Backend, BaseChain, Chain, CtStates, Dir, Effect, Family, Field, IfPattern,
    Match, ParseError, Policy, RateLimit, RejectKind, Rule, RuleRef, SetRef, Table, TableFamily,
    Verdict, iptables_base,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// Tables `iptables-nft-save` says it cannot show: "# Table `filter' contains incompatible
/// base-chains, use 'nft' tool to list them." / "# Table `filter' is incompatible, use 'nft'
/// tool." (iptables 1.8.x, nft-shared.c / xtables-save.c).
pub fn incompatible_tables(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("# Table `") && l.contains("incompatible"))
        .filter_map(|l| {
            let rest = l.strip_prefix("# Table `")?;
            Some(rest.split('\'').next()?.to_string())
        })
        .collect()
}

/// Parse one `*-save` dump. `source_name` names the dump in errors (command or file path).
///
/// Each `*table` … `COMMIT` block becomes one [`Table`], in dump order; two blocks with the same
/// table name (concatenated dumps) stay two tables.
pub fn parse(
    text: &str,
    backend: Backend,
    family: Family,
    source_name: &str,
) -> Result<Vec<Table>, ParseError> {
    let err = |line: usize, message: String| ParseError::Line {
        source_name: source_name.to_string(),
        line,
        message,
    };
    let table_family = match family {
        Family::V4 => TableFamily::Ip,
        Family::V6 => TableFamily::Ip6,
    };
    let mut tables = Vec::new();
    let mut open: Option<OpenTable> = None;

    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some(t) = &open {
                return Err(err(
                    lineno,
                    format!(
                        "table {:?} opened at line {} has no COMMIT before this *{name}",
                        t.name, t.line
                    ),
                ));
            }
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err(lineno, format!("bad table header {line:?}")));
            }
            open = Some(OpenTable::new(name, lineno, backend, family, table_family));
            continue;
        }
        if line == "COMMIT" {
            let t = open
                .take()
                .ok_or_else(|| err(lineno, "COMMIT outside any *table block".into()))?;
            tables.push(t.finish());
            continue;
        }
        let Some(t) = open.as_mut() else {
            return Err(err(lineno, format!("{line:?} before any *table header")));
        };
        if let Some(decl) = line.strip_prefix(':') {
            t.declare(decl).map_err(|m| err(lineno, m))?;
            continue;
        }
        // `iptables-save -c` prefixes rules with their counters: `[12:3456] -A INPUT ...`.
        let rule_text = strip_counters(line);
        if rule_text.starts_with("-A ") || rule_text.starts_with("--append ") {
            t.append(rule_text).map_err(|m| err(lineno, m))?;
            continue;
        }
        if let Some(args) = strip_command(line, "-N", "--new-chain") {
            t.new_chain(args).map_err(|m| err(lineno, m))?;
            continue;
        }
        return Err(err(lineno, format!("unrecognized line {line:?}")));
    }
    if let Some(t) = open {
        return Err(err(
            t.line,
            format!("table {:?} opened here has no COMMIT", t.name),
        ));
    }
    Ok(tables)
}

/// The arguments after `short` / `long` when `line` is that command (`-N web` → `"web"`,
/// `-N` alone → `""`).
fn strip_command<'a>(line: &'a str, short: &str, long: &str) -> Option<&'a str> {
    [short, long].into_iter().find_map(|c| {
        let rest = line.strip_prefix(c)?;
        (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
    })
}

fn strip_counters(line: &str) -> &str {
    if line.starts_with('[')
        && let Some(end) = line.find(']')
    {
        return line[end + 1..].trim_start();
    }
    line
}

/// A `*table` block being read. Lines take effect in order, as iptables-restore runs them: a
/// rule may only name (`-A`) or jump to (`-j`, `-g`) a chain created on an earlier line.
/// Checked with iptables 1.8.9 (nft and legacy) in a private namespace: `-A INPUT -j web` before
/// `:web - [0:0]` (or `-N web`) fails with "Chain 'web' does not exist" (nft) / "Couldn't load
/// target `web'" (legacy); `-A web …` before it with "line 2 failed".
struct OpenTable {
    name: String,
    line: usize,
    backend: Backend,
    family: Family,
    table_family: TableFamily,
    chains: Vec<Chain>,
    /// Chain name → index in `chains`: every rule looks its chain and its jump target up here.
    index: HashMap<String, usize>,
}

/// What a chain name stands for at one point of a table block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainKind {
    /// A user chain created on an earlier line (`:NAME -` or `-N NAME`).
    User,
    /// A built-in chain of this table (declared or not: the loader creates it on use).
    Builtin,
    /// No chain of that name (yet).
    Missing,
}

impl OpenTable {
    fn new(
        name: &str,
        line: usize,
        backend: Backend,
        family: Family,
        table_family: TableFamily,
    ) -> Self {
        OpenTable {
            name: name.to_string(),
            line,
            backend,
            family,
            table_family,
            chains: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn kind(&self, chain: &str) -> ChainKind {
        if iptables_base(&self.name, chain).is_some() {
            ChainKind::Builtin
        } else if self.index.contains_key(chain) {
            ChainKind::User
        } else {
            ChainKind::Missing
        }
    }

    /// The index of built-in chain `name`, created with policy ACCEPT when no line declared it.
    ///
    /// iptables-restore 1.8.9 appends to an undeclared built-in chain: `*filter` /
    /// `-A INPUT -p tcp --dport 22 -j DROP` / `COMMIT` loads (rc 0) with both backends and
    /// `iptables-save` then shows `:INPUT ACCEPT [0:0]`; iptables-nft creates just that base
    /// chain (`type filter hook input priority filter; policy accept;`). The legacy backend keeps
    /// the policy the kernel already had (ACCEPT in a fresh namespace; DROP if `iptables -P INPUT
    /// DROP` ran before), which a dump cannot know: the fresh default is what is modelled.
    fn builtin(&mut self, name: &str) -> Option<usize> {
        let (hook, priority, chain_type) = iptables_base(&self.name, name)?;
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        Some(self.push(Chain {
            name: name.to_string(),
            base: Some(BaseChain {
                hook,
                priority,
                chain_type,
                policy: Policy::Accept,
                devices: Vec::new(),
            }),
            rules: Vec::new(),
        }))
    }

    fn push(&mut self, chain: Chain) -> usize {
        let i = self.chains.len();
        self.index.insert(chain.name.clone(), i);
        self.chains.push(chain);
        i
    }

    /// `:NAME POLICY [packets:bytes]`. Loader behaviour (iptables 1.8.9, private namespace):
    /// - built-in chain: `ACCEPT` / `DROP` set the policy, `-` leaves it (ACCEPT when new);
    ///   declaring it again, even after rules, only changes the policy — both backends;
    /// - user chain: legacy refuses a policy ("Can't set policy `ACCEPT' on `web' … Bad built-in
    ///   chain name") and a second declaration ("error creating chain 'web':File exists");
    ///   iptables-nft ignores the policy and flushes the chain on a second declaration;
    /// - no policy word: "line 2 policy invalid"; another word: "Bad policy name" — both.
    fn declare(&mut self, decl: &str) -> Result<(), String> {
        let mut it = decl.split_whitespace();
        let name = it
            .next()
            .ok_or_else(|| "empty chain declaration".to_string())?;
        let policy = match it.next() {
            Some("ACCEPT") => Some(Policy::Accept),
            Some("DROP") => Some(Policy::Drop),
            Some("-") => None,
            Some(p) => return Err(format!("chain {name}: unknown policy {p:?}")),
            None => return Err(format!("chain {name}: declaration without a policy")),
        };
        if let Some(i) = self.builtin(name) {
            if let (Some(policy), Some(base)) = (policy, self.chains[i].base.as_mut()) {
                base.policy = policy;
            }
            return Ok(());
        }
        let legacy = self.backend == Backend::IptablesLegacy;
        if policy.is_some() && legacy {
            return Err(format!(
                "chain {name} has a policy but is not a builtin chain of table {}",
                self.name
            ));
        }
        match self.index.get(name) {
            Some(_) if legacy => Err(format!(
                "chain {name} declared twice in table {}",
                self.name
            )),
            Some(&i) => {
                self.chains[i].rules.clear();
                Ok(())
            }
            None => {
                self.push(Chain {
                    name: name.to_string(),
                    base: None,
                    rules: Vec::new(),
                });
                Ok(())
            }
        }
    }

    /// `-N NAME` / `--new-chain NAME`: iptables-restore runs it as the iptables command (1.8.9,
    /// both backends: `*filter` / `-N web` / `-A web … -j ACCEPT` / `-A INPUT -j web` loads and
    /// saves as `:web - [0:0]`). A name that already exists, built-in ones included (`-N INPUT`
    /// in filter), fails with "Chain already exists" (nft) / "line 2 failed" (legacy).
    fn new_chain(&mut self, args: &str) -> Result<(), String> {
        let words: Vec<&str> = args.split_whitespace().collect();
        let [name] = words.as_slice() else {
            return Err(format!("-N wants one chain name, got {args:?}"));
        };
        if self.kind(name) != ChainKind::Missing {
            return Err(format!(
                "-N {name}: chain already exists in table {}",
                self.name
            ));
        }
        self.push(Chain {
            name: name.to_string(),
            base: None,
            rules: Vec::new(),
        });
        Ok(())
    }

    /// `-A CHAIN …`: the chain must exist by now or be a built-in chain of this table; appending
    /// to anything else (`-A NOSUCH`, `-A INPUT` in raw) fails in both backends ("line 2
    /// failed: No chain/target/match by that name.").
    fn append(&mut self, text: &str) -> Result<(), String> {
        let toks = tokenize(text)?;
        // toks[0] is -A / --append.
        let chain_name = toks
            .get(1)
            .map(|t| t.text.as_str())
            .ok_or_else(|| "-A without a chain name".to_string())?;
        let ci = match self.kind(chain_name) {
            ChainKind::Builtin => self.builtin(chain_name),
            ChainKind::User => self.index.get(chain_name).copied(),
            ChainKind::Missing => None,
        }
        .ok_or_else(|| {
            format!(
                "rule appended to chain {chain_name:?}, which table {} does not have \
                 (not built in, not declared on an earlier line)",
                self.name
            )
        })?;
        let ctx = RuleCtx {
            family: self.family,
            table: self,
        };
        let (matches, effects, verdict) = parse_rule(&toks[2..], &ctx)?;
        let source = RuleRef {
            direction: Default::default(),
            backend: self.backend,
            family: self.table_family,
            table: self.name.clone(),
            chain: chain_name.to_string(),
            position: self.chains[ci].rules.len() + 1,
            handle: None,
            text: text.to_string(),
        };
        self.chains[ci].rules.push(Rule {
            matches,
            effects,
            verdict,
            source,
        });
        Ok(())
    }

    fn finish(self) -> Table {
        Table {
            backend: self.backend,
            family: self.table_family,
            name: self.name,
            chains: self.chains,
            sets: Vec::new(),
        }
    }
}

/// One shell-like word of a rule. `quoted` words are never taken for options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    text: String,
    quoted: bool,
}

/// Split a rule line into words. iptables-save double-quotes arguments containing spaces or
/// quotes and escapes `"` and `\` inside them with a backslash (xtables `xtables_save_string`).
fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::with_capacity(16);
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(q) = rest.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, n)) => text.push(n),
                        None => text.push('\\'),
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => text.push(c),
                }
            }
            let Some(end) = end else {
                return Err(format!("unterminated quoted argument \"{text}"));
            };
            rest = &q[end..];
            if rest.starts_with(|c: char| !c.is_whitespace()) {
                return Err(format!(
                    "quoted argument \"{text}\" runs into the next word"
                ));
            }
            out.push(Tok { text, quoted: true });
        } else {
            // One allocation of the word's exact size.
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(Tok {
                text: rest[..end].to_string(),
                quoted: false,
            });
            rest = &rest[end..];
        }
    }
    Ok(out)
}

fn is_option(t: &Tok) -> bool {
    !t.quoted && t.text.len() > 1 && t.text.starts_with('-') && !is_number(&t.text[1..])
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// `--opt arg…` inside a module or target, with its own `!`.
#[derive(Debug, Clone)]
struct Opt {
    neg: bool,
    name: String,
    args: Vec<Tok>,
}

impl Opt {
    fn arg(&self, i: usize) -> Result<&str, String> {
        self.args
            .get(i)
            .map(|t| t.text.as_str())
            .ok_or_else(|| format!("{} needs an argument", self.name))
    }
    fn render(&self) -> String {
        let mut s = String::new();
        if self.neg {
            s.push_str("! ");
        }
        s.push_str(&self.name);
        for a in &self.args {
            s.push(' ');
            s.push_str(&quote(&a.text, a.quoted));
        }
        s
    }
}

fn quote(s: &str, was_quoted: bool) -> String {
    if was_quoted || s.is_empty() || s.contains(char::is_whitespace) || s.contains('"') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

fn render_opts(opts: &[Opt]) -> String {
    opts.iter().map(Opt::render).collect::<Vec<_>>().join(" ")
}

/// What the rule tokens are grouped into before mapping: top-level options keep their order.
enum Item {
    Top {
        neg: bool,
        opt: String,
        arg: Option<Tok>,
    },
    Module {
        name: String,
        opts: Vec<Opt>,
    },
}

struct Target {
    goto: bool,
    name: String,
    opts: Vec<Opt>,
}

struct RuleCtx<'a> {
    family: Family,
    /// The table block as far as it has been read: the chains a jump may name.
    table: &'a OpenTable,
}

fn parse_rule(toks: &[Tok], ctx: &RuleCtx) -> Result<(Vec<Match>, Vec<Effect>, Verdict), String> {
    let mut items: Vec<Item> = Vec::new();
    let mut target: Option<Target> = None;
    // Where a `--opt` goes: the last `-m` module, the target, or the protocol's implicit module.
    enum Cur {
        None,
        Module(usize),
        Target,
    }
    let mut cur = Cur::None;
    let mut proto_name: Option<String> = None;
    let mut neg = false;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        i += 1;
        if !t.quoted && t.text == "!" {
            if neg {
                return Err("two ! in a row".into());
            }
            neg = true;
            continue;
        }
        if !is_option(t) {
            return Err(format!("unexpected word {:?}", t.text));
        }
        let name = t.text.as_str();
        match name {
            "-s" | "--source" | "-d" | "--destination" | "-i" | "--in-interface" | "-o"
            | "--out-interface" | "-p" | "--protocol" => {
                let arg = toks
                    .get(i)
                    .filter(|a| !is_option(a))
                    .cloned()
                    .ok_or_else(|| format!("{name} needs an argument"))?;
                i += 1;
                if matches!(name, "-p" | "--protocol") {
                    proto_name = Some(arg.text.to_ascii_lowercase());
                }
                items.push(Item::Top {
                    neg,
                    opt: short_name(name).to_string(),
                    arg: Some(arg),
                });
                neg = false;
            }
            "-f" | "--fragment" => {
                items.push(Item::Top {
                    neg,
                    opt: "-f".into(),
                    arg: None,
                });
                neg = false;
            }
            "-m" | "--match" => {
                if neg {
                    return Err(format!("! before {name}"));
                }
                let m = toks
                    .get(i)
                    .filter(|a| !is_option(a))
                    .ok_or_else(|| format!("{name} needs a module name"))?;
                i += 1;
                items.push(Item::Module {
                    name: m.text.clone(),
                    opts: Vec::new(),
                });
                cur = Cur::Module(items.len() - 1);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if neg {
                    return Err(format!("! before {name}"));
                }
                if target.is_some() {
                    return Err("two targets in one rule".into());
                }
                let tgt = toks
                    .get(i)
                    .filter(|a| !is_option(a))
                    .ok_or_else(|| format!("{name} needs a target"))?;
                i += 1;
                target = Some(Target {
                    goto: matches!(name, "-g" | "--goto"),
                    name: tgt.text.clone(),
                    opts: Vec::new(),
                });
                cur = Cur::Target;
            }
            _ if name.starts_with("--") => {
                let mut args = Vec::new();
                while let Some(a) = toks.get(i) {
                    if is_option(a) || (!a.quoted && a.text == "!") {
                        break;
                    }
                    args.push(a.clone());
                    i += 1;
                }
                let opt = Opt {
                    neg,
                    name: name.to_string(),
                    args,
                };
                neg = false;
                match cur {
                    Cur::Module(k) => {
                        if let Some(Item::Module { opts, .. }) = items.get_mut(k) {
                            opts.push(opt);
                        }
                    }
                    Cur::Target => {
                        if let Some(tg) = target.as_mut() {
                            tg.opts.push(opt);
                        }
                    }
                    Cur::None => {
                        // `-p tcp --dport 22` without `-m tcp`: iptables loads the protocol's
                        // module implicitly (iptables(8), "-p": "the protocol ... match").
                        let Some(p) = proto_name.clone() else {
                            return Err(format!("option {name} outside any -m module"));
                        };
                        let m = implicit_module(&p);
                        items.push(Item::Module {
                            name: m.to_string(),
                            opts: vec![opt],
                        });
                        cur = Cur::Module(items.len() - 1);
                    }
                }
            }
            _ => return Err(format!("unknown option {name:?}")),
        }
    }
    if neg {
        return Err("! at the end of the rule".into());
    }

    let mut matches = Vec::new();
    for item in &items {
        match item {
            Item::Top { neg, opt, arg } => top_level(*neg, opt, arg.as_ref(), ctx, &mut matches)?,
            Item::Module { name, opts } => module(name, opts, ctx, &mut matches)?,
        }
    }
    let (effects, verdict) = match &target {
        None => (Vec::new(), Verdict::Continue),
        Some(t) => map_target(t, ctx)?,
    };
    Ok((matches, effects, verdict))
}

fn short_name(long: &str) -> &str {
    match long {
        "--source" => "-s",
        "--destination" => "-d",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        "--protocol" => "-p",
        other => other,
    }
}

fn implicit_module(proto: &str) -> &str {
    match proto {
        "ipv6-icmp" | "icmpv6" | "58" => "icmp6",
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        "132" => "sctp",
        other => other,
    }
}

fn top_level(
    neg: bool,
    opt: &str,
    arg: Option<&Tok>,
    ctx: &RuleCtx,
    out: &mut Vec<Match>,
) -> Result<(), String> {
    let arg_text = arg.map(|a| a.text.as_str()).unwrap_or("");
    match opt {
        "-s" | "-d" => {
            let dir = if opt == "-s" { Dir::Src } else { Dir::Dst };
            match parse_addr_list(arg_text, ctx.family)? {
                Some(set) => out.push(Match::Addr {
                    dir,
                    set,
                    negate: neg,
                }),
                None => out.push(Match::Unknown {
                    text: format!("{}{opt} {arg_text} (non-contiguous mask)", bang(neg)),
                    negate: false,
                }),
            }
        }
        "-i" | "-o" => out.push(Match::Iface {
            dir: if opt == "-i" { Dir::Src } else { Dir::Dst },
            any_of: vec![IfPattern::iptables(arg_text)],
            negate: neg,
        }),
        "-p" => {
            let p =
                proto_number(arg_text).ok_or_else(|| format!("unknown protocol {arg_text:?}"))?;
            if p == 0 {
                // `-p all` matches every packet; `! -p all` none (an empty list matches nothing).
                if neg {
                    out.push(Match::Proto {
                        protos: Vec::new(),
                        negate: false,
                    });
                }
            } else {
                out.push(Match::Proto {
                    protos: vec![p],
                    negate: neg,
                });
            }
        }
        "-f" => {
            // iptables(8) "-f": the rule only refers to second and further IPv4 fragments. The
            // TCP header (and so the SYN) is always in the first fragment, so `-f` never holds
            // for the analysed packet and `! -f` always does.
            if neg {
                out.push(Match::Always {
                    what: "not a second or later fragment (! -f)".into(),
                });
            } else {
                out.push(Match::Never {
                    what: "second or later fragment (-f)".into(),
                });
            }
        }
        _ => return Err(format!("unknown option {opt:?}")),
    }
    Ok(())
}

fn bang(neg: bool) -> &'static str {
    if neg { "! " } else { "" }
}

/// `a[,b…]` of addresses, prefixes or dotted masks. A non-contiguous dotted mask (which
/// iptables accepts) is expanded into the ranges it matches; `None` when that expansion would
/// exceed 4096 ranges, which the caller keeps as unknown.
fn parse_addr_list(s: &str, family: Family) -> Result<Option<AddrSet>, String> {
    let mut ranges = Vec::new();
    for part in s.split(',') {
        if is_noncontiguous_mask(part) {
            let masked = part.split_once('/').and_then(|(a, m)| {
                let (a, m) = (a.parse::<IpAddr>().ok()?, m.parse::<IpAddr>().ok()?);
                AddrSet::masked(a, m, 4096)
            });
            match masked {
                Some(set) if set.families().all(|f| f == family) => ranges.extend(set.ranges),
                _ => return Ok(None),
            }
            continue;
        }
        ranges.push(parse_addr(part, family)?);
    }
    Ok(Some(AddrSet::new(ranges)))
}

fn parse_addr(s: &str, family: Family) -> Result<AddrRange, String> {
    let r = AddrRange::parse(s).map_err(|e| format!("unparsable address {s:?}: {e}"))?;
    if r.family != family {
        return Err(format!("address {s:?} is not {family} in an {family} dump"));
    }
    Ok(r)
}

fn is_noncontiguous_mask(s: &str) -> bool {
    let Some((_, mask)) = s.split_once('/') else {
        return false;
    };
    let Ok(m) = mask.parse::<IpAddr>() else {
        return false;
    };
    let (v, bits) = match m {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let ones = v.count_ones();
    let max = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let expect = if ones == 0 {
        0
    } else {
        (max >> (bits - ones)) << (bits - ones)
    };
    v != expect
}

/// Protocol names as iptables-save prints them (its own table plus /etc/protocols names).
fn proto_number(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return Some(n);
    }
    Some(match s.to_ascii_lowercase().as_str() {
        "all" => 0,
        "icmp" => 1,
        "igmp" => 2,
        "ipencap" | "ipip" => 4,
        "tcp" => 6,
        "udp" => 17,
        "dccp" => 33,
        "ipv6" => 41,
        "ipv6-route" => 43,
        "ipv6-frag" => 44,
        "rsvp" => 46,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" | "icmp6" => 58,
        "ipv6-nonxt" => 59,
        "ipv6-opts" => 60,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        "l2tp" => 115,
        "sctp" => 132,
        "mh" | "ipv6-mh" | "mobility-header" => 135,
        "udplite" => 136,
        _ => return None,
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("unparsable port {s:?}"))
}

/// `a`, `a:b`, `:b`, `a:` (iptables-extensions(8), tcp "--dport").
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = match s.split_once(':') {
        None => {
            let p = parse_port(s)?;
            (p, p)
        }
        Some((a, b)) => (
            if a.is_empty() { 0 } else { parse_port(a)? },
            if b.is_empty() {
                u16::MAX
            } else {
                parse_port(b)?
            },
        ),
    };
    if lo > hi {
        return Err(format!("empty port range {s:?}"));
    }
    Ok((lo, hi))
}

fn parse_port_list(s: &str) -> Result<Vec<(u16, u16)>, String> {
    s.split(',').map(parse_port_range).collect()
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse::<u32>(),
    };
    r.map_err(|_| format!("unparsable number {s:?}"))
}

/// `V[/M]`, mask defaulting to all ones (iptables-extensions(8), mark "--mark value[/mask]").
fn parse_mark(s: &str) -> Result<(u32, u32), String> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v)?, parse_u32(m)?)),
        None => Ok((parse_u32(s)?, u32::MAX)),
    }
}

/// TCP flag names of iptables-extensions(8), tcp "--tcp-flags".
fn tcp_flag_bits(s: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for f in s.split(',') {
        bits |= match f.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ALL" => 0x3f,
            "NONE" => 0,
            _ => return Err(format!("unknown TCP flag {f:?}")),
        };
    }
    Ok(bits)
}

fn ct_states(s: &str) -> Result<u8, String> {
    let mut bits = 0;
    for n in s.split(',') {
        bits |= CtStates::bit(n).ok_or_else(|| format!("unknown conntrack state {n:?}"))?;
    }
    Ok(bits)
}

fn module_text(name: &str, opts: &[Opt]) -> String {
    let o = render_opts(opts);
    if o.is_empty() {
        format!("-m {name}")
    } else {
        format!("-m {name} {o}")
    }
}

/// A readable sentence for modules whose condition the host state cannot decide.
fn undecidable_phrase(name: &str) -> Option<&'static str> {
    Some(match name {
        "owner" => "the sending socket's owner matches",
        "string" => "the packet payload matches",
        "time" => "the current time/date matches",
        "physdev" => "the bridge port matches",
        "socket" => "a local socket matches the packet",
        "rpfilter" => "the reverse-path (route back to the source) check matches",
        "policy" => "the IPsec policy matches",
        "u32" => "the raw packet bytes match",
        "bpf" => "a BPF program matches the packet",
        "cgroup" => "the socket's cgroup matches",
        "cpu" => "the CPU handling the packet matches",
        "devgroup" => "the device group matches",
        "realm" => "the routing realm matches",
        "helper" => "the conntrack helper matches",
        "ttl" => "the IPv4 TTL matches",
        "hl" => "the IPv6 hop limit matches",
        "dscp" => "the DSCP field matches",
        "tos" => "the TOS field matches",
        "ecn" => "the ECN bits match",
        "pkttype" => "the link-layer packet type matches",
        "statistic" => "the statistic (random/nth) sampling picks the packet",
        "mac" => "the source MAC address matches",
        "tcpmss" => "the TCP MSS option matches",
        "ipv6header" => "the IPv6 extension headers match",
        "condition" => "the condition variable is set",
        "osf" => "the passive OS fingerprint matches",
        "nfacct" => "the accounting object counts the packet",
        "ipvs" => "the IPVS property matches",
        "cluster" => "the cluster node is responsible for the packet",
        _ => return None,
    })
}

/// The condition for an undecidable module: a single negated option sets `negate`, otherwise
/// the `!` stay inside the text.
fn undecidable(name: &str, opts: &[Opt], phrase: &str) -> Match {
    if let [o] = opts
        && o.neg
    {
        let plain = Opt {
            neg: false,
            ..o.clone()
        };
        return Match::Undecidable {
            condition: format!("{phrase} ({})", module_text(name, &[plain])),
            negate: true,
        };
    }
    Match::Undecidable {
        condition: format!("{phrase} ({})", module_text(name, opts)),
        negate: false,
    }
}

fn unknown_module(name: &str, opts: &[Opt]) -> Match {
    Match::Unknown {
        text: module_text(name, opts),
        negate: false,
    }
}

fn module(name: &str, opts: &[Opt], ctx: &RuleCtx, out: &mut Vec<Match>) -> Result<(), String> {
    match name {
        "tcp" | "udp" | "sctp" | "dccp" | "udplite" => {
            for o in opts {
                match o.name.as_str() {
                    "--dport" | "--destination-port" | "--sport" | "--source-port" => {
                        let dir = if matches!(o.name.as_str(), "--dport" | "--destination-port") {
                            Dir::Dst
                        } else {
                            Dir::Src
                        };
                        out.push(Match::Port {
                            dir,
                            ranges: vec![parse_port_range(o.arg(0)?)?],
                            negate: o.neg,
                        });
                    }
                    "--syn" if name == "tcp" => out.push(Match::TcpFlags {
                        // iptables-extensions(8) tcp "--syn": equivalent to
                        // --tcp-flags SYN,RST,ACK,FIN SYN.
                        mask: 0x17,
                        comp: 0x02,
                        negate: o.neg,
                    }),
                    "--tcp-flags" if name == "tcp" => out.push(Match::TcpFlags {
                        mask: tcp_flag_bits(o.arg(0)?)?,
                        comp: tcp_flag_bits(o.arg(1)?)?,
                        negate: o.neg,
                    }),
                    "--tcp-option" if name == "tcp" => {
                        out.push(undecidable(
                            name,
                            std::slice::from_ref(o),
                            "the TCP option is present",
                        ));
                    }
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
        }
        "multiport" => {
            for o in opts {
                let ranges = parse_port_list(o.arg(0)?)?;
                match o.name.as_str() {
                    "--dports" | "--destination-ports" => out.push(Match::Port {
                        dir: Dir::Dst,
                        ranges,
                        negate: o.neg,
                    }),
                    "--sports" | "--source-ports" => out.push(Match::Port {
                        dir: Dir::Src,
                        ranges,
                        negate: o.neg,
                    }),
                    "--ports" => out.push(Match::PortEither {
                        ranges,
                        negate: o.neg,
                    }),
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
        }
        "iprange" => {
            for o in opts {
                let dir = match o.name.as_str() {
                    "--src-range" => Dir::Src,
                    "--dst-range" => Dir::Dst,
                    _ => {
                        out.push(unknown_module(name, std::slice::from_ref(o)));
                        continue;
                    }
                };
                let arg = o.arg(0)?;
                if !arg.contains('-') {
                    return Err(format!("iprange {} wants a-b, got {arg:?}", o.name));
                }
                out.push(Match::Addr {
                    dir,
                    set: AddrSet::single(parse_addr(arg, ctx.family)?),
                    negate: o.neg,
                });
            }
        }
        "state" | "conntrack" => {
            for o in opts {
                match o.name.as_str() {
                    "--state" | "--ctstate" => out.push(Match::CtState {
                        states: ct_states(o.arg(0)?)?,
                        negate: o.neg,
                    }),
                    "--ctstatus" => out.push(Match::CtStatus {
                        names: o
                            .arg(0)?
                            .split(',')
                            .map(|s| s.to_ascii_uppercase())
                            .collect(),
                        negate: o.neg,
                    }),
                    // The original tuple is the packet as it arrived, before any NAT
                    // (conntrack(8) / iptables-extensions(8) conntrack "--ctorigsrc").
                    "--ctorigsrc" | "--ctorigdst" => {
                        match parse_addr_list(o.arg(0)?, ctx.family)? {
                            Some(set) => out.push(Match::CtOrigAddr {
                                dir: if o.name == "--ctorigsrc" {
                                    Dir::Src
                                } else {
                                    Dir::Dst
                                },
                                set,
                                negate: o.neg,
                            }),
                            None => out.push(unknown_module(name, std::slice::from_ref(o))),
                        }
                    }
                    "--ctorigsrcport" | "--ctorigdstport" => out.push(Match::CtOrigPort {
                        dir: if o.name == "--ctorigsrcport" {
                            Dir::Src
                        } else {
                            Dir::Dst
                        },
                        ranges: vec![parse_port_range(o.arg(0)?)?],
                        negate: o.neg,
                    }),
                    "--ctproto" => {
                        let a = o.arg(0)?;
                        let p = proto_number(a).ok_or_else(|| format!("unknown protocol {a:?}"))?;
                        out.push(Match::Proto {
                            protos: vec![p],
                            negate: o.neg,
                        });
                    }
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
        }
        "set" => set_module(opts, out)?,
        "limit" => {
            let mut rate = "3/hour".to_string();
            let mut burst = "5".to_string();
            let mut over = false;
            for o in opts {
                match o.name.as_str() {
                    "--limit" => {
                        rate = o.arg(0)?.to_string();
                        over = o.neg;
                    }
                    "--limit-burst" => burst = o.arg(0)?.to_string(),
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
            // iptables-extensions(8) limit: defaults 3/hour, burst 5.
            out.push(Match::Rate(RateLimit {
                kind: "limit".into(),
                desc: format!("{rate} burst {burst}"),
                over,
            }));
        }
        "hashlimit" => {
            let mut over = None;
            let mut desc = Vec::new();
            for o in opts {
                match o.name.as_str() {
                    "--hashlimit-upto" | "--hashlimit" => {
                        over = Some(o.neg);
                        desc.insert(0, format!("up to {}", o.arg(0)?));
                    }
                    "--hashlimit-above" => {
                        over = Some(!o.neg);
                        desc.insert(0, format!("above {}", o.arg(0)?));
                    }
                    n => {
                        let key = n.trim_start_matches("--hashlimit-");
                        let val = o.args.iter().map(|a| a.text.as_str()).collect::<Vec<_>>();
                        desc.push(format!("{key} {}", val.join(" ")).trim().to_string());
                    }
                }
            }
            match over {
                Some(over) => out.push(Match::Rate(RateLimit {
                    kind: "hashlimit".into(),
                    desc: desc.join(", "),
                    over,
                })),
                None => out.push(unknown_module(name, opts)),
            }
        }
        "connlimit" => {
            let mut found = None;
            let mut rest = Vec::new();
            for o in opts {
                match o.name.as_str() {
                    "--connlimit-above" => {
                        found = Some((!o.neg, format!("more than {}", o.arg(0)?)));
                    }
                    "--connlimit-upto" => {
                        found = Some((o.neg, format!("at most {}", o.arg(0)?)));
                    }
                    _ => rest.push(o.render()),
                }
            }
            match found {
                Some((over, what)) => {
                    let mut desc = format!("{what} connections");
                    if !rest.is_empty() {
                        desc = format!("{desc} ({})", rest.join(" "));
                    }
                    out.push(Match::Rate(RateLimit {
                        kind: "connlimit".into(),
                        desc,
                        over,
                    }));
                }
                None => out.push(unknown_module(name, opts)),
            }
        }
        "recent" => recent_module(opts, out)?,
        "quota" => {
            let mut found = false;
            for o in opts {
                if o.name == "--quota" {
                    found = true;
                    out.push(Match::Rate(RateLimit {
                        kind: "quota".into(),
                        desc: format!("{} bytes", o.arg(0)?),
                        over: o.neg,
                    }));
                } else {
                    out.push(unknown_module(name, std::slice::from_ref(o)));
                }
            }
            if !found {
                out.push(unknown_module(name, opts));
            }
        }
        // The comment is kept in RuleRef::text; it decides nothing.
        "comment" => {}
        "addrtype" => {
            let limit_iface_in = opts.iter().any(|o| o.name == "--limit-iface-in");
            for o in opts {
                match o.name.as_str() {
                    "--src-type" | "--dst-type" => out.push(Match::AddrType {
                        dir: if o.name == "--src-type" {
                            Dir::Src
                        } else {
                            Dir::Dst
                        },
                        types: o
                            .arg(0)?
                            .split(',')
                            .map(|s| s.to_ascii_uppercase())
                            .collect(),
                        negate: o.neg,
                        limit_iface_in,
                    }),
                    "--limit-iface-in" => {}
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
        }
        "icmp" | "icmp6" => {
            for o in opts {
                match o.name.as_str() {
                    "--icmp-type" | "--icmpv6-type" => out.push(Match::Icmp {
                        desc: format!("{} {}", o.name.trim_start_matches("--"), o.arg(0)?),
                        negate: o.neg,
                    }),
                    _ => out.push(unknown_module(name, std::slice::from_ref(o))),
                }
            }
        }
        "mark" | "connmark" => {
            for o in opts {
                if o.name != "--mark" {
                    out.push(unknown_module(name, std::slice::from_ref(o)));
                    continue;
                }
                let (value, mask) = parse_mark(o.arg(0)?)?;
                out.push(if name == "mark" {
                    Match::Mark {
                        value,
                        mask,
                        negate: o.neg,
                    }
                } else {
                    Match::ConnMark {
                        value,
                        mask,
                        negate: o.neg,
                    }
                });
            }
        }
        "length" => {
            for o in opts {
                if o.name != "--length" {
                    out.push(unknown_module(name, std::slice::from_ref(o)));
                    continue;
                }
                let a = o.arg(0)?;
                let (lo, hi) = match a.split_once(':') {
                    None => {
                        let v = parse_u32(a)?;
                        (v, v)
                    }
                    Some((l, h)) => (
                        if l.is_empty() { 0 } else { parse_u32(l)? },
                        if h.is_empty() { 0xffff } else { parse_u32(h)? },
                    ),
                };
                out.push(Match::Length {
                    min: lo,
                    max: hi,
                    negate: o.neg,
                });
            }
        }
        "pkttype" => {
            // A connection from a provider is unicast to us: `--pkt-type unicast` holds and
            // broadcast/multicast do not (iptables-extensions(8) pkttype).
            match opts {
                [o] if o.name == "--pkt-type" => {
                    let t = o.arg(0)?.to_ascii_lowercase();
                    let is_unicast = t == "unicast";
                    let known = matches!(t.as_str(), "unicast" | "broadcast" | "multicast");
                    let what = module_text(name, opts);
                    if !known {
                        out.push(undecidable(
                            name,
                            opts,
                            "the link-layer packet type matches",
                        ));
                    } else if is_unicast != o.neg {
                        out.push(Match::Always { what });
                    } else {
                        out.push(Match::Never { what });
                    }
                }
                _ => out.push(undecidable(
                    name,
                    opts,
                    "the link-layer packet type matches",
                )),
            }
        }
        // ip6t_rt/ip6t_frag/ip6t_hbh: when the packet has no such extension header the match is
        // false whatever its options (ipv6_find_hdr fails → return false). Cloudflare's TCP SYNs
        // carry no extension headers, so these rules never apply to them.
        // xt_rpfilter: true when the reverse path lookup succeeds (via the input interface
        // unless --loose); --invert inverts it (iptables-extensions(8), rpfilter).
        "rpfilter"
            if opts.iter().all(|o| {
                !o.neg
                    && matches!(
                        o.name.as_str(),
                        "--loose" | "--invert" | "--validmark" | "--accept-local"
                    )
            }) =>
        {
            out.push(Match::ReversePath {
                strict: !opts.iter().any(|o| o.name == "--loose"),
                negate: opts.iter().any(|o| o.name == "--invert"),
            })
        }
        "rt" | "frag" | "hbh" | "dst" if ctx.family == Family::V6 => out.push(Match::Never {
            what: format!(
                "{} (Cloudflare's TCP packets carry no IPv6 extension headers)",
                module_text(name, opts)
            ),
        }),
        _ => match undecidable_phrase(name) {
            Some(phrase) => out.push(undecidable(name, opts, phrase)),
            None => out.push(unknown_module(name, opts)),
        },
    }
    Ok(())
}

/// iptables-extensions(8) set: `--match-set NAME flag[,flag…]`, flags `src`/`dst` per dimension.
fn set_module(opts: &[Opt], out: &mut Vec<Match>) -> Result<(), String> {
    let mut found = false;
    for o in opts {
        match o.name.as_str() {
            "--match-set" | "--set" => {
                let set_name = o.arg(0)?;
                let flags = o.arg(1)?;
                let fields = flags
                    .split(',')
                    .map(|f| match f {
                        "src" => Ok(Field::SrcAddr),
                        "dst" => Ok(Field::DstAddr),
                        other => Err(format!("set {set_name}: unknown direction flag {other:?}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                found = true;
                out.push(Match::Set {
                    set: SetRef::Ipset(set_name.to_string()),
                    fields,
                    negate: o.neg,
                });
            }
            // Counter handling and nomatch return change no membership for the model.
            "--return-nomatch" | "--update-counters" | "--update-subcounters" => {}
            n if n.starts_with("--packets-") || n.starts_with("--bytes-") => {
                out.push(undecidable(
                    "set",
                    std::slice::from_ref(o),
                    "the set element's counters match",
                ));
            }
            _ => out.push(unknown_module("set", std::slice::from_ref(o))),
        }
    }
    if !found {
        return Err("-m set without --match-set".into());
    }
    Ok(())
}

/// iptables-extensions(8) recent. `--set` only records the source; `--rcheck/--update` with
/// `--seconds`/`--hitcount` are rate limits; without them they test list membership, which
/// depends on earlier traffic.
fn recent_module(opts: &[Opt], out: &mut Vec<Match>) -> Result<(), String> {
    let mut list = "DEFAULT".to_string();
    let mut action: Option<&Opt> = None;
    let mut seconds = None;
    let mut hitcount = None;
    let mut side = "source";
    for o in opts {
        match o.name.as_str() {
            "--name" => list = o.arg(0)?.to_string(),
            "--set" | "--rcheck" | "--update" | "--remove" => action = Some(o),
            "--seconds" => seconds = Some(o.arg(0)?.to_string()),
            "--hitcount" => hitcount = Some(o.arg(0)?.to_string()),
            "--rdest" => side = "destination",
            "--rsource" | "--mask" | "--reap" | "--rttl" => {}
            _ => {}
        }
    }
    let Some(act) = action else {
        out.push(unknown_module("recent", opts));
        return Ok(());
    };
    let text = module_text("recent", opts);
    match act.name.as_str() {
        "--set" => {
            if act.neg {
                // `! --set` records the address and then never matches (xt_recent inverts the
                // always-true result).
                out.push(Match::Never {
                    what: format!("recent list {list} ({text})"),
                });
            } else {
                out.push(Match::Always {
                    what: format!("adds the {side} address to recent list {list} ({text})"),
                });
            }
        }
        "--rcheck" | "--update" if seconds.is_some() || hitcount.is_some() => {
            let mut desc = format!("list {list}");
            if let Some(h) = &hitcount {
                desc.push_str(&format!(", {h} hits"));
            }
            if let Some(s) = &seconds {
                desc.push_str(&format!(" in {s}s"));
            }
            out.push(Match::Rate(RateLimit {
                kind: "recent".into(),
                desc,
                over: !act.neg,
            }));
        }
        _ => out.push(Match::Undecidable {
            condition: format!(
                "the {side} address is in recent list {list} ({})",
                module_text(
                    "recent",
                    &opts
                        .iter()
                        .map(|o| Opt {
                            neg: false,
                            ..o.clone()
                        })
                        .collect::<Vec<_>>()
                )
            ),
            negate: act.neg,
        }),
    }
    Ok(())
}

fn target_text(t: &Target) -> String {
    let o = render_opts(&t.opts);
    let j = if t.goto { "-g" } else { "-j" };
    if o.is_empty() {
        format!("{j} {}", t.name)
    } else {
        format!("{j} {} {o}", t.name)
    }
}

fn opt<'a>(t: &'a Target, name: &str) -> Option<&'a Opt> {
    t.opts.iter().find(|o| o.name == name)
}

fn map_target(t: &Target, ctx: &RuleCtx) -> Result<(Vec<Effect>, Verdict), String> {
    let flag = if t.goto { "-g" } else { "-j" };
    match ctx.table.kind(&t.name) {
        // iptables 1.8.9 refuses a jump or goto to a built-in chain, declared or not
        // (`-A INPUT -j OUTPUT`: nft "RULE_APPEND failed (Operation not supported)" or "(No such
        // file or directory)", legacy "line 2 failed").
        ChainKind::Builtin => {
            return Err(format!("{flag} to built-in chain {:?}", t.name));
        }
        ChainKind::User if t.goto => {
            return Ok((
                Vec::new(),
                Verdict::Goto {
                    chain: t.name.clone(),
                },
            ));
        }
        ChainKind::User => {
            return Ok((
                Vec::new(),
                Verdict::Jump {
                    chain: t.name.clone(),
                },
            ));
        }
        ChainKind::Missing if t.goto => {
            // legacy: "goto 'web' is not a chain"; nft: "Chain 'web' does not exist".
            return Err(format!(
                "-g to chain {:?}, which no earlier line declares",
                t.name
            ));
        }
        ChainKind::Missing => {}
    }
    let other = || Effect::Other {
        what: target_text(t),
    };
    let v = match t.name.as_str() {
        "ACCEPT" => (vec![], Verdict::Accept),
        "DROP" => (vec![], Verdict::Drop),
        "RETURN" => (vec![], Verdict::Return),
        "REJECT" => {
            // iptables-extensions(8) REJECT: default icmp-port-unreachable (IPv4) /
            // icmp6-port-unreachable (IPv6).
            let with = match opt(t, "--reject-with") {
                Some(o) => o.arg(0)?.to_string(),
                None => match ctx.family {
                    Family::V4 => "icmp-port-unreachable".into(),
                    Family::V6 => "icmp6-port-unreachable".into(),
                },
            };
            let with = if with == "tcp-reset" {
                RejectKind::TcpReset
            } else {
                RejectKind::Icmp(with)
            };
            (vec![], Verdict::Reject { with })
        }
        "LOG" | "NFLOG" | "ULOG" | "TRACE" | "AUDIT" | "CLASSIFY" | "DSCP" | "TOS" | "TTL"
        | "HL" | "TCPMSS" | "CHECKSUM" | "SET" | "SECMARK" | "CONNSECMARK" | "TEE"
        | "IDLETIMER" | "LED" | "RATEEST" | "ECN" | "TCPOPTSTRIP" => {
            (vec![other()], Verdict::Continue)
        }
        "MARK" => (vec![mark_effect(t, false)?], Verdict::Continue),
        "CONNMARK" => {
            let e = if opt(t, "--restore-mark").is_some() {
                Effect::RestoreMark
            } else if opt(t, "--save-mark").is_some() {
                other()
            } else {
                mark_effect(t, true)?
            };
            (vec![e], Verdict::Continue)
        }
        "NOTRACK" => (vec![Effect::Notrack], Verdict::Continue),
        "CT" => {
            let e = if opt(t, "--notrack").is_some() {
                Effect::Notrack
            } else {
                other()
            };
            (vec![e], Verdict::Continue)
        }
        "DNAT" => (vec![], dnat(t)?),
        "REDIRECT" => {
            let port = match opt(t, "--to-ports") {
                None => Some(None),
                Some(o) => single_port(o.arg(0)?)?.map(Some),
            };
            match port {
                Some(port) => (vec![], Verdict::Redirect { port }),
                None => (
                    vec![],
                    Verdict::Unknown {
                        text: target_text(t),
                    },
                ),
            }
        }
        "SNAT" | "MASQUERADE" | "NETMAP" => (
            vec![],
            Verdict::NatOther {
                desc: target_text(t),
            },
        ),
        "NFQUEUE" | "QUEUE" => (
            vec![],
            Verdict::Queue {
                desc: target_text(t),
            },
        ),
        name => {
            // Not a chain created on an earlier line, so either a target extension the model
            // does not know (upper case by convention: TARPIT, SYNPROXY, TPROXY) or a jump the
            // loader refuses (`-j web` with no earlier `:web` / `-N web`: iptables 1.8.9 nft
            // "Chain 'web' does not exist", legacy "Couldn't load target `web'").
            let looks_like_target = name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !looks_like_target {
                return Err(format!(
                    "-j to chain {name:?}, which no earlier line declares"
                ));
            }
            (
                vec![],
                Verdict::Unknown {
                    text: target_text(t),
                },
            )
        }
    };
    Ok(v)
}

/// MARK / CONNMARK value changes as xmark `(value, mask)`: mark = (mark & !mask) ^ value.
/// iptables-extensions(8) MARK: `--set-mark V/M` zeroes M and ORs V, which libxt_MARK stores as
/// xmark V/(V|M) (checked: `--set-mark 0x100/0xff` saves as `--set-xmark 0x100/0x1ff`);
/// `--and-mark b` = 0/!b, `--or-mark b` = b/b, `--xor-mark b` = b/0.
fn mark_effect(t: &Target, conn: bool) -> Result<Effect, String> {
    let mk = |value: u32, mask: u32| {
        if conn {
            Effect::SetConnMark { value, mask }
        } else {
            Effect::SetMark { value, mask }
        }
    };
    for o in &t.opts {
        let e = match o.name.as_str() {
            "--set-xmark" => {
                let (v, m) = parse_mark(o.arg(0)?)?;
                mk(v, m)
            }
            "--set-mark" => {
                let (v, m) = parse_mark(o.arg(0)?)?;
                mk(v, v | m)
            }
            "--and-mark" => mk(0, !parse_u32(o.arg(0)?)?),
            "--or-mark" => {
                let b = parse_u32(o.arg(0)?)?;
                mk(b, b)
            }
            "--xor-mark" => mk(parse_u32(o.arg(0)?)?, 0),
            _ => continue,
        };
        return Ok(e);
    }
    Ok(Effect::Other {
        what: target_text(t),
    })
}

/// `a` or `a-a` → the port; a real range (the kernel picks one) → None.
fn single_port(s: &str) -> Result<Option<u16>, String> {
    match s.split_once('-') {
        None => Ok(Some(parse_port(s)?)),
        Some((a, b)) => {
            let (a, b) = (parse_port(a)?, parse_port(b)?);
            Ok((a == b).then_some(a))
        }
    }
}

/// iptables-extensions(8) DNAT `--to-destination [ipaddr[-ipaddr]][:port[-port]]`, IPv6
/// addresses in brackets when a port follows. Address or port ranges (the kernel picks one)
/// are kept as [`Verdict::Unknown`].
fn dnat(t: &Target) -> Result<Verdict, String> {
    let unknown = || Verdict::Unknown {
        text: target_text(t),
    };
    let tos: Vec<&Opt> = t
        .opts
        .iter()
        .filter(|o| o.name == "--to-destination" || o.name == "--to")
        .collect();
    let [o] = tos.as_slice() else {
        return Ok(unknown());
    };
    let s = o.arg(0)?;
    let (addr_part, port_part) = if let Some(rest) = s.strip_prefix('[') {
        let (a, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unparsable DNAT destination {s:?}"))?;
        (a, after.strip_prefix(':'))
    } else if s.matches(':').count() > 1 {
        (s, None) // bare IPv6 address
    } else {
        match s.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        }
    };
    let addr = if addr_part.is_empty() {
        None
    } else if addr_part.contains('-') {
        return Ok(unknown());
    } else {
        Some(
            addr_part
                .parse::<IpAddr>()
                .map_err(|_| format!("unparsable DNAT address {addr_part:?}"))?,
        )
    };
    let port = match port_part {
        None => None,
        Some(p) => match single_port(p)? {
            Some(p) => Some(p),
            None => return Ok(unknown()),
        },
    };
    Ok(Verdict::Dnat { addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{ChainType, Hook};

    fn v4(text: &str) -> Vec<Table> {
        match parse(text, Backend::IptablesNft, Family::V4, "test") {
            Ok(t) => t,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn one_rule(rule: &str) -> Rule {
        let text = format!(
            "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:U - [0:0]\n{rule}\nCOMMIT\n"
        );
        let t = v4(&text);
        t[0].chains[0].rules[0].clone()
    }

    fn line_err(text: &str) -> (usize, String) {
        match parse(text, Backend::IptablesNft, Family::V4, "dump") {
            Err(ParseError::Line { line, message, .. }) => (line, message),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn tokenizer_handles_escaped_quotes() {
        let t = tokenize(
            r#"-A INPUT -m comment --comment "a \"b\" \\c" -j LOG --log-prefix "[UFW BLOCK] ""#,
        )
        .expect("tokens");
        let words: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            words,
            [
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" \\c",
                "-j",
                "LOG",
                "--log-prefix",
                "[UFW BLOCK] "
            ]
        );
        assert!(tokenize(r#"-A INPUT --comment "open"#).is_err());
    }

    #[test]
    fn quoted_argument_starting_with_dash_is_not_an_option() {
        let r = one_rule(r#"-A INPUT -m comment --comment "-j DROP" -j ACCEPT"#);
        assert!(r.matches.is_empty());
        assert_eq!(r.verdict, Verdict::Accept);
    }

    #[test]
    fn dotted_mask_and_comma_lists_become_address_sets() {
        let r = one_rule("-A INPUT -s 192.168.122.0/255.255.255.0,10.0.0.1 -j ACCEPT");
        let Match::Addr { dir, set, negate } = &r.matches[0] else {
            panic!("{:?}", r.matches)
        };
        assert_eq!((*dir, *negate), (Dir::Src, false));
        assert_eq!(set.to_string(), "10.0.0.1/32,192.168.122.0/24");
    }

    #[test]
    fn non_contiguous_mask_is_expanded_exactly_or_kept_as_unknown() {
        // 192.168.0.0/255.255.0.255: 192.168.X.0 for every X — 256 single addresses.
        let r = one_rule("-A INPUT -s 192.168.0.0/255.255.0.255 -j ACCEPT");
        let Match::Addr { set, .. } = &r.matches[0] else {
            panic!("{:?}", r.matches)
        };
        assert_eq!(set.ranges.len(), 256);
        assert!(
            set.to_string()
                .starts_with("192.168.0.0/32,192.168.1.0/32,")
        );
        // 2^16 ranges is past the cap: unknown, never a guess.
        let r = one_rule("-A INPUT -s 10.0.0.0/255.0.0.255 -j ACCEPT");
        assert!(
            matches!(&r.matches[0], Match::Unknown { text, .. } if text.contains("255.0.0.255"))
        );
    }

    #[test]
    fn implicit_protocol_module_without_dash_m() {
        let r = one_rule("-A INPUT -p tcp --dport 22 ! --syn -j DROP");
        assert_eq!(r.matches.len(), 3);
        assert_eq!(
            r.matches[1],
            Match::Port {
                dir: Dir::Dst,
                ranges: vec![(22, 22)],
                negate: false
            }
        );
        assert_eq!(
            r.matches[2],
            Match::TcpFlags {
                mask: 0x17,
                comp: 0x02,
                negate: true
            }
        );
    }

    #[test]
    fn open_ended_port_ranges() {
        let r = one_rule("-A INPUT -p udp -m udp --sport :1023 --dport 1024: -j DROP");
        assert_eq!(
            r.matches[1],
            Match::Port {
                dir: Dir::Src,
                ranges: vec![(0, 1023)],
                negate: false
            }
        );
        assert_eq!(
            r.matches[2],
            Match::Port {
                dir: Dir::Dst,
                ranges: vec![(1024, 65535)],
                negate: false
            }
        );
    }

    #[test]
    fn fragment_flag_is_exact_for_a_syn() {
        let r = one_rule("-A INPUT -f -j DROP");
        assert!(matches!(r.matches[0], Match::Never { .. }));
        let r = one_rule("-A INPUT ! -f -j DROP");
        assert!(matches!(r.matches[0], Match::Always { .. }));
    }

    #[test]
    fn mark_targets_in_xmark_form() {
        let e = |rule: &str| one_rule(rule).effects;
        assert_eq!(
            e("-A INPUT -j MARK --set-mark 0x100/0xff"),
            [Effect::SetMark {
                value: 0x100,
                mask: 0x1ff
            }]
        );
        assert_eq!(
            e("-A INPUT -j MARK --and-mark 0xff"),
            [Effect::SetMark {
                value: 0,
                mask: 0xffff_ff00
            }]
        );
        assert_eq!(
            e("-A INPUT -j MARK --or-mark 4"),
            [Effect::SetMark { value: 4, mask: 4 }]
        );
        assert_eq!(
            e("-A INPUT -j CONNMARK --set-xmark 0x3/0xf"),
            [Effect::SetConnMark {
                value: 3,
                mask: 0xf
            }]
        );
    }

    #[test]
    fn unknown_target_vs_undeclared_chain() {
        let r = one_rule("-A INPUT -p tcp -j TARPIT --tarpit");
        assert_eq!(
            r.verdict,
            Verdict::Unknown {
                text: "-j TARPIT --tarpit".into()
            }
        );
        let (line, msg) = line_err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j nosuch\nCOMMIT\n");
        assert_eq!(line, 3);
        assert!(msg.contains("nosuch"), "{msg}");
        let (line, msg) = line_err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -g WEB\nCOMMIT\n");
        assert_eq!(line, 3);
        assert!(msg.contains("WEB"), "{msg}");
    }

    #[test]
    fn structural_errors_name_the_line() {
        let (line, msg) = line_err("# c\n-A INPUT -j ACCEPT\n");
        assert_eq!(line, 2);
        assert!(msg.contains("before any *table"), "{msg}");
        let (line, msg) = line_err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n");
        assert_eq!(line, 1);
        assert!(msg.contains("no COMMIT"), "{msg}");
        let (line, _) = line_err("*filter\n:INPUT ACCEPT [0:0]\n*nat\nCOMMIT\n");
        assert_eq!(line, 3);
        let (line, msg) =
            line_err("*filter\n:INPUT ACCEPT [0:0]\n\n-A INPUT -s 10.0.0.300 -j DROP\nCOMMIT\n");
        assert_eq!(line, 4);
        assert!(msg.contains("10.0.0.300"), "{msg}");
        let (line, msg) =
            line_err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 2001:db8::1 -j DROP\nCOMMIT\n");
        assert_eq!(line, 3);
        assert!(msg.contains("2001:db8::1"), "{msg}");
        let (line, msg) = line_err("*filter\n:INPUT ACCEPT [0:0]\n-A NOSUCH -j DROP\nCOMMIT\n");
        assert_eq!(line, 3);
        assert!(msg.contains("NOSUCH"), "{msg}");
        let (line, msg) = line_err(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport http -j DROP\nCOMMIT\n",
        );
        assert_eq!(line, 3);
        assert!(msg.contains("http"), "{msg}");
        let (line, msg) = line_err("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\nCOMMIT\n");
        assert_eq!(line, 4);
        assert!(msg.contains("COMMIT"), "{msg}");
    }

    fn legacy_v4(text: &str) -> Result<Vec<Table>, ParseError> {
        parse(text, Backend::IptablesLegacy, Family::V4, "dump")
    }

    fn base_of<'a>(t: &'a Table, chain: &str) -> &'a BaseChain {
        match t.chain(chain).and_then(|c| c.base.as_ref()) {
            Some(b) => b,
            None => panic!("{chain} is not a base chain of {}: {t:?}", t.name),
        }
    }

    // Every expectation below is what iptables-restore 1.8.9 did with the same text, both
    // backends, in a private namespace:
    //   ip netns add corr-$$; ip netns exec corr-$$ iptables-nft-restore < FILE (and
    //   iptables-legacy-restore, ip6tables-{nft,legacy}-restore); then iptables-{nft,legacy}-save
    //   and `nft list ruleset`.

    #[test]
    fn undeclared_builtin_chains_are_created_with_policy_accept() {
        // `*filter` / `-A INPUT -p tcp --dport 22 -j DROP` / `COMMIT`: rc 0; iptables-save shows
        // `:INPUT ACCEPT [0:0]` and the rule; nft: `type filter hook input priority filter;
        // policy accept;`. Same for ip6tables-{nft,legacy}-restore.
        let text = "*filter\n-A INPUT -p tcp --dport 22 -j DROP\nCOMMIT\n";
        for backend in [Backend::IptablesNft, Backend::IptablesLegacy] {
            for family in [Family::V4, Family::V6] {
                let t = parse(text, backend, family, "dump").unwrap_or_else(|e| panic!("{e}"));
                let input = base_of(&t[0], "INPUT");
                assert_eq!(input.policy, Policy::Accept);
                assert_eq!(input.hook, Hook::Input);
                assert_eq!(input.priority, 0);
                let chain = t[0].chain("INPUT").map(|c| c.rules.len());
                assert_eq!(chain, Some(1));
            }
        }
    }

    #[test]
    fn every_builtin_chain_of_every_table_may_be_appended_to_undeclared() {
        // Each block alone loads with rc 0 in both backends, and every chain comes back as
        // `:NAME ACCEPT [0:0]`; nft hooks/priorities: nat PREROUTING dstnat (-100), INPUT 100,
        // OUTPUT -100, POSTROUTING srcnat (100); mangle all five at mangle (-150), OUTPUT
        // `type route`; raw PREROUTING/OUTPUT at raw (-300); security INPUT/FORWARD/OUTPUT at
        // 150 (iptables-nft's choice; the model keeps the x_tables NF_IP_PRI_SECURITY 50 that
        // `iptables_base` uses for declared chains too — see its doc).
        /// A built-in chain: name, hook, priority, type.
        type Builtin = (&'static str, Hook, i32, ChainType);
        let cases: [(&str, &[Builtin]); 5] = [
            (
                "filter",
                &[
                    ("INPUT", Hook::Input, 0, ChainType::Filter),
                    ("FORWARD", Hook::Forward, 0, ChainType::Filter),
                    ("OUTPUT", Hook::Output, 0, ChainType::Filter),
                ],
            ),
            (
                "nat",
                &[
                    ("PREROUTING", Hook::Prerouting, -100, ChainType::Nat),
                    ("INPUT", Hook::Input, 100, ChainType::Nat),
                    ("OUTPUT", Hook::Output, -100, ChainType::Nat),
                    ("POSTROUTING", Hook::Postrouting, 100, ChainType::Nat),
                ],
            ),
            (
                "mangle",
                &[
                    ("PREROUTING", Hook::Prerouting, -150, ChainType::Filter),
                    ("INPUT", Hook::Input, -150, ChainType::Filter),
                    ("FORWARD", Hook::Forward, -150, ChainType::Filter),
                    ("OUTPUT", Hook::Output, -150, ChainType::Route),
                    ("POSTROUTING", Hook::Postrouting, -150, ChainType::Filter),
                ],
            ),
            (
                "raw",
                &[
                    ("PREROUTING", Hook::Prerouting, -300, ChainType::Filter),
                    ("OUTPUT", Hook::Output, -300, ChainType::Filter),
                ],
            ),
            (
                "security",
                &[
                    ("INPUT", Hook::Input, 50, ChainType::Filter),
                    ("FORWARD", Hook::Forward, 50, ChainType::Filter),
                    ("OUTPUT", Hook::Output, 50, ChainType::Filter),
                ],
            ),
        ];
        for (table, chains) in cases {
            let mut text = format!("*{table}\n");
            for (name, ..) in chains {
                text.push_str(&format!("-A {name} -j ACCEPT\n"));
            }
            text.push_str("COMMIT\n");
            let t = v4(&text);
            assert_eq!(t[0].chains.len(), chains.len(), "{table}");
            for &(name, hook, priority, ty) in chains {
                let b = base_of(&t[0], name);
                assert_eq!(
                    (b.hook, b.priority, b.chain_type, b.policy),
                    (hook, priority, ty, Policy::Accept),
                    "{table} {name}"
                );
            }
        }
    }

    #[test]
    fn appending_to_a_chain_that_is_neither_builtin_nor_created_earlier_fails() {
        // `-A NOSUCH -j ACCEPT` / `-A nosuch …` in filter, `-A INPUT …` in raw: nft "line 2
        // failed: No chain/target/match by that name.", legacy "line 2 failed" (rc 1);
        // `-A NOSUCH` the same with ip6tables-{nft,legacy}-restore. `-A web …` before
        // `:web - [0:0]`: the same error.
        for text in [
            "*filter\n-A NOSUCH -j ACCEPT\nCOMMIT\n",
            "*filter\n-A nosuch -j ACCEPT\nCOMMIT\n",
            "*raw\n-A INPUT -j ACCEPT\nCOMMIT\n",
            "*filter\n-A web -j ACCEPT\n:web - [0:0]\nCOMMIT\n",
        ] {
            let (line, msg) = line_err(text);
            assert_eq!(line, 2, "{text}");
            assert!(msg.contains("rule appended to chain"), "{text}: {msg}");
        }
    }

    #[test]
    fn new_chain_command_creates_a_user_chain() {
        // `-N web` / `-A web -p tcp --dport 443 -j ACCEPT` / `-A INPUT -j web`: rc 0 in both
        // backends, saved as `:web - [0:0]`; so does the long form `--new-chain` / `--append`.
        // A user chain may take a built-in name of another table (`-N INPUT` in raw loads).
        for text in [
            "*filter\n-N web\n-A web -p tcp --dport 443 -j ACCEPT\n-A INPUT -j web\nCOMMIT\n",
            "*filter\n--new-chain web\n--append web -p tcp --dport 443 -j ACCEPT\n--append INPUT -j web\nCOMMIT\n",
        ] {
            let t = v4(text);
            let web = t[0].chain("web").unwrap_or_else(|| panic!("no web: {t:?}"));
            assert!(web.base.is_none());
            assert_eq!(web.rules.len(), 1);
            let input = t[0].chain("INPUT").map(|c| c.rules[0].verdict.clone());
            assert_eq!(
                input,
                Some(Verdict::Jump {
                    chain: "web".into()
                })
            );
        }
        let t = v4("*raw\n-N INPUT\n-A INPUT -j ACCEPT\n-A PREROUTING -j INPUT\nCOMMIT\n");
        assert!(t[0].chain("INPUT").is_some_and(|c| c.base.is_none()));
        // `-N web` twice, `:web -` then `-N web`, `-N INPUT` in filter: "Chain already exists"
        // (nft) / "line 3 failed" (legacy). `-N` alone: `option "-N" requires an argument`.
        for (text, line) in [
            ("*filter\n-N web\n-N web\nCOMMIT\n", 3),
            ("*filter\n:web - [0:0]\n-N web\nCOMMIT\n", 3),
            ("*filter\n-N INPUT\nCOMMIT\n", 2),
            ("*filter\n-N\nCOMMIT\n", 2),
        ] {
            assert_eq!(line_err(text).0, line, "{text}");
        }
    }

    #[test]
    fn jumps_name_only_user_chains_created_on_an_earlier_line() {
        // `-A INPUT -j web` with no `web`, or before `:web - [0:0]` / `-N web`: nft "Chain 'web'
        // does not exist", legacy "Couldn't load target `web'" (rc 2); `-g web`: nft the same,
        // legacy "goto 'web' is not a chain". `-j OUTPUT` / `-g OUTPUT` (built in, declared or
        // not): nft "RULE_APPEND failed", legacy "line 2 failed".
        for (text, line) in [
            ("*filter\n-A INPUT -j web\nCOMMIT\n", 2),
            ("*filter\n-A INPUT -g web\nCOMMIT\n", 2),
            ("*filter\n-A INPUT -j web\n:web - [0:0]\nCOMMIT\n", 2),
            ("*filter\n-A INPUT -j web\n-N web\nCOMMIT\n", 2),
            ("*filter\n-A INPUT -j OUTPUT\nCOMMIT\n", 2),
            (
                "*filter\n:OUTPUT ACCEPT [0:0]\n-A INPUT -j OUTPUT\nCOMMIT\n",
                3,
            ),
            ("*filter\n-A INPUT -g OUTPUT\nCOMMIT\n", 2),
        ] {
            assert_eq!(line_err(text).0, line, "{text}");
        }
        // `:web - [0:0]` / `-A INPUT -j web`: rc 0.
        let t = v4("*filter\n:web - [0:0]\n-A INPUT -j web\nCOMMIT\n");
        assert_eq!(t[0].chains.len(), 2);
    }

    #[test]
    fn builtin_declarations_set_the_policy_wherever_they_stand() {
        // `-A INPUT -j ACCEPT` / `:INPUT DROP [0:0]`, and `:INPUT ACCEPT` … `:INPUT DROP` around
        // rules: rc 0, both backends; saved `:INPUT DROP [0:0]` with every rule kept.
        // `:INPUT - [0:0]` alone: saved `:INPUT ACCEPT`; after `:INPUT DROP`: stays DROP.
        for (text, policy, rules) in [
            (
                "*filter\n-A INPUT -j ACCEPT\n:INPUT DROP [0:0]\nCOMMIT\n",
                Policy::Drop,
                1,
            ),
            (
                "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n:INPUT DROP [0:0]\n-A INPUT -j DROP\nCOMMIT\n",
                Policy::Drop,
                2,
            ),
            ("*filter\n:INPUT - [0:0]\nCOMMIT\n", Policy::Accept, 0),
            (
                "*filter\n:INPUT DROP [0:0]\n:INPUT - [0:0]\nCOMMIT\n",
                Policy::Drop,
                0,
            ),
        ] {
            for t in [v4(text), legacy_v4(text).unwrap_or_else(|e| panic!("{e}"))] {
                assert_eq!(base_of(&t[0], "INPUT").policy, policy, "{text}");
                assert_eq!(t[0].chains.len(), 1, "{text}");
                assert_eq!(t[0].chains[0].rules.len(), rules, "{text}");
            }
        }
        // `:INPUT` (no policy): "line 2 policy invalid"; `:INPUT REJECT`: "Bad policy name".
        assert_eq!(line_err("*filter\n:INPUT\nCOMMIT\n").0, 2);
        assert_eq!(line_err("*filter\n:INPUT REJECT [0:0]\nCOMMIT\n").0, 2);
    }

    #[test]
    fn user_chain_redeclaration_and_policy_differ_between_backends() {
        // `:web ACCEPT [0:0]`: nft rc 0, saved `:web - [0:0]`; legacy "Can't set policy
        // `ACCEPT' on `web' line 2: Bad built-in chain name".
        let text = "*filter\n:web ACCEPT [0:0]\nCOMMIT\n";
        assert!(v4(text)[0].chain("web").is_some_and(|c| c.base.is_none()));
        assert!(legacy_v4(text).is_err());
        // `:web -` / `-A web -j ACCEPT` / `:web -` / `-A INPUT -j web`: nft rc 0 and `web` saved
        // empty (the second declaration flushed it); legacy "error creating chain 'web':File
        // exists" at line 4.
        let text =
            "*filter\n:web - [0:0]\n-A web -j ACCEPT\n:web - [0:0]\n-A INPUT -j web\nCOMMIT\n";
        let t = v4(text);
        assert_eq!(t[0].chain("web").map(|c| c.rules.len()), Some(0));
        match legacy_v4(text) {
            Err(ParseError::Line { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counters_prefix_is_accepted_and_stripped_from_text() {
        let t = v4(
            "*filter\n:INPUT ACCEPT [5:300]\n[3:180] -A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n",
        );
        let r = &t[0].chains[0].rules[0];
        assert_eq!(r.source.text, "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT");
        assert_eq!(r.verdict, Verdict::Accept);
    }

    #[test]
    fn unknown_module_keeps_its_options_and_negation() {
        let r = one_rule("-A INPUT -m frobnicate ! --frob a b --zap -j DROP");
        assert_eq!(
            r.matches,
            [Match::Unknown {
                text: "-m frobnicate ! --frob a b --zap".into(),
                negate: false
            }]
        );
    }

    #[test]
    fn ipv6_dnat_and_default_reject() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination [2001:db8::5]:8080\n-A PREROUTING -p tcp -j DNAT --to-destination 2001:db8::6\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j REJECT\nCOMMIT\n";
        let t = match parse(text, Backend::IptablesLegacy, Family::V6, "v6") {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(t[0].family, TableFamily::Ip6);
        let r = &t[0].chains[0].rules;
        assert_eq!(
            r[0].verdict,
            Verdict::Dnat {
                addr: "2001:db8::5".parse().ok(),
                port: Some(8080)
            }
        );
        assert_eq!(
            r[1].verdict,
            Verdict::Dnat {
                addr: "2001:db8::6".parse().ok(),
                port: None
            }
        );
        assert_eq!(
            t[1].chains[0].rules[0].verdict,
            Verdict::Reject {
                with: RejectKind::Icmp("icmp6-port-unreachable".into())
            }
        );
    }

    /// Tests on real dumps (tests/fixtures/iptables, see gen.sh there for how each was made).
    mod fixtures {
        use super::*;

        const SERVER_V4_NFT: &str =
            include_str!("../../tests/fixtures/iptables/server-v4.nft.rules");
        const SERVER_V4_LEGACY: &str =
            include_str!("../../tests/fixtures/iptables/server-v4.legacy.rules");
        const SERVER_V6_NFT: &str =
            include_str!("../../tests/fixtures/iptables/server-v6.nft.rules");
        const UFW_V4: &str = include_str!("../../tests/fixtures/iptables/ufw-v4.nft.rules");
        const UFW_V6: &str = include_str!("../../tests/fixtures/iptables/ufw-v6.nft.rules");
        const FAIL2BAN: &str = include_str!("../../tests/fixtures/iptables/fail2ban-v4.nft.rules");

        fn load(text: &str, backend: Backend, family: Family) -> Vec<Table> {
            parse(text, backend, family, "fixture").unwrap_or_else(|e| panic!("{e}"))
        }

        fn table<'a>(ts: &'a [Table], name: &str) -> &'a Table {
            ts.iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("no table {name}"))
        }

        fn chain<'a>(t: &'a Table, name: &str) -> &'a Chain {
            t.chain(name).unwrap_or_else(|| panic!("no chain {name}"))
        }

        /// The only rule of `chain` whose text contains `needle`.
        fn rule<'a>(c: &'a Chain, needle: &str) -> &'a Rule {
            let hits: Vec<&Rule> = c
                .rules
                .iter()
                .filter(|r| r.source.text.contains(needle))
                .collect();
            assert_eq!(hits.len(), 1, "{needle:?} in {}: {hits:?}", c.name);
            hits[0]
        }

        fn policy(c: &Chain) -> Option<Policy> {
            c.base.as_ref().map(|b| b.policy)
        }

        #[test]
        fn server_v4_structure() {
            let ts = load(SERVER_V4_NFT, Backend::IptablesNft, Family::V4);
            let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["mangle", "raw", "filter", "nat"]);
            assert_eq!(ts.iter().map(|t| t.chains.len()).sum::<usize>(), 16);
            let f = table(&ts, "filter");
            assert_eq!(f.family, TableFamily::Ip);
            assert_eq!(policy(chain(f, "INPUT")), Some(Policy::Drop));
            assert_eq!(policy(chain(f, "FORWARD")), Some(Policy::Drop));
            assert_eq!(policy(chain(f, "OUTPUT")), Some(Policy::Accept));
            assert_eq!(chain(f, "WEB").base, None);
            assert_eq!(chain(f, "BLOCKLIST").base, None);
            let input = chain(f, "INPUT").base.clone().expect("base");
            assert_eq!(
                (input.hook, input.priority),
                (crate::firewall::Hook::Input, 0)
            );
            let raw = chain(table(&ts, "raw"), "PREROUTING")
                .base
                .clone()
                .expect("base");
            assert_eq!(raw.priority, -300);
            // positions are 1-based per chain and text is the -A line verbatim
            let web = chain(f, "WEB");
            let pos: Vec<usize> = web.rules.iter().map(|r| r.source.position).collect();
            assert_eq!(pos, [1, 2, 3]);
            assert_eq!(web.rules[2].verdict, Verdict::Return);
            assert_eq!(
                web.rules[0].source.text,
                "-A WEB -s 173.245.48.0/20 -j ACCEPT"
            );
            assert_eq!(web.rules[0].source.table, "filter");
            assert_eq!(web.rules[0].source.backend, Backend::IptablesNft);
            let c = rule(chain(f, "INPUT"), "10.1.0.0/16 -p tcp -m comment");
            assert_eq!(
                c.source.text,
                r#"-A INPUT -s 10.1.0.0/16 -p tcp -m comment --comment "office \"vpn\" nets" -j ACCEPT"#
            );
            assert_eq!(
                c.matches.len(),
                2,
                "comment emits no match: {:?}",
                c.matches
            );
            assert_eq!(chain(f, "INPUT").rules[0].source.position, 1);
            assert_eq!(
                chain(f, "INPUT").rules[0].matches,
                [Match::Iface {
                    dir: Dir::Src,
                    any_of: vec![IfPattern {
                        name: "lo".into(),
                        prefix: false
                    }],
                    negate: false
                }]
            );
        }

        #[test]
        fn server_v4_filter_matches() {
            let ts = load(SERVER_V4_NFT, Backend::IptablesNft, Family::V4);
            let input = chain(table(&ts, "filter"), "INPUT");
            let g = rule(input, "-g WEB");
            assert_eq!(
                g.verdict,
                Verdict::Goto {
                    chain: "WEB".into()
                }
            );
            assert_eq!(
                g.matches,
                [
                    Match::Proto {
                        protos: vec![6],
                        negate: false
                    },
                    Match::TcpFlags {
                        mask: 0x17,
                        comp: 0x02,
                        negate: false
                    },
                    Match::Port {
                        dir: Dir::Dst,
                        ranges: vec![(80, 80), (443, 443), (8000, 8080)],
                        negate: false
                    },
                ]
            );
            assert_eq!(
                rule(input, "-j BLOCKLIST").verdict,
                Verdict::Jump {
                    chain: "BLOCKLIST".into()
                }
            );
            assert_eq!(
                rule(input, "--ports 6881").matches[1],
                Match::PortEither {
                    ranges: vec![(6881, 6889)],
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "! --sports").matches[1],
                Match::Port {
                    dir: Dir::Src,
                    ranges: vec![(1024, 65535)],
                    negate: true
                }
            );
            assert_eq!(
                rule(input, "RELATED,ESTABLISHED").matches,
                [Match::CtState {
                    states: CtStates::RELATED | CtStates::ESTABLISHED,
                    negate: false
                }]
            );
            assert_eq!(
                rule(input, "--state INVALID").matches,
                [Match::CtState {
                    states: CtStates::INVALID,
                    negate: false
                }]
            );
            let st = rule(input, "--ctstatus");
            assert_eq!(
                st.matches[1],
                Match::CtStatus {
                    names: vec!["CONFIRMED".into()],
                    negate: false
                }
            );
            let od = rule(input, "--ctorigdst");
            assert!(
                matches!(&od.matches[0], Match::CtOrigAddr { dir: Dir::Dst, set, negate: false } if set.to_string() == "203.0.113.10/32")
            );
            assert_eq!(
                od.matches[1],
                Match::CtOrigPort {
                    dir: Dir::Dst,
                    ranges: vec![(8080, 8080)],
                    negate: false
                }
            );
            // dotted mask given to iptables-restore comes back as /24
            let m = rule(input, "--dport 3306");
            assert!(
                matches!(&m.matches[0], Match::Addr { set, .. } if set.to_string() == "192.168.122.0/24")
            );
            let ipr = rule(input, "--src-range");
            assert!(
                matches!(&ipr.matches[0], Match::Addr { dir: Dir::Src, set, negate: false }
                if set.ranges[0].end - set.ranges[0].start == 19)
            );
            assert!(matches!(
                &rule(input, "! --dst-range").matches[0],
                Match::Addr {
                    dir: Dir::Dst,
                    negate: true,
                    ..
                }
            ));
            let ns = rule(input, "-i eth+");
            assert!(matches!(&ns.matches[0], Match::Addr { negate: true, .. }));
            assert_eq!(
                ns.matches[1],
                Match::Iface {
                    dir: Dir::Src,
                    any_of: vec![IfPattern {
                        name: "eth".into(),
                        prefix: true
                    }],
                    negate: false
                }
            );
            assert!(matches!(
                &rule(input, "! -i wg0").matches[0],
                Match::Iface { negate: true, .. }
            ));
            let set = rule(input, "blocknet4");
            assert_eq!(
                set.matches[1],
                Match::Set {
                    set: SetRef::Ipset("blocknet4".into()),
                    fields: vec![Field::SrcAddr, Field::DstAddr],
                    negate: true
                }
            );
            assert_eq!(set.verdict, Verdict::Accept);
            let pk = rule(input, "--packets-gt");
            assert!(
                matches!(&pk.matches[1], Match::Undecidable { condition, .. } if condition.contains("--packets-gt 10"))
            );
            assert_eq!(
                rule(input, "--tcp-flags FIN,SYN,RST,ACK RST").matches[1],
                Match::TcpFlags {
                    mask: 0x17,
                    comp: 0x04,
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "NONE").matches[1],
                Match::TcpFlags {
                    mask: 0x3f,
                    comp: 0,
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "! --tcp-flags").matches[1],
                Match::TcpFlags {
                    mask: 0x17,
                    comp: 0x02,
                    negate: true
                }
            );
            assert!(matches!(
                &rule(input, "--tcp-option").matches[1],
                Match::Undecidable { .. }
            ));
            assert_eq!(
                rule(input, "-A INPUT -f").matches,
                [Match::Never {
                    what: "second or later fragment (-f)".into()
                }]
            );
            assert!(matches!(
                rule(input, "! -f").matches[1],
                Match::Always { .. }
            ));
            assert_eq!(
                rule(input, "-p gre").matches,
                [Match::Proto {
                    protos: vec![47],
                    negate: false
                }]
            );
            assert_eq!(
                rule(input, "! -p udp").matches[1],
                Match::Proto {
                    protos: vec![17],
                    negate: true
                }
            );
            assert_eq!(
                rule(input, "-p sctp").matches[0],
                Match::Proto {
                    protos: vec![132],
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "--limit 5/sec").matches[2],
                Match::Rate(RateLimit {
                    kind: "limit".into(),
                    desc: "5/sec burst 10".into(),
                    over: false
                })
            );
            assert_eq!(
                rule(input, "--icmp-type 8").matches[1],
                Match::Icmp {
                    desc: "icmp-type 8".into(),
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "! --icmp-type 3/4").matches[1],
                Match::Icmp {
                    desc: "icmp-type 3/4".into(),
                    negate: true
                }
            );
            assert_eq!(
                rule(input, "BROADCAST,MULTICAST").matches,
                [Match::AddrType {
                    dir: Dir::Dst,
                    types: vec!["BROADCAST".into(), "MULTICAST".into()],
                    negate: false,
                    limit_iface_in: false
                }]
            );
            assert_eq!(
                rule(input, "--limit-iface-in").matches,
                [Match::AddrType {
                    dir: Dir::Src,
                    types: vec!["LOCAL".into()],
                    negate: true,
                    limit_iface_in: true
                }]
            );
            assert!(
                matches!(&rule(input, "--mac-source").matches[0], Match::Undecidable { condition, negate: false }
                if condition.contains("MAC") && condition.contains("00:11:22:33:44:55"))
            );
            assert_eq!(
                rule(input, "--length").matches,
                [Match::Length {
                    min: 1400,
                    max: 65535,
                    negate: false
                }]
            );
            assert!(
                matches!(&rule(input, "-m string").matches[2], Match::Undecidable { condition, .. } if condition.contains("\"GET /\""))
            );
            assert!(
                matches!(&rule(input, "-m time").matches[2], Match::Undecidable { condition, .. } if condition.contains("--weekdays Mon,Tue"))
            );
            assert!(matches!(
                &rule(input, "-m statistic").matches[2],
                Match::Undecidable { .. }
            ));
            assert!(matches!(
                &rule(input, "-m policy").matches[0],
                Match::Undecidable { .. }
            ));
            assert!(matches!(
                &rule(input, "-m helper").matches[0],
                Match::Undecidable { .. }
            ));
            assert!(matches!(
                &rule(input, "unicast").matches[2],
                Match::Always { .. }
            ));
            assert!(matches!(
                &rule(input, "broadcast").matches[0],
                Match::Never { .. }
            ));
        }

        #[test]
        fn server_v4_rate_limits() {
            let ts = load(SERVER_V4_NFT, Backend::IptablesNft, Family::V4);
            let input = chain(table(&ts, "filter"), "INPUT");
            let rate = |needle: &str| -> RateLimit {
                let r = rule(input, needle);
                match r.matches.iter().find(|m| matches!(m, Match::Rate(_))) {
                    Some(Match::Rate(rl)) => rl.clone(),
                    _ => panic!("no rate in {:?}", r.matches),
                }
            };
            let h = rate("--hashlimit-above");
            assert_eq!((h.kind.as_str(), h.over), ("hashlimit", true));
            assert!(
                h.desc.contains("above 20/sec")
                    && h.desc.contains("srcip")
                    && h.desc.contains("h7000"),
                "{}",
                h.desc
            );
            assert!(!rate("--hashlimit-upto").over);
            let c = rate("--connlimit-above");
            assert_eq!((c.kind.as_str(), c.over), ("connlimit", true));
            assert!(c.desc.contains("10"), "{}", c.desc);
            assert!(!rate("--connlimit-upto").over);
            let q = rate("--quota");
            assert_eq!((q.kind.as_str(), q.over), ("quota", false));
            let u = rate("--hitcount 4");
            assert_eq!((u.kind.as_str(), u.over), ("recent", true));
            assert!(
                u.desc.contains("SSH") && u.desc.contains("4") && u.desc.contains("60"),
                "{}",
                u.desc
            );
            let set = rule(input, "--set --name SSH");
            assert!(matches!(&set.matches[3], Match::Always { what } if what.contains("SSH")));
            assert_eq!(set.verdict, Verdict::Continue);
            assert!(
                matches!(&rule(input, "--rcheck --name BAN").matches[2], Match::Undecidable { condition, negate: false } if condition.contains("BAN"))
            );
            assert!(
                matches!(&rule(input, "--remove --name BAN").matches[2], Match::Undecidable { condition, .. } if condition.contains("BAN"))
            );
        }

        #[test]
        fn server_v4_targets() {
            let ts = load(SERVER_V4_NFT, Backend::IptablesNft, Family::V4);
            let f = table(&ts, "filter");
            let input = chain(f, "INPUT");
            let rejects: Vec<RejectKind> = input
                .rules
                .iter()
                .filter_map(|r| match &r.verdict {
                    Verdict::Reject { with } => Some(with.clone()),
                    _ => None,
                })
                .collect();
            let icmp = |s: &str| RejectKind::Icmp(s.into());
            assert_eq!(
                rejects,
                [
                    RejectKind::TcpReset,
                    RejectKind::TcpReset,
                    icmp("icmp-port-unreachable"),
                    icmp("icmp-net-unreachable"),
                    icmp("icmp-host-unreachable"),
                    icmp("icmp-port-unreachable"),
                    icmp("icmp-proto-unreachable"),
                    icmp("icmp-net-prohibited"),
                    icmp("icmp-host-prohibited"),
                    icmp("icmp-admin-prohibited"),
                ]
            );
            let log = rule(input, "-j LOG");
            assert_eq!(log.verdict, Verdict::Continue);
            assert_eq!(
                log.effects,
                [Effect::Other {
                    what: r#"-j LOG --log-prefix "[X11 DROP] ""#.into()
                }]
            );
            assert_eq!(rule(input, "NFLOG").verdict, Verdict::Continue);
            assert!(
                matches!(&rule(input, "NFQUEUE").verdict, Verdict::Queue { desc } if desc.contains("--queue-num 1"))
            );
            assert!(
                matches!(&rule(input, "-j SET").effects[0], Effect::Other { what } if what.contains("--add-set allow4"))
            );
            let out = chain(f, "OUTPUT");
            assert!(
                matches!(&rule(out, "--uid-owner").matches[1], Match::Undecidable { condition, .. } if condition.contains("--uid-owner 33"))
            );

            let nat = chain(table(&ts, "nat"), "PREROUTING");
            assert_eq!(
                rule(nat, "10.0.0.5:80").verdict,
                Verdict::Dnat {
                    addr: "10.0.0.5".parse().ok(),
                    port: Some(80)
                }
            );
            assert_eq!(
                rule(nat, "--to-destination 10.0.0.7").verdict,
                Verdict::Dnat {
                    addr: "10.0.0.7".parse().ok(),
                    port: None
                }
            );
            assert!(
                matches!(&rule(nat, "9000-9010").verdict, Verdict::Unknown { text } if text.contains("9000-9010"))
            );
            assert_eq!(
                rule(nat, "--to-ports 22").verdict,
                Verdict::Redirect { port: Some(22) }
            );
            assert_eq!(
                rule(nat, "--dport 2223").verdict,
                Verdict::Redirect { port: None }
            );
            let post = chain(table(&ts, "nat"), "POSTROUTING");
            assert!(matches!(
                rule(post, "MASQUERADE").verdict,
                Verdict::NatOther { .. }
            ));
            assert!(matches!(
                rule(post, "SNAT").verdict,
                Verdict::NatOther { .. }
            ));

            let raw = chain(table(&ts, "raw"), "PREROUTING");
            assert_eq!(rule(raw, "--notrack").effects, [Effect::Notrack]);
            assert_eq!(rule(raw, "NOTRACK").effects, [Effect::Notrack]);
            assert!(matches!(
                &rule(raw, "--helper").effects[0],
                Effect::Other { .. }
            ));
            assert_eq!(
                rule(raw, "rpfilter").matches[0],
                Match::ReversePath {
                    strict: true,
                    negate: true
                }
            );
            assert_eq!(rule(raw, "rpfilter").verdict, Verdict::Drop);
            assert!(matches!(
                &rule(raw, "TRACE").effects[0],
                Effect::Other { .. }
            ));

            let m = chain(table(&ts, "mangle"), "PREROUTING");
            let eff = |n: &str| rule(m, n).effects.clone();
            assert_eq!(
                eff("--dport 8443"),
                [Effect::SetMark {
                    value: 1,
                    mask: u32::MAX
                }]
            );
            assert_eq!(
                eff("--dport 8444"),
                [Effect::SetMark {
                    value: 0x10,
                    mask: 0xf0
                }]
            );
            assert_eq!(
                eff("--dport 8445"),
                [Effect::SetMark {
                    value: 0,
                    mask: 0xffff_ff00
                }]
            );
            assert_eq!(eff("--dport 8446"), [Effect::SetMark { value: 4, mask: 4 }]);
            assert_eq!(eff("--dport 8447"), [Effect::SetMark { value: 8, mask: 0 }]);
            assert!(matches!(&eff("--save-mark")[0], Effect::Other { .. }));
            assert_eq!(eff("--restore-mark"), [Effect::RestoreMark]);
            assert_eq!(
                rule(m, "--restore-mark").matches,
                [Match::ConnMark {
                    value: 2,
                    mask: u32::MAX,
                    negate: false
                }]
            );
            assert_eq!(
                rule(m, "--save-mark").matches,
                [Match::Mark {
                    value: 1,
                    mask: 0xff,
                    negate: false
                }]
            );
            let mi = chain(table(&ts, "mangle"), "INPUT");
            assert_eq!(
                rule(mi, "CONNMARK").effects,
                [Effect::SetConnMark {
                    value: 3,
                    mask: 0xf
                }]
            );
            assert!(matches!(
                &rule(mi, "-m ttl").matches[0],
                Match::Undecidable { .. }
            ));
            assert!(matches!(
                &rule(mi, "-m dscp").matches[0],
                Match::Undecidable { .. }
            ));
        }

        #[test]
        fn legacy_dump_gives_the_same_rules() {
            let nft = load(SERVER_V4_NFT, Backend::IptablesNft, Family::V4);
            let legacy = load(SERVER_V4_LEGACY, Backend::IptablesLegacy, Family::V4);
            assert_eq!(legacy.len(), 4);
            for lt in &legacy {
                assert_eq!(lt.backend, Backend::IptablesLegacy);
                let nt = table(&nft, &lt.name);
                assert_eq!(lt.chains.len(), nt.chains.len());
                for lc in &lt.chains {
                    let nc = chain(nt, &lc.name);
                    assert_eq!(lc.base, nc.base);
                    assert_eq!(lc.rules.len(), nc.rules.len(), "{}", lc.name);
                    for (lr, nr) in lc.rules.iter().zip(&nc.rules) {
                        assert_eq!(lr.source.backend, Backend::IptablesLegacy);
                        assert_eq!(
                            (&lr.matches, &lr.effects, &lr.verdict),
                            (&nr.matches, &nr.effects, &nr.verdict)
                        );
                        assert_eq!(lr.source.text, nr.source.text);
                    }
                }
            }
        }

        #[test]
        fn concatenated_dumps_keep_blocks_apart() {
            let both = format!("{SERVER_V4_LEGACY}{FAIL2BAN}");
            let ts = load(&both, Backend::IptablesLegacy, Family::V4);
            let filters: Vec<&Table> = ts.iter().filter(|t| t.name == "filter").collect();
            assert_eq!(filters.len(), 2);
            assert!(filters[0].chain("WEB").is_some());
            assert!(filters[1].chain("f2b-sshd").is_some());
            assert!(filters[1].chain("WEB").is_none());
        }

        #[test]
        fn server_v6() {
            let ts = load(SERVER_V6_NFT, Backend::IptablesNft, Family::V6);
            assert_eq!(ts.len(), 4);
            assert!(ts.iter().all(|t| t.family == TableFamily::Ip6));
            let f = table(&ts, "filter");
            assert_eq!(f.chains.len(), 4);
            assert_eq!(policy(chain(f, "INPUT")), Some(Policy::Drop));
            let input = chain(f, "INPUT");
            assert_eq!(
                rule(input, "--icmpv6-type 128").matches[0],
                Match::Proto {
                    protos: vec![58],
                    negate: false
                }
            );
            assert_eq!(
                rule(input, "--icmpv6-type 135").matches[1],
                Match::Icmp {
                    desc: "icmpv6-type 135".into(),
                    negate: false
                }
            );
            assert!(
                matches!(&rule(input, "3306").matches[0], Match::Addr { set, .. } if set.to_string() == "2001:db8:aa::/48")
            );
            assert!(
                matches!(&rule(input, "--src-range").matches[0], Match::Addr { set, .. } if set.ranges[0].family == Family::V6)
            );
            let rejects: Vec<RejectKind> = input
                .rules
                .iter()
                .filter_map(|r| match &r.verdict {
                    Verdict::Reject { with } => Some(with.clone()),
                    _ => None,
                })
                .collect();
            let icmp = |s: &str| RejectKind::Icmp(s.into());
            assert_eq!(
                rejects,
                [
                    RejectKind::TcpReset,
                    icmp("icmp6-port-unreachable"),
                    icmp("icmp6-no-route"),
                    icmp("icmp6-adm-prohibited"),
                    icmp("icmp6-addr-unreachable"),
                    icmp("icmp6-port-unreachable"),
                    icmp("icmp6-policy-fail"),
                    icmp("icmp6-reject-route"),
                ]
            );
            let nat = chain(table(&ts, "nat"), "PREROUTING");
            assert_eq!(
                rule(nat, "[2001:db8:1::5]:80").verdict,
                Verdict::Dnat {
                    addr: "2001:db8:1::5".parse().ok(),
                    port: Some(80)
                }
            );
            assert_eq!(
                rule(nat, "2001:db8:1::7").verdict,
                Verdict::Dnat {
                    addr: "2001:db8:1::7".parse().ok(),
                    port: None
                }
            );
            let mi = chain(table(&ts, "mangle"), "INPUT");
            assert!(
                matches!(&rule(mi, "--hl-lt").matches[0], Match::Undecidable { condition, .. } if condition.contains("hop limit"))
            );
            // a v6 dump is not a v4 dump
            assert!(parse(SERVER_V6_NFT, Backend::IptablesNft, Family::V4, "x").is_err());
        }

        #[test]
        fn ufw_ruleset() {
            let ts = load(UFW_V4, Backend::IptablesNft, Family::V4);
            assert_eq!(ts.len(), 1);
            let f = &ts[0];
            assert_eq!(f.chains.len(), 35);
            assert_eq!(f.chains.iter().filter(|c| c.base.is_some()).count(), 3);
            assert_eq!(policy(chain(f, "INPUT")), Some(Policy::Drop));
            let user = chain(f, "ufw-user-input");
            assert_eq!(user.rules.len(), 5);
            assert_eq!(
                user.rules[0].matches[1],
                Match::Port {
                    dir: Dir::Dst,
                    ranges: vec![(443, 443)],
                    negate: false
                }
            );
            assert_eq!(user.rules[0].verdict, Verdict::Accept);
            assert!(matches!(&user.rules[1].matches[3], Match::Always { .. }));
            assert!(
                matches!(&user.rules[2].matches[3], Match::Rate(RateLimit { kind, over: true, .. }) if kind == "recent")
            );
            assert_eq!(
                user.rules[2].verdict,
                Verdict::Jump {
                    chain: "ufw-user-limit".into()
                }
            );
            assert_eq!(user.rules[4].source.position, 5);
            assert!(
                matches!(&user.rules[4].matches[0], Match::Addr { set, .. } if set.to_string() == "173.245.48.0/20")
            );
            assert_eq!(user.rules[4].verdict, Verdict::Drop);
            let lim = chain(f, "ufw-user-limit");
            assert_eq!(
                lim.rules[1].verdict,
                Verdict::Reject {
                    with: RejectKind::Icmp("icmp-port-unreachable".into())
                }
            );
            let log = chain(f, "ufw-after-logging-input");
            assert_eq!(
                log.rules[0].effects,
                [Effect::Other {
                    what: r#"-j LOG --log-prefix "[UFW BLOCK] ""#.into()
                }]
            );
            let nl = chain(f, "ufw-not-local");
            assert_eq!(
                nl.rules.last().map(|r| r.verdict.clone()),
                Some(Verdict::Drop)
            );

            let ts6 = load(UFW_V6, Backend::IptablesNft, Family::V6);
            let f6 = &ts6[0];
            assert_eq!(f6.chains.len(), 34);
            assert_eq!(chain(f6, "ufw6-user-input").rules.len(), 4);
            assert!(
                matches!(&rule(chain(f6, "ufw6-before-input"), "--icmpv6-type 135").matches[2],
                Match::Undecidable { condition, .. } if condition.contains("--hl-eq 255"))
            );
        }

        #[test]
        fn fail2ban_ruleset() {
            let ts = load(FAIL2BAN, Backend::IptablesNft, Family::V4);
            let f = &ts[0];
            assert_eq!(f.chains.len(), 4);
            let input = chain(f, "INPUT");
            assert_eq!(
                input.rules[0].matches[1],
                Match::Set {
                    set: SetRef::Ipset("f2b-nginx-http-auth".into()),
                    fields: vec![Field::SrcAddr],
                    negate: false
                }
            );
            assert_eq!(
                input.rules[0].verdict,
                Verdict::Reject {
                    with: RejectKind::Icmp("icmp-port-unreachable".into())
                }
            );
            assert_eq!(
                input.rules[1].matches[1],
                Match::Port {
                    dir: Dir::Dst,
                    ranges: vec![(22, 22)],
                    negate: false
                }
            );
            assert_eq!(
                input.rules[1].verdict,
                Verdict::Jump {
                    chain: "f2b-sshd".into()
                }
            );
            let jail = chain(f, "f2b-sshd");
            assert!(
                matches!(&jail.rules[0].matches[0], Match::Addr { set, .. } if set.to_string() == "203.0.113.99/32")
            );
            assert!(matches!(jail.rules[0].verdict, Verdict::Reject { .. }));
            assert_eq!(jail.rules[1].verdict, Verdict::Return);
        }

        #[test]
        fn fixtures_have_no_unknowns_but_the_deliberate_ones() {
            let all = [
                (SERVER_V4_NFT, Family::V4, "server-v4.nft"),
                (SERVER_V4_LEGACY, Family::V4, "server-v4.legacy"),
                (SERVER_V6_NFT, Family::V6, "server-v6.nft"),
                (UFW_V4, Family::V4, "ufw-v4"),
                (UFW_V6, Family::V6, "ufw-v6"),
                (FAIL2BAN, Family::V4, "fail2ban"),
            ];
            for (text, fam, name) in all {
                let ts = load(text, Backend::IptablesNft, fam);
                let mut unknown = Vec::new();
                for r in ts.iter().flat_map(|t| &t.chains).flat_map(|c| &c.rules) {
                    for m in &r.matches {
                        if let Match::Unknown { text, .. } = m {
                            unknown.push(text.clone());
                        }
                    }
                    if let Verdict::Unknown { text } = &r.verdict {
                        unknown.push(text.clone());
                    }
                }
                let expected: &[&str] = if name.starts_with("server-v4") {
                    // deliberate: a module the model does not know and a DNAT to a port range
                    &[
                        "-m esp --espspi 500",
                        "-j DNAT --to-destination 10.0.0.6:9000-9010",
                    ]
                } else {
                    &[]
                };
                unknown.sort();
                let mut expected = expected.to_vec();
                expected.sort();
                assert_eq!(unknown, expected, "{name}");
            }
        }
    }
}
