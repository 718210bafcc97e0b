"""resnet-export triton: every config.pbtxt parses strictly against Triton's own ModelConfig schema and says
what the manifest says; refusals and malformed configurations are caught before any file is written."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from resnet_deploy.cli.export import cli
from resnet_deploy.deploy.triton import PYTHON_MODEL, TritonOptions, plan_repository, write_repository
from resnet_deploy.manifest import manifest_path, read_manifest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient (the serve extra) carries Triton's config schema")
from google.protobuf import text_format  # noqa: E402 - protobuf comes with tritonclient and onnx


def parse(path):
    """Strict: an unknown field, a wrong type or a bad enum raises ParseError."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(*args):
    return CliRunner().invoke(cli, ["triton", *map(str, args)])


def test_repository_from_float_and_uint8_artifacts(tmp_path, demo18_onnx, demo18_uint8_onnx):
    repo = tmp_path / "models"
    result = export(demo18_onnx, demo18_uint8_onnx, "-o", repo)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(demo18_onnx)
    for name, artifact, dtype, dims, fmt in (
            ("demo18", demo18_onnx, "TYPE_FP32", [3, 32, 32], "FORMAT_NCHW"),
            ("demo18-uint8", demo18_uint8_onnx, "TYPE_UINT8", [32, 32, 3], "FORMAT_NHWC")):
        config = parse(repo / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx" and not config.backend
        assert config.max_batch_size == manifest.batch.max == 64
        (inp,) = config.input
        assert (inp.name, model_config_pb2.DataType.Name(inp.data_type), list(inp.dims)) == ("input", dtype, dims)
        assert model_config_pb2.ModelInput.Format.Name(inp.format) == fmt
        (out,) = config.output
        assert (out.name, list(out.dims), out.label_filename) == ("logits", [10], "labels.txt")
        assert list(config.dynamic_batching.preferred_batch_size) == [manifest.batch.opt, manifest.batch.max]
        assert config.dynamic_batching.max_queue_delay_microseconds == 100
        (group,) = config.instance_group
        assert (group.count, model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)) == (1, "KIND_GPU")
        assert [w.batch_size for w in config.model_warmup] == [8, 64]
        for w in config.model_warmup:
            assert w.inputs["input"].zero_data and list(w.inputs["input"].dims) == dims
        assert config.version_policy.latest.num_versions == 1
        assert (repo / name / "labels.txt").read_text().splitlines() == manifest.labels
        assert sha(repo / name / "1" / "model.onnx") == sha(artifact)
        assert read_manifest(repo / name / "1" / "model.onnx") == read_manifest(artifact)
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository=/models" in readme
    assert "perf_analyzer -m demo18 -u localhost:8001 -i grpc --shape input:3,32,32" in readme
    assert 'httpclient.InferInput("input", batch.shape, "FP32")' in readme
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no staging folder left


def test_cpu_instances_share_the_cores(tmp_path, demo18_onnx):
    repo = tmp_path / "models"
    assert export(demo18_onnx, "-o", repo, "--kind", "cpu", "--instances", "2", "--cpu-cores", "4",
                  "--preferred-batch", "4,16", "--queue-delay-us", "500").exit_code == 0
    config = parse(repo / "demo18" / "config.pbtxt")
    (group,) = config.instance_group
    assert (group.count, group.kind) == (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [w.batch_size for w in config.model_warmup] == [4, 16]


def test_engine_takes_its_profile_and_the_version_compatible_note(tmp_path, demo18_fake_plan):
    plan = demo18_fake_plan
    repo = tmp_path / "models"
    result = export(plan, "-o", repo)
    assert result.exit_code == 0, result.output
    text = (repo / "demo18_fp16" / "config.pbtxt").read_text()
    config = parse(repo / "demo18_fp16" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (repo / "demo18_fp16" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert "--backend-config=tensorrt,version-compatible=true" in text
    assert "--backend-config=tensorrt,version-compatible=true" in (repo / "README.md").read_text()
    assert "version-compatible" in result.output


def test_python_backend_repository(tmp_path, demo18_onnx):
    entries = plan_repository([demo18_onnx], options=TritonOptions(backend="python", instances=2, cpu_cores=2))
    repo = write_repository(entries, tmp_path / "models")
    config = parse(repo / "demo18" / "config.pbtxt")
    assert config.backend == "python" and not config.platform
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert (repo / "demo18" / "1" / "model.py").read_text() == PYTHON_MODEL.read_text()


def _nothing_written(tmp_path, repo):
    assert not repo.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".resnet-deploy-tmp-")]


@pytest.mark.parametrize("args, words", [
    (["--preferred-batch", "8,128"], "preferred batch size 128 is above max_batch_size 64"),
    (["--max-batch", "4", "--preferred-batch", "8"], "preferred batch size 8 is above max_batch_size 4"),
    (["--max-batch", "65"], "max_batch_size 65 is outside the artifact's batch range 1..64"),
    (["--instances", "3", "--cpu-cores", "2"], "2 CPU cores cannot be shared by 3 instances"),
    (["--name", "bad/name"], "a Triton model name is letters"),
])
def test_malformed_configuration_is_refused_before_any_file(tmp_path, demo18_onnx, args, words):
    repo = tmp_path / "models"
    result = export(demo18_onnx, "-o", repo, *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    _nothing_written(tmp_path, repo)


def test_one_bad_artifact_writes_nothing_for_the_good_ones(tmp_path, demo18_onnx):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(demo18_onnx.read_bytes())  # no manifest beside it
    repo = tmp_path / "models"
    result = export(demo18_onnx, bare, "-o", repo)
    assert result.exit_code == 2 and "no manifest beside it" in result.output
    _nothing_written(tmp_path, repo)


def test_ungated_artifact_needs_the_override(tmp_path, demo18_onnx):
    ungated = tmp_path / "synthetic.onnx"
    ungated.write_bytes(demo18_onnx.read_bytes())
    m = read_manifest(demo18_onnx)
    manifest_path(ungated).write_text(m.derive(parity={**m.parity, "data": "synthetic random images"}).to_json())
    repo = tmp_path / "models"
    result = export(ungated, "-o", repo)
    assert result.exit_code == 2 and "not on real data" in result.output
    _nothing_written(tmp_path, repo)
    assert export(ungated, "-o", repo, "--allow-ungated").exit_code == 0
    assert parse(repo / "synthetic" / "config.pbtxt").max_batch_size == 64


def test_existing_model_is_kept_without_overwrite(tmp_path, demo18_onnx, demo18_uint8_onnx):
    repo = tmp_path / "models"
    assert export(demo18_onnx, "-o", repo).exit_code == 0
    before = (repo / "demo18" / "config.pbtxt").read_text()
    result = export(demo18_onnx, "-o", repo, "--instances", "3")
    assert result.exit_code == 2 and "exists; pass" in result.output
    assert (repo / "demo18" / "config.pbtxt").read_text() == before
    assert export(demo18_uint8_onnx, "-o", repo).exit_code == 0  # a new model joins the repository
    assert export(demo18_onnx, "-o", repo, "--instances", "3", "--overwrite").exit_code == 0
    assert parse(repo / "demo18" / "config.pbtxt").instance_group[0].count == 3
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "demo18", "demo18-uint8"]


def test_same_name_twice_is_refused(tmp_path, demo18_onnx):
    result = export(demo18_onnx, demo18_onnx, "-o", tmp_path / "models")
    assert result.exit_code == 2 and "model name 'demo18' is given to both" in result.output
