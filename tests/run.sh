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
bash scripts/system-packages.sh redis postgres cc python node browser || exit 1

step "Rust toolchain and targets (rust-toolchain.toml)"
rustup toolchain install || exit 1

step "guest toolchains (Python, JavaScript, C)"
bash guests/toolchains.sh || exit 1

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log" "$log.run"' EXIT
unbuilt=()
if (($#)); then
    cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
    if ((PIPESTATUS[0] != 0)) && ! grep -q '^test result: .* [1-9][0-9]* failed;' "$log"; then
        unbuilt+=("cargo test $*")
    fi
else
    # One cargo call per test binary (tests/NAME/main.rs is the binary NAME), so that one that
    # does not build keeps no other from running. Each call names the whole workspace, so all
    # of them build with one feature set and nothing is built twice.
    runs=(--lib --bins --doc)
    for main in tests/*/main.rs; do
        runs+=("--test $(basename "$(dirname "$main")")")
    done
    for run in "${runs[@]}"; do
        printf '\n--- cargo test --workspace %s\n' "$run"
        # shellcheck disable=SC2086 # `--test NAME` is two words
        cargo test --locked --workspace --no-fail-fast $run 2>&1 | tee "$log.run"
        status=${PIPESTATUS[0]}
        cat "$log.run" >>"$log"
        # A call that failed without a failing test did not build, or its binary crashed.
        if ((status != 0)) && ! grep -q '^test result: .* [1-9][0-9]* failed;' "$log.run"; then
            unbuilt+=("$run")
        fi
    done
    # The queue, API and cron suites once more, on a Redis Cluster of three primaries
    # (tests/it/support/private_redis.rs).
    printf '\n--- the same suites on a Redis Cluster: cargo test --test it -- queue:: api:: cron::\n'
    TASKBOX_TEST_REDIS=cluster cargo test --locked --workspace --no-fail-fast --test it \
        -- queue:: api:: cron:: 2>&1 | tee "$log.run"
    status=${PIPESTATUS[0]}
    cat "$log.run" >>"$log"
    if ((status != 0)) && ! grep -q '^test result: .* [1-9][0-9]* failed;' "$log.run"; then
        unbuilt+=("--test it on a cluster")
    fi
fi

# Each test binary ends with `test result: ok. 12 passed; 0 failed; ...`.
read -r passed failed < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2/p' "$log" |
    awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }')
for run in "${unbuilt[@]}"; do
    echo "did not build or run: $run (counted as 1 failed)"
    failed=$((failed + 1))
done
printf '\ntests: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
