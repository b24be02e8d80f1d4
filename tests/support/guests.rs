//! Builds the guest components once per test binary and finds them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the compiled guest component `name` (`hello`, `fixtures`, ...), building the
/// guests workspace first if this test binary has not yet done so.
pub fn wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_guests)
        .as_ref()
        .unwrap_or_else(|err| panic!("{err}"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest component at {}", path.display());
    path
}

fn build_guests() -> Result<PathBuf, String> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release"])
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
    Ok(guests.join("target/wasm32-wasip2/release"))
}
