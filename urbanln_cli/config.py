"""TOML configuration: one table per command, validated against its options.

Precedence is flag > environment variable > config table > default. The config
file becomes click's ``default_map``, so click itself applies that order and
reports where every value came from (see ``param_sources``).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from urbanln_cli.errors import ConfigError

# Flags that replace or redo work: only ever from the command line, never from the
# environment or a config file (a stray URBANLN_PRETRAIN_OVERWRITE=1 must not replace outputs).
DESTRUCTIVE = frozenset({"overwrite", "retry_failed"})

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def suggest(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_config(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def to_default_map(config: Mapping[str, Any], commands: Mapping[str, Any], path: Path | str = "config") -> dict:
    """Check every table and key against the commands' options; return click's default_map.

    ``commands`` maps a command name to its click.Command. Keys may use dashes
    or underscores (``min-valid`` or ``min_valid``). A command group's table holds
    one table per sub-command: ``[evaluate.segmentation]``, ``[synth.city]``.
    """
    default_map: dict[str, dict[str, Any]] = {}
    for table, values in config.items():
        default_map[table] = _table(table, values, commands, path)
    return default_map


def _table(table: str, values: Any, commands: Mapping[str, Any], path: Path | str) -> dict[str, Any]:
    name = table.rpartition(".")[2]
    if name not in commands:
        raise ConfigError(
            f"{path}: unknown table [{table}]{suggest(name, commands)}",
            hint=f"tables are command names: {', '.join(sorted(commands))}",
        )
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: '{table}' must be a table, like [{table}]")
    command = commands[name]
    subcommands = getattr(command, "commands", None)
    if subcommands:  # a group: its keys are sub-command tables
        return {sub: _table(f"{table}.{sub}", v, subcommands, path) for sub, v in values.items()}
    keys = _config_keys(command)
    table_map: dict[str, Any] = {}
    for key, value in values.items():
        name = keys.get(key.replace("_", "-"))
        if name is None:
            raise ConfigError(
                f"{path}: unknown key '{key}' in [{table}]{suggest(key.replace('_', '-'), keys)}",
                hint=f"valid keys for [{table}]: {', '.join(sorted(keys))}",
            )
        if name in DESTRUCTIVE:
            raise ConfigError(
                f"{path}: '{key}' in [{table}] cannot come from a config file",
                hint=f"pass --{key.replace('_', '-')} on the command line when you mean it",
            )
        table_map[name] = value
    return table_map


def _config_keys(command) -> dict[str, str]:
    """Config key (an option's long name without dashes, e.g. 'min-valid', 'json') -> parameter name."""
    keys = {}
    for param in command.params:
        if not param.name or param.name in ("help",):
            continue
        longs = [o.lstrip("-") for o in getattr(param, "opts", []) if o.startswith("--")]
        for key in longs or [param.name.replace("_", "-")]:
            keys[key] = param.name
    return keys


_SOURCE_NAMES = {
    "COMMANDLINE": "flag",
    "ENVIRONMENT": "env",
    "DEFAULT_MAP": "config",
    "DEFAULT": "default",
    "PROMPT": "prompt",
}


def param_sources(ctx) -> dict[str, dict[str, Any]]:
    """Each parameter of a click context with its value and where it came from."""
    out = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        out[name] = {
            "value": _jsonable(value),
            "source": _SOURCE_NAMES.get(source.name, source.name.lower()) if source else "default",
        }
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value  # enums
    return value
