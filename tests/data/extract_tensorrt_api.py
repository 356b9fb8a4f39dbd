"""Writes tests/data/tensorrt_api_<version>.txt: the Python names a TensorRT release binds.

Not a test: run by hand when a TensorRT release must be added to the API contract
(tests/export/test_tensorrt_api.py). Two public sources, cross-checked:

1. NVIDIA/TensorRT's pybind11 sources (python/src/**/*.cpp) at a release commit give the
   names *with their class*: `py::class_<T>(m, "Builder")`, `.def("create_network", ...)`,
   `.value("FP16", ...)`, `.export_values()`, base classes (members are inherited).
2. The release's `tensorrt-cuXX-bindings` wheel (`pip download --no-deps`, never
   installed) holds `tensorrt.so`, whose string table must contain every such name (as a
   string or the tail of one: the linker merges "Logger" into "ILogger"). Names the
   wheel lacks are dropped, so a source commit older than the wheel can only err towards
   fewer names; the count dropped is written into the header.

    python tests/data/extract_tensorrt_api.py GIT_DIR COMMIT WHEEL_DIR OUT_TXT
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

DECL = re.compile(r"py::(class_|enum_)<")
MEMBER = re.compile(r"(?:(\w+)\s*)?\.\s*(def|def_static|def_property|def_property_readonly|"
                    r"def_readwrite|def_readonly|value|attr)\s*\(\s*\"(\w+)\"")
EXPORT = re.compile(r"\.\s*export_values\s*\(")
VAR_START = re.compile(r"(\w+)\s*\.\s*def")


def _template_args(text: str, start: int) -> tuple[list[str], int]:
    """Top-level comma-separated template arguments from text[start] (just after '<')."""
    depth, args, cur, i = 1, [], "", start
    while depth:
        ch = text[i]
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
            if not depth:
                break
        if ch == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    args.append(cur.strip())
    return args, i + 1


def parse_sources(texts: list[str]) -> tuple[set[str], dict[str, set[str]]]:
    """(top-level names, {python class: member names}) with inheritance resolved."""
    top: set[str] = set()
    members: dict[str, set[str]] = {}
    cpp_to_py: dict[str, str] = {}
    bases: dict[str, list[str]] = {}
    parent: dict[str, str] = {}
    for text in texts:
        events: list[tuple[int, str, tuple]] = []
        var_to_py: dict[str, str] = {"m": ""}
        for match in DECL.finditer(text):
            args, end = _template_args(text, match.end())
            decl = re.match(r"\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*\"(\w+)\"", text[end:])
            if not decl:
                continue
            var, scope, name = decl.groups()
            events.append((match.start(), "decl", (match.group(1), args, var, scope, name)))
        for match in MEMBER.finditer(text):
            events.append((match.start(), "member", match.groups()))
        for match in EXPORT.finditer(text):
            events.append((match.start(), "export", ()))
        for match in VAR_START.finditer(text):
            events.append((match.start(), "var", (match.group(1),)))
        current = ""
        for _, kind, data in sorted(events, key=lambda e: e[0]):
            if kind == "decl":
                _, args, var, scope, name = data
                outer = var_to_py.get(scope, "")
                qual = f"{outer}.{name}" if outer else name
                if not outer:
                    top.add(name)
                else:
                    members.setdefault(outer, set()).add(name)
                    parent[qual] = outer
                cpp_to_py[args[0].split("::")[-1]] = qual
                bases[qual] = [a.split("::")[-1] for a in args[1:] if re.fullmatch(r"[\w:]+", a)]
                members.setdefault(qual, set())
                if var:
                    var_to_py[var] = qual
                current = qual
            elif kind == "var" and data[0] in var_to_py:
                current = var_to_py[data[0]]
            elif kind == "member":
                var, _, name = data
                owner = var_to_py.get(var, current)
                (members.setdefault(owner, set()) if owner else top).add(name)
            elif kind == "export" and current in parent:
                members.setdefault(parent[current], set()).update(members[current])

    def inherited(cls: str, seen: frozenset = frozenset()) -> set[str]:
        out = set(members.get(cls, ()))
        for base in bases.get(cls, ()):
            if base in cpp_to_py and cpp_to_py[base] not in seen:
                out |= inherited(cpp_to_py[base], seen | {cls})
        return out

    return top, {cls: inherited(cls) for cls in members}


def wheel_strings(wheel_dir: Path) -> tuple[list[str], set[str], str]:
    """(identifier strings of tensorrt.so, top-level names of __init__.py, __version__)."""
    so = next(wheel_dir.rglob("tensorrt.so"))
    out = subprocess.run(["strings", "-n", "2", str(so)], capture_output=True, text=True,
                         check=True).stdout.split()
    idents = sorted({s for s in out if re.fullmatch(r"[A-Za-z_]\w*", s)})
    tree = ast.parse(next(wheel_dir.rglob("tensorrt_bindings/__init__.py")).read_text())
    names, version = set(), ""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                    if t.id == "__version__":
                        version = ast.literal_eval(node.value)
    return idents, names, version


def main(git_dir: str, commit: str, wheel_dir: str, out: str) -> None:
    files = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", commit,
                            "python/src"], capture_output=True, text=True, check=True).stdout.split()
    texts = [subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{f}"],
                            capture_output=True, text=True, check=True).stdout
             for f in files if f.endswith(".cpp")]
    top, members = parse_sources(texts)
    idents, py_names, version = wheel_strings(Path(wheel_dir))
    exact = set(idents)

    def in_wheel(name: str) -> bool:
        return name in exact or any(s.endswith(name) for s in idents)

    candidates = top | {f"{c}.{m}" for c, ms in members.items() for m in ms}
    kept = {n for n in candidates if all(in_wheel(part) for part in n.split("."))}
    dropped = len(candidates) - len(kept)
    lines = kept | {n for n in py_names if not n.startswith("_")} | {"__version__"}
    header = [f"# TensorRT {version} Python API names: `trt.Name` and `trt.Class.member`.",
              f"# Classes/members from NVIDIA/TensorRT python/src/**/*.cpp at commit {commit},",
              f"# kept only where the {Path(wheel_dir).name} wheel's tensorrt.so holds the name",
              f"# ({dropped} source names dropped); plus tensorrt_bindings/__init__.py names.",
              "# Made by tests/data/extract_tensorrt_api.py; read by tests/export/test_tensorrt_api.py."]
    Path(out).write_text("\n".join(header + sorted(lines)) + "\n")
    print(f"{out}: {len(lines)} names, {dropped} dropped")


if __name__ == "__main__":
    main(*sys.argv[1:5])
