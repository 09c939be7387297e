"""The root Typer app: global options, config loading, and the one error handler."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors its own copy of click; its exceptions are the ones raised
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exceptions

from urbanln_cli import __version__
from urbanln_cli.config import DESTRUCTIVE
from urbanln_cli.errors import Interrupted, UrbanlnError, describe_os_error


def _say_error(message: str, hint: str | None) -> None:
    from urbanln_cli.commands._common import err_style

    typer.echo(f"{err_style('error:', 'red')} {message}", err=True)
    if hint:
        typer.echo(f"{err_style('hint:', 'yellow')} {hint}", err=True)


PIPELINE = [
    "tile",
    "label",
    "caption",
    "fuse",
    "pretrain",
    "embed",
    "probe",
    "evaluate",
    "export",
    "inspect",
    "env",
    "synth",
    "demo",
]


class UrbanlnGroup(TyperGroup):
    """Turns UrbanlnError, usage errors and Ctrl-C into ``error:``/``hint:`` lines and exit codes."""

    def list_commands(self, ctx):
        """The commands in pipeline order (typer would list the sub-groups, evaluate and synth, last)."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE.index(n) if n in PIPELINE else len(PIPELINE))

    def make_context(self, info_name, args, parent=None, **extra):
        _harden(self)
        with _handled(None):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _handled(ctx):
            return super().invoke(ctx)


class _handled:
    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (typer.Exit, click_exceptions.NoArgsIsHelpError)):
            return False
        if isinstance(exc, KeyboardInterrupt):
            exc = Interrupted("interrupted")
        if isinstance(exc, UrbanlnError):
            _say_error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code)
        if isinstance(exc, click_exceptions.UsageError):
            command = exc.ctx.command_path if exc.ctx else "urbanln"
            _say_error(exc.format_message(), f"run '{command} --help' to see the options")
            raise typer.Exit(2)
        if isinstance(exc, click_exceptions.ClickException):
            _say_error(exc.format_message(), None)
            raise typer.Exit(exc.exit_code)
        if isinstance(exc, OSError):  # disk full, permissions, a read-only disk: the user can act on these
            logging.getLogger("urbanln_cli").debug("the OS error's traceback", exc_info=exc)
            _say_error(*describe_os_error(exc))
            raise typer.Exit(1)
        return False


def _harden(command) -> None:
    """Every float option finite; destructive flags never from the environment (also in sub-groups)."""
    for param in command.params:
        if param.name in DESTRUCTIVE:
            param.allow_from_autoenv = False
            param.envvar = None
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is not None and descriptor.annotation is float and not getattr(param.callback, "finite", False):
            param.callback = _finite(param.callback)
    for sub in getattr(command, "commands", {}).values():
        _harden(sub)


def _finite(callback):
    """Wrap an option's callback so nan and inf are usage errors (float() accepts both)."""
    import math

    def check(ctx, param, value):
        if isinstance(value, float) and not math.isfinite(value):
            raise click_exceptions.BadParameter(f"{value} is not a finite number", ctx=ctx, param=param)
        return callback(ctx, param, value) if callback is not None else value

    check.finite = True
    return check


app = typer.Typer(
    name="urbanln",
    cls=UrbanlnGroup,
    help="Learn urban region representations from imagery and noisy long captions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"auto_envvar_prefix": "URBANLN", "help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"urbanln {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs on stderr.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only errors on stderr: no progress or summary.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file with one table of option defaults per command, e.g. \\[tile].",
            envvar="URBANLN_CONFIG",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.", show_envvar=False)
    ] = False,
) -> None:
    """urbanln: tile → label → caption → fuse → pretrain → embed → probe.

    Every stage reads and writes Hugging Face datasets folders or safetensors
    files; with no paths given, each uses the default names in this folder.
    """
    from urbanln_cli.commands import _common

    _common.set_verbosity(verbose=verbose, quiet=quiet)
    if config is not None:
        from urbanln_cli.config import load_config, to_default_map

        commands = dict(ctx.command.commands)  # type: ignore[attr-defined]
        ctx.default_map = to_default_map(load_config(config), commands, config)
    logging.getLogger("urbanln_cli").debug("urbanln %s, python %s", __version__, sys.version.split()[0])


def _register() -> None:
    from urbanln_cli.commands import (
        caption,
        demo,
        embed,
        env,
        evaluate,
        export,
        fuse,
        inspect,
        label,
        pretrain,
        probe,
        synth,
        tile,
    )

    for module in (tile, label, caption, fuse, pretrain, embed, probe, evaluate, export, inspect, env, synth, demo):
        module.register(app)


_register()


def main() -> None:
    app(prog_name="urbanln")
