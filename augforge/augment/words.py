"""Unicode-aware word segmentation, and edits that keep the untouched text byte for byte.

``segment(text)`` cuts a text into tokens (words, numbers, single punctuation marks) and the separators
between them, so that ``"".join`` of separators and tokens gives the text back exactly. Words are runs of
letters and combining marks in any script (``Café``, ``brûlée``, ``naïve``, ``résumé`` stay whole, in
composed or decomposed form), with inner apostrophes and hyphens. Scripts written without spaces (Han,
Hiragana, Katakana) are one token per run by default (``cjk="run"``), one per character with
``cjk="char"``, or cut by any callable segmenter (jieba's ``lcut``, for instance).

``Words`` edits the tokens (replace, swap, delete, insert) and renders the result: tokens and separators
that no edit touched are copied from the source, so ``--``, quotes and CJK text come out as they went in.
``respace(source, variant)`` does the same for a variant made elsewhere (nlpaug, a model): where its
tokens equal the source's, the source's spacing is restored.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import regex

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}ー々〆"
_WORD = rf"(?:[^\P{{L}}{_CJK}]|\p{{M}})"  # a letter outside the CJK scripts, or a combining mark
_TOKEN = regex.compile(
    rf"(?P<cjk>[{_CJK}]+)"
    rf"|(?P<word>(?:[^\P{{L}}{_CJK}])(?:{_WORD}|\p{{Nd}})*(?:['’\-](?:{_WORD})+)*)"
    r"|(?P<number>\p{Nd}+(?:[.,:/]\p{Nd}+)*)"
    r"|(?P<other>[^\s\x1c-\x1f]\p{M}*)"  # what str.isspace() calls whitespace separates, as \s does
)
#: the same tokens as one capturing group: ``split`` gives separators and tokens alternately, in C
_SPLIT = regex.compile("(" + regex.sub(r"\(\?P<\w+>", "(?:", _TOKEN.pattern) + ")")
#: the same split for ASCII text, on the faster standard ``re`` (equal to ``_SPLIT`` there, tested)
_ASCII_SPLIT = re.compile(r"([A-Za-z][A-Za-z0-9]*(?:['\-][A-Za-z]+)*|[0-9]+(?:[.,:/][0-9]+)*|\S)")
NUMBER = regex.compile(r"^\p{Nd}+(?:[.,:/]\p{Nd}+)*$")
CJK_MODES = ("run", "char")


def is_word(token: str) -> bool:
    """Whether a token is a word (starts with a letter of any script: ``str.isalpha`` is unicode-aware)."""
    return token[:1].isalpha()


def is_number(token: str) -> bool:
    """Whether a token is a number (digits, with inner . , : /)."""
    return bool(NUMBER.match(token))


def segment(text: str, cjk: str | Callable[[str], list[str]] = "run") -> tuple[list[str], list[str]]:
    """``(tokens, separators)`` with ``len(separators) == len(tokens) + 1``; separators are whitespace.

    ``text == seps[0] + tokens[0] + seps[1] + ... + tokens[-1] + seps[-1]`` always holds."""
    if cjk == "run":
        parts = (_ASCII_SPLIT if text.isascii() else _SPLIT).split(text)
        return parts[1::2], parts[0::2]
    tokens, seps, at = [], [], 0
    for match in _TOKEN.finditer(text):
        pieces = [match.group()]
        if match.lastgroup == "cjk":
            pieces = list(match.group()) if cjk == "char" else [p for p in cjk(match.group()) if p]
            if "".join(pieces) != match.group():
                raise ValueError("the CJK segmenter must return pieces that join back to its input")
        for k, piece in enumerate(pieces):
            seps.append(text[at : match.start()] if k == 0 else "")
            tokens.append(piece)
            at = match.end() if k == len(pieces) - 1 else at
    seps.append(text[at:])
    return tokens, seps


@lru_cache(maxsize=65_536)
def _segment_cached(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tokens, seps = segment(text)
    return tuple(tokens), tuple(seps)


def tokenize(text: str) -> list[str]:
    """The tokens of ``text`` (see ``segment``), CJK runs whole."""
    return list(_segment_cached(text)[0])


def join(tokens: list[str], seps: list[str]) -> str:
    """The text of ``tokens`` with ``seps`` between them (the inverse of ``segment``)."""
    out = [seps[0]]
    for token, sep in zip(tokens, seps[1:]):
        out += (token, sep)
    return "".join(out)


@dataclass
class Words:
    """A segmented text under edit: tokens, the separators around them and a per-token flag (protected).

    Every edit returns a new ``Words``; ``text()`` renders it with untouched separators as they were."""

    tokens: list[str]
    seps: list[str]
    flags: list[bool]

    @classmethod
    def of(cls, text: str, flags: Callable[[list[str]], list[bool]] | None = None, cjk="run") -> "Words":
        """``text`` segmented, with ``flags(tokens)`` (all False when not given)."""
        tokens, seps = segment(text, cjk)
        return cls(tokens, seps, flags(tokens) if flags else [False] * len(tokens))

    def text(self) -> str:
        """The edited text."""
        return join(self.tokens, self.seps)

    def replace(self, i: int, token: str) -> "Words":
        """Token ``i`` replaced."""
        tokens = list(self.tokens)
        tokens[i] = token
        return Words(tokens, list(self.seps), list(self.flags))

    def swap(self, a: int, b: int) -> "Words":
        """Tokens ``a`` and ``b`` exchanged (the separators stay where they are)."""
        tokens, flags = list(self.tokens), list(self.flags)
        tokens[a], tokens[b] = tokens[b], tokens[a]
        flags[a], flags[b] = flags[b], flags[a]
        return Words(tokens, list(self.seps), flags)

    def delete(self, drop: set[int]) -> "Words":
        """The tokens at ``drop`` removed. Of the two separators around a removed token one is kept: the
        one before it when both hold whitespace (``a b c`` -> ``a c``), none when either is empty
        (``a b.`` -> ``a.``, ``(b c)`` -> ``(c)``)."""
        tokens, seps, flags = [], [self.seps[0]], []
        for i, token in enumerate(self.tokens):
            after = self.seps[i + 1]
            if i in drop:  # the last token's trailing whitespace stays the text's end
                seps[-1] = after if i == len(self.tokens) - 1 else (seps[-1] if seps[-1] and after else "")
                continue
            tokens.append(token)
            flags.append(self.flags[i])
            seps.append(after)
        if not tokens:
            seps = [self.seps[0] + self.seps[-1]]
        return Words(tokens, seps, flags)

    def gaps(self) -> list[int]:
        """Where a word may be inserted: the start, any whitespace between tokens, and the end when the
        text ends with a word (never inside ``don't`` or before a closing mark)."""
        n = len(self.tokens)
        inner = [g for g in range(1, n) if self.seps[g]]
        end = [n] if n and is_word(self.tokens[-1]) else []
        return [0, *inner, *end]

    def insert(self, gap: int, token: str, flag: bool = False) -> "Words":
        """``token`` inserted at ``gap`` (one of ``gaps()``), set off by a space."""
        tokens, flags, seps = list(self.tokens), list(self.flags), list(self.seps)
        tokens.insert(gap, token)
        flags.insert(gap, flag)
        if gap == 0:
            seps.insert(1, " " if len(tokens) > 1 else "")
        elif gap == len(self.tokens):
            seps.insert(gap, " ")
        else:
            seps.insert(gap + 1, " ")
        return Words(tokens, seps, flags)


def respace(source: str, variant: str) -> str:
    """``variant`` with the source's separators restored between tokens that stand for consecutive source
    tokens (equal, or replaced one for one): an augmenter that re-joins tokens with spaces (``- -`` for
    ``--``, ``," Sisters`` for ``, "Sisters``) changes nothing it did not mean to. Around inserted or
    deleted tokens the variant's own spacing stays."""
    if variant == source:
        return source
    a_tokens, a_seps = _segment_cached(source)
    b_tokens, b_seps = segment(variant)
    if len(a_tokens) == len(b_tokens):  # token for token (typos, substitutions, swaps): the source's spacing
        return join(b_tokens, list(a_seps))
    origin: list[int | None] = [None] * len(b_tokens)  # the source token each variant token stands for
    matcher = difflib.SequenceMatcher(a=a_tokens, b=b_tokens, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            origin[j1:j2] = range(i1, i2)
    seps = list(b_seps)
    if b_tokens and origin[0] == 0:
        seps[0] = a_seps[0]
    if b_tokens and origin[-1] == len(a_tokens) - 1:
        seps[-1] = a_seps[-1]
    for k in range(1, len(b_tokens)):
        left, right = origin[k - 1], origin[k]
        if left is not None and right == left + 1:
            seps[k] = a_seps[right]
    return join(b_tokens, seps)


_PUNCT_OR_SPACE = regex.compile(r"[\p{P}\s\x1c-\x1f]+")
_ASCII_PUNCT_OR_SPACE = {c: None for c in range(128)
                         if chr(c).isspace() or unicodedata.category(chr(c)).startswith("P")}


def surface(text: str) -> str:
    """``text`` without whitespace and punctuation: two texts with the same surface differ only in those
    (a variant like that is no variant)."""
    if text.isascii():
        return text.translate(_ASCII_PUNCT_OR_SPACE)
    return _PUNCT_OR_SPACE.sub("", text)


def match_case(word: str, like: str) -> str:
    """``word`` in the case pattern of ``like`` (UPPER, Title or lower)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
