//! An upload-processing task: works through an upload part by part, reports progress on the
//! job (`job:{id}`), broadcasts each finished part on `upload:{id}` for browsers to show, and
//! finally enqueues `index` for what it produced.

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskbox_guest::{Job, TaskError, events, jobs};

#[derive(Deserialize)]
struct Upload {
    /// The upload's id, which names its event channel.
    id: String,
    /// The parts' contents.
    parts: Vec<String>,
}

#[derive(Serialize)]
struct Processed {
    upload: String,
    words: usize,
    index_job: String,
}

/// Counts the words of every part, with progress and an event per part.
fn process(job: &Job, upload: Upload) -> Result<Processed, TaskError> {
    if upload.parts.is_empty() {
        return Err(TaskError::fatal("the upload has no parts"));
    }
    let channel = format!("upload:{}", upload.id);
    let total = upload.parts.len();
    let mut words = 0;
    for (done, part) in upload.parts.iter().enumerate() {
        let count = part.split_whitespace().count();
        words += count;
        let percent = ((done + 1) * 100 / total) as u8;
        job.progress(percent, &format!("part {} of {total}", done + 1));
        events::publish_json(&channel, "part", &json!({"part": done + 1, "words": count}))?;
    }
    let index_job = jobs::enqueue("index", &json!({"upload": upload.id, "words": words}))?;
    events::publish_json(
        &channel,
        "done",
        &json!({"words": words, "index_job": index_job}),
    )?;
    Ok(Processed {
        upload: upload.id,
        words,
        index_job,
    })
}

#[derive(Deserialize)]
struct Index {
    upload: String,
    words: usize,
}

/// Stands in for indexing the processed upload.
fn index(_job: &Job, input: Index) -> Result<String, TaskError> {
    Ok(format!(
        "indexed upload {} ({} words)",
        input.upload, input.words
    ))
}

taskbox_guest::tasks!(process, index);
