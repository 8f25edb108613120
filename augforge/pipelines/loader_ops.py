"""The image ops a loader or the torch fallback runs (a recipe's, or op mappings), and the channel
conversion of decoded pixels."""

from __future__ import annotations

import torch

from augforge.augment.colour import GRAY
from augforge.augment.image_ops import check_image_ops, evaluation_ops
from augforge.checks import Checker
from augforge.errors import AugforgeError
from augforge.recipe import Recipe, load_recipe


def resolve_ops(recipe, ops, info: dict, augment: bool = True, color: str | None = None) -> tuple[tuple, str]:
    """The image ops (and colour mode) a loader runs: a recipe's training ops (a Recipe or a path: the
    augment ops in online mode, then ``train.stream``) or a list of op mappings. Without ``augment`` only
    their deterministic part (``evaluation_ops``). ``color`` (rgb or gray) overrides the recipe's or the
    data's own."""
    if recipe is not None and ops is not None:
        raise AugforgeError("give recipe or ops, not both")
    own = "gray" if info.get("channels") == 1 else "rgb"
    resolved: tuple = ()
    if recipe is not None:
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        resolved, own = recipe.train_ops, recipe.augment.color
    elif ops:
        resolved = parse_ops(ops, "ops")
    if color is not None and color not in ("rgb", "gray"):
        raise AugforgeError(f"color={color!r}: expected rgb or gray")
    return (resolved if augment else evaluation_ops(resolved)), color or own


def parse_ops(ops, file: str) -> tuple:
    """Op mappings (``[{op: ..., p: ..., <params>}]``) or policy strings (``trivial``, ``rand-n2-m9``) validated as
    a recipe's augment.image list (ops already validated pass as they are)."""
    return check_image_ops(Checker(file), ops, file)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, H, W, C) uint8 pixels with ``channels`` channels: grey repeated into RGB, or RGB to its luma
    (ITU-R BT.601 weights, as JPEG's and DALI's decoders use), rounded."""
    have = x.shape[-1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(*x.shape[:-1], 3).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(GRAY, dtype=torch.float32)
        return (x.float() @ weights).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(-1)
    raise AugforgeError(f"images with {have} channels cannot be converted to {channels}")
