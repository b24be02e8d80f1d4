//! The `taskbox` command as a user runs it: real binary, real guest components.

#[path = "../support/guests.rs"]
mod guests;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `taskbox` with `args`; the failure message of any assertion on the result shows the
/// command, its exit status, stdout and stderr.
fn taskbox(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskbox"));
    command.args(args);
    let output = command.output().expect("running taskbox");
    Run {
        description: format!("{command:?}"),
        output,
    }
}

struct Run {
    description: String,
    output: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    #[track_caller]
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.description,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

fn path(name: &str) -> String {
    guests::wasm(name).display().to_string()
}

#[test]
fn run_prints_the_output_and_the_log_separately() {
    let run = taskbox(&[
        "run",
        &path("hello"),
        "greet",
        "--input",
        r#"{"name":"Ada"}"#,
    ]);
    run.assert_code(0);
    assert_eq!(run.stdout(), "{\"message\":\"Hello, Ada!\"}\n");
    assert!(
        run.stderr().contains("[INFO] greeting Ada in job local"),
        "{}",
        run.stderr()
    );
}

#[test]
fn run_reads_input_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"numbers":[1,2,39]}"#).unwrap();
    let run = taskbox(&[
        "run",
        &path("hello"),
        "add",
        "--input-file",
        &input.display().to_string(),
    ]);
    run.assert_code(0);
    assert_eq!(run.stdout(), "{\"sum\":42}\n");
}

#[test]
fn a_timeout_ends_with_one_clear_line() {
    let run = taskbox(&["run", &path("fixtures"), "spin", "--timeout", "500ms"]);
    run.assert_code(1);
    let last = run.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error: timeout after 500ms (task fixtures/spin, "),
        "{last}"
    );
    assert!(last.contains(" fuel, "), "{last}");
    assert!(run.stdout().is_empty());
}

#[test]
fn a_huge_task_error_is_printed_cut_to_its_cap() {
    let run = taskbox(&[
        "run",
        &path("fixtures"),
        "huge_error",
        "--input",
        r#"{"bytes": 20000000, "retryable": false}"#,
    ]);
    run.assert_code(1);
    let stderr = run.stderr();
    assert!(stderr.len() < 32 << 10, "{} bytes on stderr", stderr.len());
    assert!(
        stderr.contains("[taskbox: truncated at 16384 bytes, 19983616 more bytes dropped]"),
        "{:?}",
        stderr.lines().last()
    );
}

#[test]
fn limits_from_flags_apply() {
    let run = taskbox(&["run", &path("fixtures"), "spin", "--fuel", "1000000"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: out of fuel after 1000000 units"),
        "{}",
        run.stderr()
    );
    let run = taskbox(&["run", &path("fixtures"), "hog", "--memory", "8MiB"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: memory limit of 8388608 bytes reached"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_module_that_cannot_load_names_the_reason() {
    let run = taskbox(&["run", &path("fixtures_unknown_import"), "reveal"]);
    run.assert_code(1);
    assert!(
        run.stderr().contains(
            "error: module imports `acme:vault/secrets`, which this host does not provide"
        ),
        "{}",
        run.stderr()
    );
    let missing = Path::new("no-such-module.wasm");
    let run = taskbox(&["run", &missing.display().to_string(), "greet"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("error: reading the module no-such-module.wasm"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let run = taskbox(&["run", &path("hello"), "greet", "--memory", "lots"]);
    run.assert_code(2);
    assert!(run.stderr().contains("--memory"), "{}", run.stderr());
    let run = taskbox(&["run", &path("hello"), "greet", "--timeout", "soon"]);
    run.assert_code(2);
    assert!(run.stderr().contains("--timeout"), "{}", run.stderr());
}

#[test]
fn an_unknown_serve_role_is_refused_naming_the_roles() {
    // Refused while parsing the flags, before any Redis is looked for.
    let run = taskbox(&["serve", "--roles", "api,bogus"]);
    run.assert_code(2);
    let stderr = run.stderr();
    assert!(stderr.contains("--roles"), "{stderr}");
    assert!(stderr.contains("api, worker, scheduler"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let run = taskbox(&["run", "--help"]);
    run.assert_code(0);
    let help = run.stdout();
    for flag in ["--input", "--input-file", "--fuel", "--timeout", "--memory"] {
        assert!(
            help.contains(flag),
            "`taskbox run --help` does not mention {flag}:\n{help}"
        );
    }
}
