//! The names people give modules, tasks, queues and databases.

use anyhow::bail;
use taskbox_runtime::guest_text::quote;

/// Whether `name` may name a module, task, queue or database: 1 to 64 letters, digits, `-`,
/// `_` or `.`, and not `.` or `..` (names become parts of keys and paths).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != ".."
}

/// Refuses a `what` name that is not [plain](is_plain_name), quoting it.
pub fn validate_name(what: &str, name: &str) -> anyhow::Result<()> {
    if !is_plain_name(name) {
        bail!(
            "invalid {what} name {}: use 1 to 64 letters, digits, `-`, `_` or `.`",
            quote(name)
        );
    }
    Ok(())
}
