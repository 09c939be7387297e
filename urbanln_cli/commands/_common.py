"""What every command shares: the stderr console, progress bars, output and run info."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import typer
from rich.console import Console

# stdout carries data only; everything for people goes to stderr.
console = Console(stderr=True, highlight=False)
_state = {"quiet": False, "verbose": False}


def set_verbosity(*, verbose: bool, quiet: bool) -> None:
    from rich.logging import RichHandler

    _state.update(quiet=quiet, verbose=verbose)
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    logger = logging.getLogger("urbanln_cli")
    # Our own warnings read like the rest of stderr ("warning: …"); -v shows every record, with its source.
    logger.handlers[:] = [
        RichHandler(console=console, show_time=False, show_path=True, markup=False) if verbose else _PlainHandler()
    ]
    logger.setLevel(level)
    logger.propagate = False
    # Libraries log to the root logger (open_clip's "No pretrained weights loaded", GDAL's libtiff
    # messages beside an error we report ourselves) and warn through `warnings` (rasterio's
    # NotGeoreferencedWarning, numpy's RuntimeWarning): shown with -v, kept off stderr otherwise.
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [
        RichHandler(console=console, show_time=False, markup=False) if verbose else logging.NullHandler()
    ]
    root.setLevel(logging.WARNING)


class _PlainHandler(logging.Handler):
    """``warning: …`` / ``error: …`` lines on stderr, like every other line urbanln writes there."""

    def emit(self, record: logging.LogRecord) -> None:
        label = "warning" if record.levelno < logging.ERROR else "error"
        if record.levelno < logging.WARNING:
            label = record.levelname.lower()
        console.print(
            f"{label}: {record.getMessage()}",
            soft_wrap=True,
            markup=False,
            style="yellow" if label == "warning" else None,
        )


def err_style(text: str, color: str) -> str:
    """Colour a label on stderr unless NO_COLOR is set or stderr is not a terminal."""
    if os.environ.get("NO_COLOR") or not sys.stderr.isatty():
        return text
    return typer.style(text, fg=color, bold=True)


def summary(text: str) -> None:
    """The final one-line summary, on stderr."""
    if not _state["quiet"]:
        console.print(text, soft_wrap=True, markup=False)


def describe_counts(counts: dict[str, int], skip: tuple[str, ...] = (), prefix: str = "") -> str:
    """'3 skipped unreadable, 2 nan population' from a manifest's counts, for summary lines."""
    return ", ".join(
        f"{v} {k.removeprefix(prefix).replace('_', ' ')}"
        for k, v in sorted(counts.items())
        if k not in skip and k.startswith(prefix) and v
    )


def warn(text: str) -> None:
    if not _state["quiet"]:
        console.print(f"warning: {text}", soft_wrap=True, markup=False, style="yellow")


def emit(data: Any, as_json: bool) -> None:
    """Write the command's result to stdout: a path, or JSON with --json."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(str(data))


def run_info(ctx: typer.Context, config: Any = None, *, drop: Iterable[str] = ()):
    """The command line and each parameter with its value and source, for the manifest.

    With ``config`` (the stage config the command built), a parameter named like one of
    its fields records the config's value: the resolved one where the command filled in a
    default (``probe --split`` left out is None on the command line, "spatial" or "random"
    in the config); its source stays what click says. Parameters in ``drop`` (options of
    another task or head, which did not take part) are left out.
    """
    import dataclasses

    from urbanln_cli.artifacts import RunInfo
    from urbanln_cli.config import _jsonable, param_sources

    argv = [ctx.find_root().info_name or "urbanln", *sys.argv[1:]] if sys.argv else []
    fields = {f.name for f in dataclasses.fields(config)} if config is not None else set()
    params = {}
    for name, record in param_sources(ctx).items():
        if name == "as_json" or name in drop:  # --json is the output format, not a parameter of the work
            continue
        params[name] = {**record, "value": _jsonable(getattr(config, name))} if name in fields else record
    return RunInfo(command=shlex.join(argv), params=params)


def check_hosts(ctx: typer.Context, hosts: Iterable[str]) -> None:
    """Ollama URLs that are not URLs are usage errors (exit 2), named after where they came from (--host or OLLAMA_HOST)."""  # noqa: E501
    from urbanln_cli.captioners.ollama import check_hosts as check

    source = ctx.get_parameter_source("host")
    check(tuple(hosts), "OLLAMA_HOST" if source is not None and source.name == "ENVIRONMENT" else "--host")


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, off when stderr is not a terminal or with -q.

    Yields ``update(done, total, **fields)``, the callback stages take (``failed=n`` is shown).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")

    class FailedColumn(ProgressColumn):
        def render(self, task):
            failed = task.fields.get("failed")
            return Text(f"{failed} failed" if failed else "", style="red")

    enabled = console.is_terminal and not _state["quiet"]
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        FailedColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task(description, total=None)

    def update(done: int, total: int, **fields) -> None:
        progress.update(task, completed=done, total=total, **fields)

    with progress:
        yield update
