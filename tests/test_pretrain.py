"""`urbanln pretrain` on CPU with the tiny architecture: exact resume, DDP, export, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from tests.fakes.rasters import make_geotiff
from urbanln_cli import artifacts
from urbanln_cli.stages.pretrain import PretrainConfig, pretrain
from urbanln_cli.stages.tile import TileConfig, tile


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 tiles and a corpus with a long caption, a short one and another candidate per tile."""
    folder = tmp_path_factory.mktemp("pretrain")
    make_geotiff(folder / "city.tif", width=128, height=128, seed=3)
    tiles = tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=32, workers=1)).out
    ids = datasets.load_from_disk(str(tiles))["tile_id"]
    uses = ["dense residential blocks", "a busy commercial centre", "industrial warehouses", "a green park"]
    rows = [
        {
            "tile_id": t,
            "caption": f"The tile shows {uses[i % 4]} with {i} buildings along a road. " * 3,
            "caption_short": f"{uses[i % 4]}",
            "candidates": json.dumps([{"model": "m2", "caption": f"{uses[i % 4]} seen from above", "score": 0.4}]),
        }
        for i, t in enumerate(ids)
    ]
    artifacts.write_dataset(
        datasets.Dataset.from_list(rows),
        folder / "corpus",
        artifacts.new_manifest("corpus", run=artifacts.RunInfo("test"), inputs=[], rows=len(rows)),
    )
    return folder, tiles, folder / "corpus"


def _config(data, out, **kw):
    _, tiles, corpus = data
    base = dict(
        tiles=tiles,
        corpus=corpus,
        out=out,
        arch="urbanln-tiny",
        pretrained="none",
        epochs=4,
        batch_size=8,
        queue_size=32,
        workers=0,
        save_every=3,
        log_every=1,
        lr=1e-3,
        warmup_steps=2,
        device="cpu",
    )
    return PretrainConfig(**(base | kw))


def _weights(folder):
    return load_file(str(folder / "open_clip_model.safetensors"))


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_bit_exact(data, tmp_path):
    whole = pretrain(_config(data, tmp_path / "whole", max_steps=6))
    first = pretrain(_config(data, tmp_path / "split", max_steps=4))
    assert first.steps == 4
    second = pretrain(_config(data, tmp_path / "split", max_steps=6))
    assert second.resumed_from == 4 and second.steps == 6  # the checkpoint at the end of epoch 2
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.final["loss"] == second.final["loss"]
    # a finished run does nothing
    again = pretrain(_config(data, tmp_path / "split", max_steps=6))
    assert again.nothing_to_do


def test_loss_falls_and_the_folder_loads_in_open_clip(data, tmp_path):
    result = pretrain(_config(data, tmp_path / "run", epochs=8, max_steps=16))
    losses = _losses(tmp_path / "run")
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'run'}")
    tokens = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'run'}")(["a long caption " * 100])
    assert tokens.shape == (1, 248) and model.context_length == 248
    assert model.encode_text(tokens).shape[-1] == 64
    manifest = json.loads((tmp_path / "run" / "urbanln.json").read_text())
    assert manifest["stage"] == "run" and manifest["steps"] == result.steps == 16


def test_workers_do_not_change_the_data(data, tmp_path):
    pretrain(_config(data, tmp_path / "w0", max_steps=3))
    pretrain(_config(data, tmp_path / "w2", max_steps=3, workers=2))
    assert _losses(tmp_path / "w0") == _losses(tmp_path / "w2")


def test_two_process_ddp_matches_one_process(data, tmp_path):
    _, tiles, corpus = data
    args = [
        "pretrain",
        "--tiles",
        str(tiles),
        "--corpus",
        str(corpus),
        "--arch",
        "urbanln-tiny",
        "--pretrained",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--queue-size",
        "32",
        "--workers",
        "0",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "2",
        "--device",
        "cpu",
        "--max-steps",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "urbanln_cli"]
    ddp = subprocess.run(
        [*cmd, *args, "-o", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=240
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "urbanln_cli", *args, "-o", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4, abs=1e-5)


def test_bad_input(data, tmp_path, cli):
    folder, tiles, corpus = data
    base = [
        "pretrain",
        "--tiles",
        tiles,
        "--arch",
        "urbanln-tiny",
        "--pretrained",
        "none",
        "--batch-size",
        "8",
        "--queue-size",
        "32",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--max-steps",
        "1",
    ]
    # corpus tiles that are not in --tiles
    make_geotiff(tmp_path / "other.tif", width=32, height=32)
    other = tile(TileConfig(inputs=(tmp_path / "other.tif",), out=tmp_path / "other_tiles", size=32)).out
    result = cli(*base[:1], "--tiles", other, *base[3:], "--corpus", corpus, "-o", tmp_path / "r1")
    assert result.exit_code == 3 and "not in" in result.stderr and result.stdout == ""
    # an empty corpus
    artifacts.write_dataset(
        datasets.Dataset.from_dict({"tile_id": [], "caption": []}),
        tmp_path / "empty",
        artifacts.new_manifest("corpus", run=artifacts.RunInfo("t"), inputs=[], rows=0),
    )
    result = cli(*base, "--corpus", tmp_path / "empty", "-o", tmp_path / "r2")
    assert result.exit_code == 3 and "is empty" in result.stderr
    # tiles where the corpus should be
    result = cli(*base, "--corpus", tiles, "-o", tmp_path / "r3")
    assert result.exit_code == 3 and "holds tiles, but corpus is expected" in result.stderr
    # resuming a run folder with another architecture
    assert cli(*base, "--corpus", corpus, "-o", tmp_path / "r4").exit_code == 0
    result = cli(*base, "--corpus", corpus, "-o", tmp_path / "r4", "--context-length", "134")
    assert result.exit_code == 3 and "cannot be resumed" in result.stderr and "hint: " in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pretrain_on_cuda(data, tmp_path):
    result = pretrain(_config(data, tmp_path / "gpu", device="cuda", max_steps=4, workers=2))
    assert result.steps == 4 and all(v == v for v in _losses(tmp_path / "gpu"))  # bf16 autocast, fused AdamW, no NaN


def test_resume_flag_continues_runs_latest(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = pretrain(_config(data, None, name="exp1", max_steps=2))
    assert first.out == Path("runs/exp1") and Path("runs/latest").resolve().name == "exp1"
    again = pretrain(_config(data, None, resume=True, max_steps=4))
    assert again.out == Path("runs/exp1") and again.resumed_from == 2 and again.steps == 4


def test_without_the_stretch(data, tmp_path):
    result = pretrain(_config(data, tmp_path / "short", context_length=77, max_steps=2))
    config = json.loads((result.out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["context_length"] == 77


def test_interrupt_inside_a_step_resumes_exactly(data, tmp_path, monkeypatch):
    from urbanln_cli.errors import Interrupted

    pretrain(_config(data, tmp_path / "whole", max_steps=7))
    calls = {"n": 0}
    real = torch.Tensor.backward

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # after step 6's forward has moved the teacher and the queues
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", flaky)
    with pytest.raises(Interrupted):
        pretrain(_config(data, tmp_path / "split", max_steps=7))
    monkeypatch.setattr(torch.Tensor, "backward", real)
    pretrain(_config(data, tmp_path / "split", max_steps=7))
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(1, 8))  # no step logged twice


def test_changed_learning_rate_is_refused(data, tmp_path):
    from urbanln_cli.errors import InputError

    pretrain(_config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(InputError, match="lr"):
        pretrain(_config(data, tmp_path / "run", max_steps=4, lr=5e-2))


def test_malformed_candidates_are_reported(tmp_path, data):
    from urbanln_cli.errors import InputError
    from urbanln_cli.training.data import candidates_of

    assert candidates_of({"model": "a", "caption": "x"}) == ["x"]
    assert (
        candidates_of('{"caption": "y"}') == ["y"]
        and candidates_of("null") == []
        and candidates_of("plain") == ["plain"]
    )
    with pytest.raises(ValueError):
        candidates_of("[not json")
    _, tiles, corpus = data
    ds = datasets.load_from_disk(str(corpus)).to_list()
    ds[0]["candidates"] = "[not json"
    artifacts.write_dataset(
        datasets.Dataset.from_list(ds),
        tmp_path / "bad",
        artifacts.new_manifest("corpus", run=artifacts.RunInfo("t"), inputs=[], rows=len(ds)),
    )
    with pytest.raises(InputError, match="cannot read its candidates"):
        pretrain(_config(data, tmp_path / "run", corpus=tmp_path / "bad", max_steps=1))


def test_a_run_stopped_by_max_steps_continues_to_its_planned_end(data, tmp_path, cli):
    """Rerun without --max-steps (or with --resume): the run goes on from its checkpoint to the last epoch."""
    whole = pretrain(_config(data, tmp_path / "whole", epochs=2))
    assert whole.steps == 4
    pretrain(_config(data, tmp_path / "split", epochs=2, max_steps=3))
    again = pretrain(_config(data, tmp_path / "split", epochs=2))
    assert not again.nothing_to_do and again.resumed_from == 3 and again.steps == 4
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pretrain(_config(data, tmp_path / "split", epochs=2)).nothing_to_do


def test_runs_latest_moves_only_when_a_run_has_exported(data, tmp_path, monkeypatch):
    """During training and after a killed run, runs/latest still names the last finished model."""
    from urbanln_cli.errors import Interrupted
    from urbanln_cli.training import checkpoint

    monkeypatch.chdir(tmp_path)
    pretrain(_config(data, None, name="first", max_steps=2))
    assert os.readlink("runs/latest") == "first"
    real_save = checkpoint.save

    stopped = []

    def save_then_stop(folder, step, state):
        assert os.readlink("runs/latest") == "first"  # training has started: latest has not moved
        real_save(folder, step, state)
        if not stopped:  # Ctrl-C once, right after the first checkpoint
            stopped.append(step)
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(Interrupted):
        pretrain(_config(data, None, name="second", max_steps=4))
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert os.readlink("runs/latest") == "first"
    assert artifacts.read_manifest("runs/second")["status"] == "training"
    pretrain(_config(data, None, name="second", max_steps=4))
    assert os.readlink("runs/latest") == "second"
    assert artifacts.read_manifest("runs/second")["status"] == "finished"


def test_overwrite_restarts_only_a_run_folder(data, tmp_path):
    """--overwrite with another plan replaces a run; the inputs beside it and foreign folders stay."""
    from urbanln_cli.errors import OutputExistsError

    pretrain(_config(data, tmp_path / "run", max_steps=2))
    (tmp_path / "notes.txt").write_text("mine")
    again = pretrain(_config(data, tmp_path / "run", max_steps=2, lr=5e-3, overwrite=True))
    assert again.resumed_from == 0 and artifacts.read_manifest(again.out)["plan"]["lr"] == 5e-3
    assert (tmp_path / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "proj"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an urbanln run folder"):
        pretrain(_config(data, foreign, max_steps=2, overwrite=True))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_resume_picks_the_unfinished_run_and_refuses_overwrite(data, tmp_path, monkeypatch, cli):
    from urbanln_cli.errors import Interrupted, UsageProblem
    from urbanln_cli.training import checkpoint

    monkeypatch.chdir(tmp_path)
    pretrain(_config(data, None, name="done", max_steps=2))
    real_save = checkpoint.save
    stopped = []

    def save_then_stop(folder, step, state):
        real_save(folder, step, state)
        if not stopped:
            stopped.append(step)
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(Interrupted) as stop:
        pretrain(_config(data, None, name="busy", lr=5e-4, max_steps=6))
    assert "-o runs/busy" in stop.value.hint
    monkeypatch.setattr(checkpoint, "save", real_save)
    again = pretrain(_config(data, None, resume=True, lr=5e-4, max_steps=6))
    assert again.out == Path("runs/busy") and again.resumed_from == stopped[0] and again.steps == 6
    for bad in (dict(resume=True, overwrite=True), dict(name="latest")):
        with pytest.raises(UsageProblem):
            pretrain(_config(data, None, max_steps=2, **bad))


def test_a_removed_checkpoint_resumes_from_the_one_before(data, tmp_path):
    """The hint for a damaged checkpoint: remove it, and the run resumes from the previous one; leftovers go."""
    pretrain(_config(data, tmp_path / "run", max_steps=6, save_every=2))
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert steps[-2:] == ["step-00000004", "step-00000006"]
    artifacts.remove(tmp_path / "run" / "checkpoints" / "step-00000006", "checkpoint")
    leftover = tmp_path / "run" / "checkpoints" / ".step-00000008.staging-999999-0123abcd"
    leftover.mkdir()
    (tmp_path / "run" / "open_clip_model.safetensors").unlink()  # as if the run had stopped before exporting
    again = pretrain(_config(data, tmp_path / "run", max_steps=6, save_every=2))
    assert again.resumed_from == 4 and again.steps == 6 and not leftover.exists()


def test_torchrun_needs_a_run_name(data, monkeypatch):
    from urbanln_cli.errors import UsageProblem

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageProblem, match="same run folder"):
        pretrain(_config(data, None, max_steps=1))
