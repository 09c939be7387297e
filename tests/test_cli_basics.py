"""The CLI skeleton: help for every command, light imports, global options."""

import json
import subprocess
import sys

import pytest

from urbanln_cli.cli import app

COMMANDS = [
    "tile",
    "label",
    "caption",
    "fuse",
    "pretrain",
    "inspect",
    "env",
    "synth",
    "embed",
    "probe",
    "demo",
    "evaluate",
    "export",
]


def test_every_command_is_registered():
    import typer.main

    group = typer.main.get_command(app)
    assert sorted(group.commands) == sorted(COMMANDS)


@pytest.mark.parametrize(
    "command",
    [[], *[[c] for c in COMMANDS], ["synth", "city"], ["evaluate", "retrieval"], ["evaluate", "segmentation"]],
)
def test_help(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_no_args_shows_help(cli):
    result = cli()
    assert "Commands" in result.output
    assert "tile" in result.output


def test_version(cli):
    from urbanln_cli import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"urbanln {__version__}"


def test_help_does_not_import_heavy_libraries():
    # `urbanln --help` must stay fast: heavy libraries load inside commands only.
    code = (
        "import sys, json; from urbanln_cli.cli import app; "
        "print(json.dumps(sorted(m for m in "
        "('torch','datasets','rasterio','pandas','sklearn','open_clip','pyarrow','PIL') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_unknown_option_is_a_usage_error(cli):
    result = cli("tile", "x.tif", "--sise", "3")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "hint: " in result.stderr


def test_help_lists_the_commands_in_pipeline_order(cli):
    import re

    result = cli("--help", env={"COLUMNS": "200"})
    listed = re.findall(r"^│ (\w+) ", result.stdout, flags=re.M)
    assert listed == [
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
