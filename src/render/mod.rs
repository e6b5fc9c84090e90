//! Renderers: human text, the JSON wire format, Prometheus textfile metrics, the Nagios plugin line. Pure: they format a Report/Explanation.

pub mod human;
pub mod json;
pub mod nagios;
pub mod prometheus;
