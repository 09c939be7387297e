"""urbanln_cli.models: the Long-CLIP stretch, the losses, the momentum teacher, one step, export.

Everything runs on CPU with the tiny ``urbanln-tiny`` architecture and random weights.
"""

from __future__ import annotations

import copy
import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from urbanln_cli.errors import InputError, ServiceUnavailable, UsageProblem
from urbanln_cli.models import (
    SENTINEL_ID,
    ContrastiveLoss,
    DistillationLoss,
    MomentumDistillationLoss,
    MomentumTeacher,
    ShortCaptionLoss,
    UrbanLNStep,
    create_model,
    distill_alpha,
    encode_text,
    export_open_clip,
    long_tokenizer,
    multi_positive_targets,
    parameter_groups,
    plain_step,
    principal_reconstruction,
    stretch_text_positions,
    stretched_positions,
)

ARCH = "urbanln-tiny"
LONG_TEXT = " ".join(f"block {i} has red roofs, a park and a wide road;" for i in range(30))


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    model, _, _, _ = create_model(ARCH, "none")
    return model


@pytest.fixture
def model(base_model):
    return copy.deepcopy(base_model)


@pytest.fixture
def stretched(model):
    return stretch_text_positions(model, context_length=248, keep=20)


@functools.cache
def tokenizer(context_length: int):
    return long_tokenizer(ARCH, context_length)  # building one reads the BPE vocabulary: cache it


def batch(size: int = 6, ids=None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 64, 64, generator=generator)
    long_tok = tokenizer(248)([f"{LONG_TEXT} tile {i}" for i in range(size)])
    short_tok = tokenizer(77)([f"tile {i}: roofs and a park" for i in range(size)])
    ids = torch.arange(size) if ids is None else torch.as_tensor(ids, dtype=torch.int64)
    return images, long_tok, short_tok, ids


# ---------------------------------------------------------------- the stretch


def longclip_reference(pos: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's loops, written out for ratio 4 (from its ``load_from_clip``)."""
    length, dim = pos.shape
    new = torch.zeros(4 * length - 3 * keep, dim, dtype=pos.dtype)
    for i in range(keep):
        new[i] = pos[i]
    for i in range(length - 1 - keep):
        new[4 * i + keep] = pos[i + keep]
        new[4 * i + 1 + keep] = 3 * pos[i + keep] / 4 + 1 * pos[i + 1 + keep] / 4
        new[4 * i + 2 + keep] = 2 * pos[i + keep] / 4 + 2 * pos[i + 1 + keep] / 4
        new[4 * i + 3 + keep] = 1 * pos[i + keep] / 4 + 3 * pos[i + 1 + keep] / 4
    for r in range(4):
        new[4 * length - 3 * keep - 4 + r] = pos[length - 1] + r * (pos[length - 1] - pos[length - 2]) / 4
    return new


def test_stretch_matches_the_formulas_and_longclip():
    pos = torch.randn(77, 8, dtype=torch.float64)
    new = stretched_positions(pos, context_length=248, keep=20)
    assert new.shape == (248, 8)
    assert torch.equal(new[:20], pos[:20])
    for i in range(57):
        assert torch.allclose(new[20 + 4 * i], pos[20 + i])
    for j in range(20, 244):
        i, r = divmod(j - 20, 4)
        assert torch.allclose(new[j], (1 - r / 4) * pos[20 + i] + (r / 4) * pos[21 + i])
    for j in range(244, 248):
        r = j - 244
        assert torch.allclose(new[j], pos[76] + (r / 4) * (pos[76] - pos[75]))
    assert torch.allclose(new, longclip_reference(pos))


@pytest.mark.parametrize(("context_length", "keep"), [(211, 10), (134, 20), (154, 0), (77 * 3 - 2 * 5, 5)])
def test_stretch_generalises_keep_and_context(context_length, keep):
    pos = torch.randn(77, 4, dtype=torch.float64)
    ratio = (context_length - keep) // (77 - keep)
    new = stretched_positions(pos, context_length=context_length, keep=keep)
    assert new.shape[0] == context_length
    assert torch.equal(new[:keep], pos[:keep])
    for j in range(keep, context_length):
        i, r = divmod(j - keep, ratio)
        following = pos[keep + i + 1] if keep + i + 1 < 77 else 2 * pos[76] - pos[75]
        assert torch.allclose(new[j], (1 - r / ratio) * pos[keep + i] + (r / ratio) * following)


@pytest.mark.parametrize(("context_length", "keep"), [(250, 20), (248, 21), (77, 20), (248, 76)])
def test_stretch_rejects_a_ratio_that_is_not_an_integer(model, context_length, keep):
    with pytest.raises(UsageProblem):
        stretch_text_positions(model, context_length=context_length, keep=keep)


def test_stretched_model_has_context_mask_and_tokenizer(model):
    old = model.positional_embedding.detach().clone()
    stretch_text_positions(model)
    assert model.context_length == 248
    assert torch.allclose(model.positional_embedding.detach(), stretched_positions(old))
    assert model.attn_mask.shape == (248, 248)
    assert torch.equal(model.attn_mask, torch.full((248, 248), float("-inf")).triu(1))
    assert "attn_mask" not in model.state_dict()  # still a non-persistent buffer
    tokens = tokenizer(248)([LONG_TEXT])
    assert tokens.shape == (1, 248) and (tokens[0] != 0).sum() > 77
    assert model.encode_text(tokens).shape == (1, 64)
    with pytest.raises(UsageProblem):
        stretch_text_positions(model)


def test_short_captions_encode_at_their_own_length(stretched):
    """Causal mask + end-of-text pooling: 77 tokens give what the same caption padded to 248 gives."""
    captions = ["a short caption", "roofs, a park and a road"]
    short = encode_text(stretched, tokenizer(77)(captions))
    padded = encode_text(stretched, tokenizer(248)(captions))
    assert torch.allclose(short, padded, atol=1e-5)


def test_padding_after_the_longest_caption_changes_nothing(stretched):
    """encode_text drops the batch's trailing padding; open_clip's own encode_text runs all 248 positions."""
    tokens = tokenizer(248)([LONG_TEXT, "a short caption!", "! ! !"])  # "!" is token 0, the padding id
    with torch.no_grad():
        ours = encode_text(stretched, tokens)
        theirs = stretched.encode_text(tokens, normalize=True)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_frozen_rows_stay_put_while_the_rest_trains(stretched):
    before = stretched.positional_embedding.detach().clone()
    step = UrbanLNStep(stretched, batch_size=6, queue_size=12)
    optimizer = torch.optim.AdamW(parameter_groups(stretched, weight_decay=0.1), lr=1e-2)
    for seed in range(3):
        optimizer.zero_grad()
        step(*batch(6, seed=seed))["loss"].backward()
        assert torch.count_nonzero(stretched.positional_embedding.grad[:20]) == 0
        optimizer.step()
    after = stretched.positional_embedding.detach()
    assert torch.equal(after[:20], before[:20])
    assert not torch.allclose(after[20:], before[20:])


# ---------------------------------------------------------------- losses against brute force


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def brute_soft_ce(queries, keys, ids, key_ids, scale):
    total = 0.0
    for q, qid in zip(queries, ids):
        logits = [scale * float(q @ k) for k in keys]
        log_z = math.log(sum(math.exp(v) for v in logits))
        positives = [j for j, kid in enumerate(key_ids) if int(kid) == int(qid)]
        total += -sum(logits[j] - log_z for j in positives) / len(positives)
    return total / len(queries)


def brute_kl(queries, teacher_queries, keys, scale):
    total = 0.0
    for q, t in zip(queries, teacher_queries):
        s_logits = [scale * float(q @ k) for k in keys]
        t_logits = [scale * float(t @ k) for k in keys]
        s_z = math.log(sum(math.exp(v) for v in s_logits))
        t_z = math.log(sum(math.exp(v) for v in t_logits))
        total += sum(math.exp(tl - t_z) * ((tl - t_z) - (sl - s_z)) for sl, tl in zip(s_logits, t_logits))
    return total / len(queries)


@pytest.fixture
def features():
    """A batch of 5 with two captions of tile 7 and of tile 3, and a queue that holds tile 7 and 3 again."""
    ids = torch.tensor([7, 3, 7, 5, 3])
    queue_ids = torch.tensor([SENTINEL_ID, 3, 9, 7, SENTINEL_ID, 11])
    return {
        "img": unit(5, 16, seed=1),
        "txt": unit(5, 16, seed=2),
        "t_img": unit(5, 16, seed=3),
        "t_txt": unit(5, 16, seed=4),
        "q_img": unit(6, 16, seed=5),
        "q_txt": unit(6, 16, seed=6),
        "ids": ids,
        "key_ids": torch.cat([ids, queue_ids]),
        "scale": 4.0,
    }


def test_multi_positive_targets_mask_same_tile_in_batch_and_queue(features):
    targets = multi_positive_targets(features["ids"], features["key_ids"])
    # tile 7: batch rows 0 and 2, queue slot 3 (column 8); the sentinel columns 5 and 9 never match
    assert torch.allclose(targets[0], torch.tensor([1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]) / 3)
    assert torch.allclose(targets[1], torch.tensor([0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0]) / 3)
    assert torch.allclose(targets[3], torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).float())
    assert torch.all(targets[:, [5, 9]] == 0)


def test_contrastive_matches_brute_force(features):
    f = features
    image_keys = torch.cat([f["t_img"], f["q_img"]])
    text_keys = torch.cat([f["t_txt"], f["q_txt"]])
    out = ContrastiveLoss()(f["img"], f["txt"], f["scale"], f["ids"], image_keys, text_keys, f["key_ids"])
    i2t = brute_soft_ce(f["img"], text_keys, f["ids"], f["key_ids"], f["scale"])
    t2i = brute_soft_ce(f["txt"], image_keys, f["ids"], f["key_ids"], f["scale"])
    assert out["contrastive_i2t"].item() == pytest.approx(i2t, rel=1e-5)
    assert out["contrastive_t2i"].item() == pytest.approx(t2i, rel=1e-5)
    assert out["loss"].item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    # without keys the batch is its own key set, still multi-positive
    plain = ContrastiveLoss()(f["img"], f["txt"], f["scale"], f["ids"])
    expected = (
        brute_soft_ce(f["img"], f["txt"], f["ids"], f["ids"], f["scale"])
        + brute_soft_ce(f["txt"], f["img"], f["ids"], f["ids"], f["scale"])
    ) / 2
    assert plain["contrastive_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_distillation_kl_matches_brute_force(features):
    f = features
    image_keys = torch.cat([f["t_img"], f["q_img"]])
    text_keys = torch.cat([f["t_txt"], f["q_txt"]])
    out = DistillationLoss()(f["img"], f["txt"], f["t_img"], f["t_txt"], image_keys, text_keys, f["scale"])
    i2t = brute_kl(f["img"], f["t_img"], text_keys, f["scale"])
    t2i = brute_kl(f["txt"], f["t_txt"], image_keys, f["scale"])
    assert out["distill_i2t"].item() == pytest.approx(i2t, rel=1e-5)
    assert out["distill_t2i"].item() == pytest.approx(t2i, rel=1e-5)
    same = DistillationLoss()(f["t_img"], f["t_txt"], f["t_img"], f["t_txt"], image_keys, text_keys, f["scale"])
    assert same["loss"].item() == pytest.approx(0.0, abs=1e-9)


def test_momentum_distillation_trains_like_albef_soft_targets(features):
    """(1-α)·CE(hard) + α·KL has ALBEF's gradient: CE against α·softmax(teacher) + (1-α)·hard."""
    f, alpha = features, 0.3
    image_keys = torch.cat([f["t_img"], f["q_img"]])
    text_keys = torch.cat([f["t_txt"], f["q_txt"]])
    img = f["img"].clone().requires_grad_(True)
    txt = f["txt"].clone().requires_grad_(True)
    out = MomentumDistillationLoss()(
        img, txt, f["t_img"], f["t_txt"], f["scale"], f["ids"], image_keys, text_keys, f["key_ids"], alpha
    )
    assert out["loss"].item() == pytest.approx(
        (1 - alpha) * out["contrastive_loss"].item() + alpha * out["distill_loss"].item()
    )
    ours = torch.autograd.grad(out["loss"], (img, txt))

    img2 = f["img"].clone().requires_grad_(True)
    txt2 = f["txt"].clone().requires_grad_(True)
    hard = multi_positive_targets(f["ids"], f["key_ids"])
    soft_i2t = alpha * F.softmax(f["scale"] * f["t_img"] @ text_keys.T, dim=1) + (1 - alpha) * hard
    soft_t2i = alpha * F.softmax(f["scale"] * f["t_txt"] @ image_keys.T, dim=1) + (1 - alpha) * hard
    albef = (
        -(soft_i2t * F.log_softmax(f["scale"] * img2 @ text_keys.T, dim=1)).sum(1).mean()
        - (soft_t2i * F.log_softmax(f["scale"] * txt2 @ image_keys.T, dim=1)).sum(1).mean()
    ) / 2
    theirs = torch.autograd.grad(albef, (img2, txt2))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.double(), b.double(), atol=1e-6)


def test_principal_reconstruction_keeps_top_components():
    x = torch.randn(40, 16, dtype=torch.float64)
    recon = principal_reconstruction(x, components=3)
    centred = recon - x.mean(0)
    assert torch.linalg.matrix_rank(centred).item() == 3
    u, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    expected = (u[:, :3] * s[:3]) @ vh[:3] + x.mean(0)
    assert torch.allclose(recon.double(), expected, atol=1e-5)
    small = torch.randn(8, 16)  # batch < 32: every component is kept, the input comes back
    assert torch.equal(principal_reconstruction(small, components=32), small)


def test_short_caption_loss_is_weighted_and_multi_positive(features):
    f = features
    loss = ShortCaptionLoss(weight=0.1, components=32)
    out = loss(f["img"], f["txt"], f["scale"], f["ids"])
    expected = (
        brute_soft_ce(f["img"], f["txt"], f["ids"], f["ids"], f["scale"])
        + brute_soft_ce(f["txt"], f["img"], f["ids"], f["ids"], f["scale"])
    ) / 2
    assert out["short_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.1 * expected, rel=1e-5)


# ---------------------------------------------------------------- teacher and queues


def test_queue_wraps_around_and_moves_the_pointer(stretched):
    teacher = MomentumTeacher(stretched, batch_size=4, queue_size=8)
    assert torch.all(teacher.idx_queue == SENTINEL_ID) and teacher.queue_ptr.item() == 0
    for n, start in [(4, 0), (4, 4), (4, 8)]:
        feats = torch.full((n, 64), float(start))
        teacher.enqueue(feats, -feats, torch.arange(start, start + n))
    assert teacher.queue_ptr.item() == 4
    assert teacher.idx_queue.tolist() == [8, 9, 10, 11, 4, 5, 6, 7]
    assert torch.all(teacher.image_queue[:4] == 8) and torch.all(teacher.text_queue[4:] == -4)
    teacher.enqueue(torch.zeros(3, 64), torch.zeros(3, 64), torch.tensor([20, 21, 22]))  # a smaller last batch
    teacher.enqueue(torch.ones(3, 64), torch.ones(3, 64), torch.tensor([30, 31, 32]))  # crosses the end
    assert teacher.idx_queue.tolist() == [31, 32, 10, 11, 20, 21, 22, 30]
    assert teacher.queue_ptr.item() == 2
    assert teacher.idx_queue.dtype == torch.int64


def test_queue_state_round_trips_through_state_dict(stretched):
    teacher = MomentumTeacher(stretched, batch_size=2, queue_size=6)
    teacher.enqueue(torch.randn(2, 64), torch.randn(2, 64), torch.tensor([4, 5]))
    restored = MomentumTeacher(copy.deepcopy(stretched), batch_size=2, queue_size=6)
    restored.load_state_dict(teacher.state_dict())
    for name in ("image_queue", "text_queue", "idx_queue", "queue_ptr"):
        assert torch.equal(getattr(restored, name), getattr(teacher, name)), name
    assert torch.equal(restored.model.positional_embedding, teacher.model.positional_embedding)


def test_ema_update_follows_the_formula(stretched):
    teacher = MomentumTeacher(stretched, batch_size=2, queue_size=2, momentum=0.9)
    before = {k: v.clone() for k, v in teacher.model.named_parameters()}
    with torch.no_grad():
        for p in stretched.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(stretched)
    student = dict(stretched.named_parameters())
    for name, value in teacher.model.named_parameters():
        assert torch.allclose(value, 0.9 * before[name] + 0.1 * student[name], atol=1e-6), name
        assert not value.requires_grad


def test_queue_size_must_be_a_multiple_of_the_global_batch(stretched):
    with pytest.raises(UsageProblem, match="multiple"):
        MomentumTeacher(stretched, batch_size=6, queue_size=16)
    with pytest.raises(UsageProblem):
        UrbanLNStep(stretched, batch_size=5, queue_size=12)


def test_teacher_made_before_the_stretch_is_refused(model):
    teacher = MomentumTeacher(model, batch_size=2, queue_size=2)
    stretch_text_positions(model)
    with pytest.raises(UsageProblem, match="different parameters") as raised:
        teacher.update(model)
    assert "after stretching" in raised.value.hint


# ---------------------------------------------------------------- one step


def test_urbanln_step_returns_named_terms_and_fills_the_queue(stretched):
    step = UrbanLNStep(stretched, batch_size=6, queue_size=12, short_weight=0.1)
    images, long_tok, short_tok, ids = batch(6, ids=[0, 0, 1, 2, 3, 4])
    out = step(images, long_tok, short_tok, ids, alpha=0.5)
    expected_keys = {"contrastive_loss", "distill_loss", "short_loss", "loss", "alpha", "logit_scale"}
    assert expected_keys <= out.keys()
    total = 0.5 * out["contrastive_loss"] + 0.5 * out["distill_loss"] + 0.1 * out["short_loss"]
    assert torch.allclose(out["loss"], total)
    assert out["distill_loss"].item() == pytest.approx(0.0, abs=1e-6)  # teacher == student at the start
    out["loss"].backward()
    assert stretched.logit_scale.grad is not None
    assert step.teacher.idx_queue[:6].tolist() == [0, 0, 1, 2, 3, 4] and step.teacher.queue_ptr.item() == 6

    step.eval()
    with torch.no_grad():
        step(*batch(6, seed=1))
    assert step.teacher.queue_ptr.item() == 6  # evaluation leaves teacher and queues alone


def test_step_clamps_the_logit_scale(stretched):
    with torch.no_grad():
        stretched.logit_scale.fill_(10.0)
    out = UrbanLNStep(stretched, batch_size=6, queue_size=6)(*batch(6))
    assert out["logit_scale"].item() == pytest.approx(100.0)


def test_plain_step_is_open_clip_cliploss(model):
    from open_clip.loss import ClipLoss

    images, _, _, _ = batch(4)
    tokens = tokenizer(77)(["a", "b", "c", "d"])
    out = plain_step(model, images, tokens)
    img, txt, scale = model(images, tokens)
    assert out["loss"].item() == pytest.approx(ClipLoss()(img, txt, scale).item(), rel=1e-6)


def test_distill_alpha_warms_up_over_the_first_epoch():
    assert distill_alpha(0.5, epoch=0, step=0, steps_per_epoch=100) == 0.0
    assert distill_alpha(0.5, epoch=0, step=50, steps_per_epoch=100) == 0.25
    assert distill_alpha(0.5, epoch=1, step=0, steps_per_epoch=100) == 0.5


# ---------------------------------------------------------------- export and weights


def test_export_loads_with_plain_open_clip_and_encodes_identically(stretched, tmp_path):
    import open_clip
    from safetensors import safe_open

    folder = export_open_clip(stretched, ARCH, tmp_path / "run")
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["context_length"] == 248
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    with safe_open(str(folder / "open_clip_model.safetensors"), framework="pt") as f:
        assert f.get_tensor("positional_embedding").shape == (248, 64)

    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    tokens = tokenizer([LONG_TEXT, "a short one"])
    assert tokens.shape == (2, 248)
    stretched.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), stretched.encode_text(tokens))
        images = batch(2)[0]
        assert torch.equal(loaded.encode_image(images), stretched.encode_image(images))

    # our loader also restores the stretch bookkeeping (frozen rows), with a 248-token tokenizer
    ours, _, _, our_tokenizer = create_model(ARCH, f"local-dir:{folder}")
    assert ours.urbanln_stretch.keep == 20 and our_tokenizer([LONG_TEXT]).shape == (1, 248)
    export_open_clip(ours, None, tmp_path / "again")  # what create_model recorded is enough to re-export


def test_missing_weights_raise_urbanln_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        create_model(ARCH, str(tmp_path / "missing.safetensors"))
    with pytest.raises(InputError, match="not found"):
        create_model(ARCH, f"local-dir:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="open_clip_config.json"):
        create_model(ARCH, f"local-dir:{tmp_path / 'empty'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text("{not json")
    (broken / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot load"):
        create_model(ARCH, f"local-dir:{broken}")
    with pytest.raises(InputError, match="safetensors"):
        create_model(ARCH, str(broken / "open_clip_model.safetensors"))
    with pytest.raises(UsageProblem, match="tag"):
        create_model(ARCH, "openai")  # urbanln-tiny has no published weights
    with pytest.raises(UsageProblem, match="Hub"):
        create_model(ARCH, "hf-hub:someone/some-clip")
    with pytest.raises(UsageProblem, match="unknown architecture"):
        create_model("ViT-Nope", "none")


def test_hub_weights_offline_are_service_unavailable():
    # HF_HUB_OFFLINE=1 (conftest) and an empty HF_HOME: the download fails at once instead of hanging
    with pytest.raises(ServiceUnavailable, match="cannot be downloaded"):
        create_model("ViT-B-16", "openai")


def test_a_stretched_checkpoint_file_keeps_its_length(stretched, tmp_path):
    folder = export_open_clip(stretched, ARCH, tmp_path / "run")
    model, _, _, tokenizer = create_model(ARCH, str(folder / "open_clip_model.safetensors"))
    assert model.context_length == 248 and model.positional_embedding.shape == (248, 64)
    assert torch.equal(model.positional_embedding, stretched.positional_embedding)
    assert tokenizer(["x"]).shape == (1, 248)
