//! Text a guest hands the host, bounded before the host keeps, stores or prints it.
//!
//! A guest may pass strings as large as its own memory (tens of MiB). What the host keeps
//! of one (an error or progress message) is cut with [`truncate`], and what it prints of one
//! (a name in an error message or a log line) is quoted with [`quote`], never whole.

use std::fmt;

/// The most bytes of a guest's value that an error message or log line shows.
pub const QUOTE_BYTES: usize = 100;

/// `text` cut to at most `max_bytes` bytes at a character boundary, followed by a marker
/// saying how many bytes were dropped; `text` itself when it fits.
pub fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let kept = text.floor_char_boundary(max_bytes);
    let dropped = text.len() - kept;
    text.truncate(kept);
    // The guest's string may have been many MiB: give that memory back now.
    text.shrink_to_fit();
    text.push_str(&format!(
        " [taskbox: truncated at {max_bytes} bytes, {dropped} more bytes dropped]"
    ));
    text
}

/// A guest's value as an error message or log line shows it: escaped like a Rust string
/// literal (so control characters cannot forge lines), at most [`QUOTE_BYTES`] of it, and
/// its full length when it was longer.
pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// See [`quote`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.len() <= QUOTE_BYTES {
            return write!(f, "{value:?}");
        }
        let shown = &value[..value.floor_char_boundary(QUOTE_BYTES)];
        write!(f, "{shown:?}… ({} bytes)", value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters_and_says_how_much_was_dropped() {
        assert_eq!(truncate("short".into(), 5), "short");
        // "é" is two bytes: a cut at 3 bytes would split the second one.
        assert_eq!(
            truncate("ééé".into(), 3),
            "é [taskbox: truncated at 3 bytes, 4 more bytes dropped]"
        );
    }

    #[test]
    fn quotes_show_a_bounded_escaped_prefix() {
        assert_eq!(quote("a\nb").to_string(), r#""a\nb""#);
        let long = "x".repeat(1 << 20);
        let shown = quote(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}\"… (1048576 bytes)", "x".repeat(QUOTE_BYTES))
        );
    }
}
