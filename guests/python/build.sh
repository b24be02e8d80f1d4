#!/usr/bin/env bash
# Builds a Python task module: APP_DIR/app.py (and what it imports, with the `taskbox`
# package beside this script) into APP_DIR/NAME.wasm (NAME: the directory's name), a
# component of the world `taskbox:task/task` that imports neither wasi:filesystem nor
# wasi:sockets.
#
#   guests/python/build.sh [APP_DIR] [OUT.wasm]   # default: example, example/example.wasm
#
# Needs `componentize-py` and `wasm-tools` on PATH, at the versions in requirements.txt; it
# installs nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
app_dir="$(cd "${1:-$here/example}" && pwd)"
out="${2:-$app_dir/$(basename "$app_dir").wasm}"
wit="$here/../../wit"

for tool in componentize-py wasm-tools; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: \`$tool\` is not on PATH: pip install -r $here/requirements.txt" >&2
        exit 1
    }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The app module is `app`; `taskbox` and the generated bindings (`wit_world`) sit beside it.
componentize-py -d "$wit" -w task componentize app \
    -p "$app_dir" -p "$here" -o "$work/app.wasm"
# CPython's libc imports wasi:filesystem and wasi:sockets, which taskbox refuses: plug both
# with a component that refuses them (see tools/deny_wasi.py).
python3 "$here/tools/deny_wasi.py" "$work/app.wasm" "$out"
echo "built $out ($(wc -c <"$out") bytes)"
