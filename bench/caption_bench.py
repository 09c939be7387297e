"""Benchmark `urbanln caption` against the loopback Ollama server.

The server (a separate process) enforces P parallel slots with a fixed service
time L = 100 ms, so the best possible rate is P/L captions per second. For each
P we run our stage and the plainest client (the async ollama client and a
semaphore: no journal, retries or checks) in this one process, and print:
captions/s against P/L, the ratio to the baseline, client CPU per request, and
the most requests the server saw at once. Then we time a resume over a journal
of 100,000 finished records.

    python bench/caption_bench.py            # P = 1, 4, 16 and the resume check
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LATENCY = 0.1
MODEL = "llava:7b"


def start_server(slots: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.ollama_server",
            "--slots",
            str(slots),
            "--latency",
            str(LATENCY),
            "--models",
            MODEL,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    return proc, proc.stdout.readline().strip()


def server_stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/_stats").json()


def make_tiles(out: Path, n: int):
    """n distinct tiny PNG tiles, as a real tiles artifact."""
    import datasets
    import numpy as np
    from PIL import Image

    from urbanln_cli import artifacts
    from urbanln_cli.stages.tile import tile_features

    if out.exists():
        return out
    features = tile_features()
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), i % 251, np.uint8)).save(buf, "PNG")
        data = buf.getvalue() + i.to_bytes(4, "little")  # distinct bytes per tile
        rows.append(
            {
                "tile_id": f"bench/t{i}",
                "image": {"bytes": data, "path": None},
                "image_sha256": hashlib.sha256(data).hexdigest(),
                "source": "bench",
                "row_off": 0,
                "col_off": 0,
                "width": 8,
                "height": 8,
                "crs": "",
                "minx": 0.0,
                "miny": 0.0,
                "maxx": 0.0,
                "maxy": 0.0,
                "lon": 0.0,
                "lat": 0.0,
                "gsd": 1.0,
                "group": "bench",
                "valid_fraction": 1.0,
            }
        )
    ds = datasets.Dataset.from_list(rows, features=features)
    manifest = artifacts.new_manifest("tiles", run=artifacts.RunInfo("bench"), inputs=[], rows=n)
    return artifacts.write_dataset(ds, out, manifest)


def run_ours(tiles: Path, out: Path, url: str, slots: int, n: int) -> dict:
    from urbanln_cli.stages.caption import CaptionConfig, caption

    shutil.rmtree(out, ignore_errors=True)
    stamps: dict[int, float] = {}
    cpu_stamps: dict[int, float] = {}

    def progress(done, total, **_):
        stamps.setdefault(done, time.perf_counter())
        cpu_stamps.setdefault(done, time.process_time())

    cpu, wall = time.process_time(), time.perf_counter()
    result = caption(
        CaptionConfig(tiles=tiles, out=out, models=(MODEL,), hosts=(url,), concurrency=slots, limit=n),
        progress=progress,
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert result.counts["captions"] == n, result.counts
    steady = (n - 1) / (stamps[n] - stamps[1])
    steady_cpu = (cpu_stamps[n] - cpu_stamps[1]) / (n - 1)
    return {
        "wall_s": round(wall, 3),
        "captions_per_s": round(n / wall, 2),
        "steady_captions_per_s": round(steady, 2),
        "cpu_ms_per_request": round(cpu / n * 1000, 3),
        "steady_cpu_ms_per_request": round(steady_cpu * 1000, 3),
    }


def run_baseline(tiles: Path, url: str, slots: int, n: int) -> dict:
    import datasets
    import httpx
    import ollama

    ds = datasets.load_from_disk(str(tiles))
    images = ds.data.column("image")

    async def main():
        client = ollama.AsyncClient(host=url, timeout=httpx.Timeout(300))
        gate = asyncio.Semaphore(slots)

        async def one(i):
            async with gate:
                r = await client.chat(
                    model=MODEL,
                    messages=[
                        {"role": "user", "content": "Describe this image.", "images": [images[i]["bytes"].as_py()]}
                    ],
                    stream=False,
                )
                return r.message.content

        out = await asyncio.gather(*(one(i) for i in range(n)))
        await client._client.aclose()
        return out

    cpu, wall = time.process_time(), time.perf_counter()
    captions = asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(captions) == n and all(captions)
    return {
        "wall_s": round(wall, 3),
        "captions_per_s": round(n / wall, 2),
        "cpu_ms_per_request": round(cpu / n * 1000, 3),
    }


def resume_check(work: Path, url: str, records: int) -> dict:
    """Time a rerun whose journal already holds every record: no request, then the dataset is assembled."""
    import datasets

    from urbanln_cli.prompts import load_prompt
    from urbanln_cli.stages.caption import CaptionConfig, caption, options_that_change_output

    tiles = make_tiles(work / f"tiles_{records}", records)
    out = work / "resume_captions"
    shutil.rmtree(out, ignore_errors=True)
    partial = out.parent / f"{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config = CaptionConfig(tiles=tiles, out=out, models=(MODEL,), hosts=(url,))
    import httpx

    digest = "sha256:" + next(m["digest"] for m in httpx.get(f"{url}/api/tags").json()["models"])
    prompt = load_prompt()
    options_sha = hashlib.sha256(json.dumps(options_that_change_output(config), sort_keys=True).encode()).hexdigest()
    ds = datasets.load_from_disk(str(tiles))
    ids, shas = ds["tile_id"], ds["image_sha256"]
    caption_text = "This aerial image shows dense residential blocks with mid-rise buildings. " * 4
    with open(partial / "journal.jsonl", "w") as f:
        for tid, sha in zip(ids, shas):
            f.write(
                json.dumps(
                    {
                        "tile_id": tid,
                        "model": MODEL,
                        "model_digest": digest,
                        "prompt_id": prompt.id,
                        "prompt_sha256": prompt.sha256,
                        "options_sha256": options_sha,
                        "image_sha256": sha,
                        "caption": caption_text,
                        "error": None,
                        "error_class": None,
                        "attempts": 1,
                        "latency_s": 0.1,
                        "prompt_tokens": 600,
                        "output_tokens": 60,
                        "host": url,
                    }
                )
                + "\n"
            )
    before = server_stats(url)["chats"]
    wall = time.perf_counter()
    result = caption(config)
    wall = time.perf_counter() - wall
    assert result.counts["reused"] == records and result.rows == records
    assert server_stats(url)["chats"] == before, "a resume over a finished journal must send no request"
    return {"records": records, "seconds": round(wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=50, help="requests per slot")
    parser.add_argument("--resume-records", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"latency_s": LATENCY, "runs": []}
    for slots in (int(p) for p in args.slots.split(",")):
        n = max(40, slots * args.rounds)
        tiles = make_tiles(args.workdir / f"tiles_{n}", n)
        proc, url = start_server(slots)
        try:
            run_ours(
                tiles, args.workdir / "bench_captions", url, slots, min(n, 2 * slots)
            )  # warm up imports and connections
            run_baseline(tiles, url, slots, min(n, 2 * slots))
            ours = run_ours(tiles, args.workdir / "bench_captions", url, slots, n)
            busy = server_stats(url)["max_in_flight"]
            base = run_baseline(tiles, url, slots, n)
        finally:
            proc.kill()
            proc.wait()
        ideal = slots / LATENCY
        report["runs"].append(
            {
                "P": slots,
                "requests": n,
                "ideal_captions_per_s": ideal,
                "ours": ours,
                "baseline": base,
                "ours_vs_ideal": round(ours["captions_per_s"] / ideal, 3),
                "ours_steady_vs_ideal": round(ours["steady_captions_per_s"] / ideal, 3),
                "ours_vs_baseline": round(ours["captions_per_s"] / base["captions_per_s"], 3),
                "server_max_in_flight": busy,
            }
        )
    if args.resume_records:
        proc, url = start_server(4)
        try:
            report["resume"] = resume_check(args.workdir, url, args.resume_records)
        finally:
            proc.kill()
            proc.wait()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
