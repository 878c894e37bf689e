//! The single error type of the crate: what is wrong with the query text, and where.

/// Longest excerpt of the input (in characters) that an error message may quote.
const MAX_EXCERPT_CHARS: usize = 32;

/// A query or condition could not be parsed.
///
/// Carries a human-readable message and the byte offset in the input where the problem was found.
/// The message quotes at most a short excerpt of the input (never the whole text), so it is safe to
/// return to clients and to log. `Display` renders `"<message> at offset <offset>"`, e.g.
/// ``"expected FROM, found `devics` at offset 9"``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct QueryError {
    message: String,
    offset: usize,
}

impl QueryError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            offset,
        }
    }

    /// What is wrong, without the offset (e.g. ``"unknown function `FOO`"``).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Byte offset into the input text where the problem was detected.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// Result type of the parsing functions.
pub(crate) type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Shortens `text` to at most [`MAX_EXCERPT_CHARS`] characters for quoting in an error message.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_offset() {
        let err = QueryError::new(17, "expected FROM, found end of input");
        assert_eq!(
            err.to_string(),
            "expected FROM, found end of input at offset 17"
        );
        assert_eq!(err.offset(), 17);
    }

    #[test]
    fn excerpt_is_bounded() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(excerpt(&long).chars().count(), MAX_EXCERPT_CHARS + 1);
    }
}
