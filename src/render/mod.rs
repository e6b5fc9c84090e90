//! Renderers: human text and the JSON wire format. Pure: they format a Report/Explanation.

pub mod human;
pub mod json;
