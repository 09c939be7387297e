"""TOML config: tables per command, unknown keys rejected, precedence recorded."""

import json

import pytest

from tests.fakes.rasters import make_geotiff
from urbanln_cli.config import to_default_map
from urbanln_cli.errors import ConfigError


def _commands():
    import typer.main

    from urbanln_cli.cli import app

    return dict(typer.main.get_command(app).commands)


def test_valid_config_maps_dashes_to_underscores():
    assert to_default_map({"tile": {"min-valid": 0.2, "size": 64}}, _commands()) == {
        "tile": {"min_valid": 0.2, "size": 64}
    }


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'sise' in \[tile\] \(did you mean 'size'\?\)"):
        to_default_map({"tile": {"sise": 64}}, _commands())


def test_unknown_table_suggests():
    with pytest.raises(ConfigError, match=r"unknown table \[tiles\] \(did you mean 'tile'\?\)"):
        to_default_map({"tiles": {"size": 64}}, _commands())


def _params(tmp_path, cli, *args, env=None):
    tif = tmp_path / "city.tif"
    if not tif.exists():
        make_geotiff(tif, width=64, height=64)
    out = tmp_path / f"tiles{len(list(tmp_path.glob('tiles*')))}"
    result = cli(*args, "tile", tif, "-o", out, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "urbanln.json").read_text())["params"]


def test_precedence_flag_env_config_default(tmp_path, cli):
    config = tmp_path / "urbanln.toml"
    config.write_text("[tile]\nsize = 32\nmin-valid = 0.25\n")
    params = _params(tmp_path, cli, "--config", config)
    assert params["size"] == {"value": 32, "source": "config"}
    assert params["min_valid"] == {"value": 0.25, "source": "config"}
    assert params["stride"]["source"] == "default"
    params = _params(tmp_path, cli, "--config", config, env={"URBANLN_TILE_SIZE": "16"})
    assert params["size"] == {"value": 16, "source": "env"}
    tif = tmp_path / "city.tif"
    result = cli(
        "--config", config, "tile", tif, "-o", tmp_path / "flagged", "--size", "8", env={"URBANLN_TILE_SIZE": "16"}
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "flagged" / "urbanln.json").read_text())["params"]["size"] == {
        "value": 8,
        "source": "flag",
    }


def test_bad_config_through_cli(tmp_path, cli):
    config = tmp_path / "urbanln.toml"
    config.write_text("[tile]\nmin_vaild = 0.3\n")
    result = cli("--config", config, "tile", tmp_path / "x.tif")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: " in result.stderr and "did you mean 'min-valid'" in result.stderr
    assert "hint: " in result.stderr
    config.write_text("[tile\n")
    result = cli("--config", config, "tile", tmp_path / "x.tif")
    assert result.exit_code == 2 and "not valid TOML" in result.stderr


def test_sub_commands_of_a_group_take_their_own_tables(tmp_path, cli):
    """[synth.city] and [evaluate.segmentation] set the sub-command's options; a wrong name is refused."""
    config = tmp_path / "urbanln.toml"
    config.write_text("[synth.city]\nsize = 300\nseed = 4\n")
    result = cli("--config", config, "synth", "city", tmp_path / "c", "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "c" / "urbanln.json").read_text())
    assert manifest["params"]["size"] == {"value": 300, "source": "config"} and manifest["params"]["seed"]["value"] == 4
    config.write_text("[evaluate.segmentaton]\ndevice = 'cpu'\n")
    result = cli("--config", config, "evaluate", "segmentation", "--help")
    assert result.exit_code == 2 and "did you mean 'segmentation'" in result.stderr
