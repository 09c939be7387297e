"""One UrbanLN training step, and the bare open_clip step it is benchmarked against.

``UrbanLNStep`` computes, for a batch of images, long captions (248 tokens),
short captions (≤ 77 tokens) and tile ids: the student's features, the EMA
teacher's features (after its update, without gradient), and the three loss
terms. Wrap the step itself in DDP (``broadcast_buffers=False``: the queues are
kept identical on every rank by gathering before enqueue).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from urbanln_cli.models.longclip import _unwrap, encode_text
from urbanln_cli.models.losses import MomentumDistillationLoss, ShortCaptionLoss
from urbanln_cli.models.momentum import MomentumTeacher

MAX_LOGIT_SCALE = math.log(100)  # CLIP's cap on the learnable temperature


def distill_alpha(distill_weight: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """ALBEF's warm-up of μ: linear from 0 over the first epoch (``step`` counts from 0), then constant."""
    if epoch > 0 or steps_per_epoch <= 0:
        return distill_weight
    return distill_weight * min(1.0, step / steps_per_epoch)


def clamp_logit_scale(model: nn.Module) -> None:
    """Keep the learnable log logit scale in [0, ln 100], as CLIP does."""
    with torch.no_grad():
        _unwrap(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups in open_clip's way: no decay on gains, biases, embeddings' positions, logit scale.

    Keeping ``positional_embedding`` out of weight decay is also what keeps the
    stretch's frozen rows frozen: their gradient is zero, so only decay could move them.
    """
    model = _unwrap(model)
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = (
            param.ndim < 2
            or name in no_decay_names
            or any(
                part in name for part in ("bn", "ln", "bias", "logit_scale", "positional_embedding", "class_embedding")
            )
        )
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under torchrun, ``cuda`` means this rank's GPU."""
    from urbanln_cli.errors import UsageProblem

    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageProblem(
            f"--device {name}, but torch sees no GPU",
            hint="use --device cpu, or check the CUDA install (`urbanln env`)",
        )
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageProblem(f"--device {name!r} is not auto, cpu or cuda")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def autocast_for(device: torch.device | str, dtype: torch.dtype | None = None) -> AbstractContextManager:
    """bf16 autocast on CUDA, plain fp32 elsewhere (unless ``dtype`` says otherwise)."""
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate a tensor from every rank (ALBEF's ``concat_all_gather``); itself when not distributed."""
    world = _world_size()
    if world == 1:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate a tensor from every rank, keeping the gradient path to each rank's part."""
    if _world_size() == 1:
        return tensor
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.all_gather(tensor), dim=0)


class UrbanLNStep(nn.Module):
    """The UrbanLN objective: ``(1-α)·contrastive + α·distill + short_weight·short``.

    ``model`` is a stretched open_clip model (see ``longclip.stretch_text_positions``);
    ``batch_size`` is the global batch, which must divide ``queue_size``. In
    training mode each call updates the teacher (EMA) before its forward and
    enqueues its features after the losses; in eval mode the teacher and queues
    are left alone.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        queue_size: int = 4096,
        momentum: float = 0.995,
        distill_weight: float = 0.5,
        short_weight: float = 0.1,
        pca_components: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.student = model
        self.teacher = MomentumTeacher(model, batch_size=batch_size, queue_size=queue_size, momentum=momentum)
        self.itc = MomentumDistillationLoss()
        self.short_caption = ShortCaptionLoss(weight=short_weight, components=pca_components)
        self.distill_weight = distill_weight
        self.requested_device = torch.device(device) if device is not None else None
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        """Where the batch goes: the ``device`` given, else where the student's weights are now."""
        return self.requested_device or next(self.student.parameters()).device

    def forward(
        self,
        images: Tensor,
        long_tokens: Tensor,
        short_tokens: Tensor,
        tile_ids: Tensor,
        alpha: float | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms plus ``"loss"`` (to backpropagate), ``"alpha"`` and ``"logit_scale"`` (to log).

        ``alpha`` is μ for this step (``distill_alpha`` during warm-up); default ``distill_weight``.
        """
        alpha = self.distill_weight if alpha is None else float(alpha)
        student = _unwrap(self.student)
        device = self.device
        images = images.to(device, non_blocking=True)
        long_tokens = long_tokens.to(device, non_blocking=True)
        short_tokens = short_tokens.to(device, non_blocking=True)
        tile_ids = tile_ids.to(device, torch.int64, non_blocking=True)

        clamp_logit_scale(student)
        if self.training:
            self.teacher.update(student)
        with autocast_for(device, self.dtype):
            image_features = student.encode_image(images, normalize=True)
            long_features = encode_text(student, long_tokens, normalize=True)
            short_features = encode_text(student, short_tokens, normalize=True)
            teacher_image, teacher_text = self.teacher.features(images, long_tokens)
        logit_scale = student.logit_scale.exp().float()

        # the teacher side has no gradient, so only it (not the student) needs gathering for the ITC keys
        all_teacher_image = gather_no_grad(teacher_image.float())
        all_teacher_text = gather_no_grad(teacher_text.float())
        all_ids = gather_no_grad(tile_ids)
        image_keys, text_keys, key_ids = self.teacher.keys(all_teacher_image, all_teacher_text, all_ids)

        itc = self.itc(
            image_features.float(),
            long_features.float(),
            teacher_image.float(),
            teacher_text.float(),
            logit_scale,
            tile_ids,
            image_keys,
            text_keys,
            key_ids,
            alpha,
        )
        distributed = _world_size() > 1
        short = self.short_caption(
            image_features,
            short_features,
            logit_scale,
            tile_ids,
            key_ids=all_ids if distributed else None,
            gather=gather_with_grad if distributed else None,
        )
        if self.training:
            self.teacher.enqueue(all_teacher_image, all_teacher_text, all_ids)

        terms = {k: v for k, v in {**itc, **short}.items() if k != "loss"}
        terms["loss"] = itc["loss"] + short["loss"]
        terms["alpha"] = torch.tensor(alpha, device=device)
        terms["logit_scale"] = logit_scale.detach()
        return terms


def plain_step(
    model: nn.Module,
    images: Tensor,
    tokens: Tensor,
    loss: nn.Module | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Bare open_clip: ``model(images, tokens)`` and ``ClipLoss``; the benchmark's baseline.

    ``tokens`` are at the model's context length (77 for a plain CLIP, 248 once
    stretched), which is the context length the comparison runs at.
    Returns ``{"contrastive_loss", "loss", "logit_scale"}``.
    """
    from open_clip.loss import ClipLoss

    loss = loss if loss is not None else ClipLoss()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    clamp_logit_scale(model)
    with autocast_for(device, dtype):
        out = model(images.to(device, non_blocking=True), tokens.to(device, non_blocking=True))
    if isinstance(out, dict):
        image_features, text_features, logit_scale = out["image_features"], out["text_features"], out["logit_scale"]
    else:
        image_features, text_features, logit_scale = out[:3]
    terms = loss(image_features.float(), text_features.float(), logit_scale.float(), output_dict=True)
    return {**terms, "loss": terms["contrastive_loss"], "logit_scale": logit_scale.detach().float()}
