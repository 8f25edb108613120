"""Texts -> padded token ids for the text models, with truncation; saved with the model as JSON.

Four encoders, one interface (``encode``, ``vocab_size``, ``pad_id``, ``spec``; ``augforge.pipelines.text_ids``):

- ``TokenizerEncoder``: a Hugging Face ``tokenizers`` tokenizer (BPE, WordPiece or whole words),
  trained on the train split's texts with a vocabulary size, or read from a local ``tokenizer.json``.
  BPE and word tokenizers train to the same vocabulary every time; HF's WordPiece trainer breaks
  frequency ties in hash order, so two trainings may differ in their last few pieces (the checkpoint
  keeps the one a model was trained with). Normalisation is NFC (+ lower case); pre-tokenisation is BERT's (whitespace and
  punctuation, CJK per character), so accented words and every script stay whole. Its JSON goes into
  the checkpoint.
- ``HashedEncoder``: fastText's input (Joulin et al., 2017): the lower-cased words of
  ``augforge.augment.words``, their n-grams up to ``word_ngrams`` and the character n-grams of
  ``<word>`` from ``char_ngrams[0]`` to ``char_ngrams[1]``, each hashed (xxh3, seeded) into ``buckets``
  rows of an embedding table. Nothing is fitted, so nothing but its settings is saved.
- ``PretrainedEncoder``: the tokenizer of a local Hugging Face model directory (``text_encoder``).
- ``TfidfEncoder`` (``augforge.pipelines.tfidf_encoding``): the ``linear`` model's TF-IDF word and character
  n-grams, fitted on the train split.

Truncation: texts longer than ``max_tokens`` keep their first tokens (``head``), their last (``tail``) or
a quarter from the start and the rest from the end (``head+tail``, Sun et al., 2019). ``truncated(texts)``
counts the rows that lose tokens; ``augforge train`` reports it per split.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xxhash

from augforge.augment.words import tokenize
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError, first_line
from augforge.models import model_options
from augforge.models.text_encoder import local_config, local_tokenizer
from augforge.pipelines.text_ids import RESERVED, TextEncoder, pad_batch, truncate_ids
from augforge.pipelines.tfidf_encoding import TfidfEncoder
from augforge.recipe.train import TEXT_TOKENIZERS, TextOptions

TOKENIZERS = ("bpe", "wordpiece", "word")
KINDS = TEXT_TOKENIZERS
PAD, UNK = "[PAD]", "[UNK]"


class TokenizerEncoder(TextEncoder):
    """A Hugging Face ``tokenizers`` tokenizer: trained here, read from a file, or restored from JSON."""

    def __init__(self, options: TextOptions, tokenizer, kind: str) -> None:
        super().__init__(options)
        self.tokenizer, self.kind = tokenizer, kind
        self.pad_id = _special_id(tokenizer, (PAD, "<pad>", "[pad]"), "padding")
        unk = _special_id(tokenizer, (UNK, "<unk>", "[unk]"), "unknown", required=False)
        self.unk_id = self.pad_id if unk is None else unk

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to ``vocab_size - 1``."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _ids(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def spec(self) -> dict:
        return {**super().spec(), "tokenizer": self.tokenizer.to_str()}


def _special_id(tokenizer, names: tuple[str, ...], what: str, required: bool = True) -> int | None:
    for name in names:
        found = tokenizer.token_to_id(name)
        if found is not None:
            return int(found)
    if required:
        raise AugforgeError(f"the tokenizer has no {what} token (one of {', '.join(names)}); add one to it")
    return None


def train_tokenizer(texts: list[str], options: TextOptions, kind: str, vocab_size: int) -> TokenizerEncoder:
    """A ``kind`` tokenizer (bpe, wordpiece, word) of at most ``vocab_size`` ids, trained on ``texts``."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    if vocab_size < 3:
        raise AugforgeError(f"vocabulary size {vocab_size}: expected at least 3 (padding, unknown, one token)")
    special = [PAD, UNK]
    model, trainer = {
        "wordpiece": (models.WordPiece(unk_token=UNK), trainers.WordPieceTrainer),
        "bpe": (models.BPE(unk_token=UNK), trainers.BpeTrainer),
        "word": (models.WordLevel(unk_token=UNK), trainers.WordLevelTrainer),
    }[kind]
    tokenizer = Tokenizer(model)
    steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if options.lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if kind == "wordpiece":
        tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainer(vocab_size=vocab_size, special_tokens=special, show_progress=False))
    return TokenizerEncoder(options, tokenizer, kind)


class HashedEncoder(TextEncoder):
    """fastText's hashed word, word n-gram and character n-gram ids (see the module docstring)."""

    kind = "hashed"
    RESERVED = RESERVED  # hashed ids are 2 .. buckets + 1

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to ``vocab_size - 1``."""
        return self.options.buckets + self.RESERVED

    def _hash(self, piece: str) -> int:
        return xxhash.xxh3_64_intdigest(piece.encode("utf-8", "surrogatepass")) % self.options.buckets + self.RESERVED

    def _ids(self, texts):
        o = self.options
        low, high = o.char_ngrams
        out = []
        for text in texts:
            words = truncate_ids([w.lower() if o.lowercase else w for w in tokenize(text)], o.max_tokens, o.truncate)
            ids = [self._hash("w\x00" + w) for w in words]
            for n in range(2, o.word_ngrams + 1):
                ids += [self._hash("n\x00" + "\x00".join(words[i : i + n])) for i in range(len(words) - n + 1)]
            if high:
                for w in words:
                    marked = f"<{w}>"
                    ids += [self._hash("c\x00" + marked[i : i + n]) for n in range(low, high + 1)
                            for i in range(len(marked) - n + 1) if marked[i : i + n] != marked]
            out.append(ids)
        return out

    def encode(self, texts):
        """Padded ids and lengths: the words are cut to ``max_tokens`` before their n-grams are taken."""
        return pad_batch(self.full_ids(texts), self.pad_id)

    def truncated(self, texts):
        return sum(len(tokenize(t)) > self.options.max_tokens for t in texts)


class PretrainedEncoder(TokenizerEncoder):
    """The tokenizer of a local Hugging Face model directory (what a ``text_encoder`` was trained with), with
    the model's special tokens ([CLS], [SEP] or their like) added as the model expects."""

    def __init__(self, options: TextOptions, tokenizer_json: str | None = None) -> None:
        from tokenizers import Tokenizer

        if tokenizer_json is None:
            tokenizer_json = local_tokenizer(options.path)
        tokenizer = Tokenizer.from_str(tokenizer_json)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        super().__init__(options, tokenizer, "pretrained")

    def _ids(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]


def fit_encoder(options: TextOptions, model: str, train_texts: list[str], vocab_size: int | None) -> TextEncoder:
    """The encoder ``options`` describe for ``model``; a trained tokenizer learns from ``train_texts``
    (``vocab_size``: its size when the options give none)."""
    kind = options.kind_for(model)
    if kind == "hashed":
        return HashedEncoder(options)
    if kind == "tfidf":
        return TfidfEncoder.fit(train_texts, options)
    if kind == "pretrained":
        if not options.path:
            raise AugforgeError("train.text.tokenizer: pretrained needs a text_encoder model (its path option)")
        return PretrainedEncoder(options)
    if kind == "file":
        from pathlib import Path

        from tokenizers import Tokenizer

        path = Path(options.tokenizer)
        if not path.is_file():
            raise AugforgeError(f"train.text.tokenizer: {path}: no such tokenizer file (a tokenizer.json saved by "
                                "Hugging Face tokenizers), and not one of " + ", ".join(KINDS))
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise AugforgeError(f"{path}: not a Hugging Face tokenizer file ({first_line(exc)})") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return TokenizerEncoder(options, tokenizer, "file")
    size = options.vocab_size or vocab_size or 16_000
    return train_tokenizer(train_texts, options, kind, int(size))


def fitting_texts(data, rows=None, cache=None) -> list[str]:
    """The texts a learning encoder (tokenizer, TF-IDF) is fitted on: a dataset directory's train split, or only
    ``rows`` of it (a cross-fit fold's training rows: the held-out rows' words must not shape the features).
    ``cache``: how a remote dataset is cached (``CacheOptions``)."""
    texts = Dataset(data, "train", verify=False, cache=cache).texts()
    return texts if rows is None else [texts[i] for i in rows]


def text_encoder_for(text, model: str = "fasttext", overrides: dict | None = None, train_texts=None) -> TextEncoder:
    """The one place a text encoder is chosen. ``text``: an encoder (used as it is), a checkpoint's spec (a
    dict: restored, nothing refitted), or ``TextOptions`` (None: the defaults) made for ``model`` with its
    options (its defaults, then ``overrides``): the model's ``max_len`` caps ``max_tokens``, a text_encoder
    brings its own tokenizer and position limit, and a tokenizer that learns is trained on ``train_texts()``
    (called only then), as large as the model's ``vocab_size`` unless ``train.text.vocab_size`` says."""
    if isinstance(text, dict):
        return encoder_from_spec(text)
    if text is not None and not isinstance(text, TextOptions):
        return text
    options = text or TextOptions()
    overrides = overrides or {}
    defaults = {**model_options(model), **overrides}
    if isinstance(defaults.get("max_len"), int):
        options = replace(options, max_tokens=min(options.max_tokens, defaults["max_len"]))
    if model == "text_encoder":
        limit = local_config(defaults.get("path")).get("max_position_embeddings")
        options = replace(options, path=str(defaults.get("path") or ""),
                          max_tokens=min(options.max_tokens, int(limit or options.max_tokens)))
    learns = options.kind_for(model) in TOKENIZERS + ("tfidf",)
    texts = train_texts() if learns and train_texts is not None else []
    size = overrides.get("vocab_size")
    return fit_encoder(options, model, texts, size if isinstance(size, int) else None)


def encoder_from_spec(spec: dict) -> TextEncoder:
    """The encoder a checkpoint's ``input.text`` spec describes (nothing is refitted)."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise AugforgeError("the checkpoint's text encoder spec is missing or damaged")
    raw = dict(spec.get("options") or {})
    raw["char_ngrams"] = tuple(raw.get("char_ngrams") or (0, 0))
    options = TextOptions(**raw)
    if spec["kind"] == "hashed":
        return HashedEncoder(options)
    if spec["kind"] == "tfidf":
        return TfidfEncoder.from_spec(options, spec)
    if spec["kind"] == "pretrained":
        return PretrainedEncoder(options, spec["tokenizer"])
    from tokenizers import Tokenizer

    return TokenizerEncoder(options, Tokenizer.from_str(spec["tokenizer"]), spec["kind"])


def lengths_summary(encoder: TextEncoder, texts: list[str]) -> dict:
    """Token counts of ``texts`` before truncation (median, 95th percentile, max) and how many are cut."""
    counts = np.array([len(ids) for ids in encoder.full_ids(texts)] or [0])
    return {"median": float(np.median(counts)), "p95": float(np.percentile(counts, 95)), "max": int(counts.max()),
            "truncated": encoder.truncated(texts)}
