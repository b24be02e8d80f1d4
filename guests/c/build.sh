#!/usr/bin/env bash
# Builds the C guests into guests/c/target/ (or $OUT_DIR):
#
#   example.wasm   the example task module (world taskbox:task/task)
#   sort.wasm      the sort program as a plain WASI preview 1 core module (`_start`), which
#                  taskbox runs as a command module (`abi = "command"`), wrapping it itself
#
# beside the intermediates: gen/ (the bindings wit-bindgen generates) and example.core.wasm.
# It checks that example.wasm imports neither wasi:filesystem nor wasi:sockets, and prints
# each module's size and imports.
#
# It installs nothing: guests/toolchains.sh installs clang with a wasm32 wasi-libc sysroot
# (Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32), wit-bindgen 0.61 and
# wasm-tools, and puts them on PATH with the line it prints. The preview 1 "proxy" adapter
# comes from the crate wasi-preview1-component-adapter-provider, which the host depends on
# (found with `cargo metadata`), or from $WASI_ADAPTER_DIR. Override the compiler with CC and
# the target with WASI_TARGET (wasm32-wasi for Debian's clang 14; wasm32-wasip1 for a newer
# clang or wasi-sdk).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wit="$here/../../wit"
out="${OUT_DIR:-$here/target}"
cc="${CC:-clang}"
target="${WASI_TARGET:-wasm32-wasi}"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

for tool in "$cc" wit-bindgen wasm-tools; do
    command -v "$tool" >/dev/null ||
        die "\`$tool\` is not on PATH: run guests/toolchains.sh and the PATH line it prints"
done

# The adapter crate's directory, as cargo fetched it for the host workspace.
adapter_crate() {
    (cd "$here/../.." && cargo metadata --format-version 1) | python3 -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
path = next(p["manifest_path"] for p in packages
            if p["name"] == "wasi-preview1-component-adapter-provider")
print(path.rsplit("/", 1)[0])'
}
adapters="${WASI_ADAPTER_DIR:-$(adapter_crate)/artefacts}"
adapter="$adapters/wasi_snapshot_preview1.proxy.wasm"
[[ -f $adapter ]] || die "no $adapter (set WASI_ADAPTER_DIR)"

# A 1 MiB stack placed first in memory, so an overflow traps instead of overwriting data.
cflags=(--target="$target" -Os -Wall -Wextra -Wl,--stack-first -Wl,-z,stack-size=1048576
    -Wl,--strip-debug)

# Fails when the component imports what the host refuses in a task component.
check_imports() {
    local refused
    refused=$(wasm-tools component wit "$1" | grep -E '^ *import wasi:(filesystem|sockets)/' || true)
    [[ -z "$refused" ]] || die "$1 imports what the host refuses:"$'\n'"$refused"
}

# Prints a module's size and its imports, one line.
summary() {
    local imports
    if [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' ') == 0061736d01000000 ]]; then
        imports=$(wasm-tools print "$1" | sed -n 's/^ *(import "[^"]*" "\([^"]*\)".*/\1/p' | paste -sd ' ')
    else
        imports=$(wasm-tools component wit "$1" | sed -n 's/^ *import \(.*\);$/\1/p' | paste -sd ' ')
    fi
    printf '%-14s %7d bytes  imports: %s\n' "$(basename "$1")" "$(stat -c %s "$1")" "$imports"
}

mkdir -p "$out/gen"

# The task module: the bindings of the world `task`, the library, the example's tasks. The
# reactor model exports _initialize, which the component runs before `run`. The proxy
# adapter serves stdio (printf goes to the job log) and has no file system.
generated=$(wit-bindgen c "$wit" --world task --out-dir "$out/gen" 2>&1) ||
    die "wit-bindgen failed:"$'\n'"$generated"
"$cc" "${cflags[@]}" -mexec-model=reactor -I "$here" -I "$out/gen" \
    "$here/taskbox.c" "$here/example/example.c" "$out/gen/task.c" "$out/gen/task_component_type.o" \
    -o "$out/example.core.wasm"
wasm-tools component new "$out/example.core.wasm" \
    --adapt wasi_snapshot_preview1="$adapter" \
    -o "$out/example.wasm"
wasm-tools validate "$out/example.wasm"
check_imports "$out/example.wasm"

# The sort program: a plain wasip1 command, which taskbox wraps with the command adapter.
"$cc" "${cflags[@]}" "$here/command/sort.c" -o "$out/sort.wasm"

summary "$out/example.wasm"
summary "$out/sort.wasm"
