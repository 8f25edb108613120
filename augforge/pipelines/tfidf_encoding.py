"""The ``linear`` text model's encoder: TF-IDF word and character n-grams fitted on the train split."""

from __future__ import annotations

import numpy as np
import torch

from augforge.errors import AugforgeError, first_line
from augforge.pipelines.text_ids import RESERVED, TextEncoder, pad_batch, truncate_ids
from augforge.recipe.train import TextOptions


class TfidfEncoder(TextEncoder):
    """The ``linear`` model's input: scikit-learn's word n-grams (1 to ``word_ngrams``, its default token
    pattern) and ``char_wb`` character n-grams (``char_ngrams``), their vocabularies and smoothed idf fitted on
    the train split (at most ``vocab_size`` of each kind, the most frequent, when given). A text becomes each
    distinct known n-gram once, packed with its count as ``id + vocab_size * (count - 1)`` (see
    ``augforge.models.linear_text``); words are cut to ``max_tokens`` before the n-grams are taken. The
    checkpoint keeps the vocabularies as plain strings; the idf weights live in the model's state dict."""

    kind = "tfidf"
    RESERVED = RESERVED

    def __init__(self, options: TextOptions, terms: tuple[list[str], list[str]], idf: np.ndarray | None = None):
        super().__init__(options)
        self.terms = (list(terms[0]), list(terms[1]))
        self.index = {("w", t): i + self.RESERVED for i, t in enumerate(self.terms[0])}
        self.index.update({("c", t): i + self.char_start for i, t in enumerate(self.terms[1])})
        self.idf = idf
        self.analyzers = (self._vectorizer("word", options).build_analyzer(),
                          self._vectorizer("char_wb", options).build_analyzer() if options.char_ngrams[1] else None)

    @staticmethod
    def _vectorizer(analyzer: str, options: TextOptions, **extra):
        from sklearn.feature_extraction.text import TfidfVectorizer

        grams = (1, options.word_ngrams) if analyzer == "word" else tuple(options.char_ngrams)
        return TfidfVectorizer(analyzer=analyzer, ngram_range=grams, lowercase=options.lowercase,
                               sublinear_tf=True, dtype=np.float64, **extra)

    @classmethod
    def fit(cls, texts: list[str], options: TextOptions) -> TfidfEncoder:
        """Vocabularies and idf of ``texts`` (the train split's)."""
        if not texts:
            raise AugforgeError("train.model linear: the train split has no texts to fit the TF-IDF vocabulary on")
        texts = [_cut_words(t, options) for t in texts]
        terms, idf = [], [np.zeros(cls.RESERVED)]
        for analyzer in ("word", "char_wb") if options.char_ngrams[1] else ("word",):
            vectorizer = cls._vectorizer(analyzer, options, max_features=options.vocab_size)
            try:
                vectorizer.fit(texts)
            except ValueError as exc:  # e.g. no word of two letters anywhere
                raise AugforgeError(f"train.model linear: no {analyzer} n-grams to fit on ({first_line(exc)})") from None
            order = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            terms.append(order)
            idf.append(vectorizer.idf_)
        return cls(options, (terms[0], terms[1] if len(terms) > 1 else []), np.concatenate(idf))

    @property
    def char_start(self) -> int:
        """The id of the first character n-gram."""
        return self.RESERVED + len(self.terms[0])

    @property
    def vocab_size(self) -> int:
        """Feature ids run from 0 to ``vocab_size - 1`` (0 padding, 1 a text with no known n-gram)."""
        return self.char_start + len(self.terms[1])

    def _ids(self, texts):
        size, out = self.vocab_size, []
        for text in texts:
            text = _cut_words(text, self.options)
            counts: dict[int, int] = {}
            for kind, analyzer in zip("wc", self.analyzers):
                for gram in analyzer(text) if analyzer else ():
                    found = self.index.get((kind, gram))
                    if found is not None:
                        counts[found] = counts.get(found, 0) + 1
            out.append([i + size * (n - 1) for i, n in sorted(counts.items())])
        return out

    def encode(self, texts):
        """Padded packed ids and lengths (every distinct n-gram of the cut text once)."""
        return pad_batch(self.full_ids(texts), self.pad_id)

    def truncated(self, texts):
        return sum(len(t.split()) > self.options.max_tokens for t in texts)

    def model_options(self) -> dict:
        return {**super().model_options(), "char_start": self.char_start}

    def model_state(self) -> dict[str, torch.Tensor]:
        """The idf weights (the model's ``idf`` buffer); only a freshly fitted encoder has them."""
        if self.idf is None:
            raise AugforgeError("this TF-IDF encoder was restored from a checkpoint: its idf weights are in the "
                                "model's state dict, not here")
        return {"idf": torch.as_tensor(self.idf, dtype=torch.float32)}

    def spec(self) -> dict:
        """The options and the two vocabularies, each one newline-joined string (no n-gram holds a line
        break: both analyzers split on whitespace first), which a checkpoint saves 40× faster than a list."""
        return {**super().spec(), "terms": ["\n".join(self.terms[0]), "\n".join(self.terms[1])]}

    @classmethod
    def from_spec(cls, options: TextOptions, spec: dict) -> TfidfEncoder:
        """The encoder a checkpoint's spec describes (no idf: that is in the model's state dict)."""
        return cls(options, tuple(t.split("\n") if t else [] for t in spec["terms"]))


def _cut_words(text: str, options: TextOptions) -> str:
    """``text`` cut to ``max_tokens`` whitespace-separated words as ``truncate`` says (unchanged when shorter)."""
    words = text.split()
    if len(words) <= options.max_tokens:
        return text
    return " ".join(truncate_ids(words, options.max_tokens, options.truncate))
