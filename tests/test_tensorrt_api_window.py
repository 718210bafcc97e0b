"""Every TensorRT attribute the package uses exists in TensorRT 10.3, 10.13 and 11.x.

The name lists under ``tests/data/tensorrt_api/`` are extracted by ``tools/trt_api_names.py``
from NVIDIA's binding sources (``python/src/**.cpp`` and the wheel's ``__init__.py`` in
NVIDIA/TensorRT; branch and commit in each file's ``provenance``). The supported window is their
intersection: a name 10.3 lacks (JetPack 6) or 11.x removed (weak typing, the v1 device-memory
queries, ...) fails this test.

Which expressions hold TensorRT objects is found from the syntax tree, per function: the
``tensorrt`` module (``import_tensorrt()``, ``import tensorrt``, any name or attribute called
``trt``), values returned by calls on TensorRT objects (``builder = trt.Builder(logger)``,
``network = builder.create_network(...)``), attributes and dataclass fields assigned from them
(``self._context = ...``, ``LoadedEngine(engine=engine)``) and parameters of module-level
functions called with them. ``X.BuilderFlag.FP16`` style enum access is checked wherever it
appears. Comments and docstrings do not count.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnet_deploy"
API_DIR = Path(__file__).resolve().parent / "data" / "tensorrt_api"
#: the releases the window spans: the lowest supported (JetPack 6), JetPack 7's, and 11.x (main)
RELEASES = ("10.3", "10.13", "11.1")


def load_release(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Window:
    module: frozenset[str]
    classes: dict[str, frozenset[str]]
    members: frozenset[str]  # every member of every class: for objects whose class is not tracked

    @classmethod
    def intersection(cls, releases: list[dict]) -> Window:
        module = frozenset.intersection(*(frozenset(r["module"]) for r in releases))
        names = set.intersection(*(set(r["classes"]) for r in releases))
        classes = {c: frozenset.intersection(*(frozenset(r["classes"][c]) for r in releases)) for c in names}
        members = frozenset.intersection(*(frozenset(m for ms in r["classes"].values() for m in ms)
                                           for r in releases))
        return cls(module, classes, members)


@pytest.fixture(scope="module")
def window() -> Window:
    return Window.intersection([load_release(r) for r in RELEASES])


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


@dataclass
class _Scan:
    window: Window
    filename: str
    found: list[str] = field(default_factory=list)
    fields: set[str] = field(default_factory=set)  # attribute names that hold TensorRT objects anywhere
    attrs: set[str] = field(default_factory=set)  # dotted targets: self._context
    params: dict[str, set[str]] = field(default_factory=dict)  # function -> parameters given TensorRT objects
    imported: set[str] = field(default_factory=set)  # names imported from tensorrt
    modules: set[str] = field(default_factory=set)  # import tensorrt [as name]
    returns_trt: set[str] = field(default_factory=set)  # functions annotated to return a TensorRT type

    def trt_annotation(self, node: ast.AST | None) -> bool:
        """An annotation naming a TensorRT type: ``trt_types.ICudaEngine``, ``trt_types.ICudaEngine | None``."""
        return node is not None and any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                                        and n.value.id in self.modules for n in ast.walk(node))

    def is_module(self, node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and (node.id == "trt" or node.id in self.modules)) or (
            isinstance(node, ast.Attribute) and node.attr == "trt")

    def is_trt(self, node: ast.AST, names: set[str]) -> bool:
        if self.is_module(node):
            return True
        if isinstance(node, ast.Name):
            return node.id in names
        if isinstance(node, ast.Attribute):
            return node.attr in self.fields or _dotted(node) in self.attrs or self.is_trt(node.value, names)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in self.returns_trt:
                return True
            return self.is_trt(node.func, names)
        if isinstance(node, ast.Subscript):
            return self.is_trt(node.value, names)
        return False

    def trt_class(self, node: ast.AST) -> str | None:
        """``BuilderFlag`` for ``trt.BuilderFlag``, ``x.BuilderFlag`` or a ``BuilderFlag`` imported from tensorrt."""
        if isinstance(node, ast.Attribute) and node.attr in self.window.classes:
            return node.attr
        if isinstance(node, ast.Name) and node.id in self.imported:
            return node.id
        return None

    def hit(self, node: ast.AST, name: str, why: str) -> None:
        self.found.append(f"{self.filename}:{getattr(node, 'lineno', '?')}: {name} ({why})")

    def check_attribute(self, node: ast.Attribute, names: set[str]) -> None:
        name = node.attr
        if name.startswith("__") and name.endswith("__") and name != "__version__":
            return
        base = node.value
        if self.is_module(base):
            if name not in self.window.module:
                self.hit(node, f"trt.{name}", "not in every supported TensorRT")
        elif (holder := self.trt_class(base)) is not None:
            # X.BuilderFlag.FP16, trt.ILogger.ERROR: checked against that class wherever it appears
            if name not in self.window.classes.get(holder, frozenset()):
                self.hit(node, f"{holder}.{name}", "not in every supported TensorRT")
        elif self.is_trt(base, names) and name not in self.window.members:
            self.hit(node, name, "no TensorRT class has it in every supported release")

    def check_string_attr(self, node: ast.Call, names: set[str]) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2:
            target, text = node.args[0], node.args[1]
            if isinstance(text, ast.Constant) and isinstance(text.value, str):
                self.check_attribute(ast.copy_location(ast.Attribute(value=target, attr=text.value), node), names)

    def check_import(self, node: ast.ImportFrom) -> None:
        if node.module == "tensorrt":
            for alias in node.names:
                self.imported.add(alias.asname or alias.name)
                if alias.name not in self.window.module:
                    self.hit(node, f"tensorrt.{alias.name}", "not in every supported TensorRT")

    def bind(self, target: ast.AST, names: set[str]) -> None:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute) and (dotted := _dotted(target)):
            self.attrs.add(dotted)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self.bind(elt, names)

    def propagate(self, scope: ast.AST, names: set[str], functions: dict[str, ast.AST]) -> bool:
        """One pass of taint over ``scope``; True if anything new was learned."""
        before = (len(names), len(self.fields), len(self.attrs), sum(map(len, self.params.values())),
                  len(self.returns_trt), len(self.modules))
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and self.is_trt(node.value, names):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    self.bind(target, names)
            elif isinstance(node, ast.NamedExpr) and self.is_trt(node.value, names):
                self.bind(node.target, names)
            elif isinstance(node, ast.Import):
                self.modules.update(a.asname or a.name for a in node.names if a.name == "tensorrt")
            elif isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in ("import_tensorrt", "require"):
                    continue
                for kw in node.keywords:
                    if kw.arg and self.is_trt(kw.value, names):
                        self.fields.add(kw.arg)  # LoadedEngine(engine=engine): x.engine is TensorRT's
                callee = functions.get(node.func.id) if isinstance(node.func, ast.Name) else None
                if isinstance(callee, ast.FunctionDef):
                    params = [a.arg for a in callee.args.args]
                    given = self.params.setdefault(callee.name, set())
                    given.update(p for p, a in zip(params, node.args) if self.is_trt(a, names))
                    given.update(kw.arg for kw in node.keywords if kw.arg in params and self.is_trt(kw.value, names))
        for node in ast.walk(scope):  # annotations: def f(config: trt_types.IBuilderConfig) -> trt_types.ITimingCache
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if self.trt_annotation(node.returns):
                    self.returns_trt.add(node.name)
                given = self.params.setdefault(node.name, set())
                given.update(a.arg for a in node.args.args if self.trt_annotation(a.annotation))
            elif isinstance(node, ast.AnnAssign) and self.trt_annotation(node.annotation):
                self.bind(node.target, names)
        for node in ast.walk(scope):  # import_tensorrt() / require("tensorrt") results
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
                if node.value.func.id == "import_tensorrt" or (
                        node.value.func.id == "require" and node.value.args
                        and isinstance(node.value.args[0], ast.Constant) and node.value.args[0].value == "tensorrt"):
                    for target in node.targets:
                        self.bind(target, names)
        after = (len(names), len(self.fields), len(self.attrs), sum(map(len, self.params.values())),
                 len(self.returns_trt), len(self.modules))
        return after != before

    def run(self, tree: ast.Module) -> list[str]:
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        module_names: set[str] = set()
        scope_names: dict[ast.AST, set[str]] = {s: set() for s in scopes}
        for _ in range(10):  # to a fixed point: taint crosses functions through parameters and attributes
            changed = self.propagate(tree, module_names, functions)
            for scope in scopes:
                names = scope_names[scope] | module_names | self.params.get(scope.name, set())
                changed |= self.propagate(scope, names, functions)
                scope_names[scope] = names
            if not changed:
                break
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tensorrt":
                self.imported.update(a.asname or a.name for a in node.names)
        checked: set[int] = set()
        for scope in [*scopes, tree]:
            names = scope_names.get(scope, module_names) | module_names
            for node in ast.walk(scope):
                if id(node) in checked:
                    continue
                checked.add(id(node))
                if isinstance(node, ast.Attribute):
                    self.check_attribute(node, names)
                elif isinstance(node, ast.Call):
                    self.check_string_attr(node, names)
                elif isinstance(node, ast.ImportFrom):
                    self.check_import(node)
        return self.found


def outside_window(source: str, window: Window, filename: str = "<string>", *,
                   fields: frozenset[str] = frozenset()) -> list[str]:
    """``file:line: name (why)`` for each TensorRT attribute in ``source`` outside ``window``.

    ``fields``: attribute names other modules fill with TensorRT objects (``loaded.engine``).
    """
    return _Scan(window, filename, fields=set(fields)).run(ast.parse(source, filename))


def package_scan(window: Window, paths: list[Path]) -> list[str]:
    """Scan ``paths`` twice: the first pass learns which fields hold TensorRT objects across modules."""
    sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}
    fields: set[str] = set()
    for name, text in sources.items():
        scan = _Scan(window, name)
        scan.run(ast.parse(text, name))
        fields |= scan.fields
    return [hit for name, text in sources.items() for hit in outside_window(text, window, name, fields=frozenset(fields))]


# ------------------------------------------------------------------------------------ the data itself


@pytest.mark.parametrize("release", RELEASES)
def test_name_lists_carry_provenance(release):
    data = load_release(release)
    prov = data["provenance"]
    assert prov["repository"] == "https://github.com/NVIDIA/TensorRT" and len(prov["commit"]) == 40
    assert data["version"].startswith(release + ".")
    assert {"python/src/infer/pyCore.cpp", "python/src/infer/pyFoundationalTypes.cpp", "python/src/infer/pyGraph.cpp",
            "python/src/parsers/pyOnnx.cpp", "python/packaging/bindings_wheel/tensorrt/__init__.py"} <= set(prov["files"])
    # a parser that silently read nothing would make every check pass
    assert len(data["classes"]) > 150 and {"Builder", "IBuilderConfig", "ICudaEngine", "OnnxParser"} <= set(data["classes"])


def test_window_facts_from_nvidia_sources(window):
    """What the window says agrees with NVIDIA's release notes (a guard on the extraction)."""
    r103, r1013, r11 = (load_release(r) for r in RELEASES)
    assert "FP16" in r103["classes"]["BuilderFlag"] and "FP16" not in r11["classes"]["BuilderFlag"]
    assert "IInt8EntropyCalibrator2" in r103["module"] and "IInt8EntropyCalibrator2" not in r11["module"]
    assert "device_memory_size" in r1013["classes"]["ICudaEngine"] and "device_memory_size" not in r11["classes"]["ICudaEngine"]
    assert r103["enum_values"]["NetworkDefinitionCreationFlag"]["STRONGLY_TYPED"] == 1
    assert r11["enum_values"]["NetworkDefinitionCreationFlag"]["STRONGLY_TYPED"] == 0
    assert "VERSION_COMPATIBLE" in window.classes["BuilderFlag"]
    assert "AMPERE_PLUS" in window.classes["HardwareCompatibilityLevel"]


# ------------------------------------------------------------------------------------ self-test


@pytest.mark.parametrize("code", [
    # removed in TensorRT 11 (weak typing and what went with it)
    "import tensorrt as trt\nconfig.set_flag(trt.BuilderFlag.FP16)",
    "import tensorrt as t\nconfig.set_flag(t.BuilderFlag.FP16)",
    "import tensorrt as t\nx = t.IInt8Calibrator",
    "config.set_flag(trt.BuilderFlag.INT8)",
    "from tensorrt import BuilderFlag\nconfig.set_flag(BuilderFlag.BF16)",
    "config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)",
    "config.set_flag(getattr(trt.BuilderFlag, 'INT8'))",
    "def f(trt):\n    config = trt.Builder(None).create_builder_config()\n    config.int8_calibrator = c",
    "def f(trt):\n    config = trt.Builder(None).create_builder_config()\n    x = getattr(config, 'int8_calibrator', None)",
    "class Calib(trt.IInt8EntropyCalibrator2):\n    pass",
    "from tensorrt import IInt8MinMaxCalibrator",
    "def f(trt):\n    builder = trt.Builder(logger)\n    if builder.platform_has_fast_fp16:\n        pass",
    "def f(engine_path):\n    trt = import_tensorrt()\n    engine = trt.Runtime(lg).deserialize_cuda_engine(b)\n    n = engine.device_memory_size",
    "def f(trt):\n    engine = trt.Runtime(lg).deserialize_cuda_engine(b)\n    engine.create_execution_context_without_device_memory()",
    "def f(trt):\n    engine = trt.Runtime(lg).deserialize_cuda_engine(b)\n    engine.get_device_memory_size_for_profile(0)",
    "flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)",
    "f = trt.QuantizationFlag.CALIBRATE_BEFORE_FUSION",
    "def f(trt):\n    c = trt.Builder(lg).create_builder_config()\n    c.algorithm_selector = sel",
    "def f(trt):\n    t = trt.Builder(lg).create_network(0).get_input(0)\n    t.set_dynamic_range(-1, 1)",
    "def f(trt):\n    layer = trt.Builder(lg).create_network(0).get_layer(0)\n    layer.precision = trt.float16",
    "def f(trt):\n    layer = trt.Builder(lg).create_network(0).get_layer(0)\n    layer.set_output_type(0, trt.float16)",
    "def f(trt):\n    p = trt.OnnxParser(net, lg)\n    p.supports_model(data)",
    "class Reader(trt.IStreamReader):\n    pass",
    "x = trt.TacticSource.CUBLAS",
    "x = trt.TacticSource.CUDNN",
    # gone since TensorRT 10.0 (absent in 10.3)
    "def f(trt):\n    engine = trt.Builder(lg).build_engine(net, cfg)",
    "def f(trt):\n    ctx = trt.Runtime(lg).deserialize_cuda_engine(b).create_execution_context()\n    ctx.execute_async_v2(b, s)",
    "def f(trt):\n    n = trt.Runtime(lg).deserialize_cuda_engine(b).num_bindings",
    # added after 10.3: JetPack 6 lacks them
    "def f(trt):\n    p = trt.OnnxParser(net, lg)\n    p.load_model_proto(model)",
    "c.set_flag(trt.BuilderFlag.MONITOR_MEMORY)",
    "x = trt.e8m0",
    # a helper that receives a TensorRT object as a parameter
    "def helper(config):\n    return config.int8_calibrator\n\ndef build(trt):\n    helper(trt.Builder(lg).create_builder_config())",
    # a dataclass field that holds a TensorRT engine
    "def load(trt):\n    engine = trt.Runtime(lg).deserialize_cuda_engine(b)\n    return Loaded(engine=engine)\n\n"
    "def use(loaded):\n    return loaded.engine.device_memory_size",
    # objects typed with the stubs' classes
    "import tensorrt as trt_types\ndef f(e: trt_types.ICudaEngine):\n    return e.device_memory_size",
    "import tensorrt as trt_types\ndef g() -> trt_types.ICudaEngine: ...\ndef f():\n    return g().device_memory_size",
])
def test_outside_the_window_is_caught(code, window):
    assert outside_window(code, window), code


@pytest.mark.parametrize("code", [
    '"""Do not use trt.BuilderFlag.INT8 or config.int8_calibrator: TensorRT 11 removed them."""',
    "# config.set_flag(trt.BuilderFlag.FP16) is gone in TensorRT 11",
    "config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)",
    "precision = Precision.INT8  # our own enum, not TensorRT's",
    "def f(manifest):\n    return manifest.precision  # ours: not a TensorRT object",
    "def f(trt, config):\n    b = trt.Builder(lg)\n    return config.workspace_mib  # our EngineConfig",
    "quantize(onnx_path, quantize_mode='int8', high_precision_dtype='fp16')",
    "def f(trt):\n    plan = trt.Builder(lg).build_serialized_network(network, config)",
    "def f(trt):\n    e = trt.Runtime(lg).deserialize_cuda_engine(b)\n    n = e.device_memory_size_v2",
    "flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)",
    "import tensorrt as trt_types\ndef f(c: trt_types.IBuilderConfig) -> trt_types.ITimingCache: ...",
])
def test_inside_the_window_passes(code, window):
    assert outside_window(code, window) == []


# ------------------------------------------------------------------------------------ the package


def test_package_stays_inside_the_window(window):
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no sources under {PACKAGE}"
    found = package_scan(window, files)
    assert not found, "TensorRT API outside 10.3 / 10.13 / 11.x used:\n" + "\n".join(found)


def test_the_scan_sees_the_package_tensorrt_calls(window):
    """The taint really reaches our TensorRT objects: the calls we make are among what it checks."""
    # a window that holds nothing: every attribute the scan checks becomes a hit
    empty = Window(frozenset(), {c: frozenset() for c in window.classes}, frozenset())
    hits = package_scan(empty, [PACKAGE / "export" / "tensorrt.py", PACKAGE / "runtime" / "tensorrt.py"])
    seen = {hit.split(": ", 1)[1].split(" ")[0] for hit in hits}
    expected = {"create_network", "create_builder_config", "set_memory_pool_limit", "add_optimization_profile",
                "build_serialized_network", "parse_from_file", "num_errors", "get_error", "node_operator",
                "set_timing_cache", "serialize", "deserialize_cuda_engine", "engine_host_code_allowed",
                "create_execution_context", "get_tensor_profile_shape", "set_input_shape", "set_tensor_address",
                "execute_async_v3", "get_engine_information", "trt.nptype", "BuilderFlag.VERSION_COMPATIBLE",
                "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "ILogger.ERROR", "trt.__version__"}
    assert expected <= seen, sorted(expected - seen)
