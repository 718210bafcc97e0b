"""TensorRT session: refusals on the CPU (no TensorRT needed), the session's plumbing against a
fake TensorRT + fake CUDA, and real engines (marker ``tensorrt``) where TensorRT and a GPU exist."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.manifest import BatchRange, InputSpec, Manifest, Preprocess, manifest_path
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
    with pytest.raises(MissingDependencyError, match=r"pip install tensorrt \(on Jetson TensorRT comes with JetPack\)"):
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


def make_fake_trt(cudart) -> SimpleNamespace:
    """Just enough of the tensorrt module for TensorRTSession: a (-1,3,4,4) -> (-1,5) engine, batch 1..4.

    Classes, methods and parameter names are the real ones (``test_fake_runtime_matches_the_stubs``
    holds them to tensorrt-stubs); what the fake records or is told to do lives under ``trt.fake``.
    """
    fake = SimpleNamespace(executes=0, refuse_capture=False, fail_execute=False, dtypes={}, context=None,
                           runtime=None, logger=None)
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

    class IExecutionContext:
        def set_input_shape(self, name, shape):
            if name != "input" or not 1 <= shape[0] <= 4 or tuple(shape[1:]) != (3, 4, 4):
                return False
            self._shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self._shape if name == "input" else (self._shape[0], 5)

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
            n, src, dst = self._shape[0], self._addresses["input"], self._addresses["logits"]

            def kernel() -> None:  # reads the device input, writes the device output, takes 1 ms
                x = np.ctypeslib.as_array((ctypes.c_float * (n * 48)).from_address(src)).reshape(n, 48)
                y = np.ascontiguousarray(x @ WEIGHTS, dtype=np.float32)
                ctypes.memmove(dst, y.ctypes.data, y.nbytes)
                cudart.clock_ms += 1.0

            cudart.run_or_capture(stream_handle, kernel)
            return True

    class ICudaEngine:
        num_io_tensors = 2

        def get_tensor_name(self, index):
            return ("input", "logits")[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return fake.dtypes.get(name, trt.DataType.FLOAT)

        def get_tensor_shape(self, name):
            return (-1, 3, 4, 4) if name == "input" else (-1, 5)

        def get_tensor_profile_shape(self, name, profile_index):
            assert name == "input" and profile_index == 0
            return [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

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
