#!/usr/bin/env bash
# Installs the toolchains that build the Python, JavaScript and C guests, each from its own
# registry, into places this repository ignores:
#
#   apt     clang, lld, wasi-libc, libclang-rt-dev-wasm32   (C; skipped when clang can
#                                                            already target wasm32-wasi)
#   PyPI    componentize-py, wasm-tools   -> guests/.tools/venv     (guests/python/requirements.txt)
#   npm     componentize-js and friends   -> guests/js/node_modules (guests/js/package-lock.json)
#   cargo   wit-bindgen (C generator only) -> guests/.tools/bin
#
# Then it prints the PATH line that puts the tools first. Run it again at any time: what is
# already there is kept. `guests/build-all.sh` builds every example with these tools.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools="$here/.tools"
mkdir -p "$tools/bin"

step() { printf '\n--- %s\n' "$*"; }

step "C: clang with the wasm32 WASI sysroot"
probe=$(mktemp -d)
echo 'int main(void) { return 0; }' >"$probe/probe.c"
if ! clang --target=wasm32-wasi "$probe/probe.c" -o "$probe/probe.wasm" 2>/dev/null; then
    sudo=""
    ((EUID == 0)) || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null
fi
rm -rf "$probe"
clang --version | head -1

step "C: wit-bindgen 0.61 (the C generator)"
if ! "$tools/bin/wit-bindgen" --version 2>/dev/null | grep -q '^wit-bindgen-cli 0\.61\.'; then
    cargo install --quiet --locked wit-bindgen-cli --version 0.61.0 \
        --no-default-features --features c --root "$tools"
fi
"$tools/bin/wit-bindgen" --version

step "Python: componentize-py and wasm-tools"
[[ -x $tools/venv/bin/pip ]] || python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$here/python/requirements.txt"
"$tools/venv/bin/componentize-py" --version
"$tools/venv/bin/wasm-tools" --version

step "JavaScript: componentize-js"
(cd "$here/js" && npm install --no-audit --no-fund --loglevel=error)
node --version

printf '\nexport PATH="%s:%s:$PATH"\n' "$tools/bin" "$tools/venv/bin"
