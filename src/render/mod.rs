//! Renderers: human, JSON.
