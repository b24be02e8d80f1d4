//! The module's settings, which the operator sets in the host config
//! (`[modules.NAME] config = {...}, secrets = {...}`). Secret values reach the task and
//! nothing else: the host hides them in the job's log.
//!
//! ```no_run
//! let endpoint = taskbox_guest::config::get("endpoint").unwrap_or_else(|| "https://example.com".into());
//! let token = taskbox_guest::config::require("token")?;
//! # Ok::<(), taskbox_guest::TaskError>(())
//! ```

use crate::TaskError;
use crate::bindings::taskbox::task::config;

/// The value of `key`, if the operator set it.
pub fn get(key: &str) -> Option<String> {
    config::get(key)
}

/// The value of `key`, or a fatal error naming the missing key.
pub fn require(key: &str) -> Result<String, TaskError> {
    get(key).ok_or_else(|| {
        TaskError::fatal(format!(
            "the module setting `{key}` is not set: the operator sets it in the host config"
        ))
    })
}
