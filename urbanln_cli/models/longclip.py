"""Long-text CLIP on top of an unmodified open_clip model.

``create_model`` builds an open_clip model (our JSON configs registered), with
urbanln errors instead of open_clip's generic ones. ``stretch_text_positions``
applies Long-CLIP's positional stretch to the model object open_clip built (no
fork): it replaces the positional embedding, rebuilds the causal mask and sets
the context length. ``export_open_clip`` writes a folder that plain
``open_clip.create_model_and_transforms("local-dir:<folder>")`` loads.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from urbanln_cli.artifacts import atomic_file, safetensors_os_errors
from urbanln_cli.errors import InputError, ServiceUnavailable, UsageProblem

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
LOCAL_DIR = "local-dir:"
NO_WEIGHTS = ("", "none", "random")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".npy")


@dataclass(frozen=True)
class StretchInfo:
    """How a text tower was stretched; kept on the model and in the exported config."""

    base_context_length: int
    context_length: int
    keep: int

    @property
    def ratio(self) -> int:
        return (self.context_length - self.keep) // (self.base_context_length - self.keep)


# ---------------------------------------------------------------- architectures


def register_model_configs() -> None:
    """Make our JSON architectures (``urbanln-tiny``) known to open_clip; idempotent."""
    import open_clip

    known = set(open_clip.list_models())
    ours = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    if not ours <= known:
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def get_arch_config(arch: str) -> dict[str, Any]:
    """The open_clip model config of an architecture name (a deep copy)."""
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UsageProblem(
            f"unknown architecture {arch!r}",
            hint=f"use an open_clip name such as ViT-B-16, or one of ours: {', '.join(_our_archs())}",
        )
    return copy.deepcopy(cfg)


def _our_archs() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


# ---------------------------------------------------------------- create_model


def create_model(
    arch: str = "ViT-B-16",
    pretrained: str | os.PathLike | None = "none",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> tuple[nn.Module, Callable, Callable, Callable]:
    """Build an open_clip model: ``(model, preprocess_train, preprocess_val, tokenizer)``.

    ``pretrained`` is ``"none"`` (random weights), an open_clip tag of ``arch``
    (``"openai"``, ``"laion2b_s34b_b88k"``…), a checkpoint file, or
    ``"local-dir:<folder>"`` (an exported model folder; ``arch`` is then taken
    from the folder). The tokenizer pads to the model's context length, so a
    stretched folder gives a 248-token tokenizer.
    """
    import open_clip

    register_model_configs()
    pretrained = "" if pretrained is None else str(pretrained)
    kwargs: dict[str, Any] = {"precision": precision, "device": device, "cache_dir": cache_dir}

    if pretrained.startswith(LOCAL_DIR):
        folder = Path(pretrained[len(LOCAL_DIR) :])
        _check_model_folder(folder)
        name, weights = f"{LOCAL_DIR}{folder}", None
    else:
        get_arch_config(arch)  # unknown arch -> UsageProblem before open_clip's RuntimeError
        name = arch
        weights = _resolve_weights(arch, pretrained, kwargs)

    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=weights, **kwargs
        )
    except Exception as exc:
        if "Failed to download" in str(exc):
            raise ServiceUnavailable(
                f"weights {pretrained!r} for {arch} are not in the local cache and cannot be downloaded: {exc}",
                hint="run once with network access (HF_HUB_OFFLINE unset) to cache them, "
                "or pass a checkpoint file or local-dir:<folder>",
            ) from None
        if weights and weights == pretrained and not Path(weights).is_file():
            raise  # a tag that failed for another reason than the download: a bug, keep the traceback
        if weights or name.startswith(LOCAL_DIR):
            # whatever breaks while reading the user's file or folder is a problem with that input
            what = (
                f"the model folder {pretrained[len(LOCAL_DIR) :]}"
                if name.startswith(LOCAL_DIR)
                else f"{pretrained!r} as {arch} weights"
            )
            raise InputError(
                f"cannot load {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                hint="the file is damaged or of another architecture: train or download it again",
            ) from None
        raise

    model.urbanln_model_cfg = _resolved_model_cfg(name, arch, kwargs)
    stretch = _folder_stretch_info(name)
    if stretch is not None:
        _mark_stretched(model, stretch)
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length)
    return model, preprocess_train, preprocess_val, tokenizer


def _check_model_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputError(f"model folder not found: {folder}", hint="pass a folder written by `urbanln pretrain`")
    if not (folder / OPEN_CLIP_CONFIG).is_file():
        raise InputError(
            f"{folder} has no {OPEN_CLIP_CONFIG}; it is not an open_clip model folder",
            hint="pass a folder written by `urbanln pretrain` (or open_clip's push_to_hf_hub)",
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")) and not any(folder.glob("*.pth")):
        raise InputError(f"{folder} has a config but no weights file", hint=f"expected {OPEN_CLIP_WEIGHTS} beside it")


def _resolve_weights(arch: str, pretrained: str, kwargs: dict[str, Any]) -> str | None:
    """The ``pretrained`` argument for open_clip; fills ``kwargs`` with what the weights need."""
    import open_clip

    if pretrained.lower() in NO_WEIGHTS:
        return None
    if pretrained.startswith("hf-hub:"):
        raise UsageProblem(
            f"{pretrained!r}: Hugging Face Hub models are not loaded directly",
            hint="download the repository's folder and pass local-dir:<folder>, or use an open_clip tag",
        )
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if tag_cfg:
        # OpenAI weights were trained with QuickGELU; a plain ViT-B-16 config would silently degrade them.
        if tag_cfg.get("quick_gelu", False):
            kwargs["force_quick_gelu"] = True
        return pretrained
    looks_like_path = os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)
    if looks_like_path or Path(pretrained).exists():
        path = Path(pretrained)
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}", hint="check the path, or use --pretrained none")
        length = _checkpoint_context_length(path)
        if length is not None:
            # Keep a stretched checkpoint stretched: open_clip would otherwise interpolate it back to 77.
            kwargs["force_context_length"] = length
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise UsageProblem(
        f"{pretrained!r} is neither a pretrained tag of {arch} nor a checkpoint file",
        hint=f"tags of {arch}: {', '.join(tags) if tags else 'none'}; or none, a file path, local-dir:<folder>",
    )


def _checkpoint_context_length(path: Path) -> int | None:
    """Text context length stored in a safetensors checkpoint (cheap header read); None otherwise."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in ("positional_embedding", "text.positional_embedding"):
                if key in f.keys():
                    return int(f.get_slice(key).get_shape()[0])
    except Exception as exc:  # a broken file is the user's input problem, not a bug here
        raise InputError(f"{path} is not a readable safetensors checkpoint: {exc}") from None
    return None


def _resolved_model_cfg(name: str, arch: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The model config the weights belong to, as export needs it (QuickGELU and context included)."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR) :])
        return json.loads((folder / OPEN_CLIP_CONFIG).read_text())["model_cfg"]
    cfg = get_arch_config(arch)
    if kwargs.get("force_quick_gelu"):
        cfg["quick_gelu"] = True
    if kwargs.get("force_context_length"):
        cfg["text_cfg"]["context_length"] = kwargs["force_context_length"]
    return cfg


def _folder_stretch_info(name: str) -> StretchInfo | None:
    if not name.startswith(LOCAL_DIR):
        return None
    config = json.loads((Path(name[len(LOCAL_DIR) :]) / OPEN_CLIP_CONFIG).read_text())
    stretch = config.get("urbanln", {}).get("stretch")
    return StretchInfo(**stretch) if stretch else None


# ---------------------------------------------------------------- the stretch


def stretched_positions(pos: torch.Tensor, context_length: int = 248, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's table: keep the first ``keep`` rows, interpolate the rest at an integer ratio.

    With ``ratio = (context_length - keep) / (len(pos) - keep)``, row ``keep + ratio*i + r``
    is ``(1 - r/ratio)·pos[keep+i] + (r/ratio)·pos[keep+i+1]``; past the last original
    row it extrapolates along ``pos[-1] - pos[-2]``, as Long-CLIP's code does.
    """
    base = pos.shape[0]
    ratio = _stretch_ratio(base, context_length, keep)
    table = pos.detach().to(torch.promote_types(pos.dtype, torch.float32))  # interpolate in ≥ fp32
    head = table[:keep]
    start = table[keep:]  # rows keep .. base-1
    # the row after each start row; past the end, extrapolate one step (pos[-1] + (pos[-1] - pos[-2]))
    following = torch.cat([table[keep + 1 :], (2 * table[-1] - table[-2])[None]], dim=0)
    weights = torch.arange(ratio, dtype=table.dtype, device=table.device) / ratio  # r / ratio
    tail = start[:, None, :] + weights[None, :, None] * (following - start)[:, None, :]
    stretched = torch.cat([head, tail.reshape(-1, table.shape[1])], dim=0)
    assert stretched.shape[0] == context_length
    return stretched.to(pos.dtype)


def _stretch_ratio(base: int, context_length: int, keep: int) -> int:
    if not 0 <= keep <= base - 2:
        raise UsageProblem(f"keep={keep} must be between 0 and {base - 2} for a {base}-position table")
    span, base_span = context_length - keep, base - keep
    if context_length <= base or span % base_span:
        raise UsageProblem(
            f"cannot stretch {base} text positions to {context_length} keeping {keep}: "
            f"({context_length} - {keep}) / ({base} - {keep}) is not an integer greater than 1",
            hint=f"use context_length = {keep} + k·{base_span} for an integer k ≥ 2 (Long-CLIP: 248 with keep 20)",
        )
    return span // base_span


def stretch_text_positions(model: nn.Module, context_length: int = 248, keep: int = 20) -> nn.Module:
    """Stretch an open_clip CLIP text tower in place to ``context_length`` tokens; returns the model.

    The first ``keep`` rows stay frozen: a gradient hook zeroes their gradient
    (keep ``positional_embedding`` out of weight decay, as open_clip's
    ``no_weight_decay()`` says; see ``step.parameter_groups``). Build the
    optimizer after stretching: the positional embedding is a new parameter.
    """
    model = _unwrap(model)
    _check_plain_clip_text(model)
    if getattr(model, "urbanln_stretch", None) is not None:
        raise UsageProblem("the text tower is already stretched", hint="stretch a freshly created model once")
    old = model.positional_embedding
    new = stretched_positions(old, context_length, keep)
    model.positional_embedding = nn.Parameter(new.to(old.device), requires_grad=old.requires_grad)
    info = StretchInfo(base_context_length=old.shape[0], context_length=context_length, keep=keep)
    _mark_stretched(model, info)
    return model


def _mark_stretched(model: nn.Module, info: StretchInfo) -> None:
    """Rebuild the causal mask and context length for ``info`` and freeze the kept rows."""
    pos = model.positional_embedding
    if pos.shape[0] != info.context_length:
        raise InputError(f"the model has {pos.shape[0]} text positions but its config says {info.context_length}")
    # the mask is a non-persistent buffer, so no checkpoint carries it: it must match the new length
    mask = torch.full((info.context_length, info.context_length), float("-inf"), device=pos.device).triu_(1)
    model.register_buffer("attn_mask", mask, persistent=False)
    model.context_length = info.context_length
    pos.register_hook(_zero_leading_rows(info.keep))
    model.urbanln_stretch = info


def _zero_leading_rows(keep: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gradient hook that freezes the first ``keep`` rows (Long-CLIP trains only the stretched part)."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:keep] = 0
        return grad

    return hook


def _check_plain_clip_text(model: nn.Module) -> None:
    needed = ("positional_embedding", "token_embedding", "transformer", "ln_final", "attn_mask")
    if not all(hasattr(model, name) for name in needed) or model.attn_mask is None:
        raise UsageProblem(
            f"{type(model).__name__} has no built-in causal text transformer to stretch",
            hint="use an open_clip CLIP architecture (ViT-B-16, urbanln-tiny, …), not an HF or CoCa text tower",
        )


def _unwrap(model: nn.Module) -> nn.Module:
    """The open_clip model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def long_tokenizer(arch: str, context_length: int = 248) -> Callable:
    """open_clip's tokenizer for ``arch``, padding and truncating to ``context_length`` tokens."""
    import open_clip

    register_model_configs()
    return open_clip.get_tokenizer(arch, context_length=context_length)


def encode_text(model: nn.Module, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` at any length up to the context length.

    Short captions are encoded at their own length (≤ 77) rather than padded to
    248: with the causal mask and end-of-text pooling the result is the same,
    and the attention costs a tenth. For the same reason the padding after the
    batch's longest text is dropped (a batch of ~100-token captions padded to
    248 runs about twice as fast on CPU).
    """
    from open_clip.transformer import text_global_pool

    model = _unwrap(model)
    tokens = _without_trailing_padding(model, tokens)
    length = tokens.shape[1]
    if length == model.positional_embedding.shape[0]:
        return model.encode_text(tokens, normalize=normalize)
    if length > model.positional_embedding.shape[0]:
        raise UsageProblem(
            f"{length} text tokens exceed the model's context length {model.positional_embedding.shape[0]}"
        )
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return nn.functional.normalize(x, dim=-1) if normalize else x


def _without_trailing_padding(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` cut after the last column any row uses (open_clip pads with 0).

    Only for a causal text tower pooled at the end-of-text token (open_clip's
    ``argmax``): every position a row's pooled feature depends on is kept, so the
    features are unchanged. Other towers ("last" pooling, no causal mask) keep
    their padding, which they can see.
    """
    if tokens.ndim != 2 or tokens.shape[1] < 2 or getattr(model, "attn_mask", None) is None:
        return tokens
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        return tokens
    used = torch.nonzero((tokens != 0).any(dim=0))
    keep = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :keep] if keep < tokens.shape[1] else tokens


# ---------------------------------------------------------------- export


def export_open_clip(
    model: nn.Module,
    arch_config: Mapping[str, Any] | str | None,
    folder: str | os.PathLike,
) -> Path:
    """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` into ``folder``.

    ``arch_config`` is the model config the model was built from (a dict, an
    architecture name, or None for what ``create_model`` recorded); the text
    context length is taken from the model, so a stretched model exports 248.
    Returns the folder.
    """
    from open_clip.model import get_model_preprocess_cfg
    from safetensors.torch import save_file

    model = _unwrap(model)
    cfg = _export_model_cfg(model, arch_config)
    cfg["text_cfg"]["context_length"] = int(model.context_length)
    config: dict[str, Any] = {"model_cfg": cfg, "preprocess_cfg": _jsonable(get_model_preprocess_cfg(model))}
    stretch = getattr(model, "urbanln_stretch", None)
    if stretch is not None:
        config["urbanln"] = {"stretch": asdict(stretch)}

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    _atomic_write(folder / OPEN_CLIP_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    _atomic_write(folder / OPEN_CLIP_CONFIG, lambda p: p.write_text(text))
    return folder


def _export_model_cfg(model: nn.Module, arch_config: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if isinstance(arch_config, str):
        return get_arch_config(arch_config)
    if arch_config is None:
        recorded = getattr(model, "urbanln_model_cfg", None)
        if recorded is None:
            raise UsageProblem("export_open_clip needs the model config of a model not made by create_model")
        return copy.deepcopy(recorded)
    return copy.deepcopy(dict(arch_config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    with atomic_file(path) as tmp, safetensors_os_errors(tmp):
        write(tmp)
