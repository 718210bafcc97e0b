"""Shared CLI plumbing: error handling and exit codes, --debug, shared options, tables.

The library raises typed errors; only here do they become one line on stderr and an exit code
(0 success, 1 the work failed, 2 usage). Tracebacks only with --debug.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import click

from resnet_deploy.errors import DeployError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Group(click.Group):
    """A click group whose commands report DeployError as one line with its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv or ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except DeployError as exc:
            if debug:
                raise
            click.secho(f"Error: {in_flags(exc, self.get_command(ctx, ctx.invoked_subcommand or ''))}", fg="red",
                        err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # disk full, permissions, I/O errors during the work
            if debug:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.secho(f"Error: {where}{exc.strerror or exc}", fg="red", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing was published.", err=True)
            ctx.exit(130)


#: library parameters whose option is named otherwise (a data *source* is given as a data *spec*, SRC)
LIBRARY_ALIASES = {"eval_source": "eval_data", "calib_source": "calib_data", "source": "data"}


def in_flags(exc: DeployError, command: click.Command | None) -> str:
    """``exc``'s message with each backquoted library parameter written as ``command``'s flag.

    ```max_drop` must be >= 0`` becomes ``--max-drop must be >= 0`` where the command has an
    option for ``max_drop`` (its parameter, or its flag spelled with underscores); ```overwrite=True```
    becomes ``--overwrite`` and ```simplify=False``` ``--no-simplify`` for on/off flags. A name the
    command has no option for loses its backquotes only.
    """
    flags = {}
    for param in (command.params if command else []):
        if isinstance(param, click.Option):
            flag = max(param.opts, key=len)
            flags[flag.lstrip("-").replace("-", "_")] = flag  # --arch stored as ref_arch is still `arch`
            flags[param.name] = flag
            if param.is_flag:
                flags[f"{param.name}=True"] = flag
                if param.name.startswith("no_"):
                    flags[f"{param.name[3:]}=False"] = flag
    def flag(match: re.Match) -> str:
        name = match.group(1)
        return flags.get(name) or flags.get(LIBRARY_ALIASES.get(name, ""), name)

    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*(?:=True|=False)?)`", flag, str(exc))


class WeightsType(click.ParamType):
    """``--weights``: parsed once, here, into a ``weights.Weights`` (any text that is no keyword is a file)."""

    name = "weights"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from resnet_deploy.weights import Weights

        return Weights.parse(value)


WEIGHTS = WeightsType()


def quiet_libraries() -> None:
    """Silence third-party chatter (exporter registration notices, deprecations) unless --debug."""
    for name in ("onnxscript", "modelopt", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"torch\..*")
    warnings.filterwarnings("ignore", module=r"onnxscript\..*")


def show_warnings_as_notes() -> None:
    """Our own warnings (skipped images, random weights) print as one 'Note:' line each."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 - warnings API
        click.secho(f"Note: {message}", fg="yellow", err=True)

    warnings.showwarning = show


def group_setup(debug: bool) -> None:
    show_warnings_as_notes()
    if not debug:
        quiet_libraries()


def debug_option(f: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")(f)


def overwrite_option(f: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(f)


def batch_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Parse "1,8,32" into [1, 8, 32]."""
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_num(row[i]) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) or v is None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def progress(length: int, label: str):
    """click's progress bar on stderr (hidden when stderr is not a terminal)."""
    return click.progressbar(length=length, label=label, file=sys.stderr)
