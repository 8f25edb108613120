"""Text augmentation: EDA on offline WordNet, and nlpaug's augmenters that need nothing downloaded.

Every op works on one sentence with a seeded ``random.Random``, so a variant depends only on
(seed, row id, copy index). Protected tokens (numbers, capitalised names, a user list, regular
expressions) are never changed, moved or deleted: the ops skip them, and a variant that lost
one anyway (an nlpaug augmenter) is dropped.

EDA (Wei and Zou, 2019): synonym replacement (``alpha_sr``), random insertion of a synonym of a word
of the sentence (``alpha_ri``), random swap (``alpha_rs``) and random deletion (``p_rd``); each
variant uses one of the four, ``n = max(1, alpha * words)`` times. Synonyms come from WordNet 3.0
without a POS tagger (none is available offline), as in EDA; stop words are never replaced.

Words are segmented with ``augforge.augment.words`` (every script's letters, CJK runs kept whole), and
edits work on the segmented source: text no edit touched comes out byte for byte. Variants made by
nlpaug or a model are re-spaced against their source the same way.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from augforge.augment.text_models import model_op
from augforge.augment.wordnet import synonyms, wordnet_pos
from augforge.augment.words import Words, is_number, is_word, match_case, respace, tokenize
from augforge.errors import AugforgeError

EDA_TECHNIQUES = ("sr", "ri", "rs", "rd")


def stop_words() -> frozenset[str]:
    """English stop words (scikit-learn's list): never replaced by synonyms."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@dataclass(frozen=True)
class Protect:
    """Tokens no op may change: numbers, capitalised names (not sentence-initial), a word list, patterns."""

    numbers: bool = True
    names: bool = False
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    _compiled: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_compiled", tuple(re.compile(p) for p in self.patterns))

    def mask(self, tokens: list[str]) -> list[bool]:
        """Which tokens are protected."""
        words = {w.lower() for w in self.words}
        out = []
        for i, tok in enumerate(tokens):
            hit = (self.numbers and is_number(tok)) or tok.lower() in words
            hit = hit or (self.names and i > 0 and tok[:1].isupper() and tokens[i - 1] not in ".!?")
            hit = hit or any(p.fullmatch(tok) for p in self._compiled)
            out.append(hit)
        return out

    @property
    def active(self) -> bool:
        """Whether anything is protected at all."""
        return bool(self.numbers or self.names or self.words or self.patterns)

    def tokens(self, text: str) -> list[str]:
        """The protected tokens of ``text``, in order."""
        if not self.active:
            return []
        toks = tokenize(text)
        return [t for t, m in zip(toks, self.mask(toks)) if m]


@dataclass
class EDA:
    """EDA's four operations on word tokens, skipping protected tokens and stop words where EDA does."""

    alpha_sr: float = 0.1
    alpha_ri: float = 0.1
    alpha_rs: float = 0.1
    p_rd: float = 0.1
    techniques: tuple[str, ...] = EDA_TECHNIQUES
    protect: Protect = field(default_factory=Protect)
    min_words: int = 1
    stop: frozenset = field(default_factory=stop_words)
    #: scripts without spaces: a run is one word (``run``) or each character is (``char``), or a segmenter
    cjk: object = "run"

    def _count(self, alpha: float, n_words: int) -> int:
        return max(1, int(alpha * n_words))

    def replaceable(self, tokens: list[str], mask: list[bool]) -> list[int]:
        """Positions whose word may be replaced: a word, not protected, not a stop word, with synonyms."""
        stop = self.stop
        return [i for i, t in enumerate(tokens)
                if not mask[i] and is_word(t) and (low := t.lower()) not in stop and synonyms(low)]

    def synonym_replacement(self, words: Words, rng: random.Random) -> Words:
        """Replace up to n distinct replaceable words with a random WordNet synonym each (case kept)."""
        tokens = words.tokens
        count, replaceable, _ = self._facts(tokens, words.flags)
        places = list(replaceable)
        rng.shuffle(places)
        for i in places[: self._count(self.alpha_sr, count)]:
            words = words.replace(i, match_case(rng.choice(self._synonyms_at(tokens, i)), tokens[i]))
        return words

    def random_insertion(self, words: Words, rng: random.Random) -> Words:
        """Insert n synonyms of words of the sentence, each at a random word boundary."""
        count, replaceable, _ = self._facts(words.tokens, words.flags)
        sources = [words.tokens[i].lower() for i in replaceable]
        if not sources:
            return words
        for _ in range(self._count(self.alpha_ri, count)):
            word = rng.choice(synonyms(rng.choice(sources)))
            words = words.insert(rng.choice(words.gaps()), word)
        return words

    def random_swap(self, words: Words, rng: random.Random) -> Words:
        """Swap the words at two random unprotected word positions, n times (the token multiset is kept)."""
        places = self._facts(words.tokens, words.flags)[2]
        if len(places) < 2:
            return words
        for _ in range(self._count(self.alpha_rs, len(places))):
            a, b = rng.sample(places, 2)
            words = words.swap(a, b)
        return words

    def random_deletion(self, words: Words, rng: random.Random) -> Words:
        """Delete each unprotected word with probability p_rd, keeping at least ``min_words`` words."""
        count, _, editable = self._facts(words.tokens, words.flags)
        keep = [True] * len(words.tokens)
        p_rd, draw = self.p_rd, rng.random
        for i in editable:  # one draw per unprotected word, in order
            if draw() < p_rd:
                keep[i] = False
        kept_words = count - keep.count(False)
        need = min(max(self.min_words, 1), count)
        if kept_words < need:  # restore deleted words, in a random order, until enough are left
            deleted = [i for i, k in enumerate(keep) if not k]
            rng.shuffle(deleted)
            for i in deleted[: need - kept_words]:
                keep[i] = True
        return words.delete({i for i, k in enumerate(keep) if not k})

    def _parsed(self, text: str) -> Words:
        """``text`` segmented, with its protection mask, kept for the next variants of the same text."""
        cache = self.__dict__.setdefault("_cache", {})
        if text not in cache:
            if len(cache) > 4096:  # the per-list caches below are keyed by list identity: clear them together
                cache.clear()
                self.__dict__.get("_pos", {}).clear()
                self.__dict__.get("_facts_cache", {}).clear()
            cache[text] = words = Words.of(text, self.protect.mask, self.cjk)
            self.__dict__.setdefault("_pos", {})[id(words.tokens)] = wordnet_pos(words.tokens)
        return cache[text]

    def _pos_of(self, tokens: list[str], i: int) -> str | None:
        """The WordNet part of speech of token ``i`` when a POS tagger is installed, else None."""
        tags = self.__dict__.get("_pos", {}).get(id(tokens))
        return tags[i] if tags is not None and i < len(tags) else None

    def _synonyms_at(self, tokens: list[str], i: int) -> tuple[str, ...]:
        """Synonyms of token ``i``: of its part of speech when tagged (and it has some), else of every one."""
        pos = self._pos_of(tokens, i)
        word = tokens[i].lower()
        return (synonyms(word, pos) if pos else ()) or synonyms(word)

    def _facts(self, tokens: list[str], mask: list[bool]) -> tuple[int, list[int], list[int]]:
        """(word count, replaceable positions, unprotected word positions) of a parsed text, cached with it."""
        key = id(tokens)
        facts = self.__dict__.setdefault("_facts_cache", {})
        if key not in facts or facts[key][0] is not tokens:
            if len(facts) > 4096:
                facts.clear()
            flags = [t[:1].isalpha() for t in tokens]
            facts[key] = (tokens, sum(flags), self.replaceable(tokens, mask),
                          [i for i, (w, m) in enumerate(zip(flags, mask)) if w and not m])
        return facts[key][1:]

    def augment(self, text: str, rng: random.Random, technique: str | None = None) -> str:
        """One EDA variant of ``text`` (the technique drawn from ``techniques`` unless given)."""
        words = self._parsed(text)
        if not words.tokens:
            return text
        technique = technique or rng.choice(self.techniques)
        op = {"sr": self.synonym_replacement, "ri": self.random_insertion, "rs": self.random_swap,
              "rd": self.random_deletion}[technique]
        return op(words, rng).text()


def eda(sentence: str, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1, p_rd: float = 0.1,
        n_aug: int = 9, seed: int = 0, protect: Protect | None = None) -> list[str]:
    """EDA's function: ``n_aug`` variants of ``sentence``, an equal share from each of the four techniques."""
    aug = EDA(alpha_sr, alpha_ri, alpha_rs, p_rd, protect=protect or Protect())
    rng = random.Random(seed)
    return [aug.augment(sentence, rng, EDA_TECHNIQUES[i % 4]) for i in range(n_aug)]


# -- nlpaug ----------------------------------------------------------------------------------------

NLPAUG = {
    # op name: (module, class, fixed keyword arguments)
    "keyboard": ("nlpaug.augmenter.char", "KeyboardAug", {}),
    "ocr": ("nlpaug.augmenter.char", "OcrAug", {}),
    "char_random": ("nlpaug.augmenter.char", "RandomCharAug", {}),
    "word_random": ("nlpaug.augmenter.word", "RandomWordAug", {}),
    "tfidf": ("nlpaug.augmenter.word", "TfIdfAug", {}),
    "word_embs": ("nlpaug.augmenter.word", "WordEmbsAug", {}),
}


_NUMPY_STATE = np.random.mtrand._rand


def seed_everything(key: int) -> None:
    """Seed the global generators nlpaug draws from (Python's ``random`` and numpy's)."""
    random.seed(key)
    _NUMPY_STATE.seed(key & 0xFFFFFFFF)


class _LastTextMemo:
    """A tokenizer remembering its last text: the variants of one row are made in a row, so their tokens
    are computed once. Each call gets its own copy of the list (nlpaug may change it)."""

    def __init__(self, tokenizer: Callable[[str], list]) -> None:
        self.tokenizer = tokenizer
        self._text: str | None = None
        self._tokens: list = []

    def __call__(self, text: str) -> list:
        if text != self._text:
            self._text, self._tokens = text, self.tokenizer(text)
        return list(self._tokens)


@dataclass
class NlpaugOp:
    """An nlpaug augmenter behind augforge's protection: protected tokens become nlpaug stop words."""

    name: str
    options: dict

    def __post_init__(self):
        import importlib

        module, cls, fixed = NLPAUG[self.name]
        try:
            self._aug = getattr(importlib.import_module(module), cls)(**fixed, **self.options)
        except ModuleNotFoundError as exc:
            extra = "embeddings" if self.name == "word_embs" else "text"
            raise AugforgeError(f"nlpaug {cls} needs {exc.name}: pip install 'augforge[{extra}]'") from None
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise AugforgeError(f"nlpaug {cls}: {exc}") from None
        if self.name == "tfidf":  # nlpaug keeps one TF-IDF model per process, whatever the path: load this one
            self._aug.model = self._aug.get_model(force_reload=True)
        if callable(getattr(self._aug, "tokenizer", None)):
            self._aug.tokenizer = _LastTextMemo(self._aug.tokenizer)

    def augment(self, text: str, protected: list[str]) -> str:
        """One variant (nlpaug returns a list); protected words are passed as its stop words."""
        if not hasattr(self, "_own_stopwords"):
            self._own_stopwords = list(getattr(self._aug, "stopwords", None) or [])
        self._aug.stopwords = self._own_stopwords + protected if protected else self._own_stopwords
        out = self._aug.augment(text)
        return out[0] if isinstance(out, list) else out


def train_tfidf(corpus: list[str], folder) -> str:
    """Fit nlpaug's TF-IDF model on the dataset's own texts, save it in ``folder``; return the folder."""
    from pathlib import Path

    import nlpaug.model.word_stats as nmw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = nmw.TfIdf()
    model.train([[t.lower() for t in tokenize(text) if is_word(t)] for text in corpus])
    model.save(str(folder))
    return str(folder)


# -- the chain a recipe describes ------------------------------------------------------------------


@dataclass
class TextAugmenter:
    """Applies a recipe's text ops in order (each with its probability) to make one variant per call.

    ``variant(text, key)`` is deterministic in (text, key); ``key`` comes from (seed, row id, copy).
    """

    ops: list  # (name, probability, callable(text, rng, protected) -> text)
    protect: Protect
    min_words: int = 1

    def __post_init__(self):
        #: some op is not EDA: it draws from the global generators and its output is checked
        self.foreign = any(name != "eda" for name, _, _ in self.ops)

    def variant(self, text: str, key: int | random.Random) -> str | None:
        """A variant of ``text``, or None when it was rejected: an op lost a protected token, or fewer than
        ``min_words`` words are left. Deterministic in (text, key); the same as ``variants(text, 1, key)[0]``."""
        return self.variants(text, 1, key)[0]

    def variants(self, text: str, n: int, key: int | random.Random) -> list[str | None]:
        """``n`` variants of ``text`` drawn in sequence (each None where it was rejected, as in ``variant``).

        ``key`` is a seed or a ``random.Random``; the build seeds it from (seed, row id), so variant ``j``
        is fixed by (seed, row id, j). EDA keeps protected tokens by construction and draws from that
        generator only. The other ops (nlpaug, models) draw from the global generators: those are seeded
        from it once, before the first variant, and each variant is checked after.
        """
        rng = key if isinstance(key, random.Random) else random.Random(key)
        foreign = self.foreign
        protected = self.protect.tokens(text) if foreign else []
        if foreign:
            seed_everything(rng.getrandbits(63))
        return [self._variant(text, rng, foreign, protected) for _ in range(n)]

    def _variant(self, text: str, rng: random.Random, foreign: bool, protected: list[str]) -> str | None:
        out = text
        for name, p, run in self.ops:
            if p >= 1.0 or rng.random() < p:
                made = run(out, rng, protected)
                out = made if name == "eda" else respace(out, made)
        if protected and Counter(protected) - Counter(tokenize(out)):  # a protected token was changed or lost
            return None
        if foreign and self.min_words > 1 and sum(map(is_word, tokenize(out))) < self.min_words:
            return None
        return out


def build_text_augmenter(specs, protect: Protect, min_words: int, corpus: list[str] | None = None,
                         workdir=None) -> TextAugmenter:
    """Turn validated text op specs into a ``TextAugmenter`` (TF-IDF is trained on ``corpus``)."""
    ops: list[tuple[str, float, Callable]] = []
    for spec in specs:
        params = dict(spec.params)
        if spec.name == "eda":
            eda_op = EDA(params["alpha_sr"], params["alpha_ri"], params["alpha_rs"], params["p_rd"],
                         tuple(params["techniques"]), protect=protect, min_words=min_words, cjk=params["cjk"])
            ops.append((spec.name, spec.p, lambda text, rng, _, a=eda_op: a.augment(text, rng)))
            continue
        if spec.name in ("back_translation", "contextual"):
            ops.append((spec.name, spec.p, model_op(spec.name, params, spec.where)))
            continue
        if spec.name == "tfidf":
            if not corpus:
                raise AugforgeError(f"{spec.where}: tfidf needs the dataset's texts to train on")
            params["model_path"] = train_tfidf(corpus, workdir or _tmpdir())
        if spec.name in ("keyboard", "char_random") and protect.numbers:
            params["include_numeric"] = False  # digits are protected: no typos inside numbers
        if spec.name == "word_random":
            params["target_words"] = list(params["target_words"]) or None
            if params["action"] == "substitute" and not params["target_words"]:
                raise AugforgeError(f"{spec.where}.target_words: action substitute needs words to substitute in")
        if spec.name == "word_embs":
            from pathlib import Path

            if not Path(params["model_path"]).is_file():
                raise AugforgeError(f"{spec.where}.model_path: {params['model_path']}: no such embeddings file "
                                    "(word2vec .bin, GloVe .txt or fastText .vec, read locally)")
        nl = NlpaugOp(spec.name, params)
        ops.append((spec.name, spec.p, lambda text, rng, protected, a=nl: a.augment(text, protected)))
    return TextAugmenter(ops, protect, min_words)


def _tmpdir():
    import tempfile

    return tempfile.mkdtemp(prefix="augforge-tfidf-")
