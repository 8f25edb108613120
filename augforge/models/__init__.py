"""Models written in torch itself: a registry, conv nets with optional attention, text models, an MLP,
transfer learning and a layer summary."""

from augforge.models import linear_text, mlp, mobilenetv3, simple_cnn, text, text_encoder  # noqa: F401  (register the builders)
from augforge.models.registry import available, create, model_options, register_model
from augforge.models.attention import TransformerBlock2d, add_attention
from augforge.models.summary import Summary, summary
from augforge.models.transfer import (
    LoadReport,
    freeze_backbone,
    load_weights,
    param_groups,
    read_state_dict,
    replace_head,
    save_weights,
)

__all__ = [
    "LoadReport",
    "Summary",
    "TransformerBlock2d",
    "add_attention",
    "available",
    "create",
    "freeze_backbone",
    "load_weights",
    "model_options",
    "param_groups",
    "read_state_dict",
    "register_model",
    "replace_head",
    "save_weights",
    "summary",
]
