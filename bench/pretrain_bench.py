"""Benchmark the UrbanLN training step against a bare open_clip step, same model and batch.

- bare: open_clip's model(images, tokens) + ClipLoss + AdamW, at 77 tokens (the plainest baseline);
- ours_plain_77: our plain-contrastive step (urbanln_cli.models.plain_step, logit-scale clamp,
  our parameter groups without decay on embeddings and gains, fused AdamW on CUDA, gradient clipping);
- ours_plain_248: the same after the Long-CLIP stretch to 248 tokens;
- ours_urbanln_248: the full UrbanLN step (248-token long captions, short captions encoded at 77 with
  the principal-component branch, EMA teacher forward and queue distillation).

Prints samples/s, the ratios, forward FLOPs per sample (counted with torch's FlopCounterMode) and MFU.

    python bench/pretrain_bench.py                                   # urbanln-tiny on CPU
    python bench/pretrain_bench.py --arch ViT-B-16 --batch 256 --device cuda   # on a GPU, bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# dense bf16 peak by the vendor's datasheets, for MFU
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="urbanln-tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--queue-size", type=int, default=4096)
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile both towers (every variant, bare included)"
    )
    args = parser.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from urbanln_cli.models import UrbanLNStep, create_model, parameter_groups, plain_step, stretch_text_positions

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if cuda else None
    torch.manual_seed(0)

    def fresh(stretch: bool):
        model, *_ = create_model(args.arch, pretrained="none", device=str(device))
        if stretch:
            stretch_text_positions(model, 248, 20)
        model = model.to(device).train()
        if args.compile:  # the towers, in place, so that encode_image/encode_text still reach them
            model.visual = torch.compile(model.visual)
            model.transformer = torch.compile(model.transformer)
        return model

    def optimizer_for(model, ours: bool):
        if ours:
            return torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-4, fused=cuda)
        return torch.optim.AdamW(model.parameters(), lr=1e-4)

    probe, *_ = create_model(args.arch, pretrained="none")
    image_size = probe.visual.image_size
    del probe
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    images = torch.randn(args.batch, 3, image_size, image_size, device=device)
    tok77 = torch.randint(1, 49000, (args.batch, 77), device=device)
    tok248 = torch.randint(1, 49000, (args.batch, 248), device=device)
    ids = torch.arange(args.batch, device=device)
    # tokens are random ids: the benchmark times the step, not the tokenizer

    def timed(step) -> float:
        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def forward_flops(tokens, stretch: bool) -> float:
        """Per sample, counted on an uncompiled model (FlopCounterMode does not see inside compiled graphs)."""
        model, *_ = create_model(args.arch, pretrained="none", device=str(device))
        if stretch:
            stretch_text_positions(model, 248, 20)
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda),
            FlopCounterMode(display=False) as counter,
        ):
            model.to(device)(images, tokens)
        return counter.get_total_flops() / args.batch

    fwd77, fwd248 = forward_flops(tok77, False), forward_flops(tok248, True)
    results: dict[str, dict] = {}

    # bare open_clip at 77 tokens
    from open_clip.loss import ClipLoss

    model = fresh(False)
    opt = optimizer_for(model, ours=False)
    clip_loss = ClipLoss()

    def bare():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            img, txt, scale = model(images, tok77)[:3]
        clip_loss(img.float(), txt.float(), scale.float()).backward()
        opt.step()

    results["bare_77"] = {"seconds": timed(bare)}
    del model, opt

    def ours_plain(tokens, stretch: bool):
        model = fresh(stretch)
        opt = optimizer_for(model, ours=True)

        def step():
            opt.zero_grad(set_to_none=True)
            plain_step(model, images, tokens, dtype=dtype)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return timed(step)

    results["ours_plain_77"] = {"seconds": ours_plain(tok77, False)}
    results["ours_plain_248"] = {"seconds": ours_plain(tok248, True)}

    model = fresh(True)
    urbanln = UrbanLNStep(model, batch_size=args.batch, queue_size=args.queue_size, device=device, dtype=dtype).to(
        device
    )
    opt = optimizer_for(model, ours=True)

    def full():
        opt.zero_grad(set_to_none=True)
        urbanln(images, tok248, tok77, ids)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    results["ours_urbanln_248"] = {"seconds": timed(full)}

    gpu = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
    train_flops = {
        "bare_77": 3 * fwd77,
        "ours_plain_77": 3 * fwd77,
        "ours_plain_248": 3 * fwd248,
        "ours_urbanln_248": 3 * fwd248,
    }
    for name, r in results.items():
        r["seconds"] = round(r["seconds"], 5)
        r["samples_per_s"] = round(args.batch / r["seconds"], 1)
        if peak:
            r["mfu"] = round(r["samples_per_s"] * train_flops[name] / peak, 3)
    report = {
        "device": gpu,
        "arch": args.arch,
        "batch": args.batch,
        "dtype": "bf16 autocast" if cuda else "fp32",
        "compiled": args.compile,
        "forward_gflops_per_sample": {"77": round(fwd77 / 1e9, 2), "248": round(fwd248 / 1e9, 2)},
        "mfu_counts": "3 × student forward FLOPs (teacher forward and short branch are overhead); peak = dense "
        "bf16 datasheet",
        "steps": results,
        "ratio_ours_plain_77_vs_bare_77": round(results["ours_plain_77"]["seconds"] / results["bare_77"]["seconds"], 3),
        "ratio_urbanln_248_vs_plain_248": round(
            results["ours_urbanln_248"]["seconds"] / results["ours_plain_248"]["seconds"], 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
