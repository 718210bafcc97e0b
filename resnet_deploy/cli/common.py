"""Shared CLI plumbing: error handling and exit codes, --debug, shared options, tables.

The library raises typed errors; only here do they become one line on stderr and an exit code
(0 success, 1 the work failed, 2 usage, 130/143 interrupted). Tracebacks only with --debug,
which changes nothing else.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from resnet_deploy.cli import interrupts
from resnet_deploy.errors import DeployError
from resnet_deploy.publish import remove_empty_created

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: click >= 8.2 raises this for a group called without a command; it shows the help, not an error
_NO_ARGS: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _fail(exc: BaseException, code: int, *, debug: bool, text: str) -> NoReturn:
    """One line on stderr (after the traceback with --debug), then exit ``code``."""
    remove_empty_created()
    if debug:
        traceback.print_exception(exc)
    click.secho(f"Error: {text}", fg="red", err=True)
    sys.exit(code)


class Group(click.Group):
    """A click group whose commands report every failure as one line with its exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = self._standalone(args, prog_name, complete_var, **extra)
        except SystemExit as exc:  # _fail's exit, one line printed
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt as exc:  # delivered while a failure was being reported
            code = interrupts.report(exc)
        sys.exit(interrupts.finish(code))

    def _standalone(self, args: Sequence[str] | None, prog_name: str | None, complete_var: str | None,
                    **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as exc:  # a bare `resnet-export`: the help, as click shows it
            exc.show()
            return exc.exit_code
        except click.ClickException as exc:  # usage errors: one line like every other error
            usage = f" (try '{exc.ctx.command_path} -h')" if getattr(exc, "ctx", None) is not None else ""
            _fail(exc, exc.exit_code, debug=False, text=f"{exc.format_message()}{usage}")
        except click.Abort as exc:  # click turns a KeyboardInterrupt while parsing into Abort
            if isinstance(exc.__context__, KeyboardInterrupt):
                return interrupts.report(exc.__context__)
            _fail(exc, 1, debug=False, text="aborted")
        except KeyboardInterrupt as exc:
            return interrupts.report(exc)
        return rv if isinstance(rv, int) else 0

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv or ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except DeployError as exc:
            _fail(exc, exc.exit_code, debug=debug,
                  text=in_flags(exc, self.get_command(ctx, ctx.invoked_subcommand or '')))
        except OSError as exc:  # disk full, permissions, I/O errors during the work
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(exc, 1, debug=debug, text=f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt as exc:
            sys.exit(interrupts.report(exc))  # here, before click's own handling turns it into Abort


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


def int_list(value: str) -> list[int]:
    """Parse "1,8,32" into [1, 8, 32]: the one parser of every list option; an empty entry is refused."""
    entries = [v.strip() for v in value.split(",")]
    if any(not v for v in entries):
        raise click.BadParameter(f"{value!r} has an empty entry (write a list like 1,8,32)")
    try:
        sizes = [int(v) for v in entries]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: every entry must be a positive integer")
    return sizes


def batch_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Callback of a list option ("1,8,32")."""
    return None if value is None else int_list(value)


def thread_count(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Callback of ``--threads``: more threads than the CPUs this process may use are clamped, with a note."""
    from resnet_deploy.benchmarks.environment import default_threads

    if value is None:
        return None
    available = default_threads()
    if value > available:
        click.secho(f"Note: --threads {value} is more than the {available} CPUs this process may use; using "
                    f"{available}", fg="yellow", err=True)
        return available
    return value


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
