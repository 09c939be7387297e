"""Fault tests, table-driven: every command against outputs it must not touch, a second
writer, a full disk, damaged artifacts and non-finite numbers.

Each case asserts the exit code, one ``error:`` and one ``hint:`` line on stderr, no
traceback, nothing on stdout, and that the files around it are byte-identical.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from urbanln_cli import artifacts

# ---------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """ws/proj is the working folder; proj/data holds one artifact of every stage; proj/notes is the user's."""
    from urbanln_cli.stages.caption import CaptionConfig, caption
    from urbanln_cli.stages.embed import EmbedConfig, embed
    from urbanln_cli.stages.fuse import FuseConfig, fuse
    from urbanln_cli.stages.label import LabelConfig, RasterTarget, label
    from urbanln_cli.stages.pretrain import PretrainConfig, pretrain
    from urbanln_cli.stages.tile import TileConfig, tile
    from urbanln_cli.synth import SynthConfig, synth_city

    root = tmp_path_factory.mktemp("faults")
    data = root / "proj" / "data"
    city = synth_city(SynthConfig(out=data / "city", size=256, seed=3, workers=1)).out
    tiles = tile(TileConfig(inputs=(city / "imagery.tif",), out=data / "tiles", size=64, workers=1)).out
    label(
        LabelConfig(
            tiles=tiles, out=data / "labels", rasters=(RasterTarget("population", city / "population.tif", "sum"),)
        )
    )
    captions = caption(CaptionConfig(tiles=tiles, out=data / "captions", models=("sim:precise", "sim:verbose"))).out
    corpus = fuse(FuseConfig(captions=(captions,), tiles=tiles, out=data / "corpus")).out
    run = pretrain(
        PretrainConfig(
            tiles=tiles,
            corpus=corpus,
            out=data / "runs" / "r1",
            arch="urbanln-tiny",
            pretrained="none",
            epochs=1,
            batch_size=8,
            queue_size=16,
            workers=0,
            device="cpu",
            max_steps=1,
        )
    ).out
    embed(EmbedConfig(tiles=tiles, model=run, out=data / "emb.safetensors", workers=0, device="cpu"))
    notes = root / "proj" / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine, not urbanln's\n")
    (root / "proj" / "README.txt").write_text("the user's project\n")
    return root


TINY = [
    "--arch",
    "urbanln-tiny",
    "--pretrained",
    "none",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--queue-size",
    "16",
    "--workers",
    "0",
    "--device",
    "cpu",
]
TINY_RUN = [*TINY, "--max-steps", "1"]
LONGER_RUN = [*TINY, "--max-steps", "2"]  # the same plan as TINY_RUN: continues the run

# command -> (arguments before -o, the input an output must never replace)
COMMANDS = {
    "synth": (["synth", "city", "{out}", "--size", "256"], None),
    "tile": (["tile", "data/city/imagery.tif", "--size", "64"], "data/city/imagery.tif"),
    "label": (["label", "data/tiles", "--raster", "population=data/city/population.tif"], "data/tiles"),
    "caption": (["caption", "data/tiles", "--models", "sim:precise", "--scene", "data/city/scene.json"], "data/tiles"),
    "fuse": (["fuse", "data/captions", "--tiles", "data/tiles"], "data/captions"),
    "pretrain": (["pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *TINY_RUN], "data/corpus"),
    "embed": (
        ["embed", "--tiles", "data/tiles", "--model", "data/runs/r1", "--device", "cpu", "--workers", "0"],
        "data/tiles",
    ),
    "probe": (
        # the fixture city is 256 m across: too small for spatial blocks
        [
            "probe",
            "--embeddings",
            "data/emb.safetensors",
            "--labels",
            "data/labels",
            "--target",
            "population",
            "--split",
            "random",
        ],
        "data/labels",
    ),
}


def _args(command: str, out: str) -> list[str]:
    args, _ = COMMANDS[command]
    if "{out}" in args:
        return [a.replace("{out}", out) for a in args]
    return [*args, "-o", out]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256 (links by their target)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[rel + "/"] = "dir"
    return out


def _one_error(result, code: int) -> str:
    """The result failed with ``code``, one error line, one hint line, no traceback, clean stdout."""
    stderr = result.stderr
    assert result.exit_code == code, (result.exit_code, stderr, result.stdout)
    lines = stderr.strip().splitlines()
    assert sum(line.startswith("error:") for line in lines) == 1, stderr
    assert sum(line.startswith("hint:") for line in lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert result.stdout == "", result.stdout
    return stderr


@pytest.fixture
def in_proj(ws, monkeypatch):
    monkeypatch.chdir(ws / "proj")
    return ws


# ---------------------------------------------------------------- outputs aimed where they must not go


TARGETS = {
    "its input": lambda command: COMMANDS[command][1] or "data/tiles",
    "a folder holding its input": lambda command: "data",
    "the current folder": lambda command: ".",
    "the parent folder": lambda command: "..",
    "a foreign folder": lambda command: "notes",
    "another stage's artifact": lambda command: "data/labels" if command != "label" else "data/corpus",
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("command", COMMANDS)
def test_overwrite_never_deletes_what_is_not_its_output(in_proj, cli, command, target):
    before = _snapshot(in_proj)
    out = TARGETS[target](command)
    result = cli(*_args(command, out), "--overwrite")
    _one_error(result, 1)
    assert _snapshot(in_proj) == before


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../proj"])
def test_pretrain_name_is_one_folder_name(in_proj, cli, name):
    before = _snapshot(in_proj)
    result = cli(
        "pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *TINY_RUN, "--name", name, "--overwrite"
    )
    _one_error(result, 2)
    assert _snapshot(in_proj) == before


@pytest.mark.parametrize("command", ["tile", "label", "embed", "pretrain"])
def test_destructive_flags_never_come_from_the_environment(in_proj, cli, command, monkeypatch, tmp_path):
    """A stray URBANLN_<CMD>_OVERWRITE=1 replaces nothing: the existing output is refused as without it."""
    existing = {
        "tile": "data/tiles",
        "label": "data/labels",
        "embed": "data/emb.safetensors",
        "pretrain": "data/runs/r1",
    }[command]
    monkeypatch.setenv(f"URBANLN_{command.upper()}_OVERWRITE", "1")
    before = _snapshot(in_proj)
    args = _args(command, existing)
    if command == "pretrain":  # another plan than the run's: only --overwrite may restart it
        args = [*args, "--lr", "2e-5"]
    result = cli(*args)
    _one_error(result, 3 if command == "pretrain" else 1)
    assert _snapshot(in_proj) == before


def test_config_file_cannot_set_overwrite(in_proj, cli):
    config = in_proj / "cfg.toml"
    config.write_text("[tile]\noverwrite = true\n")
    try:
        result = cli("--config", config, *_args("tile", "data/tiles"))
        assert "cannot come from a config file" in _one_error(result, 2)
    finally:
        config.unlink()


# ---------------------------------------------------------------- a second writer


@pytest.mark.parametrize("command", COMMANDS)
def test_second_writer_is_refused(in_proj, cli, command):
    out = in_proj / "proj" / "second"
    before = _snapshot(in_proj)
    with artifacts.output_lock(out):
        result = cli(*_args(command, "second"))
        stderr = _one_error(result, 1)
    assert f"another urbanln (pid {os.getpid()}) is writing second" in stderr
    assert _snapshot(in_proj) == before  # the lock file is gone once released


def test_lock_dies_with_its_process_and_leftovers_are_cleaned(in_proj, cli):
    """A writer killed with -9 leaves no stale lock; its staging leftovers go on the next run."""
    out = in_proj / "proj" / "killed"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from urbanln_cli import artifacts\n"
            f"with artifacts.output_lock({str(out)!r}):\n    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert "another urbanln" in _one_error(cli(*_args("synth", "killed")), 1)
        staging = out.parent / f".killed.staging-{holder.pid}-0123abcd"
        staging.mkdir()
        (staging / "half.tif").write_bytes(b"x" * 10)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = cli(*_args("synth", "killed"))
    assert result.exit_code == 0, result.stderr
    assert not staging.exists()
    assert not (out.parent / ".killed.lock").exists()
    assert artifacts.read_manifest(out)["stage"] == "synth"
    artifacts.remove(out, "synth")


# ---------------------------------------------------------------- a full disk


def _full_disk_at_commit(monkeypatch, under: Path):
    """os.replace of anything under ``under`` fails as on a full disk (the commit of every atomic write)."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if str(Path(dst).resolve()).startswith(str(under.resolve())):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("command", COMMANDS)
def test_disk_full_keeps_the_previous_output(in_proj, cli, command, monkeypatch):
    out = {
        "synth": "data/city",
        "tile": "data/tiles",
        "label": "data/labels",
        "caption": "data/captions",
        "fuse": "data/corpus",
        "pretrain": "data/runs/r1",
        "embed": "data/emb.safetensors",
        "probe": "data/probe-full",
    }[command]
    if command == "probe":  # make a previous output first
        assert cli(*_args("probe", out)).exit_code == 0
    before = _snapshot(in_proj)
    target = in_proj / "proj" / out
    _full_disk_at_commit(monkeypatch, target.parent)
    args = _args(command, out)
    if command == "pretrain":
        args = ["pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *LONGER_RUN, "-o", out]
    result = cli(*args, "--overwrite")  # caption: another panel than the artifact's, so it is replaced
    stderr = _one_error(result, 1)
    assert "No space left on device" in stderr and "free some disk space" in stderr
    monkeypatch.undo()
    after = _snapshot(in_proj)
    # the previous output is byte-identical; only resumable work (a .partial folder, checkpoints) may have been added
    assert {k: v for k, v in after.items() if k in before} == before
    added = [k for k in after if k not in before]
    assert all(".partial/" in k or "/checkpoints/" in k or k.endswith("metrics.jsonl") for k in added), added
    if command == "probe":
        artifacts.remove(target, "probe")
    for partial in (in_proj / "proj" / "data").glob("*.partial"):
        artifacts.remove(partial, "partial")


def test_write_errors_from_native_writers_are_reported(in_proj, tmp_path):
    """A real write failure inside Arrow and safetensors (a file-size limit: EFBIG), not a monkeypatch."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    env = {**os.environ, "NO_COLOR": "1"}
    for args in (_args("tile", str(tmp_path / "t")), _args("embed", str(tmp_path / "e.safetensors"))):
        before = _snapshot(in_proj)
        done = subprocess.run(
            [sys.executable, "-m", "urbanln_cli", *args],
            cwd=in_proj / "proj",
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=limit,
            timeout=300,
        )
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert [line.split(":")[0] for line in lines if line.startswith(("error:", "hint:"))] == ["error", "hint"], (
            done.stderr
        )
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert _snapshot(in_proj) == before


# ---------------------------------------------------------------- damaged artifacts


def _manifest_edit(edit):
    def corrupt(path: Path) -> None:
        manifest = json.loads((path / artifacts.MANIFEST_NAME).read_text())
        (path / artifacts.MANIFEST_NAME).write_text(json.dumps(edit(manifest)))

    return corrupt


def _truncate_manifest(path: Path) -> None:
    text = (path / artifacts.MANIFEST_NAME).read_text()
    (path / artifacts.MANIFEST_NAME).write_text(text[: len(text) // 2])


def _drop_column(column: str):
    def corrupt(path: Path) -> None:
        manifest = (path / artifacts.MANIFEST_NAME).read_text()
        ds = datasets.load_from_disk(str(path)).remove_columns([column])
        tmp = path.with_name(path.name + ".tmp")
        ds.save_to_disk(str(tmp))
        shutil.rmtree(path)
        tmp.rename(path)
        (path / artifacts.MANIFEST_NAME).write_text(manifest)

    return corrupt


def _truncate_file(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _safetensors_manifest_not_json(path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    meta = header["__metadata__"] | {"urbanln_manifest": "{not json"}
    save_file(load_file(str(path)), str(path), metadata=meta)


def _foreign_file(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 10)


def _nan_weights(path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(path))
    weights = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in weights.items()}
    save_file(weights, str(path))


def _foreign_checkpoint(path: Path) -> None:
    latest = (path / "checkpoints" / "LATEST").read_text().strip()
    (path / "checkpoints" / latest / "state.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")


# name -> (artifact under data/, corruption, the command that reads it with {bad} for the damaged copy)
DAMAGE = {
    "tiles manifest cut short": (
        "tiles",
        _truncate_manifest,
        ["label", "{bad}", "--raster", "population=data/city/population.tif"],
    ),
    "tiles manifest a JSON list": (
        "tiles",
        _manifest_edit(lambda m: [m]),
        ["caption", "{bad}", "--models", "sim:precise"],
    ),
    "tiles params a JSON list": (
        "tiles",
        _manifest_edit(lambda m: m | {"params": []}),
        ["label", "{bad}", "--raster", "p=data/city/population.tif"],
    ),
    "tiles schema version a string": (
        "tiles",
        _manifest_edit(lambda m: m | {"schema_version": "1"}),
        ["embed", "--tiles", "{bad}", "--model", "data/runs/r1"],
    ),
    "tiles without images": (
        "tiles",
        _drop_column("image"),
        ["embed", "--tiles", "{bad}", "--model", "data/runs/r1", "--workers", "0"],
    ),
    "tiles without gsd": ("tiles", _drop_column("gsd"), ["label", "{bad}", "--raster", "p=data/city/population.tif"]),
    "captions without captions": ("captions", _drop_column("caption"), ["fuse", "{bad}"]),
    "corpus manifest cut short": (
        "corpus",
        _truncate_manifest,
        ["pretrain", "--tiles", "data/tiles", "--corpus", "{bad}", *TINY_RUN],
    ),
    "labels manifest a JSON list": (
        "labels",
        _manifest_edit(lambda m: [m]),
        ["probe", "--embeddings", "data/emb.safetensors", "--labels", "{bad}", "--target", "population"],
    ),
    "embeddings cut short": (
        "emb.safetensors",
        _truncate_file,
        ["probe", "--embeddings", "{bad}", "--labels", "data/labels", "--target", "population"],
    ),
    "embeddings manifest not JSON": (
        "emb.safetensors",
        _safetensors_manifest_not_json,
        ["probe", "--embeddings", "{bad}", "--labels", "data/labels", "--target", "population"],
    ),
    "embeddings a foreign file": (
        "emb.safetensors",
        _foreign_file,
        ["probe", "--embeddings", "{bad}", "--labels", "data/labels", "--target", "population"],
    ),
    "run weights cut short": (
        "runs/r1",
        lambda p: _truncate_file(p / "open_clip_model.safetensors"),
        ["embed", "--tiles", "data/tiles", "--model", "{bad}", "--workers", "0"],
    ),
    "run weights NaN": (
        "runs/r1",
        lambda p: _nan_weights(p / "open_clip_model.safetensors"),
        ["embed", "--tiles", "data/tiles", "--model", "{bad}", "--workers", "0"],
    ),
    "checkpoint a foreign file": (
        "runs/r1",
        _foreign_checkpoint,
        ["pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *LONGER_RUN],
    ),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_artifacts_exit_3(in_proj, cli, case, tmp_path):
    source, corrupt, command = DAMAGE[case]
    bad = tmp_path / Path(source).name
    src = in_proj / "proj" / "data" / source
    shutil.copytree(src, bad) if src.is_dir() else shutil.copyfile(src, bad)
    corrupt(bad)
    args = [a.replace("{bad}", str(bad)) for a in command]
    if args[0] == "pretrain":
        args += ["-o", str(bad if source.startswith("runs") else tmp_path / "run")]
    elif args[0] not in ("probe",):
        args += ["-o", str(tmp_path / "out")]
    else:
        args += ["-o", str(tmp_path / "probe")]
    before = _snapshot(tmp_path)
    project = _snapshot(in_proj / "proj")
    stderr = _one_error(cli(*args), 3)
    assert str(bad) in stderr, stderr  # the damaged file or folder is named
    assert _snapshot(tmp_path) == before
    assert _snapshot(in_proj / "proj") == project
    if source in ("tiles", "labels", "emb.safetensors"):  # inspect names the damage too
        if "manifest" in case or "cut short" in case or "foreign" in case:
            _one_error(cli("inspect", bad), 3)


# ---------------------------------------------------------------- numbers


def _float_options():
    """Every float option of every command, found by walking the CLI."""
    import typer.main

    from urbanln_cli.cli import app

    found = []

    def walk(command, path):
        for param in command.params:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and descriptor.annotation is float and param.opts:
                found.append((path, param.opts[0]))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_options_are_usage_errors(cli, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = _float_options()
    assert len(options) > 10 and (["pretrain"], "--lr") in options
    for path, option in options:
        result = cli(*path, option, value)
        stderr = _one_error(result, 2)
        assert option in stderr and "not a finite number" in stderr
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_stops_training_and_exports_nothing(in_proj, cli, monkeypatch, tmp_path):
    """A diverged loss: exit 1, the last good checkpoint kept, no model, runs/latest not moved."""
    from urbanln_cli.models import step as step_module

    real_forward = step_module.UrbanLNStep.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        terms = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(step_module.UrbanLNStep, "forward", forward)
    monkeypatch.chdir(tmp_path)
    for name in ("tiles", "corpus"):
        shutil.copytree(in_proj / "proj" / "data" / name, tmp_path / name)
    args = [
        "pretrain",
        "--arch",
        "urbanln-tiny",
        "--pretrained",
        "none",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--queue-size",
        "16",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--name",
        "nan",
    ]  # 2 steps an epoch
    stderr = _one_error(cli(*args), 1)
    assert "NaN or infinite" in stderr and "step-00000002" in stderr
    run = tmp_path / "runs" / "nan"
    assert not (run / "open_clip_model.safetensors").exists()
    assert not (tmp_path / "runs" / "latest").exists()
    assert artifacts.read_manifest(run)["status"] == "training"
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000002"]


def test_demo_writes_only_into_its_own_folder(in_proj, cli):
    """`urbanln demo .` or into a user's folder would replace the user's artifacts of the same names."""
    mine = in_proj / "proj" / "mine"  # a project with the demo's folder names, made with the CLI
    mine.mkdir()
    for name in ("city", "tiles", "captions"):
        shutil.copytree(in_proj / "proj" / "data" / name, mine / name)
    _manifest_edit(lambda m: m | {"command": "urbanln synth city city"})(mine / "city")
    before = _snapshot(in_proj)
    for folder in (".", "data", "notes", "..", "mine"):
        _one_error(cli("demo", folder, "--quick"), 1)
    assert _snapshot(in_proj) == before
    shutil.rmtree(mine)


def test_links_are_never_written_through(in_proj, cli):
    """A lock file or an output that is a symbolic link: refused, and what it points at is untouched."""
    proj = in_proj / "proj"
    (proj / ".linked.lock").symlink_to("README.txt")
    (proj / "latest-tiles").symlink_to("data/tiles")
    before = _snapshot(in_proj)
    try:
        _one_error(cli(*_args("synth", "linked")), 1)
        _one_error(cli(*_args("tile", "latest-tiles"), "--overwrite"), 1)
        assert _snapshot(in_proj) == before
    finally:
        (proj / ".linked.lock").unlink()
        (proj / "latest-tiles").unlink()


@pytest.mark.parametrize(
    "command,out",
    [("label", "data/tiles/labels"), ("embed", "data/runs/r1/emb.safetensors"), ("fuse", "data/captions/corpus")],
)
def test_an_output_inside_an_input_is_refused(in_proj, cli, command, out):
    """Else a later --overwrite of the input would delete it along."""
    before = _snapshot(in_proj)
    assert "inside the input" in _one_error(cli(*_args(command, out)), 1)
    assert _snapshot(in_proj) == before


def test_inspect_a_training_run_and_a_damaged_model(in_proj, cli, tmp_path):
    run = tmp_path / "r1"
    shutil.copytree(in_proj / "proj" / "data" / "runs" / "r1", run)
    (run / "open_clip_config.json").write_text("{cut")
    assert str(run / "open_clip_config.json") in _one_error(cli("inspect", run), 3)
    (run / "open_clip_config.json").unlink()
    manifest = json.loads((run / artifacts.MANIFEST_NAME).read_text())
    (run / artifacts.MANIFEST_NAME).write_text(json.dumps(manifest | {"status": "training"}))
    result = cli("inspect", run, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["manifest"]["status"] == "training"


def test_disk_full_at_a_checkpoint_keeps_the_last_one(in_proj, cli, monkeypatch, tmp_path):
    """The full disk hits the checkpoint's commit: exit 1, the last checkpoint and the export as they were."""
    run = tmp_path / "r1"
    shutil.copytree(in_proj / "proj" / "data" / "runs" / "r1", run)
    before = _snapshot(run)
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name.startswith("step-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.chdir(in_proj / "proj")
    stderr = _one_error(cli("pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *LONGER_RUN, "-o", run), 1)
    monkeypatch.undo()
    assert "No space left on device" in stderr
    after = _snapshot(run)
    assert {k: after.get(k) for k in before if k != "metrics.jsonl"} == {
        k: v for k, v in before.items() if k != "metrics.jsonl"
    }
    assert [k for k in after if k not in before] == []  # no staging folder, no half checkpoint


def test_normal_runs_keep_stderr_to_urbanlns_own_lines(in_proj, cli, tmp_path):
    """No library warnings or log records (open_clip's "No pretrained weights", rasterio, numpy, Pillow) on stderr."""
    import warnings

    runs = {
        "synth": ["synth", "city", tmp_path / "city", "--size", "256"],
        "tile": ["tile", "data/city/imagery.tif", "--size", "64", "-o", tmp_path / "tiles"],
        "label": ["label", "data/tiles", "--raster", "population=data/city/population.tif", "-o", tmp_path / "labels"],
        "caption": ["caption", "data/tiles", "--models", "sim:precise", "-o", tmp_path / "captions"],
        "fuse": ["fuse", "data/captions", "--tiles", "data/tiles", "-o", tmp_path / "corpus"],
        "pretrain": ["pretrain", "--tiles", "data/tiles", "--corpus", "data/corpus", *TINY_RUN, "-o", tmp_path / "run"],
        "embed": [
            "embed",
            "--tiles",
            "data/tiles",
            "--model",
            "data/runs/r1",
            "--workers",
            "0",
            "--device",
            "cpu",
            "-o",
            tmp_path / "e.safetensors",
        ],
        "probe": [
            "probe",
            "--embeddings",
            "data/emb.safetensors",
            "--labels",
            "data/labels",
            "--target",
            "population",
            "--split",
            "random",
            "-o",
            tmp_path / "probe",
        ],
        "evaluate": [
            "evaluate",
            "retrieval",
            "--tiles",
            "data/tiles",
            "--corpus",
            "data/corpus",
            "--model",
            "data/runs/r1",
        ],
        "inspect": ["inspect", "data/tiles"],
        "env": ["env", "--json"],
    }
    for name, args in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # a library warning would show, however often it fired before
            result = cli(*args)
        assert result.exit_code == 0, (name, result.stderr)
        for line in result.stderr.splitlines():
            assert "Warning" not in line and "WARNING" not in line and "root:" not in line, (name, line)
