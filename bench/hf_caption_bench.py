"""Benchmark `urbanln caption --models hf:…` against a bare `model.generate` loop, in one process.

Both sides caption the same tiles with the same model, batch size, prompt and
options (greedy by default, so both must write the same text, which is checked):

- bare: AutoProcessor + AutoModelForImageTextToText, then for each batch decode
  the PNGs, apply the chat template, run the processor, ``generate``, decode.
  No journal, no content checks, no dataset.
- ours: the caption stage end to end (preflight and weights digest, model load,
  journal, content checks, assembly of the dataset), into a fresh folder.

The model is loaded on both sides, so the ratio bare/ours is throughput against
throughput (target ≥ 0.9). Each side runs ``--repeat`` times, alternating; the
median counts. Then the speed-up of ``--batch-size 8`` over 1 for our stage.

    python bench/hf_caption_bench.py                         # the tiny model of tests/fakes on CPU
    python bench/hf_caption_bench.py --model /path/to/Qwen2.5-VL-3B-Instruct --device cuda --tiles 64

``--threads`` sets torch's CPU threads (default 1: on a shared machine, OpenMP threads
waiting for each other swamp a tiny model; use the core count on a machine of your own).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(key, "1")


def make_tiles(folder: Path, n: int) -> Path:
    from tests.fakes.rasters import make_geotiff
    from urbanln_cli.stages.tile import TileConfig, tile

    side = 32
    cols = 8
    rows = max(1, -(-n // cols))
    make_geotiff(folder / "city.tif", width=cols * side, height=rows * side, res=2.0)
    return tile(TileConfig(inputs=(folder / "city.tif",), out=folder / "tiles", size=side, workers=1)).out


def bare_loop(model_dir: str, tiles: Path, batch: int, num_predict: int, device: str, limit: int) -> tuple[float, list]:
    """Seconds for load + caption every tile, and the captions, with nothing but transformers."""
    import datasets
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from urbanln_cli.prompts import load_prompt

    started = time.perf_counter()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    processor.tokenizer.padding_side = "left"
    ds = datasets.load_from_disk(str(tiles)).cast_column("image", datasets.Image(decode=False))
    rows = ds.select(range(min(limit, len(ds)))).to_list()
    prompt = load_prompt(None)
    captions = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        images = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in chunk]
        texts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.render(r["gsd"])}]}],
                add_generation_prompt=True,
            )
            for r in chunk
        ]
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt").to(device)
        if inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=num_predict, do_sample=False)
        texts_out = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        captions += [t.strip() for t in texts_out]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, captions


def our_stage(model_dir: str, tiles: Path, out: Path, batch: int, num_predict: int, device: str, limit: int):
    import datasets

    from urbanln_cli.captioners import GenerationOptions
    from urbanln_cli.stages.caption import CaptionConfig, caption

    config = CaptionConfig(
        tiles=tiles,
        out=out,
        models=(f"hf:{model_dir}",),
        device=device,
        batch_size=batch,
        limit=limit,
        content_retries=0,  # the bare loop has none: the same number of generate calls on both sides
        options=GenerationOptions(temperature=0.0, num_predict=num_predict),
    )
    started = time.perf_counter()
    result = caption(config)
    seconds = time.perf_counter() - started
    assert result.counts["failed"] == result.counts.get("failed_repetition", 0), result.counts
    return seconds, datasets.load_from_disk(str(out))["caption"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model folder (default: the tiny model of tests/fakes, built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--num-predict", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="hf-bench-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("HF_HOME", str(work / "hf"))  # the digest cache, when no HF_HOME is set
        if args.model:
            model_dir = str(Path(args.model).resolve())
        else:
            from tests.fakes.tiny_vlm import make_tiny_vlm

            model_dir = str(make_tiny_vlm(work / "tiny"))
        tiles = make_tiles(work, args.tiles)
        print(
            f"model {model_dir}, device {args.device}, {args.tiles} tiles, num_predict {args.num_predict}, "
            f"torch threads {torch.get_num_threads()}, median of {args.repeat}",
            file=sys.stderr,
        )
        bare_loop(model_dir, tiles, 8, 4, args.device, 8)  # warm up: imports, kernels, the digest cache
        our_stage(model_dir, tiles, work / "warm", 8, 4, args.device, 8)
        results = {}
        for batch in (1, 8):
            bare_s, ours_s = [], []
            for r in range(args.repeat):
                seconds, bare_caps = bare_loop(model_dir, tiles, batch, args.num_predict, args.device, args.tiles)
                bare_s.append(seconds)
                out = work / f"cap-b{batch}-{r}"
                seconds, our_caps = our_stage(model_dir, tiles, out, batch, args.num_predict, args.device, args.tiles)
                ours_s.append(seconds)
                same = sum(a == b for a, b in zip(bare_caps, our_caps))
            bare, ours = statistics.median(bare_s), statistics.median(ours_s)
            results[batch] = ours
            print(
                f"batch {batch}: bare {bare:.2f} s ({args.tiles / bare:.1f} tiles/s), ours {ours:.2f} s "
                f"({args.tiles / ours:.1f} tiles/s), ratio bare/ours {bare / ours:.3f}; "
                f"same captions {same}/{len(bare_caps)}; runs bare {[round(s, 2) for s in bare_s]} "
                f"ours {[round(s, 2) for s in ours_s]}"
            )
        print(f"speed-up of --batch-size 8 over 1 (ours): {results[1] / results[8]:.2f}x")


if __name__ == "__main__":
    main()
