//! Provider ranges: the bundled snapshot from `rules/cloudflare.toml`, HTTPS fetch with an ETag
//! cache, strict validation (syntax in `validate`, plausibility — allocations, special-purpose
//! space, counts, bounded change — in `policy`), and the fallback order fresh fetch → cache →
//! bundled.
//!
//! Owns: [`ProviderRanges`] (what the analysis consumes, with where it came from and its age),
//! [`Provider`] (endpoints, proxied ports, bundled list), validation (`validate`, pure).
//! Must not: decide verdicts. Network and cache I/O live in `fetch` (the only I/O here).
//!
//! `as_of` forms: RFC 3339 for fetched / cache / file (a moment), `YYYY-MM-DD` for bundled (the
//! snapshot's date). [`ProviderRanges::age_days`] reads both.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod policy;
pub mod validate;
pub use validate::RangesError;

/// Where the ranges in a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeSource {
    Fetched,
    Cache,
    Bundled,
    File,
}

/// The provider's ranges as used for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRanges {
    pub provider: String,
    pub source: RangeSource,
    /// When this list was current: fetch/cache time (RFC 3339) or the bundled snapshot's date.
    pub as_of: String,
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
    #[serde(default)]
    pub etag: Option<String>,
    /// Why a better source was not used (fetch failed, cache invalid, list refused...). Each
    /// becomes a finding.
    #[serde(default)]
    pub problems: Vec<String>,
}

impl ProviderRanges {
    /// Whole days between `as_of` and `now` (negative if `as_of` is in the future, e.g. a skewed
    /// clock). A bundled date counts from 00:00 UTC that day. `None` if `as_of` is in neither
    /// form (a hand-edited snapshot).
    pub fn age_days(&self, now: OffsetDateTime) -> Option<i64> {
        parse_as_of(&self.as_of).map(|t| (now - t).whole_days())
    }
}

/// `as_of` as a moment: RFC 3339, or `YYYY-MM-DD` read as midnight UTC.
pub fn parse_as_of(as_of: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(as_of, &Rfc3339) {
        return Some(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(as_of, &fmt)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

pub mod fetch;

/// A provider as described by `rules/<provider>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    /// JSON API (`result.ipv4_cidrs`, `result.ipv6_cidrs`, `result.etag`).
    pub api_url: String,
    /// Plain-text fallbacks, one CIDR a line.
    pub text_url_v4: String,
    pub text_url_v6: String,
    pub http_ports: Vec<u16>,
    pub https_ports: Vec<u16>,
    /// The blocks every listed prefix must lie inside (the provider's RIR allocations).
    pub allocations: policy::Allocations,
    /// Plausible counts and the largest change one fetch may make.
    pub limits: policy::Limits,
    /// The compiled-in snapshot.
    pub bundled: Bundled,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundled {
    /// Date (YYYY-MM-DD) the snapshot was taken.
    pub as_of: String,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

const CLOUDFLARE_TOML: &str = include_str!("../../rules/cloudflare.toml");

/// Cloudflare, from the bundled `rules/cloudflare.toml`.
///
/// The file is compiled in and a unit test parses and validates it, so a failure here means the
/// binary was built from a broken `rules/cloudflare.toml`: a build defect, not bad input. It
/// panics with a message saying so rather than returning an error every caller would have to
/// invent handling for.
pub fn cloudflare() -> Provider {
    match parse_provider("rules/cloudflare.toml (compiled in)", CLOUDFLARE_TOML) {
        Ok(p) => p,
        Err(e) => panic!("build defect, this binary's provider data is invalid: {e}"),
    }
}

/// Parse and validate a provider description (`rules/<provider>.toml`). `origin` names the
/// file in errors. The bundled lists must pass the same validation as a fetched list, `as_of`
/// must be `YYYY-MM-DD`, and both port lists must be non-empty and without port 0.
pub fn parse_provider(origin: &str, text: &str) -> Result<Provider, RangesError> {
    let bad = |reason: String| RangesError::Provider {
        origin: origin.to_string(),
        reason,
    };
    let p: Provider = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if time::Date::parse(&p.bundled.as_of, &fmt).is_err() {
        return Err(bad(format!(
            "bundled.as_of {:?} is not YYYY-MM-DD",
            p.bundled.as_of
        )));
    }
    for (name, ports) in [
        ("http_ports", &p.http_ports),
        ("https_ports", &p.https_ports),
    ] {
        if ports.is_empty() || ports.contains(&0) {
            return Err(bad(format!("{name} must be non-empty and not contain 0")));
        }
    }
    p.check_own_data().map_err(bad)?;
    p.bundled_lists(origin)?;
    Ok(p)
}

impl Provider {
    /// Every port the provider proxies.
    pub fn proxied_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .http_ports
            .iter()
            .chain(&self.https_ports)
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// `[allocations]` and `[limits]` must be usable: allocations without host bits, outside
    /// special-purpose space and no wider than any list entry may be; bounds ordered.
    fn check_own_data(&self) -> Result<(), String> {
        let a = &self.allocations;
        if a.ipv4.is_empty() || a.ipv6.is_empty() {
            return Err("allocations.ipv4 and allocations.ipv6 must be non-empty".to_string());
        }
        let nets = a
            .ipv4
            .iter()
            .map(|n| ipnet::IpNet::V4(*n))
            .chain(a.ipv6.iter().map(|n| ipnet::IpNet::V6(*n)));
        for n in nets {
            let (min, special) = match n {
                ipnet::IpNet::V4(v) => {
                    (validate::MIN_PREFIX_V4, policy::special_v4(&v).map(|x| x.0))
                }
                ipnet::IpNet::V6(v) => {
                    (validate::MIN_PREFIX_V6, policy::special_v6(&v).map(|x| x.0))
                }
            };
            if n.trunc() != n {
                return Err(format!("allocation {n} has host bits set"));
            }
            if n.prefix_len() < min {
                return Err(format!("allocation {n} is wider than /{min}"));
            }
            if let Some(class) = special {
                return Err(format!("allocation {n} is {class} space"));
            }
        }
        let l = &self.limits;
        for (name, b) in [("ipv4_count", l.ipv4_count), ("ipv6_count", l.ipv6_count)] {
            if b.min < 1 || b.min > b.max {
                return Err(format!("limits.{name} needs 1 <= min <= max"));
            }
        }
        if !(1..=100).contains(&l.max_change_percent) {
            return Err("limits.max_change_percent must be within 1..=100".to_string());
        }
        Ok(())
    }

    /// The checks every list must pass besides syntax: inside the allocations, no
    /// special-purpose space, plausible counts ([`policy::check_static`]).
    pub fn check_plausible(
        &self,
        origin: &str,
        lists: &validate::Lists,
    ) -> Result<(), RangesError> {
        policy::check_static(origin, &self.name, &self.allocations, &self.limits, lists)
    }

    fn bundled_lists(&self, origin: &str) -> Result<validate::Lists, RangesError> {
        let lists = validate::validate_named(
            origin,
            "bundled.ipv4",
            &self.bundled.ipv4,
            "bundled.ipv6",
            &self.bundled.ipv6,
        )?;
        self.check_plausible(origin, &lists)?;
        Ok(lists)
    }

    /// The compiled-in snapshot as ranges (source `bundled`, `as_of` its date, no problems).
    /// Fails only for a `Provider` built by hand with an invalid list: [`parse_provider`] and
    /// [`cloudflare`] never yield one.
    pub fn bundled_ranges(&self) -> Result<ProviderRanges, RangesError> {
        let lists = self.bundled_lists(&format!("bundled ranges of {}", self.name))?;
        Ok(ProviderRanges {
            provider: self.name.clone(),
            source: RangeSource::Bundled,
            as_of: self.bundled.as_of.clone(),
            ipv4: lists.ipv4,
            ipv6: lists.ipv6,
            etag: None,
            problems: Vec::new(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap in a test is a failed test
mod tests {
    use super::*;

    #[test]
    fn bundled_cloudflare_data_validates() {
        let p = parse_provider("rules/cloudflare.toml", CLOUDFLARE_TOML).unwrap();
        assert_eq!(p.name, "cloudflare");
        assert_eq!(p.api_url, "https://api.cloudflare.com/client/v4/ips");
        let r = p.bundled_ranges().unwrap();
        assert_eq!(r.source, RangeSource::Bundled);
        // Every entry in the file survives validation (nothing dropped as a duplicate or typo).
        assert_eq!(r.ipv4.len(), p.bundled.ipv4.len());
        assert_eq!(r.ipv6.len(), p.bundled.ipv6.len());
        assert!(r.ipv4.contains(&"173.245.48.0/20".parse().unwrap()));
        assert!(r.ipv6.contains(&"2a06:98c0::/29".parse().unwrap()));
        assert_eq!(cloudflare(), p);
        assert_eq!(
            p.proxied_ports(),
            vec![
                80, 443, 2052, 2053, 2082, 2083, 2086, 2087, 2095, 2096, 8080, 8443, 8880
            ]
        );
    }

    #[test]
    fn provider_with_a_bad_bundled_entry_is_refused_naming_it() {
        let text = CLOUDFLARE_TOML.replace("\"104.24.0.0/14\"", "\"104.24.0.1/14\"");
        let e = parse_provider("x.toml", &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.toml: bundled.ipv4[12]: \"104.24.0.1/14\" has host bits set (the network would be \
             104.24.0.0/14)"
        );
        let e = parse_provider(
            "x.toml",
            &CLOUDFLARE_TOML.replace("2026-07-02", "02.07.2026"),
        );
        assert!(matches!(e, Err(RangesError::Provider { .. })), "{e:?}");
        let e = parse_provider("x.toml", &format!("{CLOUDFLARE_TOML}\nunknown = 1\n"));
        assert!(matches!(e, Err(RangesError::Provider { .. })), "{e:?}");
    }

    #[test]
    fn provider_allocations_and_limits_are_checked() {
        // A bundled entry outside the allocations.
        // (104.24.0.0/14 is only in the bundled list.)
        let text =
            CLOUDFLARE_TOML.replace("\"104.24.0.0/14\",", "\"104.24.0.0/14\", \"8.8.8.0/24\",");
        let e = parse_provider("x.toml", &text).unwrap_err();
        assert!(matches!(e, RangesError::OutsideAllocations { .. }), "{e}");
        for (from, to, why) in [
            ("\"104.16.0.0/12\"", "\"104.16.0.1/12\"", "host bits"),
            ("\"104.16.0.0/12\"", "\"10.0.0.0/8\"", "private-use"),
            (
                "{ min = 5, max = 200 }",
                "{ min = 300, max = 200 }",
                "min <= max",
            ),
            (
                "max_change_percent = 50",
                "max_change_percent = 0",
                "1..=100",
            ),
        ] {
            assert!(CLOUDFLARE_TOML.contains(from), "{from}");
            let e = parse_provider("x.toml", &CLOUDFLARE_TOML.replacen(from, to, 1)).unwrap_err();
            assert!(
                matches!(e, RangesError::Provider { ref reason, .. } if reason.contains(why)),
                "{from}: {e}"
            );
        }
    }

    fn at(as_of: &str) -> ProviderRanges {
        ProviderRanges {
            provider: "cloudflare".into(),
            source: RangeSource::Bundled,
            as_of: as_of.into(),
            ipv4: vec![],
            ipv6: vec![],
            etag: None,
            problems: vec![],
        }
    }

    #[test]
    fn age_days_reads_both_forms() {
        let now = time::macros::datetime!(2026-03-10 12:00 UTC);
        assert_eq!(at("2026-03-01").age_days(now), Some(9));
        assert_eq!(at("2026-03-09T13:00:00Z").age_days(now), Some(0));
        assert_eq!(at("2026-03-08T11:00:00+00:00").age_days(now), Some(2));
        assert_eq!(at("2026-03-12").age_days(now), Some(-1));
        assert_eq!(at("last tuesday").age_days(now), None);
    }
}
