"""The momentum teacher and its feature queues (ALBEF's ``_momentum_update`` and ``_dequeue_and_enqueue``).

The teacher is an EMA copy of the whole open_clip model (both towers, the
stretched positional embedding included). Its queues keep the most recent
teacher features with their tile ids, so a caption of the same tile is never a
negative even when it sits in the queue. Everything a resume needs (teacher
weights, queues, ids, pointer) is in ``state_dict()``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urbanln_cli.errors import UsageProblem
from urbanln_cli.models.longclip import _unwrap, encode_text

SENTINEL_ID = -1  # ids of never-filled queue slots; tile ids are >= 0, so it never matches


class MomentumTeacher(nn.Module):
    """EMA teacher plus image/text/id queues of ``queue_size`` rows.

    ``batch_size`` is the global batch (per-device batch × world size); the queue
    must hold a whole number of them, as ALBEF requires.
    """

    def __init__(self, student: nn.Module, batch_size: int, queue_size: int = 4096, momentum: float = 0.995) -> None:
        super().__init__()
        if batch_size <= 0 or queue_size < 0:
            raise UsageProblem(f"batch size ({batch_size}) must be positive and queue size ({queue_size}) not negative")
        if queue_size % batch_size:
            raise UsageProblem(
                f"the queue size {queue_size} is not a multiple of the global batch size {batch_size}",
                hint=f"use a queue size such as {max(1, queue_size // batch_size) * batch_size}",
            )
        if not 0.0 <= momentum <= 1.0:
            raise UsageProblem(f"momentum {momentum} must be between 0 and 1")
        self.momentum = momentum
        self.queue_size = queue_size
        self.batch_size = batch_size

        student = _unwrap(student)
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        device = next(student.parameters()).device
        dim = _embed_dim(student)
        # random unit vectors, as ALBEF: unfilled slots act as plain negatives until overwritten
        self.register_buffer("image_queue", F.normalize(torch.randn(queue_size, dim, device=device), dim=-1))
        self.register_buffer("text_queue", F.normalize(torch.randn(queue_size, dim, device=device), dim=-1))
        self.register_buffer("idx_queue", torch.full((queue_size,), SENTINEL_ID, dtype=torch.int64, device=device))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64, device=device))

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """teacher ← momentum·teacher + (1 − momentum)·student, for every parameter; buffers are copied."""
        student = _unwrap(student)
        teacher_params = dict(self.model.named_parameters())
        student_params = dict(student.named_parameters())
        if teacher_params.keys() != student_params.keys() or any(
            teacher_params[k].shape != student_params[k].shape for k in teacher_params
        ):
            raise UsageProblem(
                "the teacher and the student have different parameters",
                hint="create the MomentumTeacher after stretching the student's text positions",
            )
        names = list(teacher_params)
        targets = [teacher_params[k] for k in names]
        sources = [student_params[k].detach().to(teacher_params[k].dtype) for k in names]
        torch._foreach_mul_(targets, self.momentum)
        torch._foreach_add_(targets, sources, alpha=1.0 - self.momentum)
        for (_, teacher_buffer), (_, student_buffer) in zip(self.model.named_buffers(), student.named_buffers()):
            teacher_buffer.copy_(student_buffer)

    @torch.no_grad()
    def features(self, images: Tensor, text_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised teacher image and text features (no gradient)."""
        image_features = self.model.encode_image(images, normalize=True)
        text_features = encode_text(self.model, text_tokens, normalize=True)
        return image_features, text_features

    @torch.no_grad()
    def enqueue(self, image_features: Tensor, text_features: Tensor, ids: Tensor) -> None:
        """Write the global batch's teacher features and tile ids at the pointer, wrapping around."""
        if self.queue_size == 0:
            return
        count = ids.shape[0]
        if count > self.queue_size:
            raise UsageProblem(f"a batch of {count} does not fit a queue of {self.queue_size}")
        if bool((ids < 0).any()):
            raise UsageProblem("tile ids must be non-negative int64 indices; -1 marks empty queue slots")
        slots = (self.queue_ptr + torch.arange(count, device=self.idx_queue.device)) % self.queue_size
        self.image_queue[slots] = image_features.detach().to(self.image_queue.dtype)
        self.text_queue[slots] = text_features.detach().to(self.text_queue.dtype)
        self.idx_queue[slots] = ids.to(self.idx_queue.device, torch.int64)
        self.queue_ptr.copy_((self.queue_ptr + count) % self.queue_size)

    def keys(self, image_features: Tensor, text_features: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[batch ∪ queue]`` key sets: the teacher's batch features first, then the queues.

        ``torch.cat`` copies, so a later ``enqueue`` cannot change keys saved for backward.
        """
        image_keys = torch.cat([image_features.float(), self.image_queue], dim=0)
        text_keys = torch.cat([text_features.float(), self.text_queue], dim=0)
        key_ids = torch.cat([ids.to(torch.int64), self.idx_queue], dim=0)
        return image_keys, text_keys, key_ids


def _embed_dim(model: nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection.out_features
    if isinstance(projection, Tensor):
        return int(projection.shape[-1])
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if output_dim is None:
        raise UsageProblem(f"cannot tell the embedding size of {type(model).__name__}")
    return int(output_dim)
