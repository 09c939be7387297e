"""A tiny image-text-to-text model built from code, for the ``hf:`` captioner's tests and benchmark.

``make_tiny_vlm(path)`` writes a LLaVA-architecture model (a 2-layer CLIP vision
tower, a 2-layer Llama text model, random weights from a fixed seed) with its
word-level tokenizer, CLIP image processor and a chat template, all with
``save_pretrained``, so ``AutoProcessor`` and ``AutoModelForImageTextToText``
load it as they would a hub checkpoint. Nothing is downloaded. The folder is a
few hundred KB. ``family="qwen2_5_vl"`` writes a Qwen2.5-VL-architecture model
instead (its window-attention vision tower, multimodal RoPE, dynamic-resolution
image processor and ChatML template), the family of the paper's Qwen2.5-VL-7B.

``only_words`` steers the output: every other word is suppressed (through the
generation config, as a hub model's config would), so e.g. ``("road",)`` makes a
model that can only say "road road road …", which the captioner must see as
runaway repetition.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
CHAT = ["USER:", "ASSISTANT:"]
WORDS = """
a an the and or of with in on at by to from near along across between around its their is are has have
dense sparse low mid high rise low-rise mid-rise high-rise residential commercial industrial institutional
agricultural vacant mixed land use buildings building houses housing blocks block towers roofs roof red grey
white dark flat large small narrow wide long short roads road streets street avenue avenues highway arterial
local alleys lanes rail line lines railway parking lot lots intersection grid courtyard rows scattered trees
tree park parks lawn lawns field fields sports farmland green space water river canal pond ponds shoreline
factory factories warehouses warehouse tanks port power transport facilities construction site sites area
areas character centre suburban estate fringe urban historic compact sprawling orderly neighbourhood district
north south east west edge corner middle several many few some most much little cars shadows footprint
""".split()
PUNCT = [".", ",", ";", ":", "-", "(", ")"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n"
    "{% else %}ASSISTANT: "
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
IMAGE_SIZE, PATCH = 32, 8  # 16 patches: 16 image tokens per tile


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
QWEN_SPECIAL += ["<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys(SPECIAL + CHAT + WORDS + PUNCT))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # words joined by spaces, ' .' -> '.'
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=4096,
    )


def make_tiny_vlm(
    path: Path, *, only_words: Sequence[str] | None = None, hidden: int = 64, seed: int = 0, family: str = "llava"
) -> Path:
    """Write the tiny model to ``path`` (created) and return it. Deterministic: same arguments, same files."""
    if family == "qwen2_5_vl":
        return _tiny_qwen(Path(path), only_words, hidden, seed)
    if family != "llava":
        raise ValueError(f"unknown family {family!r}: llava or qwen2_5_vl")
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    tokenizer = _tokenizer()
    vocab = tokenizer.get_vocab()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
            pad_token_id=vocab["<pad>"],
        ),
        image_token_index=vocab["<image>"],
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger output weights: sharper next-token choices, so captions are not all one token
        model.lm_head.weight.mul_(8.0)
    generation = GenerationConfig(
        bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"], do_sample=False
    )
    return _save(path, model, processor, generation, vocab, only_words)


def _tiny_qwen(path: Path, only_words: Sequence[str] | None, hidden: int, seed: int) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    vocab = {t: i for i, t in enumerate(dict.fromkeys(["<unk>", *QWEN_SPECIAL, "user", "assistant", *WORDS, *PUNCT]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=QWEN_SPECIAL,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        padding_side="left",
        model_max_length=4096,
    )
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_TEMPLATE,
    )
    heads = 4
    half = hidden // heads // 2
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(half)},
            bos_token_id=None,
            eos_token_id=vocab["<|im_end|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            out_hidden_size=hidden,
            fullatt_block_indexes=[1],
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    generation = GenerationConfig(
        eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"], do_sample=False
    )
    return _save(path, model, processor, generation, vocab, only_words)


def _save(path: Path, model, processor, generation, vocab: dict[str, int], only_words: Sequence[str] | None) -> Path:
    """Write model and processor; ``only_words`` suppresses every other token, so the model says only those."""
    if only_words is not None:
        keep = {vocab[w] for w in only_words}
        generation.suppress_tokens = sorted(i for i in vocab.values() if i not in keep)
    model.generation_config = generation
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _mrope(half: int) -> list[int]:
    """Multimodal RoPE sections (time, height, width) that add up to half the head dimension."""
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]
