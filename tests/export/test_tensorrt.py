"""Engine builder: refusals and configuration on the CPU (fake TensorRT builder), real builds
(marker ``tensorrt``) where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.export import tensorrt as export_trt
from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx, resolve_profile, summarize_layers
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, SizeRange, manifest_path, read_manifest
from resnet_deploy.publish import sha256_bytes, sha256_file, write_text
from resnet_deploy.runtime import cuda


def _tiny_onnx(producer: str = "pytorch") -> bytes:
    """A real (tiny) ONNX graph: the export checks the file; the fake builder never parses it."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    return helper.make_model(graph, producer_name=producer).SerializeToString()


ONNX_BYTES = _tiny_onnx()


def _onnx_manifest(data: bytes = ONNX_BYTES) -> Manifest:
    return Manifest(
        arch="resnet18", num_classes=10, precision="int8",
        input=InputSpec(name="input", shape=(-1, 3, 32, 32)), preprocess=Preprocess(resize=36, crop=32),
        batch=BatchRange(1, 8, 64), source={"weights_sha256": "w" * 64, "sha256": sha256_bytes(data)},
        parity={"reference": "pytorch", "top1_agreement": 1.0}, versions={"onnx": "1.21.0"},
        details={"kept_layers": ["conv1"]},
    )


@pytest.fixture
def onnx_model(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(ONNX_BYTES)
    write_text(manifest_path(path), _onnx_manifest().to_json())
    return path


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------ CPU: config and refusals


@pytest.mark.parametrize("kwargs, match", [
    ({"optimization_level": 6}, "`optimization_level` must be 0..5"),
    ({"workspace_mib": 0}, "`workspace_mib` must be at least 1"),
    ({"min_batch": 8, "max_batch": 4}, "`min_batch` <= `opt_batch` <= `max_batch`"),
    ({"opt_batch": 16, "max_batch": 8}, "`min_batch` <= `opt_batch` <= `max_batch`"),
])
def test_config_validated(kwargs, match):
    with pytest.raises(UsageError, match=match):
        EngineConfig(**kwargs)


def test_profile_defaults_from_the_onnx_manifest():
    parent = _onnx_manifest()
    assert resolve_profile(parent, EngineConfig()) == BatchRange(1, 8, 64)
    assert resolve_profile(parent, EngineConfig(max_batch=4)) == BatchRange(1, 4, 4)  # opt clamped into range
    assert resolve_profile(parent, EngineConfig(min_batch=2, opt_batch=2, max_batch=32)) == BatchRange(2, 2, 32)
    with pytest.raises(UsageError, match="outside the ONNX model's 1..64.*re-export"):
        resolve_profile(parent, EngineConfig(max_batch=128))
    assert resolve_profile(parent, EngineConfig(min_batch=16)) == BatchRange(16, 16, 64)  # opt raised to min
    with pytest.raises(UsageError, match="batch range 65..64 is outside the ONNX model's 1..64"):
        resolve_profile(parent, EngineConfig(min_batch=65))


def test_tensorrt_missing_writes_nothing(onnx_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    before = _listing(onnx_model.parent)
    with pytest.raises(MissingDependencyError, match=r"pip install 'resnet-deploy\[tensorrt-cu12\]' .*on Jetson TensorRT comes with JetPack"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")
    assert _listing(onnx_model.parent) == before


def test_existing_output_refused_before_any_work(onnx_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # refused before TensorRT is even looked for
    out = onnx_model.parent / "model.plan"
    out.write_bytes(b"old engine")
    with pytest.raises(UsageError, match="exists; pass `overwrite=True`"):
        engine_from_onnx(onnx_model, out)
    assert out.read_bytes() == b"old engine"


def test_missing_output_folder_refused(onnx_model):
    with pytest.raises(UsageError, match="output folder does not exist"):
        engine_from_onnx(onnx_model, onnx_model.parent / "nope" / "model.plan")


def test_onnx_modified_after_export_refused(onnx_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    onnx_model.write_bytes(_tiny_onnx(producer="tampered"))
    with pytest.raises(UsageError, match="does not match the sha256 recorded in its manifest"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")


# ------------------------------------------------------------------------------------ CPU: fake TensorRT builder


def make_fake_trt(strongly_typed: int = 1) -> SimpleNamespace:
    """The builder half of the tensorrt module. Classes, methods and parameter names are the real
    ones (``test_fake_builder_matches_the_stubs`` holds them to tensorrt-stubs); what the fake
    records lives under ``trt.fake``. Its BuilderFlag has no precision flags, as in TensorRT 11.
    ``strongly_typed``: NetworkDefinitionCreationFlag.STRONGLY_TYPED, 1 on 10.x and 0 on 11.x."""
    fake = SimpleNamespace(parse_errors=[], build_fails=False, cache_mismatch=False, profile_invalid=False,
                           flags=[], network_flags=None, profiles=[], cache_in=[], input_name="input", output_names=["logits"],
                           config=None, logger=None, parsed=None)
    trt = SimpleNamespace(__version__="10.13.3.9", fake=fake)

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)  # Severity, exported onto ILogger

        def __init__(self) -> None:
            pass

        def log(self, severity, msg):
            pass

    class Logger(ILogger):
        def __init__(self, min_severity=None) -> None:
            ILogger.__init__(self)

    def _new(cls, **private):  # objects TensorRT hands out but that have no public constructor
        obj = object.__new__(cls)
        vars(obj).update(private)
        return obj

    class ParserError:
        def node(self):
            return self._v[0]

        def node_name(self):
            return self._v[1]

        def node_operator(self):
            return self._v[2]

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

        def desc(self):
            return self._v[3]

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self._network = network

        def parse_from_file(self, model):
            fake.parsed = model
            return not fake.parse_errors

        @property
        def num_errors(self):
            return len(fake.parse_errors)

        def get_error(self, index):
            return _new(ParserError, _v=fake.parse_errors[index])

    class INetworkDefinition:
        num_inputs = 1

        def get_input(self, index):
            return SimpleNamespace(name=fake.input_name)

        @property
        def num_outputs(self):
            return len(fake.output_names)

        def get_output(self, index):
            return SimpleNamespace(name=fake.output_names[index])

    class IOptimizationProfile:
        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's parameter names
            fake.profiles.append((input, min, opt, max))

    class ITimingCache:
        def combine(self, input_cache, ignore_mismatch):
            assert ignore_mismatch is False
            self._entries += [e for e in input_cache._entries if e not in self._entries]
            return True

        def serialize(self):
            return memoryview(b";".join(self._entries))

    class IBuilderConfig:
        builder_optimization_level = 3
        profiling_verbosity = "LAYER_NAMES_ONLY"
        hardware_compatibility_level = "NONE"

        def set_memory_pool_limit(self, pool, pool_size):
            self._pool[pool] = pool_size

        def set_flag(self, flag):
            fake.flags.append(flag)

        def add_optimization_profile(self, profile):
            return -1 if fake.profile_invalid else 0

        def create_timing_cache(self, serialized_timing_cache):
            fake.cache_in.append(bytes(serialized_timing_cache))
            data = bytes(serialized_timing_cache)
            return _new(ITimingCache, _entries=[e for e in data.split(b";") if e])

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            self._cache = cache
            return not fake.cache_mismatch

        def get_timing_cache(self):
            return self._cache

    class Builder:
        def __init__(self, logger) -> None:
            fake.logger = logger

        def create_network(self, flags):
            fake.network_flags = flags
            return INetworkDefinition()

        def create_builder_config(self):
            fake.config = _new(IBuilderConfig, _pool={}, _cache=None)
            return fake.config

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            if fake.build_fails:
                fake.logger.log(Logger.ERROR, "Could not find any implementation for node conv1")
                return None
            config._cache._entries.append(b"tactic-%d" % len(config._cache._entries))  # the build tunes kernels
            return memoryview(b"FAKEPLAN" + bytes(range(256)))

    for cls in (ILogger, Logger, ParserError, OnnxParser, INetworkDefinition, IOptimizationProfile, ITimingCache,
                IBuilderConfig, Builder):
        setattr(trt, cls.__name__, cls)
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=strongly_typed)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY")
    trt.HardwareCompatibilityLevel = SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")
    trt.BuilderFlag = SimpleNamespace(VERSION_COMPATIBLE="VERSION_COMPATIBLE")
    return trt


DEVICE = cuda.DeviceInfo(index=0, name="NVIDIA H100", compute_capability="9.0", total_memory_bytes=80 << 30,
                         integrated=False)


@pytest.fixture
def fake_trt(monkeypatch):
    trt = make_fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "device_properties", lambda device=None: DEVICE)
    return trt


def test_build_publishes_plan_and_manifest(onnx_model, fake_trt):
    out = onnx_model.parent / "model.plan"
    result = engine_from_onnx(onnx_model, out, config=EngineConfig(max_batch=16, workspace_mib=512))
    assert result.path == out and out.read_bytes().startswith(b"FAKEPLAN")
    assert _listing(out.parent) == ["model.onnx", "model.onnx.json", "model.plan", "model.plan.json"]

    # strongly typed, no precision flags, the profile from the options and the ONNX's defaults
    assert fake_trt.fake.network_flags == 1 << 1 and fake_trt.fake.flags == []
    assert fake_trt.fake.profiles == [("input", (1, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32))]
    assert fake_trt.fake.config._pool == {"WORKSPACE": 512 << 20}
    assert fake_trt.fake.config.profiling_verbosity == "DETAILED"
    assert fake_trt.fake.config.hardware_compatibility_level == "NONE"
    assert fake_trt.fake.parsed == str(onnx_model)

    m = read_manifest(out, required=True)
    assert m == result.manifest
    assert (m.precision, m.batch, m.parity) == ("int8", BatchRange(1, 8, 16), None)
    assert m.source["parent_sha256"] == sha256_file(onnx_model)
    assert m.source["sha256"] == sha256_file(out)
    assert m.source["weights_sha256"] == "w" * 64
    assert {k: m.build[k] for k in ("tensorrt", "gpu", "compute_capability", "hardware_compatibility",
                                    "version_compatible")} == {
        "tensorrt": "10.13.3.9", "gpu": "NVIDIA H100", "compute_capability": "9.0",
        "hardware_compatibility": False, "version_compatible": False}
    assert m.build["integrated"] is False  # Jetson engines are told apart from discrete-GPU ones
    assert m.build["build_time_s"] >= 0
    assert m.versions["tensorrt"] == "10.13.3.9" and m.versions["onnx"] == "1.21.0"
    assert m.details["onnx_parity"]["top1_agreement"] == 1.0 and m.details["kept_layers"] == ["conv1"]


def test_portability_options(onnx_model, fake_trt):
    config = EngineConfig(hardware_compatibility=True, version_compatible=True, optimization_level=5,
                          detailed_profile=False)
    m = engine_from_onnx(onnx_model, onnx_model.parent / "model.plan", config=config).manifest
    assert fake_trt.fake.config.hardware_compatibility_level == "AMPERE_PLUS"
    assert fake_trt.fake.flags == ["VERSION_COMPATIBLE"]
    assert fake_trt.fake.config.builder_optimization_level == 5
    assert fake_trt.fake.config.profiling_verbosity == "LAYER_NAMES_ONLY"
    assert fake_trt.fake.config._pool == {}  # TensorRT's default workspace
    assert m.build["hardware_compatibility"] and m.build["version_compatible"]


def test_hardware_compat_refused_on_jetson(onnx_model, fake_trt, monkeypatch):
    orin = cuda.DeviceInfo(0, "Orin", "8.7", 32 << 30, integrated=True)
    monkeypatch.setattr(cuda, "device_properties", lambda device=None: orin)
    with pytest.raises(UsageError, match=r"`hardware_compatibility` needs a discrete GPU.*Orin \(sm_87\)"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan",
                         config=EngineConfig(hardware_compatibility=True))


def test_timing_cache_read_and_written(onnx_model, fake_trt):
    cache = onnx_model.parent / "trt.cache"
    config = EngineConfig(timing_cache=cache)
    engine_from_onnx(onnx_model, onnx_model.parent / "a.plan", config=config)
    assert fake_trt.fake.cache_in[0] == b"" and cache.read_bytes() == b"tactic-0"
    engine_from_onnx(onnx_model, onnx_model.parent / "b.plan", config=config)
    assert fake_trt.fake.cache_in[2] == b"tactic-0" and cache.read_bytes() == b"tactic-0;tactic-1"


def test_timing_cache_merges_entries_written_by_a_concurrent_build(onnx_model, fake_trt):
    # Defect 7: the cache file was overwritten with this build's cache, losing what another build
    # sharing the file had added meanwhile. Now it is re-read, combined and replaced under a lock.
    cache = onnx_model.parent / "trt.cache"
    build = fake_trt.Builder.build_serialized_network

    def build_while_another_finishes(self, network, config):
        cache.write_bytes(b"other-build")  # the other build saved its cache while this one ran
        return build(self, network, config)

    fake_trt.Builder.build_serialized_network = build_while_another_finishes
    engine_from_onnx(onnx_model, onnx_model.parent / "a.plan", config=EngineConfig(timing_cache=cache))
    assert sorted(cache.read_bytes().split(b";")) == [b"other-build", b"tactic-0"]
    assert (onnx_model.parent / "trt.cache.lock").exists()


def test_invalid_optimization_profile_refused(onnx_model, fake_trt):
    # Defect 7: add_optimization_profile returns -1 for a profile TensorRT finds invalid; it was ignored.
    fake_trt.fake.profile_invalid = True
    before = _listing(onnx_model.parent)
    with pytest.raises(DeployError, match=r"refused the optimization profile for 'input' "
                                          r"\(min/opt/max \(1, 3, 32, 32\) / \(8, 3, 32, 32\) / \(64, 3, 32, 32\)\)"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")
    assert _listing(onnx_model.parent) == before


@pytest.mark.parametrize("value, release", [(1, "10.x"), (0, "11.x")])
def test_strongly_typed_flag_with_its_real_values(onnx_model, monkeypatch, value, release):
    # STRONGLY_TYPED is 1 in TensorRT 10 (0 is the removed EXPLICIT_BATCH) and 0 in 11 (NVIDIA's headers,
    # tests/data/tensorrt_api): the network flag is built from the enum, never from a number.
    trt = make_fake_trt(strongly_typed=value)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "device_properties", lambda device=None: DEVICE)
    engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")
    assert trt.fake.network_flags == 1 << value


def test_timing_cache_from_another_gpu_refused(onnx_model, fake_trt):
    cache = onnx_model.parent / "trt.cache"
    cache.write_bytes(b"other gpu")
    fake_trt.fake.cache_mismatch = True
    with pytest.raises(UsageError, match="timing cache from another GPU"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan", config=EngineConfig(timing_cache=cache))
    assert cache.read_bytes() == b"other gpu"


def test_parser_errors_listed_by_node(onnx_model, fake_trt):
    fake_trt.fake.parse_errors = [(12, "/layer1/conv", "ConvInteger", "unsupported operator"),
                             (-1, "", "", "model has no graph")]
    before = _listing(onnx_model.parent)
    with pytest.raises(DeployError, match=r"cannot parse it: node 12 '/layer1/conv' \(ConvInteger\): "
                                          r"ErrorCode.UNSUPPORTED_NODE: unsupported operator; model: .*no graph"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")
    assert _listing(onnx_model.parent) == before


def test_failed_build_shows_log_and_writes_nothing(onnx_model, fake_trt):
    fake_trt.fake.build_fails = True
    cache = onnx_model.parent / "trt.cache"
    before = _listing(onnx_model.parent)
    with pytest.raises(DeployError, match="build failed: Could not find any implementation for node conv1"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan", config=EngineConfig(timing_cache=cache))
    assert _listing(onnx_model.parent) == before  # no plan, no sidecar, no cache, no temporary file


def test_network_input_must_match_manifest(onnx_model, fake_trt):
    fake_trt.fake.input_name = "x"
    with pytest.raises(UsageError, match=r"expected one input 'input', the network has \['x'\]"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")


# ------------------------------------------------------------------------------------ CPU: dense parents


SEG_SIZE = SizeRange(min=32, opt=(48, 64), max=128)


def _dense_manifest(task: str, dtype: str) -> Manifest:
    """A segmentation (float NCHW) or backbone (uint8 NHWC) ONNX's manifest, as the dense ONNX export writes it."""
    shape = (-1, -1, -1, 3) if dtype == "uint8" else (-1, 3, -1, -1)
    output = ({"name": "scores", "layout": "NCHW", "size": "input"} if task == "segment"
              else {"names": ["c3", "c4", "c5"], "strides": [8, 16, 32], "channels": [128, 256, 512]})
    return _onnx_manifest().derive(
        arch="fcn_resnet18" if task == "segment" else "resnet18", task=task, size=SEG_SIZE, output=output,
        precision="fp32", input=InputSpec(name="input", dtype=dtype, layout="NCHW" if dtype != "uint8" else "NHWC",
                                          shape=shape), preprocess=Preprocess(resize=48, crop=0))


@pytest.fixture(params=[("segment", "float32"), ("backbone", "uint8")], ids=["segment-nchw", "backbone-nhwc"])
def dense_model(request, tmp_path, fake_trt):
    task, dtype = request.param
    path = tmp_path / f"{task}.onnx"
    path.write_bytes(ONNX_BYTES)
    manifest = _dense_manifest(task, dtype)
    write_text(manifest_path(path), manifest.to_json())
    fake_trt.fake.output_names = list(manifest.output_names)[::-1]  # TensorRT's order need not be the manifest's
    return path


def test_dense_profile_spans_batch_height_and_width_from_the_manifest(dense_model, fake_trt):
    out = dense_model.parent / "model.plan"
    m = engine_from_onnx(dense_model, out, config=EngineConfig(max_batch=4)).manifest
    ((name, lo, opt, hi),) = fake_trt.fake.profiles
    if m.input.layout == "NHWC":
        assert (lo, opt, hi) == ((1, 32, 32, 3), (4, 48, 64, 3), (4, 128, 128, 3))
    else:
        assert (lo, opt, hi) == ((1, 3, 32, 32), (4, 3, 48, 64), (4, 3, 128, 128))
    assert name == "input" and m == read_manifest(out, required=True)
    assert (m.task, m.size, m.batch) == (_dense_manifest(m.task, m.input.dtype).task, SEG_SIZE, BatchRange(1, 4, 4))
    assert m.output_names == (("scores",) if m.task == "segment" else ("c3", "c4", "c5"))


def test_dense_profile_narrowed_by_size_options_is_what_the_manifest_records(dense_model, fake_trt):
    config = EngineConfig(min_batch=1, opt_batch=2, max_batch=2, min_size=40, opt_size=(64, 96), max_size=96)
    m = engine_from_onnx(dense_model, dense_model.parent / "model.plan", config=config).manifest
    ((_, lo, opt, hi),) = fake_trt.fake.profiles
    hw = m.input.hw_axes
    assert [tuple(s[a] for a in hw) for s in (lo, opt, hi)] == [(40, 40), (64, 96), (96, 96)]
    assert (lo[0], opt[0], hi[0]) == (1, 2, 2)
    assert m.size == SizeRange(min=40, opt=(64, 96), max=96)
    # the manifest's tuned size is clamped into a narrower range when --opt-size is not given
    m = engine_from_onnx(dense_model, dense_model.parent / "b.plan", config=EngineConfig(max_size=56)).manifest
    assert m.size == SizeRange(min=32, opt=(48, 56), max=56)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_size": 256}, r"height/width range 32\.\.256 is outside the ONNX model's 32\.\.128 \(re-export"),
    ({"min_size": 16}, r"height/width range 16\.\.128 is outside the ONNX model's 32\.\.128"),
    ({"min_size": 64, "max_size": 96, "opt_size": (48, 64)}, r"`opt_size` 48x64 is outside .* range 64\.\.96"),
    ({"opt_size": (48, 200)}, r"`opt_size` 48x200 is outside the engine's height/width range 32\.\.128"),
])
def test_size_options_outside_the_onnx_bounds_refused_before_tensorrt(dense_model, fake_trt, kwargs, match):
    before = _listing(dense_model.parent)
    with pytest.raises(UsageError, match=match) as info:
        engine_from_onnx(dense_model, dense_model.parent / "model.plan", config=EngineConfig(**kwargs))
    assert "\n" not in str(info.value)
    assert fake_trt.fake.profiles == [] and fake_trt.fake.parsed is None  # TensorRT never saw it
    assert _listing(dense_model.parent) == before


@pytest.mark.parametrize("kwargs, match", [
    ({"min_size": 0}, "`min_size` must be at least 1"),
    ({"min_size": 96, "max_size": 64}, "`min_size` <= `max_size`"),
    ({"opt_size": (0, 64)}, "`opt_size` must be a height and a width"),
])
def test_size_options_validated(kwargs, match):
    with pytest.raises(UsageError, match=match):
        EngineConfig(**kwargs)


def test_size_options_refused_for_a_classifier(onnx_model, fake_trt):
    with pytest.raises(UsageError, match=r"`max_size`: this classify ONNX has a fixed 32x32 input"):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan", config=EngineConfig(max_size=64))


@pytest.mark.parametrize("changes, match", [
    ({"input": InputSpec(shape=(-1, 3, -1, -1))}, r"model.onnx: only the batch dimension \(and the height and width"),
    ({"size": SEG_SIZE}, r"model.onnx: the ONNX manifest gives a size range but a fixed height/width"),
])
def test_dynamic_dimensions_must_be_those_the_manifest_bounds(onnx_model, fake_trt, changes, match):
    write_text(manifest_path(onnx_model), _onnx_manifest().derive(**changes).to_json())
    with pytest.raises(UsageError, match=match):
        engine_from_onnx(onnx_model, onnx_model.parent / "model.plan")
    assert fake_trt.fake.parsed is None


def test_dense_network_outputs_must_match_the_manifest(dense_model, fake_trt):
    fake_trt.fake.output_names = ["out0"]
    with pytest.raises(UsageError, match=r"its manifest names outputs \[.*\], the network has \['out0'\]"):
        engine_from_onnx(dense_model, dense_model.parent / "model.plan")


@pytest.fixture(scope="module")
def fcn18_onnx(tmp_path_factory) -> Path:
    """A real FCN-ResNet18 (5 classes) exported by ``resnet-export onnx``: dynamic batch 1..4, sizes 32..256."""
    import warnings

    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.weights import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("resnet18", None, task="segment", num_classes=5)
    path = tmp_path_factory.mktemp("fcn18") / "fcn18.onnx"
    return onnx_from_torch(loaded, path, config=OnnxConfig(resize=64, max_size=256, max_batch=4)).path


def test_cli_builds_a_segmentation_engine_profile_from_a_real_export(fcn18_onnx, fake_trt, tmp_path):
    from click.testing import CliRunner

    from resnet_deploy.cli.export import cli

    fake_trt.fake.output_names = ["scores"]
    out = tmp_path / "fcn18.plan"
    r = CliRunner().invoke(cli, ["trt", str(fcn18_onnx), "-o", str(out), "--opt-size", "64x80", "--max-size", "192"])
    assert r.exit_code == 0, r.output
    assert "height/width 32..192" in r.output
    assert fake_trt.fake.profiles == [("input", (1, 3, 32, 32), (4, 3, 64, 80), (4, 3, 192, 192))]
    m = read_manifest(out, required=True)
    assert (m.arch, m.task, m.output_names, m.size) == ("fcn_resnet18", "segment", ("scores",),
                                                         SizeRange(min=32, opt=(64, 80), max=192))


@pytest.mark.parametrize("args, flag", [
    (["--max-size", "512"], "height/width range 32..512 is outside the ONNX model's 32..256"),
    (["--opt-size", "64by80"], "'64by80' is not HEIGHTxWIDTH"),
    (["--min-size", "64", "--opt-size", "48"], "--opt-size 48x48 is outside the engine's height/width range 64..256"),
])
def test_cli_size_errors_are_one_line_exit_2(fcn18_onnx, fake_trt, tmp_path, args, flag):
    from click.testing import CliRunner

    from resnet_deploy.cli.export import cli

    r = CliRunner().invoke(cli, ["trt", str(fcn18_onnx), "-o", str(tmp_path / "x.plan"), *args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and flag in lines[0], r.output
    assert list(tmp_path.iterdir()) == []


def test_precision_flags_do_not_exist_in_the_fake():
    # guards the fake itself: code that reached for a removed flag would fail here as on TRT 11
    with pytest.raises(AttributeError):
        make_fake_trt().BuilderFlag.INT8  # noqa: B018


# ------------------------------------------------------------------------------------ CPU: inspector JSON

DETAILED = {
    "Layers": [
        {"Name": "input_quantize", "LayerType": "Reformat",
         "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "q", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "/layer1/conv + relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "q", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
        {"Name": "/fc/Gemm", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32"}]},
    ],
    "Bindings": ["input", "logits"],
}


def test_summarize_detailed_layers():
    info = summarize_layers(json.dumps(DETAILED))
    assert info["detailed"]
    assert [(x["name"], x["type"], x["precision"]) for x in info["layers"]] == [
        ("input_quantize", "Reformat", "fp32"),
        ("/layer1/conv + relu", "CaskConvolution", "int8"),
        ("/fc/Gemm", "CaskGemmMatrixMultiply", "fp16"),
    ]
    assert info["precisions"] == {"fp32": 1, "int8": 1, "fp16": 1}


def test_summarize_tensorrt11_layout():
    # 11.x: "Format/Datatype" split into "Datatype" and "Format"; "Bindings" became "I/O Tensors"
    info = summarize_layers(json.dumps({
        "Layers": [{"Name": "/layer1/conv", "LayerType": "CaskConvolution",
                    "Inputs": [{"Name": "q", "Datatype": "Int8", "Format": "Thirty-two wide channel vectorized"}],
                    "Outputs": [{"Name": "y", "Datatype": "Half", "Format": "Channel major (kHWC8)"}]}],
        "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}],
    }))
    assert [(x["name"], x["precision"]) for x in info["layers"]] == [("/layer1/conv", "int8")]


def test_summarize_names_only_layers():
    info = summarize_layers(json.dumps({"Layers": ["conv1", "fc"], "Bindings": ["input", "logits"]}))
    assert not info["detailed"] and [x["name"] for x in info["layers"]] == ["conv1", "fc"]
    assert info["precisions"] == {}


def test_precision_words():
    assert export_trt._precision("Row major linear BFloat16 format") == "bf16"
    assert export_trt._precision("Row major UInt8 format") == "uint8"
    assert export_trt._precision(None) is None


# ------------------------------------------------------------------------------------ GPU: real TensorRT


def _real_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        return cuda.device_count() > 0
    except MissingDependencyError:
        return False


@pytest.mark.tensorrt
@pytest.mark.skipif(not _real_tensorrt(), reason="needs TensorRT, cuda-python and a CUDA device")
def test_real_build_and_inspect(demo18_onnx, tmp_path):
    import tensorrt as trt

    out, cache = tmp_path / "demo18.plan", tmp_path / "timing.cache"
    config = EngineConfig(max_batch=8, opt_batch=4, workspace_mib=1024, timing_cache=cache, optimization_level=1)
    result = engine_from_onnx(demo18_onnx, out, config=config)
    assert out.stat().st_size > 1000 and cache.stat().st_size > 0
    m = result.manifest
    assert m.build["tensorrt"] == trt.__version__ and m.batch == BatchRange(1, 4, 8)
    assert m.build["compute_capability"] == cuda.device_properties().compute_capability
    info = export_trt.inspect_engine(out)
    assert info["detailed"] and info["layers"] and "fp32" in info["precisions"]
    with pytest.raises(UsageError, match="exists; pass"):
        engine_from_onnx(demo18_onnx, out, config=config)


def test_fake_builder_matches_the_stubs(tensorrt_stub_mismatches):
    assert tensorrt_stub_mismatches(make_fake_trt()) == []


def test_stub_check_catches_a_fake_that_drifted(tensorrt_stub_mismatches):
    trt = make_fake_trt()
    trt.IBuilderConfig.set_flags = lambda self, flag: None  # no such method
    trt.IBuilderConfig.set_memory_pool_limit = lambda self, pool, size: None  # real name: pool_size
    trt.BuilderFlag.FP16 = "FP16"  # TensorRT 10.13 still has it, so the stubs do: allowed here
    trt.BuilderFlag.NO_SUCH_FLAG = "X"
    found = tensorrt_stub_mismatches(trt)
    assert any("set_flags: not in the stubs" in f for f in found), found
    assert any("set_memory_pool_limit('pool', 'size')" in f for f in found), found
    assert any("BuilderFlag.NO_SUCH_FLAG" in f for f in found), found
    assert len(found) == 3, found
