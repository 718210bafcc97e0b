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
