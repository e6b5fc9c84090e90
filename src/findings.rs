//! The findings catalogue: stable codes, titles, default severities, explanations.
