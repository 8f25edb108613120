"""What every text encoder shares (``augforge.pipelines.text_encoding`` has the encoders): truncation of id
lists, padding of a batch, and ``TextEncoder``, the base class with the per-text memo."""

from __future__ import annotations

from dataclasses import asdict

import torch

from augforge.recipe.train import TextOptions

#: ids 0 (padding) and 1 (a text with no known piece) are reserved by the hashed and TF-IDF encoders
RESERVED = 2


def truncate_ids(ids: list[int], max_tokens: int, how: str) -> list[int]:
    """``ids`` cut to ``max_tokens`` as ``how`` says (head, tail, head+tail)."""
    if len(ids) <= max_tokens:
        return ids
    if how == "head":
        return ids[:max_tokens]
    if how == "tail":
        return ids[len(ids) - max_tokens :]
    head = max_tokens // 4
    return ids[:head] + ids[len(ids) - (max_tokens - head) :]


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded int64 ids ``(batch, longest)`` and int64 lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    ids = torch.full((len(rows), int(lengths.max()) if rows else 0), pad_id, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.int64)
    return ids, lengths


class TextEncoder:
    """What every encoder shares: per-text memo, truncation, padding, the truncated count, and what the model
    takes from it (``model_options``, ``model_state``)."""

    pad_id = 0
    unk_id = 1

    def __init__(self, options: TextOptions) -> None:
        self.options = options
        self._memo: dict[str, list[int]] = {}

    def _ids(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def full_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids before truncation (memoised: a split's texts are encoded once)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            if len(self._memo) > 500_000:
                self._memo.clear()
            for text, ids in zip(todo, self._ids(todo)):
                self._memo[text] = ids or [self.unk_id]
        return [self._memo[t] for t in texts]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids and lengths of ``texts``, each truncated to ``max_tokens``."""
        o = self.options
        return pad_batch([truncate_ids(ids, o.max_tokens, o.truncate) for ids in self.full_ids(texts)], self.pad_id)

    def truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_tokens`` (and lose tokens)."""
        return sum(len(ids) > self.options.max_tokens for ids in self.full_ids(texts))

    def model_options(self) -> dict:
        """The model options that must equal the encoder's (a model takes those it has)."""
        return {"vocab_size": self.vocab_size, "pad_id": self.pad_id}

    def model_state(self) -> dict[str, torch.Tensor]:
        """Tensors a fresh model takes from the fitted encoder (its state dict's names); none for most."""
        return {}

    def spec(self) -> dict:
        """JSON that ``encoder_from_spec`` turns back into this encoder (stored in checkpoints)."""
        options = asdict(self.options)
        options["char_ngrams"] = list(options["char_ngrams"])
        return {"kind": self.kind, "options": options}
