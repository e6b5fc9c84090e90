//! Standard output that fails instead of panicking: a closed pipe (`| head`) or a full disk
//! (`> /dev/full`) becomes an error the caller returns, which `main` reports and maps to exit 3
//! (unknown) — `println!` would panic with exit 101.
//!
//! Owns: writing command output to stdout. Must not: decide what is written.

use std::io::Write;

/// Writes `text` to stdout and flushes it (so a full disk is seen here, not lost at exit).
pub fn write_out(text: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| anyhow::anyhow!("cannot write the output to standard output: {e}"))
}

/// Writes `value` as pretty JSON and a newline to stdout, serialised as it goes (through a
/// buffer: nothing the size of the document is held in memory), then flushes.
pub fn write_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot write the output to standard output: {e}")
    };
    let mut o = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut o, value).map_err(|e| err(&e))?;
    o.write_all(b"\n")
        .and_then(|()| o.flush())
        .map_err(|e| err(&e))
}

/// `print!` that returns the write error from the enclosing function (`?`).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {
        $crate::out::write_out(&format!($($t)*))?
    };
}

/// `println!` that returns the write error from the enclosing function (`?`).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write_out("\n")?
    };
    ($($t:tt)*) => {
        $crate::out::write_out(&format!("{}\n", format_args!($($t)*)))?
    };
}
