//! Renderers: human text, the JSON wire format, Prometheus textfile metrics. Pure: they format a Report/Explanation.

pub mod human;
pub mod json;
pub mod prometheus;
