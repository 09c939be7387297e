"""``urbanln inspect``: what an artifact holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def inspect(
    path: Annotated[
        Path, typer.Argument(help="A dataset artifact folder, model folder or .safetensors file.", show_default=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print an artifact's manifest, row count, columns and a sample row."""
    from urbanln_cli.artifacts import describe

    info = describe(path)
    if as_json:
        _common.emit(info, True)
        return
    manifest = info.get("manifest") or {}
    lines = [f"path      {info['path']}", f"kind      {info['kind']}"]
    if manifest:
        lines += [
            f"stage     {manifest.get('stage')}  (schema {manifest.get('schema_version')}, urbanln "
            f"{manifest.get('urbanln_version')})",
            f"created   {manifest.get('created')}",
            f"command   {manifest.get('command')}",
        ]
        if manifest.get("counts"):
            lines.append("counts    " + ", ".join(f"{k}={v}" for k, v in manifest["counts"].items()))
        params = manifest.get("params") or {}
        if params:
            lines.append("params")
            lines += [f"  {k} = {json.dumps(v.get('value'))}  ({v.get('source')})" for k, v in params.items()]
        for item in manifest.get("inputs") or []:
            lines.append(f"input     {json.dumps(item)}")
    else:
        lines.append("manifest  none (not written by urbanln)")
    if "rows" in info:
        lines.append(f"rows      {info['rows']}")
        lines.append("columns")
        lines += [f"  {k}: {v}" for k, v in info["columns"].items()]
    if "sample" in info:
        lines.append("sample row")
        lines += [f"  {k}: {v}" for k, v in info["sample"].items()]
    if "tensors" in info:
        lines.append("tensors")
        lines += [f"  {k}: {v['dtype']} {v['shape']}" for k, v in info["tensors"].items()]
        lines += [f"  meta {k}: {v}" for k, v in info["metadata"].items()]
    if "config" in info:
        lines.append("config    " + json.dumps(info["config"]))
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("inspect", no_args_is_help=True)(inspect)
