//! Validation of provider range lists: the text form (one CIDR a line), the API JSON form, the
//! cache file and the bundled snapshot all end up here.
//!
//! Owns: [`RangesError`] and the rules a list must pass before the analysis may trust it.
//! Must not: do I/O. Every function takes the text and a name for where it came from (URL, file,
//! cache path) so errors can say where and which entry.
//!
//! Why so strict: the analysis splits these ranges to decide what Cloudflare can reach. A list
//! that silently lost an entry makes the report miss a blocked range; a list that gained
//! `0.0.0.0/0` or a captive portal's HTML "parsed" into nothing makes every verdict meaningless.
//! So a list is taken whole or refused whole, and the refusal names the first bad entry.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use thiserror::Error;

/// Shortest prefix accepted per family. Cloudflare's widest are a /13 and a /29; anything wider
/// than these bounds is far more likely a typo or an attack on the list than a real range.
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;

/// Why a list (or the provider description) was refused, or could not be obtained.
/// `origin` is always the URL, file or cache path the data came from; `at` is where in it
/// (`line 3`, `result.ipv4_cidrs[2]`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangesError {
    #[error("{origin}: {at}: {entry:?} is not an address/prefix (CIDR)")]
    NotCidr {
        origin: String,
        at: String,
        entry: String,
    },
    #[error("{origin}: {at}: {entry:?} has host bits set (the network would be {network})")]
    HostBits {
        origin: String,
        at: String,
        entry: String,
        network: String,
    },
    #[error("{origin}: {at}: {entry:?} is a default route (matches every address)")]
    DefaultRoute {
        origin: String,
        at: String,
        entry: String,
    },
    #[error("{origin}: {at}: {entry:?} is wider than /{min_prefix}, refused as implausible")]
    TooWide {
        origin: String,
        at: String,
        entry: String,
        min_prefix: u8,
    },
    #[error("{origin}: {at}: {entry:?} is not an {expected} prefix")]
    WrongFamily {
        origin: String,
        at: String,
        entry: String,
        expected: &'static str,
    },
    #[error("{origin}: no {family} ranges (a provider list must have both IPv4 and IPv6)")]
    MissingFamily {
        origin: String,
        family: &'static str,
    },
    #[error("{origin}: {entry} is {class} space ({block}), never a provider's range")]
    SpecialPurpose {
        origin: String,
        entry: String,
        class: &'static str,
        block: String,
    },
    #[error(
        "{origin}: {entry} is outside every allocation of {provider} \
         (rules/{provider}.toml [allocations]): not {provider}'s range"
    )]
    OutsideAllocations {
        origin: String,
        entry: String,
        provider: String,
    },
    #[error(
        "{origin}: {count} {family} ranges, outside the plausible {min}..={max} for {provider} \
         (rules/{provider}.toml [limits])"
    )]
    Count {
        origin: String,
        provider: String,
        family: &'static str,
        count: usize,
        min: usize,
        max: usize,
    },
    #[error(
        "{origin}: the {family} list changes too much at once compared with {baseline}: \
         +{added_percent}% / -{removed_percent}% of its address space (limit {limit_percent}%); \
         added: {}; removed: {}",
        super::policy::shortened(added),
        super::policy::shortened(removed)
    )]
    TooMuchChange {
        origin: String,
        family: &'static str,
        baseline: String,
        added_percent: u32,
        removed_percent: u32,
        limit_percent: u8,
        added: Vec<String>,
        removed: Vec<String>,
    },
    #[error(
        "{origin}: refused: only https:// URLs are fetched (over plain HTTP anyone on the path \
         can rewrite the list); use an https:// mirror (--ranges-ca FILE trusts a private CA) \
         or --ranges-file"
    )]
    NotHttps { origin: String },
    #[error("{origin}: not a list of ranges: {reason}")]
    Malformed { origin: String, reason: String },
    #[error("{origin}: HTTP request failed: {reason}")]
    Http { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Io { origin: String, reason: String },
    #[error("{origin}: invalid provider description: {reason}")]
    Provider { origin: String, reason: String },
}

impl RangesError {
    /// The URL / file / cache path this error is about.
    pub fn origin(&self) -> &str {
        match self {
            RangesError::NotCidr { origin, .. }
            | RangesError::HostBits { origin, .. }
            | RangesError::DefaultRoute { origin, .. }
            | RangesError::TooWide { origin, .. }
            | RangesError::WrongFamily { origin, .. }
            | RangesError::MissingFamily { origin, .. }
            | RangesError::SpecialPurpose { origin, .. }
            | RangesError::OutsideAllocations { origin, .. }
            | RangesError::Count { origin, .. }
            | RangesError::TooMuchChange { origin, .. }
            | RangesError::NotHttps { origin }
            | RangesError::Malformed { origin, .. }
            | RangesError::Http { origin, .. }
            | RangesError::Io { origin, .. }
            | RangesError::Provider { origin, .. } => origin,
        }
    }
}

/// A validated list: both families present, no duplicates, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lists {
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
}

/// Which family a list position must hold, when the format says (API fields, per-family URLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    V4,
    V6,
    Any,
}

/// Long garbage lines (a minified HTML page) are cut in messages; the start is what identifies
/// them.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

/// Check one entry. `at` says where it is, for the message.
pub fn parse_entry(
    origin: &str,
    at: &str,
    entry: &str,
    expect: Expect,
) -> Result<IpNet, RangesError> {
    let err_ctx = || (origin.to_string(), at.to_string(), shorten(entry));
    // `IpNet::from_str` requires an explicit prefix, so a bare address is refused: the
    // providers always publish prefixes, and a bare address here means the list is not theirs.
    let net: IpNet = entry.parse().map_err(|_| {
        let (origin, at, entry) = err_ctx();
        RangesError::NotCidr { origin, at, entry }
    })?;
    if net.prefix_len() == 0 {
        let (origin, at, entry) = err_ctx();
        return Err(RangesError::DefaultRoute { origin, at, entry });
    }
    if net.trunc() != net {
        let (origin, at, entry) = err_ctx();
        return Err(RangesError::HostBits {
            origin,
            at,
            entry,
            network: net.trunc().to_string(),
        });
    }
    let (ok_family, expected) = match (expect, net) {
        (Expect::V4, IpNet::V6(_)) => (false, "IPv4"),
        (Expect::V6, IpNet::V4(_)) => (false, "IPv6"),
        _ => (true, ""),
    };
    if !ok_family {
        let (origin, at, entry) = err_ctx();
        return Err(RangesError::WrongFamily {
            origin,
            at,
            entry,
            expected,
        });
    }
    let min_prefix = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min_prefix {
        let (origin, at, entry) = err_ctx();
        return Err(RangesError::TooWide {
            origin,
            at,
            entry,
            min_prefix,
        });
    }
    Ok(net)
}

/// Collect parsed entries into [`Lists`]: sort, collapse exact duplicates, require both families.
pub fn finish(origin: &str, nets: impl IntoIterator<Item = IpNet>) -> Result<Lists, RangesError> {
    let mut lists = Lists::default();
    for n in nets {
        match n {
            IpNet::V4(n) => lists.ipv4.push(n),
            IpNet::V6(n) => lists.ipv6.push(n),
        }
    }
    lists.ipv4.sort_unstable();
    lists.ipv4.dedup();
    lists.ipv6.sort_unstable();
    lists.ipv6.dedup();
    if lists.ipv4.is_empty() {
        return Err(RangesError::MissingFamily {
            origin: origin.to_string(),
            family: "IPv4",
        });
    }
    if lists.ipv6.is_empty() {
        return Err(RangesError::MissingFamily {
            origin: origin.to_string(),
            family: "IPv6",
        });
    }
    Ok(lists)
}

/// Parse a plain-text list (one CIDR a line). Tolerated: CRLF line ends, blank lines, a missing
/// final newline. Nothing else — no comments, no surrounding spaces — so a captive portal's HTML
/// page or an error text is refused at its first line instead of yielding a partial list.
/// Does not check that both families are present (the provider publishes one URL per family);
/// use [`finish`] on the combined entries.
pub fn parse_text(origin: &str, text: &str, expect: Expect) -> Result<Vec<IpNet>, RangesError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_entry(
            origin,
            &format!("line {}", i + 1),
            line,
            expect,
        )?);
    }
    if out.is_empty() {
        return Err(RangesError::Malformed {
            origin: origin.to_string(),
            reason: "empty (no ranges at all)".to_string(),
        });
    }
    Ok(out)
}

/// Parse a text list that must hold both families (a `--ranges-file` or `--ranges-url` mirror).
pub fn parse_text_lists(origin: &str, text: &str) -> Result<Lists, RangesError> {
    finish(origin, parse_text(origin, text, Expect::Any)?)
}

#[derive(Deserialize)]
struct ApiEnvelope {
    success: Option<bool>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    result: Option<ApiResult>,
}

#[derive(Deserialize)]
struct ApiResult {
    ipv4_cidrs: Option<Vec<String>>,
    ipv6_cidrs: Option<Vec<String>>,
    etag: Option<String>,
}

/// Parse the API's JSON (`{"result": {"ipv4_cidrs": [...], "ipv6_cidrs": [...], "etag": "..."},
/// "success": true, ...}`). Returns the lists and `result.etag`. Refused unless `success` is
/// `true` and all three result fields are there.
pub fn parse_api_json(origin: &str, text: &str) -> Result<(Lists, String), RangesError> {
    let malformed = |reason: String| RangesError::Malformed {
        origin: origin.to_string(),
        reason,
    };
    let env: ApiEnvelope =
        serde_json::from_str(text).map_err(|e| malformed(format!("invalid API JSON: {e}")))?;
    match env.success {
        Some(true) => {}
        Some(false) => {
            let errors = serde_json::to_string(&env.errors).unwrap_or_default();
            return Err(malformed(format!(
                "API answered success: false (errors: {errors})"
            )));
        }
        None => return Err(malformed("API JSON has no \"success\" field".to_string())),
    }
    let result = env
        .result
        .ok_or_else(|| malformed("API JSON has no \"result\"".to_string()))?;
    let v4 = result
        .ipv4_cidrs
        .ok_or_else(|| malformed("API JSON has no \"result.ipv4_cidrs\"".to_string()))?;
    let v6 = result
        .ipv6_cidrs
        .ok_or_else(|| malformed("API JSON has no \"result.ipv6_cidrs\"".to_string()))?;
    let etag = result
        .etag
        .ok_or_else(|| malformed("API JSON has no \"result.etag\"".to_string()))?;
    let lists = validate_named(origin, "result.ipv4_cidrs", &v4, "result.ipv6_cidrs", &v6)?;
    Ok((lists, etag))
}

/// Validate two string lists whose family is fixed by their field name (API, cache, bundled).
pub fn validate_named(
    origin: &str,
    v4_name: &str,
    v4: &[String],
    v6_name: &str,
    v6: &[String],
) -> Result<Lists, RangesError> {
    let mut nets = Vec::with_capacity(v4.len() + v6.len());
    for (i, e) in v4.iter().enumerate() {
        nets.push(parse_entry(
            origin,
            &format!("{v4_name}[{i}]"),
            e,
            Expect::V4,
        )?);
    }
    for (i, e) in v6.iter().enumerate() {
        nets.push(parse_entry(
            origin,
            &format!("{v6_name}[{i}]"),
            e,
            Expect::V6,
        )?);
    }
    finish(origin, nets)
}

/// True when the body looks like JSON rather than a text list: used to accept either form from
/// `--ranges-file` and `--ranges-url`.
pub fn looks_like_json(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
}

/// Parse either form; the etag is only known for the JSON form.
pub fn parse_any(origin: &str, text: &str) -> Result<(Lists, Option<String>), RangesError> {
    if looks_like_json(text) {
        let (lists, etag) = parse_api_json(origin, text)?;
        Ok((lists, Some(etag)))
    } else {
        Ok((parse_text_lists(origin, text)?, None))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap in a test is a failed test
mod tests {
    use super::*;

    const CF_V4: &str = "173.245.48.0/20\n103.21.244.0/22\n104.16.0.0/13\n";
    const CF_V6: &str = "2400:cb00::/32\n2a06:98c0::/29\n";

    fn both() -> String {
        format!("{CF_V4}{CF_V6}")
    }

    #[test]
    fn text_list_with_crlf_blank_lines_and_no_final_newline() {
        let text = "173.245.48.0/20\r\n\r\n104.16.0.0/13\r\n   \n2400:cb00::/32";
        let l = parse_text_lists("file x", text).unwrap();
        assert_eq!(l.ipv4.len(), 2);
        assert_eq!(l.ipv6, vec!["2400:cb00::/32".parse::<Ipv6Net>().unwrap()]);
    }

    #[test]
    fn html_page_is_refused_naming_origin_and_first_line() {
        let html = "<!DOCTYPE html>\n<html><head><title>Hotel WiFi login</title></head>\n";
        let e = parse_text_lists("https://mirror.example/ips", html).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("https://mirror.example/ips"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("<!DOCTYPE html>"), "{msg}");
        assert!(matches!(e, RangesError::NotCidr { .. }));
    }

    #[test]
    fn one_bad_line_refuses_the_whole_list() {
        let text = format!("{CF_V4}# a comment\n{CF_V6}");
        let e = parse_text_lists("f", &text).unwrap_err();
        assert_eq!(
            e,
            RangesError::NotCidr {
                origin: "f".into(),
                at: "line 4".into(),
                entry: "# a comment".into()
            }
        );
    }

    #[test]
    fn surrounding_spaces_are_refused() {
        let e = parse_text_lists("f", " 173.245.48.0/20\n2400:cb00::/32\n").unwrap_err();
        assert!(matches!(e, RangesError::NotCidr { .. }), "{e}");
    }

    #[test]
    fn bare_address_is_refused() {
        let e = parse_text_lists("f", "1.2.3.4\n2400:cb00::/32\n").unwrap_err();
        assert!(matches!(e, RangesError::NotCidr { ref entry, .. } if entry == "1.2.3.4"));
    }

    #[test]
    fn host_bits_are_refused_with_the_network_named() {
        let e = parse_text_lists("f", "173.245.48.1/20\n2400:cb00::/32\n").unwrap_err();
        assert_eq!(
            e,
            RangesError::HostBits {
                origin: "f".into(),
                at: "line 1".into(),
                entry: "173.245.48.1/20".into(),
                network: "173.245.48.0/20".into()
            }
        );
        let e = parse_text_lists("f", "173.245.48.0/20\n2400:cb00::1/32\n").unwrap_err();
        assert!(matches!(e, RangesError::HostBits { .. }), "{e}");
    }

    #[test]
    fn prefix_bounds_per_family() {
        // /8 and /16 are the widest accepted; one bit wider is refused.
        assert!(parse_text_lists("f", "10.0.0.0/8\n2400::/16\n").is_ok());
        let e = parse_text_lists("f", "0.0.0.0/4\n2400:cb00::/32\n").unwrap_err();
        assert!(
            matches!(e, RangesError::TooWide { min_prefix: 8, .. }),
            "{e}"
        );
        let e = parse_text_lists("f", "10.0.0.0/7\n2400:cb00::/32\n").unwrap_err();
        assert!(matches!(e, RangesError::TooWide { .. }), "{e}");
        let e = parse_text_lists("f", "10.0.0.0/8\n2400::/15\n").unwrap_err();
        assert!(
            matches!(e, RangesError::TooWide { min_prefix: 16, .. }),
            "{e}"
        );
    }

    #[test]
    fn default_routes_are_refused() {
        for d in ["0.0.0.0/0", "::/0"] {
            let text = format!("{d}\n{}", both());
            let e = parse_text_lists("f", &text).unwrap_err();
            assert!(matches!(e, RangesError::DefaultRoute { .. }), "{d}: {e}");
        }
    }

    #[test]
    fn both_families_are_required() {
        let e = parse_text_lists("f", CF_V4).unwrap_err();
        assert_eq!(
            e,
            RangesError::MissingFamily {
                origin: "f".into(),
                family: "IPv6"
            }
        );
        let e = parse_text_lists("f", CF_V6).unwrap_err();
        assert_eq!(
            e,
            RangesError::MissingFamily {
                origin: "f".into(),
                family: "IPv4"
            }
        );
        let e = parse_text_lists("f", "\n\r\n").unwrap_err();
        assert!(matches!(e, RangesError::Malformed { .. }), "{e}");
    }

    #[test]
    fn duplicates_collapse() {
        let text = format!("{}{}", both(), both());
        let l = parse_text_lists("f", &text).unwrap();
        assert_eq!(l.ipv4.len(), 3);
        assert_eq!(l.ipv6.len(), 2);
    }

    #[test]
    fn per_family_text_list_refuses_the_other_family() {
        let e = parse_text("ips-v4", CF_V6, Expect::V4).unwrap_err();
        assert!(
            matches!(
                e,
                RangesError::WrongFamily {
                    expected: "IPv4",
                    ..
                }
            ),
            "{e}"
        );
    }

    fn api(success: bool, v4: &str, v6: &str, etag: Option<&str>) -> String {
        let etag = etag
            .map(|e| format!(",\"etag\":\"{e}\""))
            .unwrap_or_default();
        format!(
            "{{\"result\":{{\"ipv4_cidrs\":[{v4}],\"ipv6_cidrs\":[{v6}]{etag}}},\
             \"success\":{success},\"errors\":[],\"messages\":[]}}"
        )
    }

    #[test]
    fn api_json_accepted() {
        let body = api(
            true,
            "\"173.245.48.0/20\",\"104.16.0.0/13\"",
            "\"2400:cb00::/32\"",
            Some("abc"),
        );
        let (l, etag) = parse_api_json("api", &body).unwrap();
        assert_eq!(etag, "abc");
        assert_eq!(l.ipv4.len(), 2);
        assert_eq!(l.ipv6.len(), 1);
        assert!(looks_like_json(&body));
        assert_eq!(parse_any("api", &body).unwrap().1.as_deref(), Some("abc"));
    }

    #[test]
    fn api_json_refusals() {
        let e = parse_api_json(
            "api",
            &api(
                false,
                "\"173.245.48.0/20\"",
                "\"2400:cb00::/32\"",
                Some("a"),
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("success: false"), "{e}");
        let e =
            parse_api_json("api", &api(true, "\"173.245.48.0/20\"", "", Some("a"))).unwrap_err();
        assert!(
            matches!(e, RangesError::MissingFamily { family: "IPv6", .. }),
            "{e}"
        );
        let e = parse_api_json(
            "api",
            &api(true, "\"173.245.48.0/20\"", "\"2400:cb00::/32\"", None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("result.etag"), "{e}");
        let e = parse_api_json(
            "api",
            &api(true, "\"2400:cb00::/32\"", "\"2400:cb00::/32\"", Some("a")),
        )
        .unwrap_err();
        assert_eq!(
            e,
            RangesError::WrongFamily {
                origin: "api".into(),
                at: "result.ipv4_cidrs[0]".into(),
                entry: "2400:cb00::/32".into(),
                expected: "IPv4"
            }
        );
        let e = parse_api_json("api", "{\"success\":true}").unwrap_err();
        assert!(e.to_string().contains("\"result\""), "{e}");
        let e = parse_api_json("api", "{not json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("api: not a list of ranges: invalid API JSON"),
            "{e}"
        );
    }
}
