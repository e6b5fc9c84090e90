//! The only I/O for ranges: HTTPS fetch (reqwest + rustls, `If-None-Match`), the atomic cache.

use super::{Provider, ProviderRanges};
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub offline: bool,
    pub file: Option<PathBuf>,
    pub url: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

/// Fresh fetch → cache → bundled. Never fails: problems are recorded in `problems`.
pub fn load(provider: &Provider, opts: &LoadOptions) -> ProviderRanges {
    let _ = (provider, opts);
    todo!("ranges helper")
}
