"""The library names its own parameters; only the CLI turns them into flags (``cli.common.in_flags``)."""

from __future__ import annotations

from resnet_deploy.cli.common import in_flags
from resnet_deploy.cli.export import cli
from resnet_deploy.errors import UsageError


def test_parameter_names_become_the_commands_flags():
    onnx = cli.commands["onnx"]
    err = UsageError("`max_batch` must be in 1..4096; retry with `simplify=False`; pass `overwrite=True`; "
                     "`eval_source` or `num_classes`; `threads` is not an option here; `max_batch_x` neither")
    assert in_flags(err, onnx) == ("--max-batch must be in 1..4096; retry with --no-simplify; pass --overwrite; "
                                   "--eval-data or --num-classes; threads is not an option here; max_batch_x neither")
    trt = cli.commands["trt"]  # options whose click name is the library's (dest) rather than the flag's
    assert in_flags(UsageError("`optimization_level` must be 0..5"), trt) == "--opt-level must be 0..5"
    assert in_flags(UsageError("`workspace_mib` must be at least 1"), trt) == "--workspace must be at least 1"
    assert str(err).startswith("`max_batch` must be")  # a Python caller reads the parameter name


# ------------------------------------------------------------------------------------ item 5 of issue 17

import os  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from resnet_deploy.cli.bench import cli as bench_cli  # noqa: E402


def _errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def test_list_options_refuse_empty_entries():
    for args in (["onnx", "m.onnx", "--batch", "1,,8"], ["onnx", "m.onnx", "--batch", "1,8,"]):
        result = CliRunner().invoke(bench_cli, args)
        assert result.exit_code == 2 and "empty entry" in result.output
    result = CliRunner().invoke(cli, ["pipeline", "-o", "out", "--batch", "1,,8"])
    assert result.exit_code == 2 and "empty entry" in result.output


def test_click_usage_errors_are_one_line():
    for runner_cli, args in ((cli, ["onnx"]), (cli, ["onnx", "--bogus"]), (bench_cli, ["onnx"]),
                             (cli, ["int8", "nope.onnx", "-o", "x.onnx"])):
        result = CliRunner().invoke(runner_cli, args)
        assert result.exit_code == 2
        lines = _errors(result)
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path):
    missing = tmp_path / "nope.onnx"
    plain = CliRunner().invoke(bench_cli, ["onnx", str(missing), "--batch", "1", "--duration", "0.1"])
    debug = CliRunner().invoke(bench_cli, ["--debug", "onnx", str(missing), "--batch", "1", "--duration", "0.1"])
    assert plain.exit_code == debug.exit_code == 2, (plain.output, debug.output)
    assert "Traceback" not in plain.output and "Traceback" in debug.output
    assert _errors(plain)[-1] == _errors(debug)[-1]


def test_threads_above_the_cpus_are_clamped_with_a_note(demo18_onnx):
    cpus = len(os.sched_getaffinity(0))
    result = CliRunner().invoke(bench_cli, ["onnx", str(demo18_onnx), "--batch", "1", "--duration", "0.1",
                                            "--threads", str(cpus + 500)])
    assert result.exit_code == 0, result.output
    assert f"--threads {cpus + 500} is more than the {cpus} CPUs" in result.output
    assert f"threads {cpus}" in result.output or f"{cpus} threads" in result.output
