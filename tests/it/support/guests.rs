//! Builds the guest components once per test binary and finds them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the compiled guest component `name` (`hello`, `fixtures`, ...), building the
/// guests workspace first if this test binary has not yet done so.
pub fn wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(&BUILT, &[], "wasm32-wasip2", name)
}

/// The path of the guest program `name` built for `wasm32-wasip1`: a core module, as
/// toolchains that predate components build.
pub fn wasip1_program(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(
        &BUILT,
        &["-p", name, "--target", "wasm32-wasip1"],
        "wasm32-wasip1",
        name,
    )
}

fn built(
    once: &OnceLock<Result<PathBuf, String>>,
    args: &[&str],
    target: &str,
    name: &str,
) -> PathBuf {
    let dir = once
        .get_or_init(|| build_guests(args, target))
        .as_ref()
        .unwrap_or_else(|err| panic!("{err}"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest component at {}", path.display());
    path
}

fn build_guests(args: &[&str], target: &str) -> Result<PathBuf, String> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release"])
        .args(args)
        .current_dir(&guests)
        // The guests have their own workspace, target directory and target triple.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let output = command
        .output()
        .map_err(|err| format!("could not run {command:?}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the guests failed: {command:?} in {}\n--- stdout\n{}\n--- stderr\n{}",
            guests.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    Ok(guests.join("target").join(target).join("release"))
}
