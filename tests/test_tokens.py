"""CLIP token counting without torch: the same counts (and ids) as open_clip's tokenizer."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from urbanln_cli.text.tokens import ClipBPE, bpe_tokenizer, clip_counter, fit_tokens, simple_clean_mode

# UC Merced captions (Yang & Newsam 2010; UCM-Captions, Qu et al. 2016; USGS imagery, public domain), one pair per class
_UCM = [
    "There is a piece of farmland .",
    "It is a piece of cropland .",
    "Four airplanes are parked at the airport .",
    "Four different sizes of airplanes are in the airport .",
    "This is an old baseball diamond .",
    "It is a very old baseball diamond compose of sand and weeds .",
    "This is a beach with blue sea and white sands .",
    "Waves beat the beach and throw up white foam while some birds flying .",
    "There is one road between two buildings .",
    "There are buildings and a T-junction .",
    "This is a chaparral .",
    "There are some grey plants scattered on the ground .",
    "This is a dense residential area .",
    "Lots of houses arranged neatly and a road goes through them .",
    "There are two straight freeways closed to each other .",
    "Some cars are on the freeways .",
    "This is a part of a golf course with turfs and some trees .",
    "Lots of boats docked at the harbor .",
    "An intersection with no cars or pedestrians on the road .",
    "Many mobile homes arranged in lines in the mobile home park .",
    "An overpass with a road go across another two roads vertically .",
    "It is a parking lot with many cars parked scatteredly and some parking spots are free .",
    "It is a straight runway with some white mark lines on it .",
    "Three storage tanks are in the lawn .",
    "A villa with orange roofs is surrounded by trees and lawn in the sparse residential area .",
    "There is a tennis court surrounded by lots of plants .",
]
# VLM-style sentences (written for this test)
_VLM = [
    "The image shows a dense urban area with high-rise residential towers, a 6-lane arterial road and a small park.",
    "No vehicles are visible on the roads, which suggests the picture was taken early in the morning.",
    "The scene doesn't include any water bodies; it's mostly farmland, greenhouses and a few scattered villages.",
    "Several warehouses (likely logistics depots) line the railway, with trucks parked in front of them.",
    "There're roughly 20-30 buildings, each 2–3 storeys tall, with red/grey tiled roofs.",
    "Overall, the area appears to be a mix of commercial and residential use — a typical suburb!",
    "A stadium with an oval athletic track sits next to a 400 m x 200 m parking lot.",
    "I'm not sure, but it looks like a solar farm (≈ 5 ha) beside the river's northern bank.",
    "The harbor has ~15 boats; the golf course's greens are bright; the runway is 3,000m long.",
    "   Extra   spaces,\ttabs\nand newlines   should not matter   ",
]
_NON_ASCII = [
    "Café près de la gare — 5 km² de résidences",
    "北京市朝阳区的住宅小区和一条河流",
    "Straße und Brücke über den Fluß",
    "Москва: жилой район у реки",
    "منطقة سكنية بالقرب من النهر",
    "Ελληνικά: παραλία και λιμάνι",
    "emoji 🚗🚌🏠 on the road",
    "naïve “quoted” ‘façade’ and an en–dash",
    "Ã©tÃ© mojibake that ftfy repairs",
    "ｆｕｌｌｗｉｄｔｈ letters and ① circled",
    "Tōkyō, São Paulo, Kraków, Zürich",
    "R&amp;D park &lt;b&gt;bold&lt;/b&gt; &#39;quoted&#39;",
    "<start_of_text> special <end_of_text>",
]


def _texts() -> list[str]:
    base = _UCM + _VLM + _NON_ASCII
    texts = list(base)
    texts += [t.upper() for t in base[::3]]
    texts += [f"{a} {b}" for a, b in zip(base, base[7:])]  # two-sentence captions
    texts += [" ".join(base[i : i + 12]) for i in range(0, len(base), 6)]  # long ones (> 77 tokens)
    texts += [
        "",
        " ",
        "!!!???...",
        "x_y_z under_scores",
        "O'Neil's can't, won't; I'm, we'll, you'd, they've",
        "1234567 3.5km 2,000 1e6",
    ]
    texts += [a + " " + b for a, b in itertools.product(_NON_ASCII[:6], _UCM[:10])]
    texts += [a + " " + b for a, b in itertools.product(_VLM[:5], _NON_ASCII[6:])]
    return texts


def test_the_texts_are_varied():
    texts = _texts()
    assert len(texts) > 200 and sum(not t.isascii() for t in texts) > 60
    assert max(len(t) for t in texts) > 600


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
def test_ids_and_counts_equal_open_clip(clean):
    from open_clip.tokenizer import SimpleTokenizer

    ref, mine = SimpleTokenizer(clean=clean), ClipBPE(clean=clean)
    for text in _texts():
        ids = ref.encode(text)
        assert mine.encode(text) == ids, text
        assert mine.count(text) == len(ids) + 2, text


def test_clip_counter_equals_open_clip_get_tokenizer():
    import open_clip

    for name in ("ViT-B-16", "ViT-L-14", "RN50"):
        ref = open_clip.get_tokenizer(name)
        count = clip_counter(name)
        assert all(count(t) == len(ref.encode(t)) + 2 for t in _texts()), name


def test_counting_imports_neither_torch_nor_open_clip():
    code = (
        "import sys, json\n"
        "from urbanln_cli.text.tokens import clip_counter, fit_tokens\n"
        "n = clip_counter('ViT-B-16')('There are two straight freeways closed to each other .')\n"
        "fit_tokens('A road. ' * 100, 77, clip_counter('urbanln-tiny'))\n"
        "print(json.dumps([n, 'torch' in sys.modules, 'open_clip' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [13, False, False]


def test_which_tokenizers_run_without_torch():
    # the same choice as open_clip.get_tokenizer: SimpleTokenizer for OpenAI-style CLIPs and unknown names
    assert simple_clean_mode("ViT-B-16") == "lower" and simple_clean_mode("urbanln-tiny") == "lower"
    assert simple_clean_mode("no-such-arch") == "lower"
    # HF tokenizers (SigLIP, XLM-R, hf-hub models) are open_clip's own
    assert simple_clean_mode("ViT-B-16-SigLIP") is None and simple_clean_mode("xlm-roberta-base-ViT-B-32") is None
    assert simple_clean_mode("hf-hub:org/model") is None


def test_local_dir_config_is_read(tmp_path):
    cfg = {
        "model_cfg": {
            "embed_dim": 8,
            "vision_cfg": {},
            "text_cfg": {"context_length": 248, "tokenizer_kwargs": {"clean": "canonicalize"}},
        }
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    assert simple_clean_mode(f"local-dir:{tmp_path}") == "canonicalize"
    cfg["model_cfg"]["text_cfg"] = {"hf_tokenizer_name": "org/tok"}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    assert simple_clean_mode(f"local-dir:{tmp_path}") is None
    assert simple_clean_mode(f"local-dir:{tmp_path / 'missing'}") is None


def test_the_word_cache_does_not_change_counts():
    tok = ClipBPE()
    tok._CACHE_LIMIT = 5
    texts = _texts()
    first = [tok.count(t) for t in texts]
    assert [tok.count(t) for t in texts] == first == [bpe_tokenizer().count(t) for t in texts]


def test_fit_tokens_with_the_torch_free_counter():
    count = clip_counter()
    text = " ".join(_UCM)
    out, cut, n = fit_tokens(text, 77, count)
    assert cut and n == count(out) <= 77 and text.startswith(out) and out.endswith(".")
    assert fit_tokens("A short one.", 77, count) == ("A short one.", False, count("A short one."))
