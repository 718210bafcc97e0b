"""``resnet-bench``: trt, onnx, torch and compare."""

from __future__ import annotations

import click

from resnet_deploy.cli.common import CONTEXT_SETTINGS, Group, debug_option, group_setup


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@debug_option
def cli(debug: bool) -> None:
    """Measure throughput and latency, and accuracy parity against PyTorch."""
    group_setup(debug)


def main() -> None:
    cli(prog_name="resnet-bench")


if __name__ == "__main__":
    main()
