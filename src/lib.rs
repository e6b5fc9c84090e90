//! origin-audit: finds what in an origin server's firewall and listeners makes Cloudflare show
//! error 521 or 522, and says which rule and how to fix it.
//!
//! Shape (see ARCHITECTURE.md): `collect` reads the host into a [`snapshot::Snapshot`]; the pure
//! parsers in `firewall` turn raw dumps into the model; `analysis` decides; `render` presents.

pub mod analysis;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod config;
pub mod findings;
pub mod firewall;
pub mod fix;
pub mod kstat;
pub mod lock;
pub mod nlattr;
pub mod out;
pub mod ranges;
pub mod render;
pub mod routing;
pub mod safefs;
pub mod snapshot;
pub mod tc;
