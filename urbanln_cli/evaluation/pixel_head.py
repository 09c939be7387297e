"""A linear segmentation head on frozen patch tokens, trained against class masks.

Tokens ``[tiles, dim, grid_h, grid_w]`` are standardised per channel on the training
tiles; a 1×1 convolution gives class logits per token, which are bilinearly
upsampled to each mask's grid (``align_corners=False``) and trained with
cross-entropy, ignoring ``IGNORE`` pixels, by AdamW. The upsampling is two
matrix products (``interpolation``), equal to ``F.interpolate(mode="bilinear")``
and with a gradient that is deterministic on every device. Seeded: on CPU two
runs give the same head.
"""

from __future__ import annotations

import math

import numpy as np

from urbanln_cli.evaluation.segmentation import IGNORE

BATCH_TILES = 16  # tiles per step


def interpolation(out_len: int, in_len: int):
    """The matrix of 1-D linear interpolation from ``in_len`` to ``out_len`` points (align_corners=False).

    Bilinear upsampling is separable: ``R_h @ logits @ R_w.T`` equals
    ``F.interpolate(logits, (H, W), mode="bilinear", align_corners=False)``, with
    matrix products whose gradient is deterministic on every device.
    """
    import torch
    import torch.nn.functional as F

    eye = torch.eye(in_len).unsqueeze(0)
    return F.interpolate(eye, size=out_len, mode="linear", align_corners=False)[0].T.contiguous()


def _batches(rows: np.ndarray, masks: list[np.ndarray], size: int, gen=None) -> list[np.ndarray]:
    """Batches of rows whose masks share a shape; shuffled when ``gen`` is given."""
    import torch

    by_shape: dict[tuple[int, int], list[int]] = {}
    for r in rows:
        by_shape.setdefault(masks[r].shape, []).append(int(r))
    out = []
    for shape in sorted(by_shape):
        group = np.asarray(by_shape[shape])
        if gen is not None:
            group = group[torch.randperm(len(group), generator=gen).numpy()]
        out += [group[i : i + size] for i in range(0, len(group), size)]
    if gen is not None:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


class LinearHead:
    """Standardise tokens, 1×1 convolution, bilinear upsampling to the mask grid."""

    def __init__(self, conv, mu, sd, device):
        self.conv, self.mu, self.sd, self.device = conv, mu, sd, device
        self._interp: dict[tuple[int, int, int, int], tuple] = {}

    def logits(self, feats: np.ndarray, shape: tuple[int, int]):
        """Class logits ``[tiles, k, *shape]`` for tokens ``[tiles, dim, grid_h, grid_w]``."""
        import torch

        x = (torch.from_numpy(feats.astype(np.float32)).to(self.device) - self.mu) / self.sd
        small = self.conv(x)
        key = (*shape, small.shape[2], small.shape[3])
        if key not in self._interp:
            self._interp[key] = (
                interpolation(shape[0], key[2]).to(self.device),
                interpolation(shape[1], key[3]).to(self.device),
            )
        rh, rw = self._interp[key]
        return rh @ small @ rw.T


def fit(
    feats,
    masks,
    train: np.ndarray,
    k_classes: int,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    device,
    seed: int,
    step=None,
) -> tuple[LinearHead, float]:
    """Train a head on the ``train`` rows: ``feats[row]`` are a tile's tokens, ``masks[row]`` its class indices
    (0..k-1, IGNORE).

    Returns the head and the mean loss of the last epoch; ``step()`` is called after each epoch.
    """
    import torch
    import torch.nn.functional as F

    dim = feats.shape[1]
    total, square = np.zeros(dim), np.zeros(dim)
    for start in range(0, len(train), 256):
        chunk = feats[np.sort(train[start : start + 256])].astype(np.float64)
        total += chunk.sum(axis=(0, 2, 3))
        square += (chunk**2).sum(axis=(0, 2, 3))
    n = len(train) * feats.shape[2] * feats.shape[3]
    mu = total / n
    sd = np.sqrt(np.maximum(square / n - mu**2, 0.0))
    sd[sd < 1e-6] = 1.0
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(dim, k_classes, 1).to(device)
    as_channels = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
    head = LinearHead(conv, as_channels(mu), as_channels(sd), device)
    opt = torch.optim.AdamW(conv.parameters(), lr=lr, weight_decay=weight_decay)
    loss_value = math.nan
    with torch.enable_grad():
        for _ in range(epochs):
            losses = []
            for rows in _batches(train, masks, BATCH_TILES, gen):
                target = torch.from_numpy(np.stack([masks[r] for r in rows]).astype(np.int64)).to(device)
                loss = F.cross_entropy(head.logits(feats[rows], masks[rows[0]].shape), target, ignore_index=IGNORE)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            loss_value = float(np.mean(losses))
            if step:
                step()
    return head, loss_value


def predict(head: LinearHead, feats, masks, rows: np.ndarray):
    """(rows, their predicted class indices on their masks' grids), batch by batch."""
    import torch

    with torch.inference_mode():
        for batch in _batches(rows, masks, BATCH_TILES):
            pred = head.logits(feats[batch], masks[batch[0]].shape).argmax(dim=1).to(torch.uint8).cpu().numpy()
            yield batch, pred
