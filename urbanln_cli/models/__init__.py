"""Long-text CLIP for UrbanLN: open_clip models with Long-CLIP's positional stretch,
an ALBEF-style momentum teacher with queues, the loss terms, and one training step.

Nothing here imports typer or rich; importing this package imports torch and open_clip,
so CLI commands import it inside their functions.
"""

from urbanln_cli.models.longclip import (
    StretchInfo,
    create_model,
    encode_text,
    export_open_clip,
    get_arch_config,
    long_tokenizer,
    register_model_configs,
    stretch_text_positions,
    stretched_positions,
)
from urbanln_cli.models.losses import (
    ContrastiveLoss,
    DistillationLoss,
    MomentumDistillationLoss,
    ShortCaptionLoss,
    multi_positive_targets,
    principal_reconstruction,
)
from urbanln_cli.models.momentum import SENTINEL_ID, MomentumTeacher
from urbanln_cli.models.step import (
    UrbanLNStep,
    autocast_for,
    clamp_logit_scale,
    distill_alpha,
    parameter_groups,
    plain_step,
)

__all__ = [
    "SENTINEL_ID",
    "ContrastiveLoss",
    "DistillationLoss",
    "MomentumDistillationLoss",
    "MomentumTeacher",
    "ShortCaptionLoss",
    "StretchInfo",
    "UrbanLNStep",
    "autocast_for",
    "clamp_logit_scale",
    "create_model",
    "distill_alpha",
    "encode_text",
    "export_open_clip",
    "get_arch_config",
    "long_tokenizer",
    "multi_positive_targets",
    "parameter_groups",
    "plain_step",
    "principal_reconstruction",
    "register_model_configs",
    "stretch_text_positions",
    "stretched_positions",
]
