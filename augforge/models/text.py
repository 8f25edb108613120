"""Text classifiers over padded token ids and their lengths: fastText (the default: hashed word and character
n-grams averaged into a linear head), a transformer encoder and a BiLSTM."""

from __future__ import annotations

import math

import torch
from torch import nn

from augforge.models.registry import register_model
from augforge.models.layers import ClassifierMixin


def padding_mask(ids: torch.Tensor, lengths: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    """True at padded positions: from ``lengths`` when given, else where ``ids == pad_id``."""
    if lengths is None:
        return ids == pad_id
    positions = torch.arange(ids.shape[1], device=ids.device)
    return positions[None, :] >= lengths.to(ids.device)[:, None]


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """The transformer paper's sine-cosine position codes, (length, dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class TextTransformer(ClassifierMixin, nn.Module):
    """Embedding (scaled by sqrt(d)) + sine-cosine positions + pre-norm transformer encoder + masked mean pool."""

    input_kind = "tokens"

    def __init__(self, num_classes: int, vocab_size: int, d_model: int, heads: int, layers: int, mlp_ratio: float,
                 max_len: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.register_buffer("positions", sincos_1d(max_len, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, int(d_model * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)
        self.num_classes = num_classes

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[1] > self.positions.shape[0]:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_len {self.positions.shape[0]}")
        mask = padding_mask(ids, lengths, self.pad_id)
        x = self.embed(ids) * math.sqrt(self.d_model) + self.positions[: ids.shape[1]]
        x = self.norm(self.encoder(self.dropout(x), src_key_padding_mask=mask))
        keep = (~mask).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


class TextBiLSTM(ClassifierMixin, nn.Module):
    """Embedding + bidirectional LSTM over the packed sequence; the last hidden states of both directions."""

    input_kind = "tokens"

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, hidden: int, layers: int, dropout: float,
                 pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, num_classes)
        self.num_classes = num_classes

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            lengths = (~padding_mask(ids, None, self.pad_id)).sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(self.embed(ids)), lengths.cpu().clamp(min=1),
                                                   batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.head(self.dropout(torch.cat([hidden[-2], hidden[-1]], dim=1)))


class FastText(ClassifierMixin, nn.Module):
    """fastText (Joulin et al., 2017): the mean of the ids' embeddings (an ``EmbeddingBag`` that skips
    padding) into a linear layer. Fed ``augforge.pipelines.text_encoding.HashedEncoder`` ids, its input is
    the bag of words, word n-grams and character n-grams: as strong as TF-IDF + a linear model, and as fast."""

    input_kind = "tokens"

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=pad_id)
        nn.init.uniform_(self.embed.weight, -1.0 / embed_dim, 1.0 / embed_dim)  # fastText's initialisation
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:  # positions past a row's length are padding, whatever ids they hold
            ids = ids.masked_fill(padding_mask(ids, lengths, self.pad_id), self.pad_id)
        return self.head(self.dropout(self.embed(ids)))


@register_model
def fasttext(num_classes: int, in_channels: int = 3, vocab_size: int = (1 << 17) + 2, embed_dim: int = 32,
             dropout: float = 0.0, pad_id: int = 0) -> FastText:
    """fastText classifier; ``forward(ids, lengths)``. ``vocab_size``: the hashed encoder's buckets + 2."""
    _positive(vocab_size=vocab_size, embed_dim=embed_dim)
    return FastText(num_classes, vocab_size, embed_dim, dropout, pad_id)


def _positive(**values) -> None:
    """Refuse sizes below 1 when the model is built (not at its first forward pass)."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


@register_model
def text_transformer(num_classes: int, in_channels: int = 3, vocab_size: int = 30000, d_model: int = 128,
                     heads: int = 4, layers: int = 2, mlp_ratio: float = 4.0, max_len: int = 512,
                     dropout: float = 0.1, pad_id: int = 0) -> TextTransformer:
    """Transformer encoder classifier; ``forward(ids, lengths)``. ``in_channels`` is not used by text models."""
    _positive(vocab_size=vocab_size, d_model=d_model, heads=heads, layers=layers, max_len=max_len)
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
    return TextTransformer(num_classes, vocab_size, d_model, heads, layers, mlp_ratio, max_len, dropout, pad_id)


@register_model
def text_bilstm(num_classes: int, in_channels: int = 3, vocab_size: int = 30000, embed_dim: int = 128,
                hidden: int = 128, layers: int = 1, dropout: float = 0.2, pad_id: int = 0) -> TextBiLSTM:
    """BiLSTM baseline; ``forward(ids, lengths)``. ``in_channels`` is not used by text models."""
    _positive(vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden, layers=layers)
    return TextBiLSTM(num_classes, vocab_size, embed_dim, hidden, layers, dropout, pad_id)
