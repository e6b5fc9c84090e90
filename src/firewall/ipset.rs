//! Parser for `ipset save` output.

use super::{ParseError, SetDef};

pub fn parse(text: &str, source_name: &str) -> Result<Vec<SetDef>, ParseError> {
    let _ = text;
    Err(ParseError::Whole {
        source_name: source_name.to_string(),
        message: "ipset parser not written yet".into(),
    })
}
