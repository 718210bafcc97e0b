"""Extract the TensorRT Python API's names from NVIDIA's binding sources, one JSON file per release.

The ``tensorrt`` wheel is built from pybind11 sources in NVIDIA/TensorRT (``python/src/**.cpp``)
and a templated ``python/packaging/bindings_wheel/tensorrt/__init__.py``. This script reads them
straight from a git checkout (any branch or commit, no work tree needed) and writes what they
bind: module-level names (classes, enums, functions), each class's members (methods,
properties, enum values) and, for enums, the numeric value of each member where the C++ headers
(``include/NvInfer*.h``) give one. ``tests/test_tensorrt_api_window.py`` checks the package
against the intersection of these files.

    python tools/trt_api_names.py --repo PATH/TO/TensorRT.git \
        --ref release/10.3 --ref release/10.13 --ref main -o tests/data/tensorrt_api

The parser is deliberately plain: it follows pybind11's builder chains
(``py::class_<T>(m, "Name")...def("x", ...)...;``, ``py::enum_<E>(parent, "Name").value("A", E::kA)``,
``var.def(...)`` on a named binding, ``m.def("f", ...)``) and skips comments and string bodies.
A release whose sources it cannot read gives an empty class table, which the window test refuses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click

BINDINGS = "python/src"
INIT = "python/packaging/bindings_wheel/tensorrt/__init__.py"
HEADERS = "include"

_START = re.compile(r"py::(class_|enum_)\s*<")
_MEMBER = re.compile(r"\.(def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly|value)"
                     r"\s*\(\s*\"(\w+)\"(?:\s*,\s*([\w:]+))?")
_MODULE_DEF = re.compile(r"\bm\s*\.\s*(?:def|attr)\s*\(\s*\"(\w+)\"")
_VAR_DEF = re.compile(r"\b(\w+)\s*\.\s*(def|def_static|def_property|def_property_readonly|def_readwrite|value)\s*\(")
_ENUM_DECL = re.compile(r"enum\s+class\s+(\w+)\s*(?::\s*[\w:]+)?\s*\{(.*?)\}", re.S)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def strip_comments(src: str) -> str:
    """C++ source without comments; string literals kept (names live in them)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif src.startswith('R"', i):  # raw string literal R"delim( ... )delim"
            m = re.match(r'R"([^(\s]*)\(', src[i:])
            end = src.find(")" + (m.group(1) if m else "") + '"', i)
            out.append('""')
            i = n if end < 0 else end + len(m.group(1) if m else "") + 2
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif c == "'":
            j = i + 1
            while j < n and src[j] != "'":
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def statement_end(src: str, start: int) -> int:
    """Index of the ``;`` ending the statement that begins at ``start`` (outside brackets and strings)."""
    depth, i, n = 0, start, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth <= 0:
            return i
        i += 1
    return n


def _template_end(src: str, i: int) -> int:
    depth = 0
    while i < len(src):
        if src[i] == "<":
            depth += 1
        elif src[i] == ">":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def parse_bindings(sources: dict[str, str]) -> tuple[set[str], dict[str, dict[str, str | None]], dict[str, str]]:
    """(module names, {class: {member: C++ enumerator or None}}, {binding variable: class})."""
    module: set[str] = set()
    classes: dict[str, dict[str, str | None]] = {}
    variables: dict[str, str] = {}
    parents: dict[str, str] = {}  # nested enum -> class (for export_values)
    texts = {path: strip_comments(text) for path, text in sources.items()}
    for text in texts.values():
        for m in _START.finditer(text):
            after = _template_end(text, m.end() - 1)
            head = re.match(r"\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*\"(\w+)\"", text[after:])
            if not head:
                continue
            var, parent, name = head.groups()
            end = statement_end(text, after + head.end())
            body = text[after + head.end():end]
            members = classes.setdefault(name, {})
            for kind, member, cpp in _MEMBER.findall(body):
                if kind == "value" or member not in members:
                    members[member] = cpp if kind == "value" else None
            if parent == "m":
                module.add(name)
            else:
                parents[name] = parent
            if var:
                variables[var] = name
            if ".export_values()" in body and parent != "m":
                parents[name + "!export"] = parent
        for m in _MODULE_DEF.finditer(text):
            module.add(m.group(1))
    # statements on a named binding variable: baseLoggerBinding.def("log", ...)
    for text in texts.values():
        for m in _VAR_DEF.finditer(text):
            cls = variables.get(m.group(1))
            if cls is None:
                continue
            body = text[m.start():statement_end(text, m.start())]
            for _kind, member, _cpp in _MEMBER.findall("." + body[len(m.group(1)) + 1:].lstrip(". ")):
                classes[cls].setdefault(member, None)
    # nested bindings: py::enum_<ILogger::Severity>(baseLoggerBinding, "Severity") -> ILogger.Severity
    for name, parent in list(parents.items()):
        if name.endswith("!export"):
            continue
        owner = variables.get(parent, parent)
        if owner in classes:
            classes[owner].setdefault(name, None)
            if parents.get(name + "!export") is not None:  # .export_values(): members also on the owner
                for member in classes.get(name, {}):
                    classes[owner].setdefault(member, None)
    return module, classes, variables


def parse_init(text: str) -> set[str]:
    """Module-level names the wheel's templated ``__init__.py`` defines (not valid Python: ##TEMPLATE##)."""
    names = set(re.findall(r"^(?:def|class)\s+(\w+)", text, re.M))
    names |= set(re.findall(r"^(__version__)\s*=", text, re.M))
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def parse_enum_values(headers: dict[str, str]) -> dict[str, dict[str, int]]:
    """{C++ enum: {enumerator: value}} from ``enum class`` declarations (implicit values counted)."""
    values: dict[str, dict[str, int]] = {}
    for text in headers.values():
        for name, body in _ENUM_DECL.findall(strip_comments(text)):
            current, members = -1, {}
            for item in body.split(","):
                m = re.match(r"\s*(k\w+)\s*(?:TRT_DEPRECATED_ENUM)?\s*(?:=\s*([^,]+))?", item)
                if not m:
                    continue
                if m.group(2) is not None:
                    expr = m.group(2).strip()
                    try:
                        current = int(expr, 0)
                    except ValueError:
                        ref = re.fullmatch(r"(k\w+)", expr)
                        if not (ref and ref.group(1) in members):
                            continue  # an expression we do not evaluate
                        current = members[ref.group(1)]
                else:
                    current += 1
                members[m.group(1)] = current
            values.setdefault(name, members)
    return values


def extract(repo: Path, ref: str) -> dict:
    commit = git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    files = [f for f in git(repo, "ls-tree", "-r", "--name-only", commit, "--", BINDINGS).split()
             if f.endswith(".cpp")]
    sources = {f: git(repo, "show", f"{commit}:{f}") for f in files}
    init = git(repo, "show", f"{commit}:{INIT}")
    header_files = [f for f in git(repo, "ls-tree", "-r", "--name-only", commit, "--", HEADERS).split()
                    if re.fullmatch(r"include/NvInfer\w*\.h", f)]
    headers = {f: git(repo, "show", f"{commit}:{f}") for f in header_files}
    version_h = headers.get("include/NvInferVersion.h", "")
    parts = [re.search(rf"#define\s+(?:TRT|NV_TENSORRT)_{k}(?:_ENTERPRISE)?\s+(\d+)", version_h)
             for k in ("MAJOR", "MINOR", "PATCH")]
    version = ".".join(p.group(1) for p in parts if p)

    module, classes, _ = parse_bindings(sources)
    module |= parse_init(init)
    enum_values = parse_enum_values(headers)
    values: dict[str, dict[str, int]] = {}
    for cls, members in classes.items():
        for member, cpp in members.items():
            if cpp and "::" in cpp:
                enum, _, enumerator = cpp.rpartition("::")
                enum = enum.rpartition("::")[2]
                if enumerator in enum_values.get(enum, {}):
                    values.setdefault(cls, {})[member] = enum_values[enum][enumerator]
    return {
        "provenance": {
            "repository": "https://github.com/NVIDIA/TensorRT",
            "ref": ref,
            "commit": commit,
            "committed": git(repo, "log", "-1", "--format=%cI", commit).strip(),
            "files": sorted(files) + [INIT] + sorted(header_files),
            "generator": "tools/trt_api_names.py",
        },
        "version": version,
        "module": sorted(module),
        "classes": {cls: sorted(members) for cls, members in sorted(classes.items())},
        "enum_values": {cls: dict(sorted(v.items())) for cls, v in sorted(values.items())},
    }


@click.command()
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A clone of NVIDIA/TensorRT (bare or not).")
@click.option("--ref", "refs", multiple=True, required=True, help="Branch, tag or commit; repeat for each release.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(repo: Path, refs: tuple[str, ...], out: Path) -> None:
    """Write OUT/<major.minor>.json for each --ref."""
    out.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        data = extract(repo, ref)
        if not data["classes"] or not data["version"]:
            sys.exit(f"{ref}: no bindings or no version found; is this NVIDIA/TensorRT?")
        name = ".".join(data["version"].split(".")[:2]) + ".json"
        (out / name).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        click.echo(f"{ref} ({data['provenance']['commit'][:12]}): TensorRT {data['version']}, "
                   f"{len(data['module'])} module names, {len(data['classes'])} classes -> {out / name}")


if __name__ == "__main__":
    main()
