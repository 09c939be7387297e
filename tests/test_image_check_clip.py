"""The CLIP image check (``fuse --check clip``): batching, determinism, errors and the decision rule."""

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from urbanln_cli.errors import InputError, UsageProblem
from urbanln_cli.image_check import ClaimQuery, quadrant_crops
from urbanln_cli.image_check.clip import (
    VIEWS,
    ClipCheckConfig,
    ClipChecker,
    _contrast_stats,
    prompt,
    reference_sample,
)

TINY = ClipCheckConfig(arch="urbanln-tiny", pretrained="none", device="cpu", batch_size=7)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def noise(seed: int, size: int = 48) -> bytes:
    return png(np.random.default_rng(seed).integers(0, 256, (size, size, 3)))


@pytest.fixture(scope="module")
def checker():
    return ClipChecker(TINY)


@pytest.fixture(scope="module")
def images():
    return {f"t{i}": noise(i) for i in range(4)}


def claims(tiles):
    phrases = [
        ("a river", "river"),
        ("dense mid-rise residential blocks", "residential"),
        ("about 12 cars", "car"),
        ("a quiet corner", None),
    ]
    return [ClaimQuery(t, p, c, f"m{i % 2}") for i, (t, (p, c)) in enumerate((t, pc) for pc in phrases for t in tiles)]


def counting(checker, monkeypatch):
    """Record every view row and text that goes through the encoders, and every image_of call."""
    seen = {"views": 0, "texts": Counter()}
    encode_images, encode_texts = checker.encode_images, checker.encode_texts

    def images(pixels):
        seen["views"] += len(pixels)
        return encode_images(pixels)

    def texts(batch):
        seen["texts"].update(batch)
        return encode_texts(batch)

    monkeypatch.setattr(checker, "encode_images", images)
    monkeypatch.setattr(checker, "encode_texts", texts)
    return seen


def test_one_verdict_per_query_in_order(checker, images):
    queries = claims(list(images))[::-1]  # tiles interleaved
    verdicts = checker.check(queries, images.__getitem__)
    assert len(verdicts) == len(queries)
    assert all(
        v.by == "clip" and v.error is None and v.answer in VIEWS and isinstance(v.score, float) for v in verdicts
    )
    assert all(v.confirmed == (v.score >= TINY.margin) for v in verdicts)
    # order: the verdict of a query alone equals its verdict among the others (same reference)
    ref = list(images)
    alone = [checker.check([q], images.__getitem__, reference=ref)[0] for q in queries[:3]]
    together = checker.check(queries, images.__getitem__, reference=ref)[:3]
    assert [v.score for v in alone] == pytest.approx([v.score for v in together], abs=1e-4)
    assert checker.check([], images.__getitem__) == []


def test_each_tile_and_phrase_encoded_once(checker, images, monkeypatch):
    queries = claims(list(images)) * 3  # many claims per tile, every phrase many times
    calls = Counter()

    def image_of(tile_id):
        calls[tile_id] += 1
        return images[tile_id]

    seen = counting(checker, monkeypatch)
    reports = []
    checker.check(queries, image_of, progress=lambda done, total: reports.append((done, total)))
    assert reports[0] == (0, len(images)) and reports[-1] == (len(images), len(images))
    assert calls == Counter({t: 1 for t in images})
    assert seen["views"] == 5 * len(images)
    assert seen["texts"] == Counter(
        {prompt(p): 1 for p in {q.phrase for q in queries}}
    )  # the contrast set: once, at init


def test_a_fixed_reference_is_encoded_once_and_makes_verdicts_independent_of_batching(images, monkeypatch):
    checker = ClipChecker(TINY)
    queries = claims(list(images))
    ref = reference_sample(list(images))
    seen = counting(checker, monkeypatch)
    whole = checker.check(queries, images.__getitem__, reference=ref)
    assert seen["views"] == 5 * len(images)
    by_tile = [
        v
        for t in images
        for v in checker.check([q for q in queries if q.tile_id == t], images.__getitem__, reference=ref)
    ]
    assert seen["views"] == 5 * len(images)  # the reference views were kept
    order = [q for t in images for q in queries if q.tile_id == t]
    assert [v.confirmed for v in by_tile] == [whole[queries.index(q)].confirmed for q in order]
    assert [v.score for v in by_tile] == pytest.approx([whole[queries.index(q)].score for q in order], abs=1e-4)


def test_same_inputs_same_verdicts(checker, images):
    queries = claims(list(images))
    a = checker
    b = ClipChecker(TINY)
    first = a.check(queries, images.__getitem__)
    assert a.check(queries, images.__getitem__) == first
    assert b.check(queries, images.__getitem__) == first
    assert a.describe() == b.describe() and len(a.describe()["weights_sha256"]) == 64
    other = ClipChecker(ClipCheckConfig(arch="urbanln-tiny", pretrained="none", device="cpu", seed=1))
    assert other.describe()["weights_sha256"] != a.describe()["weights_sha256"]


def test_an_undecodable_image_fails_its_tile_only(checker, images):
    bad = dict(images, broken=b"not an image at all", missing=None)
    queries = claims(["t0", "broken", "t1", "missing"])
    verdicts = checker.check(queries, bad.__getitem__)
    for q, v in zip(queries, verdicts):
        if q.tile_id in ("broken", "missing"):
            assert not v.confirmed and v.score is None and v.error
            assert ("cannot decode" in v.error) if q.tile_id == "broken" else ("no image" in v.error)
            assert "0x" not in v.error  # no memory address: the verdict is reproducible
        else:
            assert v.error is None and v.score is not None
    assert verdicts == checker.check(queries, bad.__getitem__)
    # the good tiles score as if the bad ones were not there
    good = [q for q in queries if q.tile_id in ("t0", "t1")]
    alone = checker.check(good, images.__getitem__)
    assert [v.score for v in alone] == pytest.approx(
        [v.score for q, v in zip(queries, verdicts) if q.tile_id in ("t0", "t1")], abs=1e-4
    )


def test_views_are_the_tile_and_its_quadrant_crops(checker):
    image = noise(7, size=40)
    views = checker._views(image)
    expected = [checker.transform(Image.open(io.BytesIO(image)).convert("RGB"))]
    expected += [checker.transform(Image.open(io.BytesIO(crop)).convert("RGB")) for crop in quadrant_crops(image)]
    assert len(views) == 5 and all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(views, expected))


def test_short_prompts_encode_like_padded_ones(checker):
    import torch

    tokens = checker.tokenizer(
        [prompt("a river"), prompt("dense mid-rise residential blocks with a few parks and wide roads")]
    )
    with torch.inference_mode():
        full = checker.model.encode_text(tokens, normalize=True)
        trimmed = checker._encode_tokens(tokens)
    assert torch.allclose(full, trimmed, atol=1e-5)


# ---------------------------------------------------------------- the rule, with embeddings we choose

D = 16


def unit(v):
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def basis(i, extra=()):
    v = np.zeros(D)
    v[i] = 1.0
    for j, w in extra:
        v[j] += w
    return unit(v)


RED_VIEW = basis(0, [(14, 1.0)])  # what any mostly red view encodes to
GREEN_VIEW = basis(1, [(14, 1.0)])


class Handmade(ClipChecker):
    """Views encode by colour; contrast texts spread around e14; claim texts are looked up."""

    texts = {
        prompt("red thing"): RED_VIEW,  # equal to a view vector
        prompt("green thing"): GREEN_VIEW,
        prompt("orthogonal thing"): basis(2),  # orthogonal to every view
    }

    def encode_images(self, pixels):
        red = (pixels[:, 0].mean(dim=(1, 2)) > pixels[:, 1].mean(dim=(1, 2))).numpy()
        return np.stack([RED_VIEW if r else GREEN_VIEW for r in red])

    def encode_texts(self, texts):
        out = []
        for i, t in enumerate(texts):
            if t in self.texts:
                out.append(self.texts[t])
            else:  # a contrast text: cosines with any view between 0.5 and 0.71, spread evenly
                out.append(unit(basis(14) + np.linspace(-1, 1, len(texts))[i] * basis(13)))
        return np.stack(out)


def solid(rgb, size=32, corner=None):
    a = np.zeros((size, size, 3))
    a[:] = rgb
    if corner is not None:  # paint the top-right quadrant
        a[: size // 2, size // 2 :] = corner
    return png(a)


def test_the_decision_rule_on_chosen_embeddings():
    checker = Handmade(ClipCheckConfig(arch="urbanln-tiny", pretrained="none", device="cpu", margin=1.0))
    red, green = (255, 0, 0), (0, 255, 0)
    tiles = {"red": solid(red), "green": solid(green), "green2": solid(green), "corner": solid(green, corner=red)}
    queries = [
        ClaimQuery("red", "red thing", None, "m"),
        ClaimQuery("red", "orthogonal thing", None, "m"),
        ClaimQuery("green", "red thing", None, "m"),
        ClaimQuery("green", "green thing", None, "m"),
        ClaimQuery("corner", "red thing", None, "m"),
        ClaimQuery("green2", "orthogonal thing", None, "m"),
    ]
    verdicts = checker.check(queries, tiles.__getitem__)
    assert [v.confirmed for v in verdicts] == [True, False, False, True, True, False]
    assert verdicts[4].answer == "top-right"  # the red quadrant carries the claim
    assert verdicts[1].score == pytest.approx(0.0, abs=1e-3)  # orthogonal everywhere: no tile stands out

    # the score is the documented formula, computed here from scratch
    contrast = checker.encode_texts(checker.contrast_texts)
    view = {
        "red": [RED_VIEW] * 5,
        "green": [GREEN_VIEW] * 5,
        "green2": [GREEN_VIEW] * 5,
        "corner": [GREEN_VIEW, GREEN_VIEW, RED_VIEW, GREEN_VIEW, GREEN_VIEW],
    }

    def z(tile, text):
        vs = np.array(view[tile])
        c = vs @ contrast.T
        return ((vs @ text - c.mean(1)) / c.std(1, ddof=1)).max()

    red_text = Handmade.texts[prompt("red thing")]
    prior = np.mean([z(t, red_text) for t in tiles])
    assert verdicts[0].score == pytest.approx(z("red", red_text) - prior, abs=1e-3)
    assert verdicts[2].score == pytest.approx(z("green", red_text) - prior, abs=1e-3)


def test_a_claims_own_concept_is_left_out_of_its_contrast_set():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(3, 5, 9))
    mean, std = _contrast_stats(c)
    for k in range(9):
        rest = np.delete(c, k, axis=-1)
        assert np.allclose(mean[..., k], rest.mean(-1)) and np.allclose(std[..., k], rest.std(-1, ddof=1))
    assert np.allclose(mean[..., -1], c.mean(-1)) and np.allclose(std[..., -1], c.std(-1, ddof=1))


# ---------------------------------------------------------------- models and configuration


def test_a_run_folder_and_its_fingerprint(tmp_path, images):
    from urbanln_cli.models import create_model, export_open_clip

    model, *_ = create_model("urbanln-tiny", "none")
    folder = export_open_clip(model, "urbanln-tiny", tmp_path / "run")
    checker = ClipChecker(ClipCheckConfig(model=folder, device="cpu"))
    described = checker.describe()
    assert described["source"]["run"] == str(folder.resolve())
    assert described["weights_sha256"] == described["source"]["weights_sha256"]
    assert described["margin"] == TINY.margin and "reference" in described["rule"]
    assert len(checker.check(claims(["t0"]), images.__getitem__)) == 4


def test_no_model_is_an_input_error_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        ClipChecker(ClipCheckConfig(device="cpu"))  # runs/latest
    assert "runs/latest" in err.value.message and err.value.exit_code == 3
    assert (
        "urbanln pretrain" in err.value.hint
        and "--clip-model" in err.value.hint
        and "--clip-pretrained" in err.value.hint
    )
    with pytest.raises(InputError, match="nowhere"):
        ClipChecker(ClipCheckConfig(model=tmp_path / "nowhere", device="cpu"))
    with pytest.raises(UsageProblem):
        ClipChecker(ClipCheckConfig(model=tmp_path, pretrained="none", device="cpu"))
    with pytest.raises(UsageProblem):
        ClipChecker(ClipCheckConfig(arch="urbanln-tiny", pretrained="none", batch_size=0))


def test_reference_sample_is_fixed_and_spread():
    ids = [f"t{i:03d}" for i in range(1000)]
    sample = reference_sample(ids[::-1], 10)
    assert sample == reference_sample(ids, 10) and len(sample) == 10
    assert sample[0] == "t000" and sample[-1] == "t999"
    assert reference_sample(ids[:5], 10) == ids[:5]
