#!/usr/bin/env bash
# The test command. On a fresh Debian machine with rustup it installs what the tests need
# (system packages, the Rust targets in rust-toolchain.toml, the guest toolchains), then runs
# every test suite of the workspace, going on past a failing one, and ends with one line:
#
#   tests: N passed, N failed
#
# Arguments go to `cargo test` (a filter, `--test queue`, ...). Run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

step "system packages"
bash scripts/system-packages.sh redis postgres cc python node || exit 1

step "Rust toolchain and targets (rust-toolchain.toml)"
rustup toolchain install || exit 1

step "guest toolchains (Python, JavaScript, C)"
bash guests/toolchains.sh || exit 1

step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}

# Each test binary ends with `test result: ok. 12 passed; 0 failed; ...`.
read -r passed failed < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2/p' "$log" |
    awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }')
if ((cargo_status != 0 && failed == 0)); then
    echo "cargo test failed before every suite could run (a build error above)"
fi
printf '\ntests: %d passed, %d failed\n' "$passed" "$failed"
((cargo_status == 0))
