//! The one thing read from `nft list ruleset` *text*: which devices ingress chains are attached
//! to. nft 1.0.x's JSON leaves `dev` out of ingress chains (checked with nft 1.0.6: the text
//! says `hook ingress device "eth0"`, the JSON has no device at all), and without it the
//! analysis cannot tell whether an ingress drop applies to the public interface.
//!
//! Owns: [`ingress_devices`]. Must not: parse rules (the JSON is the source for everything else).

use super::TableFamily;

/// `(family, table, chain, devices)` for every chain whose hook line names devices.
pub fn ingress_devices(text: &str) -> Vec<(TableFamily, String, String, Vec<String>)> {
    let mut out = Vec::new();
    let mut table: Option<(TableFamily, String)> = None;
    let mut chain: Option<String> = None;
    let unquote = |s: &str| s.trim().trim_matches('"').to_string();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", fam, name, "{", ..] => {
                table = TableFamily::from_nft(fam).map(|f| (f, unquote(name)));
                chain = None;
            }
            ["chain", name, "{", ..] => chain = Some(unquote(name)),
            _ if line.contains("hook ingress") || line.contains("hook egress") => {
                let (Some((fam, t)), Some(c)) = (&table, &chain) else {
                    continue;
                };
                let devices: Vec<String> = if let Some(rest) = line.split("devices = {").nth(1) {
                    rest.split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(unquote)
                        .filter(|d| !d.is_empty())
                        .collect()
                } else if let Some(rest) = line.split("device ").nth(1) {
                    rest.split_whitespace()
                        .next()
                        .map(unquote)
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                };
                if !devices.is_empty() {
                    out.push((*fam, t.clone(), c.clone(), devices));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft list ruleset` of nft 1.0.6 in a namespace, after loading a chain with `device
    /// "eth0"` and one with `devices = { eth0, eth1 }`.
    const TEXT: &str = r#"table netdev nd {
	chain ing {
		type filter hook ingress device "eth0" priority -500; policy accept;
		ip saddr 173.245.48.0/20 drop
	}
}
table netdev nd2 {
	chain ing2 {
		type filter hook ingress devices = { eth0, eth1 } priority filter; policy accept;
	}
}
"#;

    #[test]
    fn reads_single_and_multiple_devices() {
        let d = ingress_devices(TEXT);
        assert_eq!(
            d,
            vec![
                (
                    TableFamily::Netdev,
                    "nd".into(),
                    "ing".into(),
                    vec!["eth0".to_string()]
                ),
                (
                    TableFamily::Netdev,
                    "nd2".into(),
                    "ing2".into(),
                    vec!["eth0".to_string(), "eth1".to_string()]
                ),
            ]
        );
    }
}
