#!/usr/bin/env python3
"""The layer rule of docs/ARCHITECTURE.md, checked on the include graph (run by ctest as `layering`).

    vocabulary (include/picklewire: buffer, message, errors, ledger, endpoint_options)
        <- codec (src/, its public headers)  |  transports (transport/, their public headers)
        <- values layer (include/picklewire/values.hpp)
        <- tools/, python/, bench/, examples/, tests/

Every #include "..." is followed transitively (through public headers and local ones), so a file
that reaches a forbidden header through another header is caught too. Prints each violation with
the chain that leads to it; exits 1 when there is one.
Usage: layering_check.py [PROJECT_ROOT]
"""
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
PUBLIC = ROOT / "include" / "picklewire"

VOCABULARY = {"buffer", "message", "errors", "ledger", "endpoint_options"}
CODEC = {"value", "pickler", "unpickler", "ndarray", "repr", "dis"}
TRANSPORT = {"endpoint", "rpc", "shm_admin"}
VALUES = {"values"}
# Whose public headers each layer may reach, and which source folders it may reach into.
ALLOWED = {
    "vocabulary": (VOCABULARY, set()),
    "codec": (VOCABULARY | CODEC, {"src"}),
    "transport": (VOCABULARY | TRANSPORT, {"transport"}),
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path: Path):
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "src":
        return "codec"
    if rel.parts[0] == "transport":
        return "transport"
    if rel.parts[:2] == ("include", "picklewire"):
        stem = path.stem
        for name, group in (("vocabulary", VOCABULARY), ("codec", CODEC), ("transport", TRANSPORT)):
            if stem in group:
                return name
        if stem in VALUES:
            return None  # the values layer may include both
        return "unknown"
    return None


def resolve(including: Path, name: str):
    """The file an #include "name" in `including` refers to, as the build's include paths find it."""
    candidates = [including.parent / name, ROOT / "include" / name]
    top = including.relative_to(ROOT).parts[0]
    if top in ("src", "transport", "tools", "python"):
        candidates.append(ROOT / top / name)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def includes(path: Path):
    return [r for r in (resolve(path, n) for n in INCLUDE.findall(path.read_text(errors="replace"))) if r]


def reachable(start: Path):
    """Every file reachable from `start`, each with the chain of includes that reaches it first."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        f = todo.pop()
        for g in includes(f):
            if g not in chains:
                chains[g] = chains[f] + [g]
                todo.append(g)
    return chains


def allowed(layer: str, target: Path) -> bool:
    headers, folders = ALLOWED[layer]
    rel = target.relative_to(ROOT)
    if rel.parts[:2] == ("include", "picklewire"):
        return target.stem in headers
    return rel.parts[0] in folders


def main() -> int:
    problems = []
    files = [p for d in ("src", "transport") for p in (ROOT / d).rglob("*") if p.suffix in (".hpp", ".cpp", ".inc", ".h")]
    files += [p for p in PUBLIC.glob("*.hpp")]
    for f in sorted(files):
        layer = layer_of(f)
        if layer is None:
            continue
        if layer == "unknown":
            problems.append(f"{f.relative_to(ROOT)}: a public header that no layer claims (add it to tests/layering_check.py)")
            continue
        for target, chain in reachable(f.resolve()).items():
            if target != f.resolve() and not allowed(layer, target):
                path = " -> ".join(str(p.relative_to(ROOT)) for p in chain)
                problems.append(f"{layer} file reaches {target.relative_to(ROOT)}: {path}")
    # A transport's internal headers are used inside transport/ only (the tools and the Python
    # module go through the public API; tests and benchmarks may look inside).
    for top in ("tools", "python", "examples", "src"):
        for f in sorted((ROOT / top).rglob("*")):
            if f.suffix not in (".hpp", ".cpp", ".inc", ".h"):
                continue
            for target in includes(f):
                if target.relative_to(ROOT).parts[0] == "transport":
                    problems.append(f"{f.relative_to(ROOT)} includes the transport-internal {target.relative_to(ROOT)}")
    for p in problems:
        print("layering:", p)
    checked = len(files)
    print(f"layering: {checked} files checked, {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
