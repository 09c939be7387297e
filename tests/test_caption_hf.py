"""`urbanln caption --models hf:<folder>`: the real transformers path on a tiny model built here, no download."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import datasets
import pytest

from tests.fakes.rasters import make_geotiff
from tests.fakes.tiny_vlm import make_tiny_vlm
from urbanln_cli.captioners import GenerationOptions
from urbanln_cli.captioners.aliases import resolve_models
from urbanln_cli.captioners.hf import HfBackend
from urbanln_cli.captioners.hf_weights import folder_digest
from urbanln_cli.errors import ServiceUnavailable
from urbanln_cli.journal import read_records
from urbanln_cli.prompts import load_prompt
from urbanln_cli.stages.caption import CaptionConfig, caption
from urbanln_cli.stages.tile import TileConfig, tile

ROOT = Path(__file__).parent.parent
SHORT_PROMPT = "Describe the land use, buildings and roads of this urban tile at {gsd} m."
PROMPT_FILE: list[Path] = []  # set by the short_prompt fixture


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A tiny model is all overhead: on a shared CPU, OpenMP threads waiting for each other cost 10-50x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def short_prompt(tmp_path_factory):
    """A random model hears a long prompt of unknown words more than it sees the tile; short prompts are fast too."""
    path = tmp_path_factory.mktemp("prompt") / "short.txt"
    path.write_text(SHORT_PROMPT)
    PROMPT_FILE[:] = [path]
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny")


@pytest.fixture(scope="session")
def looping(tmp_path_factory):
    """A model that can only say 'road': runaway repetition, whatever the seed."""
    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "road", only_words=("road",))


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    make_geotiff(folder / "city.tif", width=64, height=32, res=2.0)
    return tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=16, workers=1)).out  # 8 tiles


@pytest.fixture(scope="module")
def two_gsd_tiles(tmp_path_factory):
    """2 tiles at 0.5 m, then 8 at 2 m: their prompts differ in length, so a batch holding both is padded."""
    folder = tmp_path_factory.mktemp("two_gsd")
    make_geotiff(folder / "a_fine.tif", width=32, height=16, res=0.5)
    make_geotiff(folder / "b_city.tif", width=64, height=32, res=2.0)
    inputs = (folder / "a_fine.tif", folder / "b_city.tif")
    return tile(TileConfig(inputs=inputs, out=folder / "tiles", size=16, workers=1)).out


def _config(tiles, out, model, **kw):
    kw = {"models": (f"hf:{model}",), "options": GenerationOptions(temperature=0.0, num_predict=12)} | kw
    return CaptionConfig(tiles=tiles, out=out, device="cpu", prompt=PROMPT_FILE[0], **kw)


def _rows(out):
    return datasets.load_from_disk(str(out)).to_list()


def _bare_captions(model, tiles, prompt, num_predict=12):
    """``prompt``: a Prompt, rendered with each tile's GSD."""
    """Each tile alone through AutoProcessor + AutoModelForImageTextToText.generate, greedy: the reference."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    net = AutoModelForImageTextToText.from_pretrained(model).eval()
    raw = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False))
    out = {}
    for row in raw:
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.render(row["gsd"])}]}],
            add_generation_prompt=True,
        )
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            ids = net.generate(**inputs, max_new_tokens=num_predict, do_sample=False)
        out[row["tile_id"]] = processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return out


def test_aliases_and_model_kinds():
    assert resolve_models("hf:qwen2.5-vl-7b,llava,hf:/models/x") == [
        "hf:Qwen/Qwen2.5-VL-7B-Instruct",
        "llava:7b",
        "hf:/models/x",
    ]
    assert resolve_models("hf:internvl3-8b") == ["hf:OpenGVLab/InternVL3-8B-hf"]


def test_hf_captions_match_a_bare_generate_and_carry_latency_and_tokens(
    two_gsd_tiles, tiny, tmp_path, cli, short_prompt
):
    tiles = two_gsd_tiles
    out = tmp_path / "cap"
    prompt = short_prompt
    args = ("caption", tiles, "--models", f"hf:{tiny}", "--device", "cpu", "--temperature", "0", "--num-predict", "12")
    args += ("--prompt", prompt)
    result = cli(*args, "--batch-size", "3", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 10
    rows = _rows(out)
    assert len({r["prompt_tokens"] for r in rows[:3]}) == 2  # the first batch of 3 is left-padded
    reference = _bare_captions(tiny, tiles, load_prompt(prompt))
    assert {r["tile_id"]: r["caption"] for r in rows} == reference  # batched, left-padded: the same text
    assert len(set(reference.values())) > 1  # the model looked at each tile
    digest = folder_digest(tiny)
    for row in rows:
        assert row["model"] == f"hf:{tiny}" and row["model_digest"] == digest and digest.startswith("sha256:")
        assert row["error"] is None and row["attempts"] == 1 and row["host"] == "cpu"
        assert row["latency_s"] > 0 and 1 <= row["output_tokens"] <= 12
        assert row["prompt_tokens"] > 16 + 10  # the prompt's words and the 16 image tokens
    manifest = json.loads((out / "urbanln.json").read_text())
    assert manifest["hf"] == {"device": "cpu", "dtype": "float32", "batch_size": 3, "oom_halvings": 0}
    assert manifest["models"][f"hf:{tiny}"]["capabilities"] == ["vision", "transformers:llava"]
    assert manifest["hosts"] == []  # no Ollama server took part
    again = cli(*args, "-o", out)
    assert again.exit_code == 0 and "nothing to do" in again.stderr


def test_sampling_is_per_row_so_batch_size_does_not_matter(tiles, tiny, tmp_path):
    sampled = GenerationOptions(temperature=0.9, seed=3, num_predict=10)
    one = caption(_config(tiles, tmp_path / "b1", tiny, options=sampled, batch_size=1))
    eight = caption(_config(tiles, tmp_path / "b8", tiny, options=sampled, batch_size=8))
    assert one.counts["failed"] == eight.counts["failed"] == 0
    assert [r["caption"] for r in _rows(tmp_path / "b1")] == [r["caption"] for r in _rows(tmp_path / "b8")]
    other = caption(_config(tiles, tmp_path / "s4", tiny, options=replace(sampled, seed=4)))
    assert other.counts["failed"] == 0
    assert [r["caption"] for r in _rows(tmp_path / "s4")] != [r["caption"] for r in _rows(tmp_path / "b1")]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "qwen", family="qwen2_5_vl")


def test_the_qwen2_5_vl_family_batches_with_multimodal_rope(two_gsd_tiles, tiny_qwen, tmp_path):
    """Qwen2.5-VL (the paper's Qwen) positions image and text by M-RoPE: left padding must not move them."""
    tiles = two_gsd_tiles
    sampled = GenerationOptions(temperature=1.0, seed=0, num_predict=10)
    batched = caption(_config(tiles, tmp_path / "b8", tiny_qwen, options=sampled, batch_size=8))
    caption(_config(tiles, tmp_path / "b1", tiny_qwen, options=sampled, batch_size=1))
    assert batched.manifest["models"][f"hf:{tiny_qwen}"]["capabilities"] == ["vision", "transformers:qwen2_5_vl"]
    rows = _rows(tmp_path / "b8")
    assert len({r["prompt_tokens"] for r in rows[:8]}) == 2  # the first batch of 8 is left-padded
    assert [r["caption"] for r in rows] == [r["caption"] for r in _rows(tmp_path / "b1")]
    assert len({r["caption"] for r in rows}) > 1 and all(r["error"] is None for r in rows)


class _Recording(HfBackend):
    """The real backend, with what it was asked recorded, and faults to inject: OOM or empty replies."""

    def __init__(self, oom_over=None, empty_first=False, oom_after=None):
        super().__init__("cpu", 8)
        self.batches, self.options = [], []
        self.oom_over, self.empty_first, self.oom_after = oom_over, empty_first, oom_after
        self.rows_done = 0

    def generate_batch(self, tag, images, prompts, options):
        import torch

        self.batches.append(len(images))
        self.options.append(list(options))
        if self.oom_over is not None and len(images) > self.oom_over:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.oom_after is not None and self.rows_done >= self.oom_after:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        replies = super().generate_batch(tag, images, prompts, options)
        self.rows_done += len(replies)
        if self.empty_first and len(self.batches) == 1:
            replies = [replace(r, text="") for r in replies]
        return replies


def test_out_of_memory_halves_the_batch(tiles, tiny, tmp_path):
    backend = _Recording(oom_over=2)
    result = caption(_config(tiles, tmp_path / "cap", tiny, batch_size=8), backend=backend)
    assert result.counts["failed"] == 0 and result.rows == 8
    assert backend.batches == [8, 4, 2, 2, 2, 2]  # 8 and 4 ran out of memory; 2 stays for the rest of the run
    assert result.manifest["hf"]["oom_halvings"] == 2
    caption(_config(tiles, tmp_path / "ref", tiny))  # no fault, 8 per batch
    assert [r["caption"] for r in _rows(tmp_path / "cap")] == [r["caption"] for r in _rows(tmp_path / "ref")]


def test_out_of_memory_on_one_tile_stops_with_exit_4_and_keeps_work(tiles, tiny, tmp_path):
    with pytest.raises(ServiceUnavailable, match="out of GPU memory on one tile") as info:
        caption(_config(tiles, tmp_path / "cap", tiny, batch_size=1), backend=_Recording(oom_after=3))
    assert info.value.exit_code == 4 and "--image-size" in info.value.hint
    kept = list(read_records(tmp_path / "cap.partial" / "journal.jsonl"))
    assert len(kept) == 3 and all(r["error"] is None for r in kept)
    result = caption(_config(tiles, tmp_path / "cap", tiny, batch_size=4))
    assert result.counts["reused"] == 3 and result.counts["captioned_now"] == 5 and result.counts["failed"] == 0


def test_content_retry_gets_a_new_seed_then_succeeds(tiles, tiny, tmp_path):
    backend = _Recording(empty_first=True)
    result = caption(_config(tiles, tmp_path / "cap", tiny, batch_size=4, content_retries=2), backend=backend)
    rows = _rows(tmp_path / "cap")
    assert result.counts["failed"] == 0 and all(r["caption"] for r in rows)
    assert [r["attempts"] for r in rows] == [2] * 4 + [1] * 4  # the first batch's rows were asked again
    retried = backend.options[1][:4]  # the retries go first, together in the next batch
    assert {(o.seed, o.temperature) for o in retried} == {(1, 0.3)}  # greedy retried with a new seed and sampling
    assert {(o.seed, o.temperature) for o in backend.options[0]} == {(0, 0.0)}


def test_runaway_repetition_uses_up_the_content_retries(tiles, looping, tmp_path):
    options = GenerationOptions(temperature=0.0, num_predict=64)  # "road " × 64: over the 300 bytes of the check
    result = caption(_config(tiles, tmp_path / "cap", looping, options=options, content_retries=2, limit=4))
    rows = _rows(tmp_path / "cap")
    assert result.counts["failed"] == 4 and result.counts["failed_repetition"] == 4
    assert all(r["error_class"] == "repetition" and r["attempts"] == 3 for r in rows)
    assert rows[0]["caption"].startswith("road road road") and rows[0]["output_tokens"] == 64  # kept, for fuse


def test_one_run_mixes_hf_sim_and_ollama_models(tiny, tmp_path, cli):
    from tests.fakes.ollama_server import FakeOllama
    from tests.test_sim import _scene

    city = _scene(tmp_path / "city")
    city_tiles = tile(TileConfig(inputs=(city / "imagery.tif",), out=tmp_path / "tiles", size=64)).out  # 2 tiles
    with FakeOllama() as server:
        result = cli(
            "caption",
            city_tiles,
            "--models",
            f"hf:{tiny},sim:precise,llava",
            "--host",
            server.url,
            "--device",
            "cpu",
            "--num-predict",
            "12",
            "-o",
            tmp_path / "cap",
        )
        assert result.exit_code == 0, result.stderr
        assert server.chats == 2
    rows = _rows(tmp_path / "cap")
    assert [(r["model"], r["host"]) for r in rows[:3]] == [
        (f"hf:{tiny}", "cpu"),
        ("sim:precise", "sim"),
        ("llava:7b", server.url),
    ]
    assert len(rows) == 6 and all(r["caption"] and r["error"] is None for r in rows)


def test_missing_models_exit_4_with_the_download_command(tiles, tmp_path, cli):
    result = cli("caption", tiles, "--models", "hf:qwen2.5-vl-7b", "-o", tmp_path / "c")
    assert result.exit_code == 4 and result.stdout == ""
    assert "offline" in result.stderr and "not in the Hugging Face cache" in result.stderr
    assert "hf download Qwen/Qwen2.5-VL-7B-Instruct" in result.stderr
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in result.stderr
    result = cli("caption", tiles, "--models", "hf:qwen2.5-vl-7B", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "did you mean 'hf:qwen2.5-vl-7b'" in result.stderr
    result = cli("caption", tiles, "--models", "hf:./no/such/folder", "-o", tmp_path / "c")
    assert result.exit_code == 3 and "not a model folder" in result.stderr
    text_only = tmp_path / "bert"
    text_only.mkdir()
    (text_only / "config.json").write_text('{"model_type": "bert"}')
    (text_only / "model.safetensors").write_bytes(b"0")
    result = cli("caption", tiles, "--models", f"hf:{text_only}", "-o", tmp_path / "c")
    assert result.exit_code == 4 and "not an image-text-to-text model" in result.stderr
    assert not (tmp_path / "c").exists()


def test_a_hub_id_in_the_cache_loads_offline_and_its_digest_is_the_blob_names(tiles, tiny, tmp_path, monkeypatch):
    import hashlib

    from transformers.utils.hub import try_to_load_from_cache

    hub = Path(os.environ["HF_HOME"]) / "hub" / "models--local--tiny-vlm"
    snapshot = hub / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    (hub / "blobs").mkdir(exist_ok=True)
    (hub / "refs").mkdir(exist_ok=True)
    (hub / "refs" / "main").write_text("0" * 40)
    for f in tiny.iterdir():
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, hub / "blobs" / sha)
        if not (snapshot / f.name).exists():
            (snapshot / f.name).symlink_to(Path("../../blobs") / sha)
    assert try_to_load_from_cache("local/tiny-vlm", "config.json") is not None
    expected = folder_digest(tiny)
    hashed = []
    monkeypatch.setattr("urbanln_cli.captioners.hf_weights._sha256", lambda p: hashed.append(p.name) or "x" * 64)
    result = caption(replace(_config(tiles, tmp_path / "cap", tiny), models=("hf:local/tiny-vlm",), limit=2))
    assert result.counts["captions"] == 2 and hashed == []  # every file's sha256 came from its blob's name
    assert result.manifest["models"]["hf:local/tiny-vlm"]["digest"] == expected  # same bytes, same digest


def test_weights_are_hashed_once_until_they_change(tiny, tmp_path, monkeypatch):
    import urbanln_cli.captioners.hf_weights as weights

    folder = tmp_path / "m"
    shutil.copytree(tiny, folder)
    monkeypatch.setattr(weights, "CACHE_OVER", 1000)  # the weights file (~500 KB) goes through the cache
    real, hashed = weights._sha256, []
    monkeypatch.setattr(weights, "_sha256", lambda p: hashed.append(p.name) or real(p))
    first = folder_digest(folder)
    assert "model.safetensors" in hashed
    hashed.clear()
    assert folder_digest(folder) == first and "model.safetensors" not in hashed  # cached by size, mtime, ctime
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))  # same size: the ctime tells
    assert folder_digest(folder) != first and "model.safetensors" in hashed


def test_torchrun_ranks_write_their_own_shard(tiles, tiny, tmp_path, cli):
    outs = []
    for rank in range(2):
        env = {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        result = cli(
            "caption",
            tiles,
            "--models",
            f"hf:{tiny}",
            "--device",
            "cpu",
            "--num-predict",
            "4",
            "--prompt",
            PROMPT_FILE[0],
            "-o",
            tmp_path / "cap",
            env=env,
        )
        assert result.exit_code == 0, result.stderr
        outs.append(tmp_path / f"cap-{rank}of2")
        assert json.loads((outs[-1] / "urbanln.json").read_text())["shard"] == f"{rank}/2"
    seen = sorted(r["tile_id"] for out in outs for r in _rows(out))
    assert seen == sorted(datasets.load_from_disk(str(tiles))["tile_id"])  # the ranks cover every tile once


def _stable(rows):
    return sorted((r["tile_id"], r["model"], r["caption"], r["model_digest"], r["error"]) for r in rows)


def test_kill_9_and_rerun_equals_an_uninterrupted_run(tiny, tmp_path):
    folder = tmp_path / "in"
    make_geotiff(folder / "city.tif", width=64, height=64, res=2.0)
    tiles_out = tile(TileConfig(inputs=(folder / "city.tif",), out=tmp_path / "tiles", size=16, workers=1)).out  # 16
    cmd = [sys.executable, "-m", "urbanln_cli", "caption", str(tiles_out), "--models", f"hf:{tiny}", "--device", "cpu"]
    cmd += ["--batch-size", "1", "--num-predict", "24", "--temperature", "0.7", "--prompt", str(PROMPT_FILE[0])]
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([*cmd, "-o", str(tmp_path / "cap")], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    journal = tmp_path / "cap.partial" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(read_records(journal))) < 3 and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = len(list(read_records(journal)))
    assert 3 <= done_before < 16
    config = CaptionConfig(
        tiles=tiles_out,
        out=tmp_path / "cap",
        models=(f"hf:{tiny}",),
        device="cpu",
        batch_size=8,  # another batch size on resume: the captions are the same
        options=GenerationOptions(temperature=0.7, num_predict=24),
        prompt=PROMPT_FILE[0],
    )
    resumed = caption(config)
    assert resumed.counts["reused"] == done_before and resumed.counts["captioned_now"] == 16 - done_before
    caption(replace(config, out=tmp_path / "clean"))
    assert len(_rows(tmp_path / "cap")) == 16
    assert _stable(_rows(tmp_path / "cap")) == _stable(_rows(tmp_path / "clean"))
