"""The ``hf:`` backend: local vision-language models through transformers, batched, no server.

``hf:<folder or hub id>`` loads with ``AutoProcessor`` and ``AutoModelForImageTextToText``
(``trust_remote_code`` is never set: only families transformers itself supports). One
model is in memory at a time: loading the next one frees the last. ``generate_batch``
captions several tiles in one ``generate`` call, left-padded, in bf16 on CUDA and
float32 on CPU.

Sampling is per row: every row draws from its own generator seeded with its
options' seed, so a tile's caption does not depend on which tiles share its batch
(or on the batch size), and a content retry (a new seed) changes only that row.
Temperature 0 is greedy decoding.

``caption`` (one image, the ``Backend`` protocol) is a batch of one, so ``fuse``'s
VLM steps could use these models too; structured output (``format``) is not
supported and fails the request.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from urbanln_cli.captioners import GenerationOptions, ModelInfo, Reply, TileInfo, TransientError
from urbanln_cli.captioners.hf_weights import folder_digest, model_folder
from urbanln_cli.errors import ServiceUnavailable, UsageProblem

log = logging.getLogger(__name__)

PREFIX = "hf:"


def resolve_device(device: str) -> str:
    """``auto``: the GPU of this torchrun rank (LOCAL_RANK), or cuda:0, or cpu when there is no GPU."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageProblem(
            f"--device {device!r} is not a device", hint="e.g. --device auto, cpu, cuda or cuda:1"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageProblem(f"--device {device}: no CUDA GPU is visible", hint="use --device cpu (slow) or auto")
    return str(parsed)


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else (torch.cuda.OutOfMemoryError,)


class HfBackend:
    batched = True  # the caption stage sends it whole batches (captioners.hf_batch), not one request at a time

    def __init__(self, device: str = "auto", batch_size: int = 8):
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.hosts = [self.device]
        self.folders: dict[str, Path] = {}
        self.loaded: tuple[str, Any, Any] | None = None  # (tag, processor, model)
        self.dtype_name = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.oom_halvings = 0

    # ------------------------------------------------------------ preflight

    async def preflight(self, models: Sequence[str]) -> dict[str, ModelInfo]:
        """Each model is on disk, an image-text-to-text model transformers supports; its digest hashes its files."""
        return {tag: self.info(tag) for tag in models}

    def info(self, tag: str) -> ModelInfo:
        import json

        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        spec = tag[len(PREFIX) :] if tag.startswith(PREFIX) else tag
        folder = model_folder(spec)
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ServiceUnavailable(
                f"{tag} (model_type {model_type!r}) is not an image-text-to-text model this transformers supports",
                hint="pick a model of a family AutoModelForImageTextToText knows (see docs/caption.md); "
                "remote code is never run",
            )
        self.folders[tag] = folder
        return ModelInfo(tag, folder_digest(folder), ("vision", f"transformers:{model_type}"), (self.device,))

    # ------------------------------------------------------------ the model

    def load(self, tag: str) -> tuple[Any, Any]:
        if self.loaded is not None and self.loaded[0] == tag:
            return self.loaded[1], self.loaded[2]
        self.unload()  # one model in memory at a time
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = self.folders.get(tag) or model_folder(tag[len(PREFIX) :])
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(self.device).eval()
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"  # generation continues every row from its last token
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.loaded = (tag, processor, model)
        return processor, model

    def unload(self) -> None:
        if self.loaded is None:
            return
        self.loaded = None
        if self.device.startswith("cuda"):  # give the GPU memory back now (on the CPU, dropping the reference does)
            import torch

            gc.collect()  # a full collection: 0.3 s, nothing next to loading a model onto a GPU
            torch.cuda.empty_cache()

    async def aclose(self) -> None:
        self.unload()

    # ------------------------------------------------------------ generation

    def generate_batch(
        self, tag: str, images: Sequence[Any], prompts: Sequence[str], options: Sequence[GenerationOptions]
    ) -> list[Reply]:
        """One ``generate`` over the rows (PIL images, prompts, per-row options); raises OOM errors as they come."""
        import torch

        processor, model = self.load(tag)
        texts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for p in prompts
        ]
        inputs = processor(text=texts, images=list(images), padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        tokenizer = getattr(processor, "tokenizer", processor)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id])
        steps = max(o.num_predict for o in options)
        sampler = RowSampler([o.temperature for o in options], [o.seed for o in options], steps, self.device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=steps,
                do_sample=False,  # RowSampler has chosen each row's token already
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=[sampler],
                pad_token_id=tokenizer.pad_token_id,
            )
        prompt_len = inputs["input_ids"].shape[1]
        generated = out[:, prompt_len:].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        replies = []
        for row, tokens in enumerate(generated):
            tokens = tokens[: options[row].num_predict]
            n = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), len(tokens))  # up to and with the EOS
            text = tokenizer.decode(tokens[:n], skip_special_tokens=True)
            replies.append(Reply(text, int(prompt_tokens[row]), n))
        return replies

    async def caption(
        self,
        host: str,
        model: str,
        image: bytes,
        prompt: str,
        options: GenerationOptions,
        tile: TileInfo | None = None,
        format: dict | None = None,
    ) -> Reply:
        if format is not None:
            raise TransientError("bad_request", "hf: models do not support structured output (a JSON schema)")
        return self.generate_batch(model, [decode_image(image)], [prompt], [options])[0]


def decode_image(raw: bytes):
    """PIL RGB image of a tile's bytes (already fitted to --image-size)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        return img.convert("RGB")


class RowSampler:
    """A logits processor that picks every row's next token with that row's own random stream and temperature.

    Each row draws its uniforms for every step up front from a generator seeded with its seed, then samples by
    inverse CDF, all rows at once: a row's tokens depend on its seed, not on its batch. It returns scores that are
    -inf except at the chosen token, so ``generate`` with ``do_sample=False`` takes it. The model's own processors
    (repetition penalty, suppressed tokens) have run before it.
    """

    def __init__(self, temperatures: Sequence[float], seeds: Sequence[int], steps: int, device: str):
        import torch

        self.sampled = any(t > 0 for t in temperatures)
        self.step = 0
        self.temperatures = torch.tensor([[max(t, 1e-6)] for t in temperatures], device=device)
        self.greedy = torch.tensor([t <= 0 for t in temperatures], device=device)
        uniforms = [torch.rand(steps, generator=torch.Generator().manual_seed(int(s) & (2**63 - 1))) for s in seeds]
        self.uniforms = torch.stack(uniforms).clamp_min(1e-12).to(device)

    def __call__(self, input_ids, scores):
        import torch

        choice = scores.argmax(dim=-1)
        if self.sampled and self.step < self.uniforms.shape[1]:
            cdf = torch.softmax(scores.float() / self.temperatures, dim=-1).cumsum(dim=-1)
            u = self.uniforms[:, self.step : self.step + 1] * cdf[:, -1:]  # the cdf's end is 1 up to rounding
            drawn = torch.searchsorted(cdf, u).squeeze(1).clamp_max(scores.shape[-1] - 1)
            choice = torch.where(self.greedy, choice, drawn)
        self.step += 1
        chosen = torch.full_like(scores, float("-inf"))
        chosen.scatter_(1, choice.unsqueeze(1), 0.0)
        return chosen
