"""ONNX -> TensorRT engine: strongly typed build (TensorRT 10.3+ and 11.x), plan + sidecar manifest.

Precision lives in the ONNX (FP16 through Cast nodes, INT8 through Q/DQ nodes), so the network is
created STRONGLY_TYPED and no precision flag is set: TensorRT 11 removed them, and 10.12+ rejects
them on a strongly typed network (docs/tensorrt.md). The one optimization profile spans the batch
and, for segmentation and backbone ONNX, height and width, from the ONNX manifest's bounds or
narrower ones. Same builder calls on 10.x and 11.x, after
NVIDIA/TensorRT ``samples/python/introductory_parser_samples/onnx_resnet50.py`` and
``samples/python/common.py`` (timing cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import DeployError, UsageError
from resnet_deploy.export.artifact import check_outputs, parent_manifest, publish_artifact
from resnet_deploy.recorded import read_recorded
from resnet_deploy.manifest import BatchRange, Manifest, SizeRange, package_versions, read_manifest
from resnet_deploy.publish import sha256_bytes, sha256_file, write_bytes
from resnet_deploy.runtime import cuda
from resnet_deploy.runtime.tensorrt import import_tensorrt, load_engine, trt_logger

if TYPE_CHECKING:  # the types come from tensorrt-stubs (typings/), checked by mypy in CI
    import tensorrt as trt_types


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine. Batch sizes left None come from the ONNX manifest's ``batch``, and
    the sizes of segmentation and backbone models from its ``size``."""

    min_batch: int | None = None
    opt_batch: int | None = None  # the batch TensorRT tunes kernels for
    max_batch: int | None = None  # buffers and activations are sized for it
    min_size: int | None = None  # segment, backbone: the smallest height and width the engine takes
    opt_size: tuple[int, int] | None = None  # ... the (height, width) TensorRT tunes kernels for
    max_size: int | None = None  # ... and the largest height and width
    workspace_mib: int | None = None  # None: TensorRT's default (device memory); keep small on Jetson (shared DRAM)
    optimization_level: int = 3  # TensorRT's default; 0 builds fastest, 5 tries the most tactics
    timing_cache: Path | None = None  # read if present, written back atomically; ignored at level 0
    hardware_compatibility: bool = False  # AMPERE_PLUS: runs on any sm_80+ discrete GPU; slower; not on Jetson
    version_compatible: bool = False  # runs on later TensorRT of the same major; loading runs host code from the plan
    detailed_profile: bool = True  # ProfilingVerbosity.DETAILED, so the inspector shows each layer's precision
    overwrite: bool = False

    def __post_init__(self) -> None:
        for option, value in (("min_batch", self.min_batch), ("opt_batch", self.opt_batch),
                              ("max_batch", self.max_batch), ("workspace_mib", self.workspace_mib),
                              ("min_size", self.min_size), ("max_size", self.max_size)):
            if value is not None and value < 1:
                raise UsageError(f"`{option}` must be at least 1, got {value}")
        if self.opt_size is not None and (len(self.opt_size) != 2 or min(self.opt_size) < 1):
            raise UsageError(f"`opt_size` must be a height and a width of at least 1, got {self.opt_size}")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise UsageError(f"sizes must satisfy `min_size` <= `max_size`, got {self.min_size}/{self.max_size}")
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"`optimization_level` must be 0..5, got {self.optimization_level}")
        given = [b for b in (self.min_batch, self.opt_batch, self.max_batch) if b is not None]
        if given != sorted(given):
            raise UsageError("batch sizes must satisfy `min_batch` <= `opt_batch` <= `max_batch`, "
                             f"got {self.min_batch}/{self.opt_batch}/{self.max_batch}")


@dataclass
class EngineResult:
    path: Path
    manifest: Manifest
    build_time_s: float


def resolve_profile(parent: Manifest, config: EngineConfig) -> BatchRange:
    """The optimization profile's batch range: the config's, defaulting to (and within) the ONNX's."""
    lo = config.min_batch if config.min_batch is not None else parent.batch.min
    hi = config.max_batch if config.max_batch is not None else parent.batch.max
    opt = config.opt_batch if config.opt_batch is not None else min(max(parent.batch.opt, lo), hi)
    if not (parent.batch.min <= lo <= hi <= parent.batch.max):
        raise UsageError(
            f"batch range {lo}..{hi} is outside the ONNX model's {parent.batch.min}..{parent.batch.max} "
            "(re-export the ONNX with a larger `max_batch`)"
        )
    if not lo <= opt <= hi:
        raise UsageError(f"batch sizes must satisfy `min_batch` <= `opt_batch` <= `max_batch`, got {lo}/{opt}/{hi}")
    return BatchRange(min=lo, opt=opt, max=hi)


def resolve_size(parent: Manifest, config: EngineConfig) -> SizeRange | None:
    """The optimization profile's height/width range: the config's, defaulting to (and within) the ONNX's ``size``.

    None for a fixed-size ONNX (a classifier), which takes no size options.
    """
    given = {k: v for k, v in (("min_size", config.min_size), ("opt_size", config.opt_size),
                               ("max_size", config.max_size)) if v is not None}
    if parent.size is None:
        if given:
            fixed = "x".join(str(parent.input.shape[a]) for a in parent.input.hw_axes)
            raise UsageError(f"{', '.join(f'`{k}`' for k in given)}: this {parent.task} ONNX has a fixed "
                             f"{fixed} input; sizes are for segmentation and backbone models")
        return None
    bounds = parent.size
    lo = config.min_size if config.min_size is not None else bounds.min
    hi = config.max_size if config.max_size is not None else bounds.max
    if not bounds.min <= lo <= hi <= bounds.max:
        raise UsageError(f"height/width range {lo}..{hi} is outside the ONNX model's {bounds.min}..{bounds.max} "
                         "(re-export the ONNX with wider size bounds)")
    h, w = config.opt_size if config.opt_size is not None else (min(max(d, lo), hi) for d in bounds.opt)
    if not (lo <= h <= hi and lo <= w <= hi):
        raise UsageError(f"`opt_size` {h}x{w} is outside the engine's height/width range {lo}..{hi}")
    return SizeRange(min=lo, opt=(h, w), max=hi)


def profile_shapes(parent: Manifest, batch: BatchRange,
                   size: SizeRange | None) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The input's min, opt and max shapes: the batch, and height and width where ``size`` makes them dynamic."""
    shape = parent.input.shape
    hw = parent.input.hw_axes if size is not None else ()
    if size is not None and any(shape[a] >= 1 for a in hw):
        raise UsageError(f"the ONNX manifest gives a size range but a fixed height/width in input shape {shape}")
    if any(d < 1 for i, d in enumerate(shape) if i != 0 and i not in hw):
        raise UsageError(f"only the batch dimension (and the height and width of segmentation and backbone "
                         f"models) may be dynamic, input shape is {shape}")

    def at(b: int, h: int = 0, w: int = 0) -> tuple[int, ...]:
        dims = [b, *shape[1:]]
        for axis, d in zip(hw, (h, w)):
            dims[axis] = d
        return tuple(dims)

    if size is None:
        return at(batch.min), at(batch.opt), at(batch.max)
    return (at(batch.min, size.min, size.min), at(batch.opt, *size.opt), at(batch.max, size.max, size.max))


def _parser_errors(parser: trt_types.OnnxParser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()} {err.node_name()!r} ({err.node_operator()})" if err.node() >= 0 else "model"
        lines.append(f"{where}: {err.code()}: {err.desc()}")
    return "; ".join(lines) or "no parser error recorded"


@contextlib.contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path.lock`` while the cache file is read, merged and replaced.

    As trtexec's ``FileLock`` around its timing cache file: builds sharing one cache must not
    lose each other's entries. POSIX only (Linux, Jetson); elsewhere no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_timing_cache(config: trt_types.IBuilderConfig, path: Path | None) -> trt_types.ITimingCache:
    old = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(old)
    if cache is None:
        raise UsageError(f"{path}: not a TensorRT timing cache (delete it to start a new one)")
    return cache


def _load_timing_cache(config: trt_types.IBuilderConfig, path: Path | None) -> trt_types.ITimingCache:
    """Attach the timing cache at ``path`` (or an empty one) to the builder config."""
    cache = _read_timing_cache(config, path)
    # ignore_mismatch=False: a cache from another GPU or TensorRT would mislead tactic selection.
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise UsageError(f"{path}: timing cache from another GPU or TensorRT version (delete it or use another path)")
    return cache


def _save_timing_cache(config: trt_types.IBuilderConfig, path: Path) -> None:
    """Merge this build's timing cache into the file at ``path``, under a lock, and replace it atomically.

    The file is read again under the lock: another build may have added entries since this one
    started (trtexec's ``updateTimingCacheFile``: load, ``combine``, write).
    """
    built = config.get_timing_cache()
    with _cache_lock(path):
        merged = _read_timing_cache(config, path)
        if not merged.combine(built, False):
            raise DeployError(f"{path}: could not merge this build's timing cache into it")
        write_bytes(path, bytes(merged.serialize()))


def engine_from_onnx(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                     config: EngineConfig = EngineConfig()) -> EngineResult:
    """Build a TensorRT engine from ``onnx_path`` and publish ``output`` and ``output.json`` atomically.

    Checks the destination, the batch range and (segmentation, backbones) the height/width range
    before any work; without TensorRT (or
    cuda-python) raises MissingDependencyError before anything is written.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"{onnx_path}: no such file")
    output = check_outputs(output, overwrite=config.overwrite)
    if output.resolve() == onnx_path.resolve():
        raise UsageError(f"{output}: would overwrite the input ONNX")
    cache_path = Path(config.timing_cache) if config.timing_cache is not None else None
    if cache_path is not None and (cache_path.is_dir() or not cache_path.parent.is_dir()):
        raise UsageError(f"`timing_cache` {cache_path}: needs a file path in an existing folder")
    parent = parent_manifest(onnx_path)
    profile = resolve_profile(parent, config)
    size = resolve_size(parent, config)
    try:
        shapes = profile_shapes(parent, profile, size)
    except UsageError as exc:
        raise UsageError(f"{onnx_path}: {exc}") from None
    onnx_sha = sha256_file(onnx_path)  # parent_manifest checked it against the sidecar (cached since)
    recorded = read_recorded(onnx_path, parent, missing_ok=True)  # copied beside the engine: resnet-bench trt measures against it

    trt = import_tensorrt()
    device = cuda.device_properties()
    if config.hardware_compatibility and (device.integrated or device.capability < (8, 0)):
        raise UsageError(f"`hardware_compatibility` needs a discrete GPU of compute capability 8.0+ (Ampere), "
                         f"this is {device.name} ({device.sm})")

    logger = trt_logger(trt)
    mark = logger.lines.mark()
    builder: trt_types.Builder = trt.Builder(logger)
    # STRONGLY_TYPED: required on 10.x for Q/DQ and Cast-typed graphs, accepted (and the only mode) on 11.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser: trt_types.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)) or parser.num_errors:
        raise DeployError(f"{onnx_path}: TensorRT cannot parse it: {_parser_errors(parser)}")
    if network.num_inputs != 1 or network.get_input(0).name != parent.input.name:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise UsageError(f"{onnx_path}: expected one input {parent.input.name!r}, the network has {names}")
    if parent.task != "classify":  # the runtime finds a backbone's outputs by the manifest's names
        outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        if sorted(outputs) != sorted(parent.output_names):
            raise UsageError(f"{onnx_path}: its manifest names outputs {list(parent.output_names)}, "
                             f"the network has {outputs}")

    bconfig = builder.create_builder_config()
    if config.workspace_mib is not None:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    bconfig.builder_optimization_level = config.optimization_level
    if config.detailed_profile:
        bconfig.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if config.hardware_compatibility:
        bconfig.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if config.version_compatible:
        bconfig.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    opt_profile = builder.create_optimization_profile()
    # set_shape takes Dims; pybind11 converts tuples implicitly, which tensorrt-stubs 10.13 do not declare.
    opt_profile.set_shape(parent.input.name, *shapes)  # type: ignore[arg-type]
    if bconfig.add_optimization_profile(opt_profile) < 0:  # -1: TensorRT found the profile invalid
        raise DeployError(f"{onnx_path}: TensorRT refused the optimization profile for {parent.input.name!r} "
                          f"(min/opt/max {' / '.join(map(str, shapes))}): {logger.lines.since(mark)}")
    cache = _load_timing_cache(bconfig, cache_path)  # must stay alive until the build is done

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, bconfig)
    build_time_s = time.perf_counter() - start
    if serialized is None:
        raise DeployError(f"{onnx_path}: TensorRT build failed: {logger.lines.since(mark)}")
    plan = bytes(serialized)  # IHostMemory supports the buffer protocol
    del serialized

    if cache_path is not None:
        _save_timing_cache(bconfig, cache_path)
    del cache
    manifest = parent.derive(
        batch=profile,
        size=size,  # the profile's height/width range: the runtime refuses inputs outside it
        # The ONNX's parity was measured in onnxruntime, not on this engine: resnet-bench measures it.
        parity=None,
        source={**parent.source, "parent_sha256": onnx_sha, "sha256": sha256_bytes(plan)},
        build={
            "tensorrt": trt.__version__,
            "gpu": device.name,
            "compute_capability": device.compute_capability,
            "integrated": device.integrated,
            "build_time_s": round(build_time_s, 2),
            "hardware_compatibility": config.hardware_compatibility,
            "version_compatible": config.version_compatible,
            "optimization_level": config.optimization_level,
            "workspace_mib": config.workspace_mib,
            "strongly_typed": True,
        },
        versions={**parent.versions, **package_versions("cuda-python", "cuda-bindings"), "tensorrt": trt.__version__},
        details={**parent.details, "onnx_parity": parent.parity},
    )

    def write(tmp: Path) -> None:
        tmp.write_bytes(plan)

    manifest = publish_artifact(output, write, manifest, overwrite=config.overwrite, reference=recorded)
    return EngineResult(path=output, manifest=manifest, build_time_s=build_time_s)


# ------------------------------------------------------------------------------------ inspection

# Keywords of the inspector's "Format/Datatype" strings ("Row major linear FP32", "Channel major
# FP16 format where channel % 8 == 0", "... Int8 ..."), most specific first (BFloat16 before Float).
_PRECISION_WORDS = (("BF16", "bf16"), ("BFLOAT16", "bf16"), ("FP8", "fp8"), ("UINT8", "uint8"), ("INT8", "int8"),
                    ("INT4", "int4"), ("FP4", "fp4"), ("FP16", "fp16"), ("HALF", "fp16"), ("FP32", "fp32"),
                    ("FLOAT", "fp32"), ("INT32", "int32"), ("INT64", "int64"), ("BOOL", "bool"))


def _precision(fmt: str | None) -> str | None:
    text = (fmt or "").upper()
    return next((name for word, name in _PRECISION_WORDS if word in text), None)


def _type_fields(tensor: dict[str, Any]) -> list[str]:
    # TensorRT 10.x writes "Format/Datatype"; 11.x splits it into "Datatype" and "Format"
    # (IEngineInspector JSON migration notes): read whichever is there, the data type first.
    return [str(tensor[k]) for k in ("Datatype", "DataType", "Format/Datatype", "Format") if tensor.get(k)]


def summarize_layers(engine_information: str) -> dict[str, Any]:
    """Layers of an engine from the inspector's JSON: name, type and the precision each runs in.

    A layer's precision is that of its first input (an INT8 convolution reads INT8), else of
    its first output. Engines built without DETAILED profiling verbosity list names only.
    Reads both the TensorRT 10.x and the 11.x JSON layouts.
    """
    info = json.loads(engine_information)
    layers = []
    for entry in info.get("Layers", []) if isinstance(info, dict) else []:
        if not isinstance(entry, dict):  # LAYER_NAMES_ONLY: plain strings
            layers.append({"name": str(entry), "type": None, "precision": None})
            continue
        tensors = [t for key in ("Inputs", "Outputs") for t in entry.get(key) or [] if isinstance(t, dict)]
        precision = next((p for t in tensors for p in map(_precision, _type_fields(t)) if p), None)
        layers.append({"name": entry.get("Name"), "type": entry.get("LayerType"), "precision": precision})
    counts: dict[str, int] = {}
    for layer in layers:
        if layer["precision"]:
            counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return {"detailed": any(layer["type"] for layer in layers), "layers": layers, "precisions": counts}


def inspect_engine(plan_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Per-layer names, types and precisions of an engine (IEngineInspector, JSON format).

    The engine goes through the same checks as a session (manifest, hash, host) before loading.
    """
    loaded = load_engine(plan_path, manifest=read_manifest(plan_path))
    assert loaded.engine is not None
    inspector = loaded.engine.create_engine_inspector()
    return summarize_layers(inspector.get_engine_information(loaded.trt.LayerInformationFormat.JSON))
