"""``text_encoder``: a pretrained Hugging Face encoder from a **local** directory, fine-tuned or frozen under a
linear head. Nothing is downloaded (``local_files_only``, offline mode).

The directory is what ``model.save_pretrained(DIR)`` and ``tokenizer.save_pretrained(DIR)`` write (or a
sentence-transformers folder, whose top level holds the same files). Its tokenizer becomes the run's text
encoder (``augforge.pipelines.text_encoding.PretrainedEncoder``). A checkpoint stores the model's config
with its weights, so evaluation rebuilds it without the directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from augforge.errors import AugforgeError, first_line
from augforge.models.registry import register_model
from augforge.models.layers import ClassifierMixin

POOLING = ("mean", "cls")


def _folder(path: str | None) -> Path:
    if not path:
        raise AugforgeError("text_encoder: needs model_options.path, a local Hugging Face model directory")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise AugforgeError(f"text_encoder: {path}: not a local Hugging Face model directory (no config.json); "
                            "save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
    return folder


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise AugforgeError("text_encoder: needs transformers; pip install 'augforge[models]'") from None
    return transformers


def local_config(path: str) -> dict:
    """The model directory's config.json (what rebuilds the architecture)."""
    return json.loads((_folder(path) / "config.json").read_text(encoding="utf-8"))


def local_tokenizer(path: str | None) -> str:
    """The directory's fast tokenizer as JSON: its ``tokenizer.json``, else the one transformers builds."""
    folder = _folder(path)
    if (folder / "tokenizer.json").is_file():
        return (folder / "tokenizer.json").read_text(encoding="utf-8")
    try:
        tokenizer = _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
    except (OSError, ValueError) as exc:
        raise AugforgeError(f"text_encoder: {path}: no usable tokenizer ({first_line(exc)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise AugforgeError(f"text_encoder: {path}: its tokenizer has no fast (tokenizers) version")
    return tokenizer.backend_tokenizer.to_str()


class TextEncoderClassifier(ClassifierMixin, nn.Module):
    """A pretrained encoder, its token states pooled (masked mean or the first token), dropout, a linear head."""

    input_kind = "tokens"

    def __init__(self, encoder: nn.Module, num_classes: int, freeze: bool, pooling: str, dropout: float,
                 pad_id: int) -> None:
        super().__init__()
        self.encoder, self.pooling, self.pad_id, self.freeze = encoder, pooling, pad_id, freeze
        if freeze:
            for param in self.encoder.parameters():
                param.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.num_classes = num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:  # a frozen encoder keeps its dropout off
            self.encoder.eval()
        return self

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            mask = ids != self.pad_id
        else:
            mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            keep = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


@register_model
def text_encoder(num_classes: int, in_channels: int = 3, path: str | None = None, config: dict | None = None,
                 freeze: bool = False, pooling: str = "mean", dropout: float = 0.1, pad_id: int = 0,
                 vocab_size: int | None = None) -> TextEncoderClassifier:
    """A local pretrained encoder (``path``) under a linear head; ``freeze`` trains the head only.

    ``config`` (set by ``augforge train`` from the directory, stored in checkpoints) rebuilds the
    architecture without weights, for loading a checkpoint. ``vocab_size`` is the tokenizer's (checked)."""
    if pooling not in POOLING:
        raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLING)}")
    transformers = _transformers()
    if config is not None:
        options = dict(config)
        kind = options.pop("model_type", None)
        if not kind:
            raise ValueError("config has no model_type")
        encoder = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(kind, **options))
    else:
        folder = _folder(path)
        try:
            encoder = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise AugforgeError(f"text_encoder: {path}: cannot be loaded ({first_line(exc)})") from None
    if vocab_size is not None and vocab_size > encoder.config.vocab_size:
        raise ValueError(f"the tokenizer has {vocab_size} ids, the encoder's embedding {encoder.config.vocab_size}")
    return TextEncoderClassifier(encoder, num_classes, freeze, pooling, dropout, pad_id)
