//! `fix --apply` / `--revert` on a ufw host, through ufw itself, so `ufw reload` (and the next
//! boot) keep the change: rules inserted with `ufw insert 1` / `ufw prepend`, which ufw writes to
//! /etc/ufw/user.rules and user6.rules; the files are backed up first and put back (then
//! `ufw reload`) on rollback; `--revert` deletes with `ufw delete` exactly the rules whose ufw
//! comment is origin-audit's, as listed in those files' `### tuple ###` lines.
//!
//! Owns: when the ufw path applies, the ufw argument lists, the tuple parser (pure), and the
//! copies of ufw's user rule files. Must not: decide what to change (the plan has decided).
//!
//! ufw facts (ufw(8); ufw's `UFWRule.get_app_tuple` / `_write_rules`): each user rule is stored
//! as `### tuple ### ACTION PROTO DPORT DST SPORT SRC DIRECTION[ comment=HEX]` followed by its
//! iptables lines; the comment is the hex of its UTF-8 text; `any` stands for no port, 0.0.0.0/0
//! and ::/0 for any address.

use super::{COMMENT, Manager, Plan};
use crate::collect::cmd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ufw's user rule files (IPv4, IPv6).
pub const USER_RULES: [&str; 2] = ["/etc/ufw/user.rules", "/etc/ufw/user6.rules"];

const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `fix --apply` goes through ufw: ufw manages the firewall (its chains are loaded
/// and its user rule file is there), and the plan only adds iptables accepts on this host's
/// own input and output paths — which ufw's user rules cover. Forwarded traffic (Docker's
/// DOCKER-USER), native nft tables and ban entries are not ufw's: those plans take the
/// iptables path. Either way the kernel is re-read and re-analysed after the change, and a
/// disagreement rolls it back.
pub fn applies(plan: &Plan) -> bool {
    plan.manager == Manager::Ufw
        && !plan.additions.is_empty()
        && plan.additions.iter().all(|a| {
            a.backend != crate::firewall::Backend::Nft
                && a.table == "filter"
                && (a.chain == "INPUT" || a.chain == "OUTPUT" || a.chain.starts_with("ufw"))
        })
        && !(plan.remove_banned && plan.has_ban_removals())
        && Path::new(USER_RULES[0]).is_file()
}

fn ufw(args: &[String]) -> Result<(), String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::run_with_timeout("ufw", &a, TIMEOUT)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs the plan's ufw commands, in order; the first failure stops (the caller restores).
pub fn transact(plan: &Plan) -> Result<(), String> {
    for args in super::emit::ufw_args(plan) {
        ufw(&args).map_err(|e| format!("ufw {}: {e}", args.join(" ")))?;
    }
    Ok(())
}

/// The backup copy of a user rule file.
fn copy_name(src: &str) -> String {
    format!(
        "ufw-{}",
        Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Copies ufw's user rule files into the backup directory (private, no symlink followed).
pub fn backup_files(dir: &Path) -> Result<(), String> {
    for f in USER_RULES {
        let Some(bytes) = crate::safefs::trusted_file(Path::new(f))? else {
            return Err(format!("{f}: No such file (is ufw installed and enabled?)"));
        };
        crate::safefs::write_atomic(&dir.join(copy_name(f)), &bytes, 0o600)
            .map_err(|e| format!("{}: {e}", dir.join(copy_name(f)).display()))?;
    }
    Ok(())
}

/// Puts the backed-up user rule files back (ufw's own mode, 0640) and reloads ufw, which
/// rewrites its chains from them.
pub fn restore_files(dir: &Path) -> Result<(), String> {
    for f in USER_RULES {
        let copy: PathBuf = dir.join(copy_name(f));
        let Some(bytes) = crate::safefs::trusted_file(&copy)? else {
            return Err(format!("{}: No such file", copy.display()));
        };
        crate::safefs::write_atomic(Path::new(f), &bytes, 0o640)
            .map_err(|e| format!("{f}: {e}"))?;
    }
    ufw(&["reload".to_string()])
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The `ufw delete …` argument lists for the rules carrying origin-audit's comment in the
/// text of a user rule file. Pure.
pub fn revert_args(user_rules: &str) -> Vec<Vec<String>> {
    let ours = format!("comment={}", hex(COMMENT));
    let mut out = Vec::new();
    for line in user_rules.lines() {
        let Some(t) = line.strip_prefix("### tuple ### ") else {
            continue;
        };
        let w: Vec<&str> = t.split_whitespace().collect();
        if !w.contains(&ours.as_str()) || w.len() < 7 {
            continue;
        }
        let (action, proto, dport, dst, sport, src, dir) =
            (w[0], w[1], w[2], w[3], w[4], w[5], w[6]);
        let any = |a: &str| -> String {
            if a == "0.0.0.0/0" || a == "::/0" {
                "any".into()
            } else {
                a.into()
            }
        };
        let mut a: Vec<String> = vec!["delete".into(), action.into()];
        if dir == "out" {
            a.push("out".into());
        }
        if proto != "any" {
            a.extend(["proto".into(), proto.into()]);
        }
        a.extend(["from".into(), any(src)]);
        if sport != "any" {
            a.extend(["port".into(), sport.into()]);
        }
        a.extend(["to".into(), any(dst)]);
        if dport != "any" {
            a.extend(["port".into(), dport.into()]);
        }
        out.push(a);
    }
    out
}

/// The revert commands for this host's ufw files (none when ufw is not installed).
pub fn revert_plan() -> Result<Vec<Vec<String>>, String> {
    let mut v = Vec::new();
    for f in USER_RULES {
        match crate::safefs::trusted_file(Path::new(f))? {
            Some(b) => v.extend(revert_args(&String::from_utf8_lossy(&b))),
            None => continue,
        }
    }
    Ok(v)
}

/// Runs the revert commands.
pub fn revert(cmds: &[Vec<String>]) -> Result<(), String> {
    for args in cmds {
        ufw(args).map_err(|e| format!("ufw {}: {e}", args.join(" ")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_with_our_comment_become_deletes() {
        let c = hex(COMMENT);
        let text = format!(
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n\
             -A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\
             ### tuple ### allow tcp 443 0.0.0.0/0 any 173.245.48.0/20 in comment={c}\n\
             ### tuple ### allow tcp any 2400:cb00::/32 443 ::/0 out comment={c}\n"
        );
        let v = revert_args(&text);
        assert_eq!(
            v,
            vec![
                "delete allow proto tcp from 173.245.48.0/20 to any port 443"
                    .split(' ')
                    .map(String::from)
                    .collect::<Vec<_>>(),
                "delete allow out proto tcp from any port 443 to 2400:cb00::/32"
                    .split(' ')
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ]
        );
        assert_eq!(hex("origin-audit"), "6f726967696e2d6175646974");
    }
}
