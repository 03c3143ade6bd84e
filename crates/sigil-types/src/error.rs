/// Why a value could not be parsed. The message names the field's rule, never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct ParseError {
    /// The kind of value that was rejected, e.g. "username".
    pub what: &'static str,
    /// The rule it broke, in lowercase words.
    pub why: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, why: impl Into<String>) -> Self {
        Self { what, why: why.into() }
    }
}
