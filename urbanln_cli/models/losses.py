"""UrbanLN's loss terms as small modules that return named terms (open_clip ``output_dict`` style).

Conventions: features are L2-normalised rows; ``logit_scale`` is the multiplier
(``model.logit_scale.exp()``), as open_clip's ``ClipLoss`` takes it; tile ids are
int64 indices, and the queue's sentinel id -1 never equals a real id. Every
module returns a dict of named terms plus ``"loss"``, the term's weighted
contribution to the total. Losses are computed in float32 whatever the autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Gather = Callable[[Tensor], Tensor]


def multi_positive_targets(ids: Tensor, key_ids: Tensor) -> Tensor:
    """Row-normalised equality mask ``[B, N]``: every key with the query's tile id is a positive.

    Captions of one tile are never negatives of each other (ALBEF's ``idx_queue``).
    A row with no positive (impossible when the keys include the batch) gets zero targets.
    """
    positives = (ids[:, None] == key_ids[None, :]).float()
    return positives / positives.sum(dim=1, keepdim=True).clamp_min(1.0)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-Σ_j targets_ij · log_softmax(logits)_ij``."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def kl_teacher_student(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over rows of KL(softmax(teacher) ‖ softmax(student))."""
    return F.kl_div(
        F.log_softmax(student_logits.float(), dim=1),
        F.log_softmax(teacher_logits.float(), dim=1),
        log_target=True,
        reduction="batchmean",
    )


def _logits(queries: Tensor, keys: Tensor, logit_scale: Tensor | float) -> Tensor:
    # similarities feed a softmax over thousands of keys: keep them fp32 even inside autocast
    with torch.autocast(device_type=queries.device.type, enabled=False):
        return logit_scale * queries.float() @ keys.float().T


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with multi-positive targets keyed by tile id, over the batch and the queue.

    Queries are the student's features; keys are ``[batch ∪ queue]`` (ALBEF uses the
    teacher's batch features plus its queues). With no keys given, the batch is its own
    key set, as in CLIP.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        ids: Tensor,
        image_keys: Tensor | None = None,
        text_keys: Tensor | None = None,
        key_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        if image_keys is None or text_keys is None or key_ids is None:
            image_keys, text_keys, key_ids = image_features, text_features, ids
        targets = multi_positive_targets(ids, key_ids)
        image_to_text = soft_cross_entropy(_logits(image_features, text_keys, logit_scale), targets)
        text_to_image = soft_cross_entropy(_logits(text_features, image_keys, logit_scale), targets)
        loss = (image_to_text + text_to_image) / 2
        return {
            "contrastive_loss": loss,
            "contrastive_i2t": image_to_text,
            "contrastive_t2i": text_to_image,
            "loss": loss,
        }


class DistillationLoss(nn.Module):
    """KL(teacher ‖ student) of the similarity distributions over the same keys ``[batch ∪ queue]``.

    The teacher's logits use the same (detached) scale as the student's; ALBEF shares its temperature.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        teacher_image_features: Tensor,
        teacher_text_features: Tensor,
        image_keys: Tensor,
        text_keys: Tensor,
        logit_scale: Tensor | float,
    ) -> dict[str, Tensor]:
        teacher_scale = logit_scale.detach() if isinstance(logit_scale, Tensor) else logit_scale
        with torch.no_grad():
            teacher_i2t = _logits(teacher_image_features, text_keys, teacher_scale)
            teacher_t2i = _logits(teacher_text_features, image_keys, teacher_scale)
        image_to_text = kl_teacher_student(_logits(image_features, text_keys, logit_scale), teacher_i2t)
        text_to_image = kl_teacher_student(_logits(text_features, image_keys, logit_scale), teacher_t2i)
        loss = (image_to_text + text_to_image) / 2
        return {"distill_loss": loss, "distill_i2t": image_to_text, "distill_t2i": text_to_image, "loss": loss}


class MomentumDistillationLoss(nn.Module):
    """ALBEF's ITC with momentum distillation: ``(1 - α)·contrastive + α·KL(teacher ‖ student)``.

    ALBEF writes it as cross-entropy against ``α·softmax(teacher) + (1 - α)·hard``;
    that differs from this only by ``α·H(teacher)``, a constant with no gradient,
    so the two train identically and this one reads 0 when student matches teacher.
    ``alpha`` is μ after warm-up (see ``step.distill_alpha``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.contrastive = ContrastiveLoss()
        self.distill = DistillationLoss()

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        teacher_image_features: Tensor,
        teacher_text_features: Tensor,
        logit_scale: Tensor | float,
        ids: Tensor,
        image_keys: Tensor,
        text_keys: Tensor,
        key_ids: Tensor,
        alpha: float,
    ) -> dict[str, Tensor]:
        contrastive = self.contrastive(image_features, text_features, logit_scale, ids, image_keys, text_keys, key_ids)
        distill = self.distill(
            image_features,
            text_features,
            teacher_image_features,
            teacher_text_features,
            image_keys,
            text_keys,
            logit_scale,
        )
        terms = {k: v for k, v in {**contrastive, **distill}.items() if k != "loss"}
        terms["loss"] = (1 - alpha) * contrastive["loss"] + alpha * distill["loss"]
        return terms


def principal_reconstruction(features: Tensor, components: int = 32) -> Tensor:
    """Long-CLIP's primary components: project centred features on their top principal axes and back.

    Uses an exact SVD over the batch, like Long-CLIP. When ``components`` reaches the
    rank of the centred batch (a batch smaller than ``components + 1``) the
    reconstruction is the input itself, so it is returned without an SVD whose
    gradient would be ill-conditioned for the zero singular values.
    """
    x = features.to(torch.promote_types(features.dtype, torch.float32))
    mean = x.mean(dim=0, keepdim=True)
    centred = x - mean
    if components >= min(x.shape[0] - 1, x.shape[1]):
        return x
    with torch.autocast(device_type=x.device.type, enabled=False):
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        axes = vh[:components].T  # [D, k]
        return centred @ axes @ axes.T + mean


class ShortCaptionLoss(nn.Module):
    """Long-CLIP's short-caption branch: principal-component image features vs short-caption text.

    The principal components are taken over the local batch (as Long-CLIP does
    per GPU); ``gather`` (an all-gather with gradients) widens the keys to the
    global batch under DDP, with ``key_ids`` the gathered tile ids. Targets are
    multi-positive by tile id.
    """

    def __init__(self, weight: float = 0.1, components: int = 32) -> None:
        super().__init__()
        self.weight = weight
        self.components = components

    def forward(
        self,
        image_features: Tensor,
        short_text_features: Tensor,
        logit_scale: Tensor | float,
        ids: Tensor,
        key_ids: Tensor | None = None,
        gather: Gather | None = None,
    ) -> dict[str, Tensor]:
        image_short = F.normalize(principal_reconstruction(image_features, self.components), dim=-1)
        text_short = short_text_features.float()
        if gather is None:
            image_keys, text_keys, key_ids = image_short, text_short, ids
        else:
            if key_ids is None:
                raise ValueError("gather needs key_ids: the gathered tile ids of the global batch")
            image_keys, text_keys = gather(image_short), gather(text_short)
        targets = multi_positive_targets(ids, key_ids)
        image_to_text = soft_cross_entropy(_logits(image_short, text_keys, logit_scale), targets)
        text_to_image = soft_cross_entropy(_logits(text_short, image_keys, logit_scale), targets)
        loss = (image_to_text + text_to_image) / 2
        return {"short_loss": loss, "short_i2t": image_to_text, "short_t2i": text_to_image, "loss": self.weight * loss}
