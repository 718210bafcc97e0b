"""The real Triton server (the binary nvidia-pytriton bundles) serving the demo model on loopback ports.

Needs the serving environment (``resnet-serve setup``; .ci/run makes it); skipped with the reason
where it is absent. Every server here binds 127.0.0.1 on free ports, every load is bounded in
requests and time, and every server is stopped and checked to leave no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from resnet_deploy.errors import MissingDependencyError

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient (the serve extra) is the client")


@pytest.fixture(scope="module")
def serving_env():
    from resnet_deploy.serve.env import find_env

    try:
        return find_env()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server(serving_env, demo18_onnx, demo18_uint8_onnx):
    from resnet_deploy.serve.server import ServerOptions, serve_artifacts

    srv = serve_artifacts([demo18_onnx, demo18_uint8_onnx], options=ServerOptions(http_port=0, grpc_port=0),
                          instances=2, cpu_cores=2, env=serving_env)
    yield srv
    pgid, workspace = srv.pgid, srv.workspace
    assert srv.stop() == 0  # Triton's own clean exit on SIGINT, not our SIGKILL
    assert not srv.group_alive() and not workspace.exists(), f"left behind in group {pgid}"


def bench(*args):
    from resnet_deploy.cli.bench import cli

    return CliRunner().invoke(cli, ["triton", *map(str, args)])


def test_eight_clients_get_the_in_process_answers(server, demo18_onnx, tmp_path):
    """All 540 held-out digits, 8 concurrent clients, batches of 4: every answer checked."""
    from resnet_deploy.benchmarks.report import schema_problems

    out = tmp_path / "r.json"
    t0 = time.monotonic()
    result = bench("--url", server.http_url, "--model", "demo18", "--artifact", demo18_onnx, "--data", "digits",
                   "--batch", "4", "--concurrency", "8", "--requests", "135", "--max-rel-diff", "1e-5",
                   "--min-agreement", "100", "--json", out)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 < 300
    report = json.loads(out.read_text())
    assert schema_problems(report) == []
    (run,) = report["runs"]
    assert (run["concurrency"], run["batch"], run["requests"], run["errors"]) == (8, 4, 135, 0)
    assert run["server"]["requests"] == 135 and run["server"]["failed"] == 0  # the server saw each one once
    assert run["parity"]["count"] == 540
    par = report["parity"]
    assert par["top1_agreement"] == 1.0 and par["max_rel_diff"] <= 1e-5
    assert report["accuracy"]["top1"] == par["top1_ref"]  # served top-1 accuracy = the in-process one


def test_grpc_and_uint8_model(server, demo18_uint8_onnx, tmp_path):
    result = bench("--url", server.grpc_url, "--protocol", "grpc", "--model", "demo18-uint8", "--artifact",
                   demo18_uint8_onnx, "--data", "digits", "--count", "64", "--batch", "2", "--concurrency", "1,8",
                   "--requests", "32", "--max-rel-diff", "1e-5", "--min-agreement", "100")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s+8\s+2\s+\S+(\s+\S+){4}\s+32\s+0\s", result.output, re.M), result.output


def test_classification_extension_names_the_label(server, demo18_onnx):
    from resnet_deploy.data import open_source, sample_batch
    from resnet_deploy.runtime import open_session

    with open_session(demo18_onnx) as local:
        x = sample_batch(open_source("digits", split="eval"), local.manifest.preprocess, "float32", batch_size=5)
        want = local.run(x).argmax(axis=1)
        labels = local.labels
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        answer = client.infer("demo18", [inp], outputs=[httpclient.InferRequestedOutput("logits", class_count=1)])
        top = [row[0].decode().split(":") for row in answer.as_numpy("logits")]
    finally:
        client.close()
    assert [int(t[1]) for t in top] == want.tolist() and [t[2] for t in top] == [labels[i] for i in want]


def test_bad_requests_get_errors_and_the_server_keeps_answering(server, demo18_onnx):
    from tritonclient.utils import InferenceServerException

    from resnet_deploy.runtime import open_session

    good = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    nan = good.copy()
    nan[1, 0, 0, 0] = np.nan
    bad = [(np.zeros((2, 3, 31, 32), np.float32), "FP32", "unexpected shape"),
           (np.zeros((2, 3, 32, 32), np.float64), "FP64", "data-type is 'FP64'"),
           (np.zeros((65, 3, 32, 32), np.float32), "FP32", "batch-size must be <= 64"),
           (nan, "FP32", "NaN or Inf")]
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        for x, dtype, words in bad:
            inp = httpclient.InferInput("input", list(x.shape), dtype)
            inp.set_data_from_numpy(x)
            with pytest.raises(InferenceServerException, match=re.escape(words)):
                client.infer("demo18", [inp])
        inp = httpclient.InferInput("input", list(good.shape), "FP32")
        inp.set_data_from_numpy(good)
        served = client.infer("demo18", [inp]).as_numpy("logits")
    finally:
        client.close()
    with open_session(demo18_onnx) as local:
        np.testing.assert_allclose(served, local.run(good), rtol=1e-5, atol=1e-5 * np.abs(served).max())
    assert server.alive() and server.model_states()["demo18"]["state"] == "READY"


def test_native_configs_fail_only_for_the_missing_backend(serving_env, demo18_onnx, demo18_fake_plan, tmp_path):
    """The bundled server has only the Python backend: it parses and validates each native configuration,
    then stops at the backend library. A configuration Triton rejects fails earlier, with another reason."""
    from resnet_deploy.cli.export import cli
    from resnet_deploy.serve.server import ServerOptions, launch

    repo = tmp_path / "models"
    plan = demo18_fake_plan
    assert CliRunner().invoke(cli, ["triton", str(demo18_onnx), str(plan), "-o", str(repo)]).exit_code == 0
    broken = repo / "broken"
    assert CliRunner().invoke(cli, ["triton", str(demo18_onnx), "--name", "broken", "-o", str(repo)]).exit_code == 0
    config = broken / "config.pbtxt"
    config.write_text(config.read_text().replace("preferred_batch_size: [8, 64]", "preferred_batch_size: [8, 128]"))
    with launch(repo, options=ServerOptions(http_port=0, grpc_port=0, exit_on_error=False), env=serving_env,
                wait="live") as srv:
        states = srv.model_states()
        log = srv.log_tail(200)
    assert states["demo18"]["state"] == "UNAVAILABLE"
    assert "unable to find backend library for backend 'onnxruntime'" in states["demo18"]["reason"]
    assert "unable to find backend library for backend 'tensorrt'" in states["demo18_fp16"]["reason"]
    # Triton refused that one while polling the repository, before any backend was looked for
    assert states["broken"]["state"] != "READY"
    assert "Poll failed for model directory 'broken': dynamic batching preferred size must be <= max batch size" in log
    assert not srv.group_alive()


def test_resnet_serve_stops_cleanly_on_sigterm(serving_env, demo18_onnx):
    cmd = [sys.executable, "-c", "from resnet_deploy.cli.serve import serve_main; serve_main()", "triton",
           str(demo18_onnx), "--http-port", "0", "--grpc-port", "0", "--env", str(serving_env.root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        urls = proc.stdout.readline() + proc.stdout.readline()
        match = re.search(r"ready \(pid (\d+)\)", first)
        assert match, first + proc.stderr.read()
        assert "http://127.0.0.1:" in urls and "gRPC  127.0.0.1:" in urls
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    from resnet_deploy.serve.server import group_members

    assert group_members(int(match.group(1))) == []
    assert "stopped (tritonserver exit code 0)" in proc.stderr.read()


def test_non_loopback_address_is_refused_without_allow_remote(demo18_onnx):
    from resnet_deploy.cli.serve import serve_cli

    result = CliRunner().invoke(serve_cli, ["triton", str(demo18_onnx), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "pass --allow-remote" in result.output


def test_missing_serving_environment_is_one_line(tmp_path, demo18_onnx):
    from resnet_deploy.cli.serve import serve_cli

    result = CliRunner().invoke(serve_cli, ["triton", str(demo18_onnx), "--env", str(tmp_path / "none")],
                                env={**os.environ})
    assert result.exit_code == 1 and "resnet-serve setup" in result.output
