//! Reads `/etc/passwd`: the standard library's file access imports `wasi:filesystem`, which
//! the registry must refuse at upload, naming the import.

use taskbox_guest::{Job, TaskError};

/// Returns the file's text.
fn read(_job: &Job, path: String) -> Result<String, TaskError> {
    std::fs::read_to_string(path).map_err(|err| TaskError::fatal(err.to_string()))
}

taskbox_guest::tasks!(read);
