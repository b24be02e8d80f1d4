//! `words TASK`: reads the job's input (`{"text": "..."}`) on stdin and answers on stdout.
//!
//! - `count` writes `{"words": N, "lines": N}`;
//! - `shout` writes the text in capitals;
//! - `files` tries to list `/` and to create a file, and says whether each worked (a command
//!   gets no directory, so neither does).
//!
//! Input that is not an object with a string `text`, or another task, exits 2 with the reason
//! on stderr: the job fails, and is not retried.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let mut input = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("reading stdin: {err}");
        return ExitCode::from(2);
    }
    let text = match serde_json::from_str::<Value>(&input) {
        Ok(Value::Object(fields)) => match fields.get("text") {
            Some(Value::String(text)) => text.clone(),
            _ => return fail("the input needs a string `text`"),
        },
        _ => return fail("the input must be a JSON object"),
    };
    let output = match task.as_str() {
        "count" => json!({
            "words": text.split_whitespace().count(),
            "lines": text.lines().count(),
        })
        .to_string(),
        "shout" => text.to_uppercase(),
        "files" => json!({
            "listed": std::fs::read_dir("/").is_ok(),
            "created": std::fs::File::create("words.txt").is_ok(),
        })
        .to_string(),
        other => {
            return fail(&format!("no task `{other}` (tasks: count, shout, files)"));
        }
    };
    match std::io::stdout().write_all(output.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("writing stdout: {err}")),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("{reason}");
    ExitCode::from(2)
}
