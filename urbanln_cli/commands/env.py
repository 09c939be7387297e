"""``urbanln env``: what this machine offers urbanln."""

from __future__ import annotations

from typing import Annotated

import typer

from urbanln_cli.commands import _common


def env(
    host: Annotated[
        str | None,
        typer.Option(
            help="Ollama server to check. \\[default: $OLLAMA_HOST or http://127.0.0.1:11434]",
            envvar="OLLAMA_HOST",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Versions, GPU, and whether an Ollama server answers (with the models it has)."""
    from urbanln_cli.environment import report

    info = report(host)
    if as_json:
        _common.emit(info, True)
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        typer.echo(f"{key:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    app.command("env")(env)
