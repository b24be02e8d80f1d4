#!/usr/bin/env bash
# The quickstart demo: builds taskbox and the example `hello` task module, then runs a few
# jobs of it in the sandbox, including ones the sandbox has to stop.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
echo "building taskbox and the guest modules (the first build takes a few minutes)..."
cargo build --release --locked -p taskbox
(cd guests && cargo build --release --locked)

taskbox=target/release/taskbox
hello=guests/target/wasm32-wasip2/release/hello.wasm
fixtures=guests/target/wasm32-wasip2/release/fixtures.wasm

show() {
    printf '\n$ taskbox %s\n' "$*"
    "$taskbox" "$@" || true
}

show run "$hello" greet --input '{"name":"Ada"}'
show run "$hello" add --input '{"numbers":[1,2,39]}'
show run "$hello" countdown --input '{"steps":4}'
show run "$hello" flaky --input '{"succeed_on":2}'
show run "$fixtures" spin --timeout 1s
show run "$fixtures" hog --memory 32MiB
show run "$fixtures" panic
