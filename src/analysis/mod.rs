//! Pure analysis: Snapshot → Report.
