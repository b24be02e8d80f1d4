#!/usr/bin/env bash
# The quickstart demo: builds taskbox and the example task modules, runs jobs in the sandbox
# directly, then starts `taskbox dev` (the HTTP API and a worker, with a private redis-server)
# and sends it jobs over HTTP, with curl and with the CLI: a result, a retry, a cancel, a dead
# letter.
set -euo pipefail
cd "$(dirname "$0")/.."

# What it needs, installed when missing: redis-server for `taskbox dev`, curl to talk to the
# API, a C compiler for the bundled SQLite, and the Rust targets in rust-toolchain.toml.
bash scripts/system-packages.sh redis curl cc
rustup toolchain install

# Runs a command until it succeeds, for at most a minute.
wait_until() {
    local deadline=$((SECONDS + 60))
    until "$@"; do
        ((SECONDS < deadline)) || { echo "gave up waiting for: $*" >&2; exit 1; }
        sleep 0.1
    done
}

echo "building taskbox and the guest modules (the first build takes a few minutes)..."
# The debug build, which the tests share (it optimises wasmtime and the sandbox's hot paths);
# a production host or a benchmark wants `cargo build --release -p taskbox`.
cargo build --locked -p taskbox
(cd guests && cargo build --release --locked)

taskbox=target/debug/taskbox
hello=guests/target/wasm32-wasip2/release/hello.wasm
fixtures=guests/target/wasm32-wasip2/release/fixtures.wasm

show() {
    printf '\n$ taskbox %s\n' "$*"
    "$taskbox" "$@" || true
}

echo; echo "== One job at a time, in the sandbox, no Redis: taskbox run"
show run "$hello" greet --input '{"name":"Ada"}'
show run "$hello" countdown --input '{"steps":4}'
show run "$fixtures" spin --timeout 1s
show run "$fixtures" hog --memory 32MiB

echo; echo "== Through the queue: taskbox dev runs the API, a worker and a private redis-server"
log=$(mktemp)
"$taskbox" dev --module guests/hello --module guests/fixtures >"$log" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$log"' EXIT
api_is_up() {
    kill -0 $dev 2>/dev/null || { cat "$log"; exit 1; }
    grep -q "API on" "$log"
}
wait_until api_is_up
cat "$log"

show module ls
printf '\n$ curl -s -X POST localhost:7878/v1/jobs -H "content-type: application/json" -d ...\n'
id=$(curl -s -X POST localhost:7878/v1/jobs -H 'content-type: application/json' \
    -d '{"module": "hello", "task": "greet", "input": {"name": "curl"}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
echo "$id"
printf '$ curl -s "localhost:7878/v1/jobs/%s?wait=10s"\n' "$id"
curl -s "localhost:7878/v1/jobs/$id?wait=10s"; echo
show job enqueue hello/greet --input '{"name":"Ada"}' --wait
show job enqueue hello/flaky --input '{"succeed_on":2}' --wait
id=$("$taskbox" job enqueue fixtures/spin)
printf '\n$ taskbox job cancel %s   # a job spinning forever\n' "$id"
is_running() { "$taskbox" job get "$1" 2>/dev/null | grep -q '"status": "running"'; }
wait_until is_running "$id"
"$taskbox" job cancel "$id"
"$taskbox" job wait "$id" | grep '"status"'
show job enqueue fixtures/panic --wait
show cron next "0 9 * * MON-FRI" --tz Europe/Paris -n 3
show cron add every-2s "*/2 * * * * *" hello/greet --input '{"name":"cron"}'
printf '\n$ taskbox cron show every-2s   # once its first job has finished\n'
has_completed() { "$taskbox" cron show "$1" 2>/dev/null | grep -q "last_job_status *completed"; }
wait_until has_completed every-2s
"$taskbox" cron show every-2s
show cron rm every-2s
show dead ls
show job ls
show queues
show workers
printf '\n$ curl -s localhost:7878/metrics | grep -E "^taskbox_(job_runs_total|job_fuel_used_sum|job_peak_memory_bytes_sum)"\n'
curl -s localhost:7878/metrics | grep -E '^taskbox_(job_runs_total|job_fuel_used_sum|job_peak_memory_bytes_sum)' | grep -v '} 0$'
