//! Provider ranges: the bundled snapshot from `rules/cloudflare.toml`, HTTPS fetch with an ETag
//! cache, strict validation, and the fallback order fresh fetch → cache → bundled.
//!
//! Owns: [`ProviderRanges`] (what the analysis consumes, with where it came from and its age),
//! [`Provider`] (endpoints, proxied ports, bundled list), validation.
//! Must not: decide verdicts. Network and cache I/O live in `fetch` (the only I/O here).

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

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

pub mod fetch;

/// A provider as described by `rules/<provider>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Provider {
    pub name: String,
    /// JSON API (`result.ipv4_cidrs`, `result.ipv6_cidrs`, `result.etag`).
    pub api_url: String,
    /// Plain-text fallbacks, one CIDR a line.
    pub text_url_v4: String,
    pub text_url_v6: String,
    pub http_ports: Vec<u16>,
    pub https_ports: Vec<u16>,
    /// The compiled-in snapshot.
    pub bundled: Bundled,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Bundled {
    /// Date (YYYY-MM-DD) the snapshot was taken.
    pub as_of: String,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

/// Cloudflare, from the bundled `rules/cloudflare.toml`.
pub fn cloudflare() -> Provider {
    todo!("ranges helper")
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
        v
    }
}

impl ProviderRanges {
    /// Age in whole days at `now`; `as_of` is RFC 3339 or `YYYY-MM-DD`.
    pub fn age_days(&self, now: time::OffsetDateTime) -> Option<i64> {
        let t = time::OffsetDateTime::parse(
            &self.as_of,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
        .or_else(|| {
            let d = time::Date::parse(
                &self.as_of,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .ok()?;
            Some(d.midnight().assume_utc())
        })?;
        Some((now - t).whole_days())
    }
}
