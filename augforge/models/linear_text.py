"""``linear``: logistic regression on TF-IDF word and character n-grams (the strong linear text baseline), as a
torch model that augforge's loop trains like any other.

Its input comes from ``augforge.pipelines.text_encoding.TfidfEncoder``, fitted on the train split: per text,
each distinct n-gram once, as ``feature + vocab_size * (count - 1)`` (the feature's id and how often the text
holds it, in one int64, so that the batch stays the (ids, lengths) every text model takes). The model turns
that into scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` rows: ``(1 + ln count) * idf``, L2-normalised
separately over the word block (ids below ``char_start``) and the character block, as two stacked
vectorisers give; then one weight per feature and class, summed, plus a bias. The idf weights are a buffer:
they come from the fitted encoder when training starts (``TfidfEncoder.model_state``) and travel in the
checkpoint's state dict, so evaluation refits nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from augforge.models.registry import register_model
from augforge.models.text import padding_mask


class TfidfLinear(nn.Module):
    """Sublinear TF-IDF (word and character blocks, each L2-normalised) into a linear layer: multinomial
    logistic regression. ``head`` is the (features, classes) weight table; decoupling does not apply."""

    input_kind = "tokens"

    def __init__(self, num_classes: int, vocab_size: int, char_start: int, pad_id: int) -> None:
        super().__init__()
        self.vocab_size, self.char_start, self.pad_id = vocab_size, char_start, pad_id
        self.register_buffer("idf", torch.zeros(vocab_size))
        self.head = nn.EmbeddingBag(vocab_size, num_classes, mode="sum")
        nn.init.zeros_(self.head.weight)  # a convex problem: start where logistic regression starts
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.num_classes = num_classes

    def tfidf(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature ids, TF-IDF weights) of a batch, both (batch, tokens); padding weighs 0."""
        if lengths is not None:
            ids = ids.masked_fill(padding_mask(ids, lengths, self.pad_id), self.pad_id)
        feature = torch.remainder(ids, self.vocab_size)
        count = torch.div(ids, self.vocab_size, rounding_mode="floor") + 1
        weight = (1.0 + torch.log(count.to(self.idf.dtype))) * self.idf[feature]
        in_char = feature >= self.char_start
        squares = weight * weight
        char_norm = (squares * in_char).sum(1, keepdim=True).sqrt().clamp_min(1e-12)
        word_norm = (squares * ~in_char).sum(1, keepdim=True).sqrt().clamp_min(1e-12)
        return feature, weight / torch.where(in_char, char_norm, word_norm)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feature, weight = self.tfidf(ids, lengths)
        return self.head(feature, per_sample_weights=weight) + self.bias


@register_model
def linear(num_classes: int, in_channels: int = 3, vocab_size: int = 2, char_start: int = 2,
           pad_id: int = 0) -> TfidfLinear:
    """TF-IDF + logistic regression for text (``train.model: linear``); ``forward(ids, lengths)``. The options
    are the fitted TF-IDF encoder's (features + 2 reserved ids, the first character n-gram's id), set by
    ``augforge train``. ``in_channels`` is not used by text models."""
    if vocab_size < 2 or not 0 <= char_start <= vocab_size:
        raise ValueError(f"vocab_size {vocab_size} and char_start {char_start}: expected 2 <= vocab_size and "
                         "0 <= char_start <= vocab_size")
    return TfidfLinear(num_classes, vocab_size, char_start, pad_id)
