//! The one place volatile kernel state is normalised before dumps are compared: packet and
//! byte counters (iptables-save `[p:b]`, nft `counter packets N bytes N`, ipset `packets N`),
//! nft set-element `expires` countdowns, ipset element `timeout` countdowns, and the elements
//! the kernel adds to `flags dynamic` sets for each probe, and the cumulative kernel counters a
//! report cites as evidence (`kernel counters: ListenOverflows 12, …`: every dropped probe adds
//! to them). Everything else is compared as is.

/// One dump line with its volatile parts replaced by fixed tokens.
pub fn normalise_line(l: &str) -> String {
    // iptables-save chain lines `:INPUT ACCEPT [12:720]`, nft `counter packets 3 bytes 180`.
    let mut out = String::new();
    let mut rest = l;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        match after.find(']') {
            Some(j)
                if after[1..j]
                    .split(':')
                    .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit())) =>
            {
                out.push_str("[0:0]");
                rest = &after[j + 1..];
            }
            _ => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    let words: Vec<&str> = out.split(' ').collect();
    let mut w2 = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() {
            w2.push(words[i].to_string());
            w2.push("N".into());
            i += 2;
            continue;
        }
        // nft set elements with a timeout: `1.2.3.4 timeout 4h expires 3h59m57s,` — the
        // countdown changes every second; the element and its timeout stay compared.
        if words[i] == "expires" && i + 1 < words.len() {
            let tail: String = words[i + 1]
                .chars()
                .skip_while(|c| c.is_ascii_alphanumeric())
                .collect();
            match w2.last_mut() {
                Some(prev) => prev.push_str(&tail),
                None => w2.push(tail),
            }
            i += 2;
            continue;
        }
        // ipset elements with a timeout: `add bans 1.2.3.4 timeout 14395` counts down the seconds
        // left (the set's own `create … timeout 300` is configuration and stays compared).
        if words[i] == "timeout"
            && words.first() == Some(&"add")
            && i + 1 < words.len()
            && words[i + 1].bytes().all(|b| b.is_ascii_digit())
        {
            w2.push("timeout".into());
            w2.push("N".into());
            i += 2;
            continue;
        }
        w2.push(words[i].to_string());
        i += 1;
    }
    w2.join(" ")
}

/// `nft list ruleset` without the elements of `flags dynamic` sets: the kernel adds those for
/// each packet a rule like `add @flood { ip saddr limit rate over 2/minute }` sees (the probes'
/// sources), so they are traffic state, like counters — not rules anyone wrote. Elements of
/// other sets (ban lists, origin-audit's own) stay compared.
pub fn without_dynamic_elements(text: &str) -> String {
    let mut out = String::new();
    let mut in_set = false;
    let mut dynamic = false;
    let mut in_elements = false;
    for l in text.lines() {
        let t = l.trim();
        if in_elements {
            if t.ends_with('}') {
                in_elements = false;
            }
            continue;
        }
        if t.starts_with("set ") && t.ends_with('{') {
            in_set = true;
            dynamic = false;
        } else if in_set && t == "}" {
            in_set = false;
        } else if in_set && t.starts_with("flags ") {
            dynamic = t["flags ".len()..]
                .split(',')
                .any(|f| f.trim() == "dynamic");
        } else if in_set && dynamic && t.starts_with("elements = {") {
            in_elements = !t.ends_with('}');
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A report's message with the numbers of its `kernel counters: …` evidence replaced by `N`
/// (the counters grow with every SYN the kernel drops, so two reads a probe apart differ).
pub fn normalise_evidence(msg: &str) -> String {
    let Some(i) = msg.find("kernel counters:") else {
        return msg.to_string();
    };
    let (head, tail) = msg.split_at(i);
    let end = tail.find(" (/proc").unwrap_or(tail.len());
    let mut out = head.to_string();
    let mut digits = false;
    for c in tail[..end].chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out.push_str(&tail[end..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_evidence_is_normalised_and_nothing_else() {
        let m = "queue full → Cloudflare 522; kernel counters: ListenOverflows 12, ListenDrops 130 (/proc/net/netstat, since boot) port 443";
        assert_eq!(
            super::normalise_evidence(m),
            "queue full → Cloudflare 522; kernel counters: ListenOverflows N, ListenDrops N (/proc/net/netstat, since boot) port 443"
        );
        assert_eq!(
            super::normalise_evidence("port 443 drop 12"),
            "port 443 drop 12"
        );
    }
}
