"""TensorRT session: refusals on the CPU (no TensorRT needed), the session's plumbing against a
fake TensorRT + fake CUDA, and real engines (marker ``tensorrt``) where TensorRT and a GPU exist."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, SizeRange, manifest_path
from resnet_deploy.publish import sha256_bytes, write_text
from resnet_deploy.runtime import cuda, open_session
from resnet_deploy.runtime.tensorrt import HostInfo, TensorRTSession, check_build_matches_host, check_plan_bytes

FAKE_PLAN = b"FAKEPLAN" + bytes(range(256)) * 2  # binary, with NUL bytes, like a real plan
WEIGHTS = np.random.default_rng(0).standard_normal((48, 5)).astype(np.float32)  # fake engine: x.reshape(n, 48) @ W


def _manifest(plan: bytes, **build) -> Manifest:
    return Manifest(
        arch="resnet18", num_classes=5, precision="fp32",
        input=InputSpec(name="input", shape=(-1, 3, 4, 4)), preprocess=Preprocess(resize=4, crop=4),
        batch=BatchRange(1, 2, 4), source={"sha256": sha256_bytes(plan)},
        build={"tensorrt": "10.13.3", "gpu": "Fake Orin", "compute_capability": "8.7", **build},
    )


def _write_plan(tmp_path, plan: bytes = FAKE_PLAN, manifest: Manifest | None | str = "default", name="model.plan"):
    path = tmp_path / name
    path.write_bytes(plan)
    if manifest == "default":
        manifest = _manifest(plan)
    if manifest is not None:
        write_text(manifest_path(path), manifest.to_json())
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# ------------------------------------------------------------------------------------ CPU: refusals before TensorRT


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (FAKE_PLAN[:10], "only 10 bytes"),
    (b"PK\x03\x04" + bytes(200), "ZIP"),
    (b"\x80\x04\x95" + bytes(200), "pickle"),
    (b"\x93NUMPY\x01\x00" + bytes(200), "NumPy"),
    (b"\x08\x08\x12\x07pytorch" + bytes(200), "ONNX model"),
    (b'{"format": "resnet-deploy/1", "arch": "resnet18"}' + b" " * 100, "text"),
])
def test_not_an_engine(data, why):
    with pytest.raises(UsageError, match=f"not a TensorRT engine.*{why}"):
        check_plan_bytes(data, "x.plan")


def test_binary_plan_passes_the_sniff():
    check_plan_bytes(FAKE_PLAN, "x.plan")


def test_onnx_file_as_plan_refused_without_tensorrt(tmp_path, no_tensorrt):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "model.plan"
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))
    with pytest.raises(UsageError, match="not a TensorRT engine.*ONNX model"):
        open_session(path)


def test_garbage_plan_refused(tmp_path, no_tensorrt):
    path = _write_plan(tmp_path, b"this is not an engine\n" * 10, manifest=None)
    with pytest.raises(UsageError, match="not a TensorRT engine"):
        open_session(path)


def test_truncated_plan_fails_the_manifest_hash(tmp_path, no_tensorrt):
    path = _write_plan(tmp_path, FAKE_PLAN[:300], manifest=_manifest(FAKE_PLAN))
    with pytest.raises(UsageError, match="does not match the sha256.*truncated"):
        open_session(path)


def test_plan_without_manifest_refused(tmp_path, no_tensorrt):
    path = _write_plan(tmp_path, manifest=None)
    with pytest.raises(UsageError, match=r"no manifest \(model.plan.json\).*allow_unverified"):
        open_session(path)


def test_manifest_without_build_record_refused(tmp_path, no_tensorrt):
    path = _write_plan(tmp_path, manifest=_manifest(FAKE_PLAN).derive(build=None))
    with pytest.raises(UsageError, match="no TensorRT build record"):
        open_session(path)


def test_tensorrt_missing_after_the_checks(tmp_path, no_tensorrt):
    path = _write_plan(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"pip install 'resnet-deploy\[tensorrt-cu12\]' .*on Jetson TensorRT comes with JetPack"):
        open_session(path)


# ------------------------------------------------------------------------------------ CPU: engine vs host

HOST = HostInfo(tensorrt="10.13.3.9", compute_capability="8.7", gpu="Orin", integrated=True)
BUILD = {"tensorrt": "10.13.3", "compute_capability": "8.7"}


def test_same_host_accepted():
    check_build_matches_host(BUILD, HOST, path="m.plan")  # 10.13.3 == 10.13.3.9 (build number ignored)


@pytest.mark.parametrize("build, host", [
    ({**BUILD, "tensorrt": "10.3.0"}, HOST),
    ({**BUILD, "tensorrt": "10.13.2"}, HOST),  # patch releases differ too
    (BUILD, HostInfo("11.4.0", "8.7")),
    (BUILD, HostInfo("10.13.3", "8.9")),
    ({**BUILD, "version_compatible": True}, HostInfo("10.13.1", "8.7")),  # older than the builder
    ({**BUILD, "version_compatible": True}, HostInfo("12.0.0", "8.7")),  # a major NVIDIA does not document
    ({**BUILD, "compute_capability": "8.6", "hardware_compatibility": True}, HostInfo("10.13.3", "7.5")),
])
def test_other_host_refused_naming_both(build, host):
    built_sm = "sm_" + build["compute_capability"].replace(".", "")
    host_sm = "sm_" + host.compute_capability.replace(".", "")
    expected = f"built for TRT {build['tensorrt']} / {built_sm}, this is TRT {host.tensorrt} / {host_sm}.*rebuild"
    with pytest.raises(UsageError, match=expected):
        check_build_matches_host(build, host, path="m.plan")


def _table_rows() -> list[list[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "tensorrt.md").read_text(encoding="utf-8")
    body = text.split("<!-- compatibility-table", 1)[1].split("<!-- end compatibility-table", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return rows[1:]  # without the header


def _gpu(text: str) -> tuple[str, bool]:
    sm, _, where = text.partition(" ")
    return f"{sm[3:-1]}.{sm[-1]}", where == "Jetson"


@pytest.mark.parametrize("row", _table_rows(), ids=lambda row: row[0])
def test_compatibility_table(row):
    """docs/tensorrt.md's table of NVIDIA's documented cases is what check_build_matches_host does."""
    case, built_with, built_on, flags, runs_on, loads, page = row
    assert page.startswith("https://docs.nvidia.com/"), case
    cc, integrated = _gpu(built_on)
    build = {"tensorrt": built_with, "compute_capability": cc, "integrated": integrated,
             "version_compatible": "vc" in flags.split(), "hardware_compatibility": "hw" in flags.split()}
    host_version, _, host_gpu = runs_on.partition(" ")
    host_cc, host_integrated = _gpu(host_gpu)
    host = HostInfo(host_version, host_cc, integrated=host_integrated)
    if loads == "yes":
        check_build_matches_host(build, host, path="m.plan")
    else:
        assert loads == "no", case
        with pytest.raises(UsageError, match=f"built for TRT {built_with} .* this is TRT {host_version} "):
            check_build_matches_host(build, host, path="m.plan")


def test_compatibility_table_covers_the_documented_cases():
    cases = " / ".join(row[0] for row in _table_rows()).lower()
    for needle in ("same release", "same major", "10 on an 11", "8.6 on a 10", "hardware compatible",
                   "another compute capability", "jetson engine on a discrete"):
        assert needle in cases, needle


def test_version_compatible_tensorrt10_engine_runs_on_tensorrt11():
    # Defect 1: refused before ("same major" was required); NVIDIA documents 10 -> 11 and 8 -> 10.
    check_build_matches_host({**BUILD, "version_compatible": True}, HostInfo("11.4.1", "8.7"), path="m.plan")
    check_build_matches_host({**BUILD, "tensorrt": "8.6.1", "version_compatible": True}, HostInfo("10.3.0", "8.7"),
                             path="m.plan")
    with pytest.raises(UsageError, match="built for TRT 8.6.1"):
        check_build_matches_host({**BUILD, "tensorrt": "8.6.1", "version_compatible": True},
                                 HostInfo("11.4.1", "8.7"), path="m.plan")
    with pytest.raises(UsageError, match="built for TRT 10.13.3"):  # plain engines still need the exact version
        check_build_matches_host(BUILD, HostInfo("11.4.1", "8.7"), path="m.plan")


def test_compatible_engines_accepted():
    check_build_matches_host({**BUILD, "version_compatible": True}, HostInfo("10.16.0", "8.7"), path="m.plan")
    hw = {**BUILD, "compute_capability": "8.6", "hardware_compatibility": True}
    check_build_matches_host(hw, HostInfo("10.13.3", "9.0"), path="m.plan")
    with pytest.raises(UsageError, match="do not run on Jetson"):
        check_build_matches_host(hw, HostInfo("10.13.3", "8.7", integrated=True), path="m.plan")


# ------------------------------------------------------------------------------------ CPU: fake TensorRT


@dataclass(frozen=True)
class FakeEngine:
    """What a fake engine computes: its input (shape with -1s, profile min/opt/max, TensorRT type) and
    its outputs in TensorRT's order, each a name, a shape from the input shape, and a numpy function."""

    input_shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    input_type: str
    outputs: tuple[tuple[str, Callable, Callable], ...]


CLASSIFIER = FakeEngine((-1, 3, 4, 4), ((1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)), "FLOAT",
                        (("logits", lambda s: (s[0], 5), lambda x: x.reshape(len(x), 48) @ WEIGHTS),))


def make_fake_trt(cudart, engine: FakeEngine = CLASSIFIER) -> SimpleNamespace:
    """Just enough of the tensorrt module for TensorRTSession: by default a (-1,3,4,4) -> (-1,5) engine, batch 1..4.

    Classes, methods and parameter names are the real ones (``test_fake_runtime_matches_the_stubs``
    holds them to tensorrt-stubs); what the fake records or is told to do lives under ``trt.fake``.
    As TensorRT, the execution context refuses input shapes outside the profile, gives output
    shapes only once the input shape is set, and the kernel writes each output to its address
    (failing, as an illegal address would, when the buffer there is too small).
    """
    fake = SimpleNamespace(executes=0, refuse_capture=False, fail_execute=False, dtypes={}, context=None,
                           runtime=None, logger=None, engine=engine)
    trt = SimpleNamespace(__version__="10.13.3.9", fake=fake)
    names = ("input", *(name for name, _, _ in engine.outputs))
    out_specs = {name: (shape, fn) for name, shape, fn in engine.outputs}
    np_types = {"FLOAT": np.float32, "UINT8": np.uint8}

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

    def _fits(shape) -> bool:
        lo, _, hi = engine.profile
        return len(shape) == len(lo) and all(a <= d <= b for a, d, b in zip(lo, shape, hi))

    class IExecutionContext:
        def set_input_shape(self, name, shape):
            if name != "input" or not _fits(tuple(shape)):
                return False
            self._shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name == "input":
                return self._shape
            return out_specs[name][0](self._shape) if self._shape else (-1,) * 4

        def set_tensor_address(self, name, memory):
            self._addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            fake.executes += 1
            if fake.fail_execute:
                fake.logger.log(Logger.ERROR, "IExecutionContext::enqueueV3: illegal memory access")
                return False
            if fake.refuse_capture and stream_handle in cudart.capturing:
                return False
            shape, src = self._shape, self._addresses["input"]
            dtype = np.dtype(np_types[engine.input_type])
            targets = {name: self._addresses[name] for name in out_specs}

            def kernel() -> None:  # reads the device input, writes each device output, takes 1 ms
                count = int(np.prod(shape))
                assert cudart._in_device(src, count * dtype.itemsize), "input buffer too small"
                x = np.frombuffer((ctypes.c_byte * (count * dtype.itemsize)).from_address(src), dtype).reshape(shape)
                for name, (_, fn) in out_specs.items():
                    y = np.ascontiguousarray(fn(x), dtype=np.float32)
                    assert cudart._in_device(targets[name], y.nbytes), f"output buffer {name} too small"
                    ctypes.memmove(targets[name], y.ctypes.data, y.nbytes)
                cudart.clock_ms += 1.0

            cudart.run_or_capture(stream_handle, kernel)
            return True

    class ICudaEngine:
        num_io_tensors = len(names)

        def get_tensor_name(self, index):
            return names[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            default = getattr(trt.DataType, engine.input_type) if name == "input" else trt.DataType.FLOAT
            return fake.dtypes.get(name, default)

        def get_tensor_shape(self, name):
            return engine.input_shape if name == "input" else out_specs[name][0](engine.input_shape)

        def get_tensor_profile_shape(self, name, profile_index):
            assert name == "input" and profile_index == 0
            return list(engine.profile)

        def create_execution_context(self, strategy=None):
            fake.context = _new(IExecutionContext, _shape=None, _addresses={})
            return fake.context

    class Runtime:
        def __init__(self, logger) -> None:
            fake.logger, fake.runtime = logger, self
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, serialized_engine):
            if not bytes(serialized_engine).startswith(b"FAKEPLAN"):
                fake.logger.log(Logger.ERROR, "Serialization assertion magicTagRead == kMAGIC_TAG failed")
                return None
            return ICudaEngine()

    def nptype(trt_type):
        # as the wheel's tensorrt.nptype: TypeError for types numpy lacks (bfloat16, fp8, int4, fp4)
        mapping = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.UINT8: np.uint8}
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    for cls in (ILogger, Logger, IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, cls.__name__, cls)
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = SimpleNamespace(FLOAT="FLOAT", HALF="HALF", UINT8="UINT8", BF16="BF16")
    trt.nptype = nptype
    return trt


@pytest.fixture
def fake_trt(monkeypatch, fake_cudart):
    trt = make_fake_trt(fake_cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def _expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), 48) @ WEIGHTS


def test_session_runs_and_follows_batch_size(tmp_path, fake_trt, fake_cudart):
    with open_session(_write_plan(tmp_path)) as session:
        assert isinstance(session, TensorRTSession)
        assert (session.input_name, session.input_dtype, session.sample_shape) == ("input", "float32", (3, 4, 4))
        assert (session.min_batch, session.max_batch) == (1, 4)
        assert "10.13.3.9" in session.description and "Fake Orin" in session.description
        for n in (3, 1, 4):
            x = _batch(n, seed=n)
            out = session.run(x)
            assert out.shape == (n, 5) and out.dtype == np.float32
            np.testing.assert_allclose(out, _expected(x), rtol=1e-5, atol=1e-5)
        assert fake_trt.fake.context._shape == (4, 3, 4, 4)
        assert not fake_trt.fake.runtime.engine_host_code_allowed
    assert fake_cudart.live() == 0  # buffers, stream and events freed
    session.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        session.run(_batch(1))


def test_batch_above_profile_max_refused_before_any_copy(tmp_path, fake_trt, fake_cudart):
    with open_session(_write_plan(tmp_path)) as session:
        fake_cudart.calls.clear()
        with pytest.raises(UsageError, match=r"batch 5 is outside this model's range 1\.\.4"):
            session.run(_batch(5))
        with pytest.raises(UsageError, match=r"shape \(N, 3, 4, 4\)"):
            session.run(np.zeros((2, 4, 4, 3), np.float32))
        assert "cudaMemcpyAsync" not in fake_cudart.calls


def test_run_timed_reports_trtexec_times(tmp_path, fake_trt):
    with open_session(_write_plan(tmp_path)) as session:
        x = _batch(2)
        out, times = session.run_timed(x)
        np.testing.assert_allclose(out, _expected(x), rtol=1e-5, atol=1e-5)
        # fake costs: each copy 0.25 ms, the engine 1 ms
        assert times["h2d_ms"] == pytest.approx(0.25)
        assert times["gpu_compute_ms"] == pytest.approx(1.0)
        assert times["d2h_ms"] == pytest.approx(0.25)
        assert times["latency_ms"] == pytest.approx(1.5)
        assert times["host_ms"] > 0


def test_cuda_graph_captured_replayed_and_recaptured(tmp_path, fake_trt, fake_cudart):
    with open_session(_write_plan(tmp_path), cuda_graph=True) as session:
        x2, x3 = _batch(2, seed=2), _batch(3, seed=3)
        session.run(x2)  # plain run, then capture
        assert fake_trt.fake.executes == 2 and len(fake_cudart.execs) == 1
        out, times = session.run_timed(x2 + 1)  # replayed: no new execute call
        assert fake_trt.fake.executes == 2 and "cudaGraphLaunch" in fake_cudart.calls
        np.testing.assert_allclose(out, _expected(x2 + 1), rtol=1e-5, atol=1e-4)
        assert times["gpu_compute_ms"] == pytest.approx(1.0)
        out = session.run(x3)  # new shape: plain run, then a new capture replaces the old graph
        np.testing.assert_allclose(out, _expected(x3), rtol=1e-5, atol=1e-5)
        assert fake_trt.fake.executes == 4 and len(fake_cudart.execs) == 1
        np.testing.assert_allclose(session.run(x3 * 2), _expected(x3 * 2), rtol=1e-5, atol=1e-4)
        assert fake_trt.fake.executes == 4
    assert fake_cudart.live() == 0


def test_cuda_graph_capture_failure_falls_back(tmp_path, fake_trt, fake_cudart):
    fake_trt.fake.refuse_capture = True
    with open_session(_write_plan(tmp_path), cuda_graph=True) as session:
        x = _batch(2)
        with pytest.warns(RuntimeWarning, match="cannot run under CUDA graph capture"):
            out = session.run(x)
        np.testing.assert_allclose(out, _expected(x), rtol=1e-5, atol=1e-5)
        assert not session.cuda_graph and session.graph_note
        np.testing.assert_allclose(session.run(x), _expected(x), rtol=1e-5, atol=1e-5)
        assert not fake_cudart.capturing and not fake_cudart.execs


def test_execution_failure_shows_tensorrt_log(tmp_path, fake_trt):
    with open_session(_write_plan(tmp_path)) as session:
        fake_trt.fake.fail_execute = True
        with pytest.raises(DeployError, match="execution failed.*illegal memory access"):
            session.run(_batch(1))


def test_deserialization_failure_shows_tensorrt_log(tmp_path, fake_trt):
    plan = b"NOTFAKE!" + FAKE_PLAN[8:]
    with pytest.raises(UsageError, match="not a TensorRT engine .*magicTagRead"):
        open_session(_write_plan(tmp_path, plan, manifest=_manifest(plan)))


def test_unverified_opt_in_skips_manifest_checks(tmp_path, fake_trt):
    with open_session(_write_plan(tmp_path, manifest=None), allow_unverified=True) as session:
        assert session.manifest is None and session.max_batch == 4


def test_engine_from_another_host_refused_before_deserializing(tmp_path, fake_trt):
    path = _write_plan(tmp_path, manifest=_manifest(FAKE_PLAN, compute_capability="9.0"))
    with pytest.raises(UsageError, match="built for TRT 10.13.3 / sm_90, this is TRT 10.13.3.9 / sm_87"):
        open_session(path)
    assert fake_trt.fake.runtime is None


def test_version_compatible_engine_allows_host_code(tmp_path, fake_trt):
    path = _write_plan(tmp_path, manifest=_manifest(FAKE_PLAN, version_compatible=True, tensorrt="10.13.0"))
    with open_session(path):
        assert fake_trt.fake.runtime.engine_host_code_allowed


def test_failed_setup_frees_what_it_allocated(tmp_path, fake_trt, fake_cudart):
    fake_cudart.fail["cudaMalloc"] = fake_cudart.cudaError_t.cudaErrorMemoryAllocation  # after both pinned buffers
    with pytest.raises(DeployError, match="cudaMalloc.*cudaErrorMemoryAllocation"):
        open_session(_write_plan(tmp_path))
    assert fake_cudart.live() == 0


def test_manifest_of_another_model_refused(tmp_path, fake_trt, fake_cudart):
    manifest = _manifest(FAKE_PLAN)
    manifest = manifest.derive(input=InputSpec(name="images", shape=(-1, 3, 4, 4)))
    with pytest.raises(UsageError, match="engine input is 'input' but its manifest says 'images'"):
        open_session(_write_plan(tmp_path, manifest=manifest))
    assert fake_cudart.live() == 0


@pytest.mark.parametrize("failing", ["cudaStreamBeginCapture", "cudaGraphInstantiate"])
def test_failed_graph_capture_keeps_the_result_and_falls_back(tmp_path, fake_trt, fake_cudart, failing):
    # Defect 3: the error escaped _capture(), losing the logits of the plain run that had just
    # succeeded, and cuda_graph stayed on so every later call failed the same way.
    fake_cudart.fail[failing] = fake_cudart.cudaError_t.cudaErrorInvalidValue
    with open_session(_write_plan(tmp_path), cuda_graph=True) as session:
        x = _batch(2)
        with pytest.warns(RuntimeWarning, match=f"CUDA graph capture failed.*{failing}.*running without graphs"):
            out = session.run(x)
        np.testing.assert_allclose(out, _expected(x), rtol=1e-5, atol=1e-5)
        assert not session.cuda_graph and failing in session.graph_note
        np.testing.assert_allclose(session.run(x * 2), _expected(x * 2), rtol=1e-5, atol=1e-4)
        assert not fake_cudart.capturing and not fake_cudart.graphs and not fake_cudart.execs


def test_close_after_a_sticky_error_frees_everything_and_keeps_the_first_error(tmp_path, fake_trt, fake_cudart):
    # Defect 4: close() stopped at the first failed cudaFree (leaking the rest: buffers, stream,
    # context, engine, runtime) and, in a with block, replaced the error that caused it.
    session = open_session(_write_plan(tmp_path))
    fake_cudart.calls.clear()
    fake_cudart.sticky = fake_cudart.cudaError_t.cudaErrorIllegalAddress
    with pytest.raises(DeployError, match="cudaErrorIllegalAddress"):
        with session:
            session.run(_batch(1))  # the copy hits the sticky error
    frees = [c for c in fake_cudart.calls if c in ("cudaFree", "cudaFreeHost", "cudaStreamDestroy")]
    assert sorted(frees) == ["cudaFree", "cudaFree", "cudaFreeHost", "cudaFreeHost", "cudaStreamDestroy"]
    assert len(session.close_errors) == 5 and all("cudaErrorIllegalAddress" in e for e in session.close_errors)
    assert session.engine is None and session._context is None and session._stream is None
    session.close()  # idempotent, nothing left to free
    assert len(session.close_errors) == 5


def test_engine_io_type_numpy_lacks_is_refused(tmp_path, fake_trt, fake_cudart):
    # Defect 5: the fake's nptype raised KeyError where TensorRT's raises TypeError, so the
    # session's "numpy cannot hold" branch never ran. Now the fake is the real function's twin.
    fake_trt.fake.dtypes["logits"] = fake_trt.DataType.BF16
    with pytest.raises(UsageError, match="engine I/O type numpy cannot hold.*Could not resolve TensorRT datatype"):
        open_session(_write_plan(tmp_path))
    assert fake_cudart.live() == 0
    with pytest.raises(TypeError):
        fake_trt.nptype(fake_trt.DataType.BF16)


def test_fake_runtime_matches_the_stubs(fake_trt, tensorrt_stub_mismatches):
    assert tensorrt_stub_mismatches(fake_trt) == []


# ------------------------------------------------------------------------------------ CPU: dense engines

SEG_WEIGHTS = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)


def _pool(x: np.ndarray, stride: int) -> np.ndarray:
    """Mean over stride x stride blocks of a uint8 NHWC batch, as float NCHW: the fake backbone's stage output."""
    n, h, w, c = x.shape
    blocks = x[:, : h // stride * stride, : w // stride * stride].astype(np.float32)
    return blocks.reshape(n, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4)).transpose(0, 3, 1, 2)


#: a segmenter: float NCHW in, 4 class scores per pixel at the input size; profile batch 1..4, sizes 8..32
SEGMENTER = FakeEngine((-1, 3, -1, -1), ((1, 3, 8, 8), (2, 3, 16, 24), (4, 3, 32, 32)), "FLOAT",
                       (("scores", lambda s: (s[0], 4, s[2], s[3]), lambda x: np.einsum("nkhw,kc->nchw", x, SEG_WEIGHTS)),))
#: a backbone: uint8 NHWC in, c4 (stride 16) and c2 (stride 4), listed by TensorRT in the other order than the manifest
BACKBONE = FakeEngine((-1, -1, -1, 3), ((1, 32, 32, 3), (1, 32, 48, 3), (2, 64, 64, 3)), "UINT8",
                      (("c4", lambda s: (s[0], 3, s[1] // 16, s[2] // 16), lambda x: _pool(x, 16)),
                       ("c2", lambda s: (s[0], 3, s[1] // 4, s[2] // 4), lambda x: _pool(x, 4))))


def _dense_manifest(plan: bytes, engine: FakeEngine) -> Manifest:
    lo, opt, hi = engine.profile
    if engine is SEGMENTER:
        spec, size = InputSpec(name="input", shape=(-1, 3, -1, -1)), SizeRange(8, (16, 24), 32)
        task, output = "segment", {"name": "scores", "layout": "NCHW", "size": "input"}
    else:
        spec, size = InputSpec(name="input", dtype="uint8", layout="NHWC", shape=(-1, -1, -1, 3)), SizeRange(32, (32, 48), 64)
        task, output = "backbone", {"names": ["c2", "c4"], "strides": [4, 16], "channels": [3, 3]}
    return _manifest(plan).derive(arch="fcn_resnet18" if task == "segment" else "resnet18", task=task, input=spec,
                                  size=size, output=output, batch=BatchRange(lo[0], opt[0], hi[0]),
                                  preprocess=Preprocess(resize=16, crop=0))


@pytest.fixture
def dense_trt(request, monkeypatch, fake_cudart):
    trt = make_fake_trt(fake_cudart, request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _dense_plan(tmp_path, trt, **changes) -> Path:
    return _write_plan(tmp_path, manifest=_dense_manifest(FAKE_PLAN, trt.fake.engine).derive(**changes))


@pytest.mark.parametrize("dense_trt", [SEGMENTER], indirect=True)
def test_segmenter_outputs_follow_each_calls_height_and_width(tmp_path, dense_trt, fake_cudart):
    with open_session(_dense_plan(tmp_path, dense_trt)) as session:
        assert (session.task, session.output_names, session.sample_shape) == ("segment", ("scores",), (3, None, None))
        assert session.size_range == SizeRange(8, (16, 24), 32) and (session.min_batch, session.max_batch) == (1, 4)
        mallocs = fake_cudart.calls.count("cudaMalloc")
        assert mallocs == 2  # input and scores, for the profile's opt shape (2, 3, 16, 24)
        for i, (n, h, w) in enumerate([(1, 8, 8), (2, 16, 24), (4, 32, 32), (3, 32, 20), (1, 9, 31)]):
            x = np.random.default_rng(i).standard_normal((n, 3, h, w)).astype(np.float32)
            scores = session.run(x)
            assert scores.shape == (n, 4, h, w) and scores.dtype == np.float32
            np.testing.assert_allclose(scores, np.einsum("nkhw,kc->nchw", x, SEG_WEIGHTS), rtol=1e-5, atol=1e-5)
            assert session.run_outputs(x).keys() == {"scores"}
        # grown once, for (4, 3, 32, 32); the smaller calls after it reuse those buffers
        assert fake_cudart.calls.count("cudaMalloc") == mallocs + 2
        with pytest.raises(UsageError, match=r"classify\(\) needs a classify artifact; this one is a segment model"):
            session.classify(np.zeros((16, 16, 3), np.uint8))
    assert fake_cudart.live() == 0


@pytest.mark.parametrize("dense_trt", [SEGMENTER], indirect=True)
def test_segment_on_an_engine_gives_class_maps_at_each_images_own_size(tmp_path, dense_trt):
    # the first frame's short side is the manifest's resize (16): it runs at its own size, so its
    # class map is exactly the argmax of the engine's scores; the second is resized to 24x16 and back
    frames = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(16, 24), (48, 32)])]
    with open_session(_dense_plan(tmp_path, dense_trt)) as session:
        maps = session.segment(frames)
        assert dense_trt.fake.context._shape == (1, 3, 24, 16)  # the second frame's, short side 16
        assert [m.shape for m in maps] == [(16, 24), (48, 32)] and maps[0].dtype == np.int32
        x = session.prepare_dense(frames[0])
        np.testing.assert_array_equal(maps[0], np.einsum("nkhw,kc->nchw", x, SEG_WEIGHTS)[0].argmax(0))


@pytest.mark.parametrize("dense_trt", [BACKBONE], indirect=True)
def test_backbone_returns_every_named_output_in_the_manifests_order(tmp_path, dense_trt, fake_cudart):
    with open_session(_dense_plan(tmp_path, dense_trt)) as session:
        assert session.output_names == ("c2", "c4") and session.input_dtype == "uint8"
        assert session.sample_shape == (None, None, 3)
        for i, (n, h, w) in enumerate([(1, 32, 48), (2, 64, 64), (2, 48, 32)]):
            x = np.random.default_rng(i).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
            feats = session.features(x)
            assert list(feats) == ["c2", "c4"]
            assert feats["c2"].shape == (n, 3, h // 4, w // 4) and feats["c4"].shape == (n, 3, h // 16, w // 16)
            for name, stride in (("c2", 4), ("c4", 16)):
                np.testing.assert_allclose(feats[name], _pool(x, stride), rtol=1e-6, atol=1e-4)
            np.testing.assert_array_equal(session.run(x), feats["c2"])  # run() is the first output
            out, times = session.run_timed(x)
            np.testing.assert_array_equal(out, feats["c2"])
            assert times["d2h_ms"] == pytest.approx(0.5)  # one copy per output
    assert fake_cudart.live() == 0


@pytest.mark.parametrize("dense_trt", [SEGMENTER, BACKBONE], indirect=True, ids=["segment", "backbone"])
@pytest.mark.parametrize("unverified", [False, True], ids=["manifest", "engine-profile"])
def test_size_outside_the_profile_refused_in_one_line_before_any_backend_call(tmp_path, dense_trt, fake_cudart,
                                                                              unverified):
    path = _dense_plan(tmp_path, dense_trt)
    session = TensorRTSession(path, allow_unverified=True) if unverified else open_session(path)  # no manifest
    with session:
        lo, _, hi = dense_trt.fake.engine.profile
        h, w = session.hw_axes
        small, big = lo[h], hi[h]
        shape_before = dense_trt.fake.context._shape
        fake_cudart.calls.clear()
        for bad_h, bad_w in ((big + 1, small), (small, small - 1)):
            shape = list(lo)
            shape[h], shape[w] = bad_h, bad_w
            x = np.zeros(shape, np.float32 if session.input_dtype == "float32" else np.uint8)
            with pytest.raises(UsageError, match=rf"input {bad_h}x{bad_w} is outside this model's sizes "
                                                 rf"\(height and width each in {small}\.\.{big}\)") as info:
                session.run_outputs(x)
            assert "\n" not in str(info.value)
        assert fake_cudart.calls == [] and dense_trt.fake.context._shape == shape_before


@pytest.mark.parametrize("dense_trt", [SEGMENTER], indirect=True)
def test_manifest_whose_sizes_or_outputs_are_not_the_engines_refused(tmp_path, dense_trt, fake_cudart):
    with pytest.raises(UsageError, match=r"manifest says sizes 8\.\.64 but the engine's profile takes sizes 8\.\.32"):
        open_session(_dense_plan(tmp_path, dense_trt, size=SizeRange(8, (16, 24), 64)))
    with pytest.raises(UsageError, match=r"manifest says a fixed size but the engine's profile takes sizes 8\.\.32"):
        open_session(_dense_plan(tmp_path, dense_trt, size=None))
    with pytest.raises(UsageError, match=r"manifest names outputs \['logits'\] but the engine has \['scores'\]"):
        open_session(_dense_plan(tmp_path, dense_trt, output={"name": "logits"}))
    assert fake_cudart.live() == 0


@pytest.mark.parametrize("dense_trt", [SEGMENTER], indirect=True)
def test_cuda_graph_recaptured_after_the_buffers_grow(tmp_path, dense_trt, fake_cudart):
    with open_session(_dense_plan(tmp_path, dense_trt), cuda_graph=True) as session:
        small = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
        big = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
        for x in (small, small * 2, big, big * 2, small * 3):
            np.testing.assert_allclose(session.run(x), np.einsum("nkhw,kc->nchw", x, SEG_WEIGHTS), rtol=1e-5, atol=1e-4)
        assert dense_trt.fake.executes == 6  # a plain run and a capture per shape: 3 shapes; the rest replayed
    assert fake_cudart.live() == 0


@pytest.mark.parametrize("dense_trt", [SEGMENTER, BACKBONE], indirect=True, ids=["segment", "backbone"])
def test_dense_fakes_match_the_stubs(dense_trt, tensorrt_stub_mismatches):
    assert tensorrt_stub_mismatches(dense_trt) == []


# ------------------------------------------------------------------------------------ GPU: real TensorRT


def _real_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        return cuda.device_count() > 0
    except MissingDependencyError:
        return False


tensorrt_only = pytest.mark.skipif(not _real_tensorrt(), reason="needs TensorRT, cuda-python and a CUDA device")


@pytest.fixture(scope="module")
def demo18_plan(demo18_onnx, tmp_path_factory):
    from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx

    out = tmp_path_factory.mktemp("trt") / "demo18.plan"
    engine_from_onnx(demo18_onnx, out, config=EngineConfig(max_batch=16, opt_batch=8, workspace_mib=1024))
    return out


@pytest.mark.tensorrt
@tensorrt_only
def test_real_engine_matches_onnxruntime(demo18_plan, demo18_onnx):
    from resnet_deploy.data import open_source, sample_batch

    with open_session(demo18_onnx) as ort_session:
        batch = sample_batch(open_source("digits", split="eval"), ort_session.manifest.preprocess,
                             ort_session.input_dtype, batch_size=16)
        ref = ort_session.run(batch)
    for graph in (False, True):
        with open_session(demo18_plan, cuda_graph=graph) as session:
            assert session.max_batch == 16
            for _ in range(2):  # with graphs: the capture run, then a replay
                out = session.run(batch)
                assert np.isfinite(out).all()
                assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.99
                # TF32 convolutions on Ampere+ differ slightly from FP32 on the CPU.
                assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()
            _, times = session.run_timed(batch[:4])
            assert times["gpu_compute_ms"] > 0 and times["latency_ms"] >= times["gpu_compute_ms"]
            with pytest.raises(UsageError, match="range 1..16"):
                session.run(np.concatenate([batch, batch[:1]]))


@pytest.mark.tensorrt
@tensorrt_only
def test_real_tampered_engine_refused(demo18_plan, tmp_path):
    data = bytearray(demo18_plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "tampered.plan"
    path.write_bytes(bytes(data))
    manifest_path(path).write_bytes(manifest_path(demo18_plan).read_bytes())
    with pytest.raises(UsageError, match="does not match the sha256"):
        open_session(path)


@pytest.fixture(scope="module")
def fcn18_plan(tmp_path_factory):
    """A real FCN-ResNet18 (5 classes, untrained) ONNX, sizes 32..256, and its engine over 32..160."""
    import warnings

    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.export.tensorrt import EngineConfig, engine_from_onnx
    from resnet_deploy.weights import load_model

    folder = tmp_path_factory.mktemp("fcn18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("resnet18", None, task="segment", num_classes=5)
    onnx = onnx_from_torch(loaded, folder / "fcn18.onnx", config=OnnxConfig(resize=64, max_size=256, max_batch=4)).path
    plan = folder / "fcn18.plan"
    engine_from_onnx(onnx, plan, config=EngineConfig(max_batch=2, opt_size=(64, 80), max_size=160, workspace_mib=1024))
    return onnx, plan


@pytest.mark.tensorrt
@tensorrt_only
def test_real_segmentation_engine_matches_onnxruntime_at_several_sizes(fcn18_plan):
    onnx, plan = fcn18_plan
    rng = np.random.default_rng(0)
    with open_session(onnx) as ort_session, open_session(plan) as session:
        assert session.size_range == SizeRange(32, (64, 80), 160) and session.output_names == ("scores",)
        for n, h, w in ((1, 64, 80), (2, 160, 96), (1, 32, 48), (2, 64, 80)):
            x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
            ref, out = ort_session.run(x), session.run(x)
            assert out.shape == ref.shape == (n, 5, h, w)
            assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.99  # TF32 convolutions on Ampere+
            assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()
        with pytest.raises(UsageError, match=r"outside this model's sizes \(height and width each in 32\.\.160\)"):
            session.run(np.zeros((1, 3, 192, 64), np.float32))
