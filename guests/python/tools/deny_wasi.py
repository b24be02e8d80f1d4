"""Removes a component's `wasi:filesystem` and `wasi:sockets` imports.

taskbox refuses modules that import either. componentize-py's CPython imports both (its
libc opens files and sockets), even when the Python code never does. This tool builds a
small component that exports every `wasi:filesystem` and `wasi:sockets` interface the
given component imports, and composes the two, so the result imports neither.

The small component refuses everything politely where it can: it offers no preopened
directory (so `open()` raises `FileNotFoundError`), refuses to create sockets and resolve
names with `access-denied` (so `socket.socket()` and `socket.getaddrinfo()` raise
`PermissionError`), and hands out a network that nothing can use. Every other function
needs a file or a socket, which a guest never gets, and traps if reached.

Usage: python3 deny_wasi.py IN.wasm OUT.wasm (needs `wasm-tools` on PATH).
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

DENIED_PACKAGES = ("wasi:filesystem/", "wasi:sockets/")

# The linear memory of the refusing module: two constants, then scratch for arguments.
EMPTY = 16  # eight zero bytes: an empty list, or `none`
ACCESS_DENIED = 24  # `result::err(error-code::access-denied)` of wasi:sockets
SCRATCH = 1024  # where `cabi_realloc` puts the arguments that nothing reads

# Functions that answer instead of trapping, by the end of their core export name.
ANSWERS = {
    "#get-directories": f"i32.const {EMPTY}",
    "#create-tcp-socket": f"i32.const {ACCESS_DENIED}",
    "#create-udp-socket": f"i32.const {ACCESS_DENIED}",
    "#resolve-addresses": f"i32.const {ACCESS_DENIED}",
    "#instance-network": "i32.const 0\n    call $new-network",
}

CABI_REALLOC = f"""\
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (if (i32.gt_u (i32.add (i32.const {SCRATCH}) (local.get 3))
                  (i32.shl (memory.size) (i32.const 16)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16))
                                        (i32.const 1))))))
    i32.const {SCRATCH})"""


def wasm_tools(*args: str) -> str:
    """Runs `wasm-tools` and returns its standard output; exits with its errors if it fails."""
    done = subprocess.run(["wasm-tools", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"deny_wasi: wasm-tools {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def denied_imports(component: Path) -> list[str]:
    """The `wasi:filesystem` and `wasi:sockets` interfaces `component` imports."""
    wit = wasm_tools("component", "wit", str(component))
    imports = re.findall(r"^\s*import ([^;\s]+);", wit, re.MULTILINE)
    return [name for name in imports if name.startswith(DENIED_PACKAGES)]


def refusing_module(template: str) -> str:
    """The core module (text format) behind the refusing component.

    `template` is `wasm-tools component embed --dummy-names legacy` output for the world
    that exports the denied interfaces: it has the export names and core signatures.
    """
    types = dict(re.findall(r"\(type \(;(\d+);\) \(func ?(.*)\)\)$", template, re.MULTILINE))
    func_types = dict(re.findall(r"\(func \(;(\d+);\) \(type (\d+)\)", template))
    exports = re.findall(r'\(export "([^"]+)" \(func (\d+)\)\)', template)
    new_network = re.search(
        r'\(import ("\[export\][^"]+") ("\[resource-new\]network")', template
    )
    lines = ["(module"]
    if new_network:
        lines.append(
            f"  (import {new_network[1]} {new_network[2]}"
            " (func $new-network (param i32) (result i32)))"
        )
    lines += [
        '  (memory (export "memory") 1)',
        f'  (data (i32.const {ACCESS_DENIED}) "\\01\\00\\00\\00\\01\\00\\00\\00")',
        CABI_REALLOC,
    ]
    for name, index in exports:
        # The resources here own nothing, so they need no destructors (which would cost two
        # more core instances); post-return functions and `_initialize` are optional.
        skipped = name.startswith("cabi_post_") or "#[dtor]" in name
        if skipped or name in ("cabi_realloc", "_initialize"):
            continue
        signature = types[func_types[index]]
        answer = next((a for end, a in ANSWERS.items() if name.endswith(end)), "unreachable")
        lines.append(f'  (func (export "{name}") {signature}\n    {answer})')
    lines.append(")")
    return "\n".join(lines) + "\n"


def refusing_component(component: Path, interfaces: list[str], work: Path) -> Path:
    """Builds the component that exports `interfaces` of `component`'s WIT, refusing them."""
    wit = work / "wit"
    wasm_tools("component", "wit", str(component), "--out-dir", str(wit))
    # The extracted WIT's own world would be a second main package: keep only its deps.
    (wit / "component.wit").unlink()
    exports = "".join(f"  export {name};\n" for name in interfaces)
    (wit / "deny.wit").write_text(f"package taskbox:deny;\n\nworld deny {{\n{exports}}}\n")
    template = wasm_tools(
        "component", "embed", str(wit), "--world", "deny", "--dummy-names", "legacy", "-t"
    )
    module = work / "deny.wat"
    module.write_text(refusing_module(template))
    core = work / "deny.core.wasm"
    wasm_tools("component", "embed", str(wit), "--world", "deny", str(module), "-o", str(core))
    refusing = work / "deny.wasm"
    wasm_tools("component", "new", str(core), "-o", str(refusing))
    return refusing


def main(source: Path, target: Path) -> None:
    """Writes `source` composed with the refusing component to `target`."""
    interfaces = denied_imports(source)
    if not interfaces:
        target.write_bytes(source.read_bytes())
        return
    with tempfile.TemporaryDirectory() as work:
        refusing = refusing_component(source, interfaces, Path(work))
        wasm_tools("compose", str(source), "-d", str(refusing), "-o", str(target))
    left = denied_imports(target)
    if left:
        sys.exit(f"deny_wasi: {target} still imports {', '.join(left)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
