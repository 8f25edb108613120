"""Unicode word segmentation and span-preserving edits (augforge.augment.words), and EDA on them."""

import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.augment.text import EDA, Protect
from augforge.augment.words import Words, join, respace, segment, surface, tokenize

UNICODE = "Café crème brûlée is délicieux — naïve résumé"


def test_accented_words_stay_whole_in_both_normal_forms():
    assert tokenize(UNICODE) == ["Café", "crème", "brûlée", "is", "délicieux", "—", "naïve", "résumé"]
    decomposed = unicodedata.normalize("NFD", UNICODE)
    assert tokenize(decomposed) == unicodedata.normalize("NFD", " ".join(tokenize(UNICODE))).split(" ")
    assert tokenize("Привет, мир! Γειά σου κόσμε. 안녕하세요 세계") == [
        "Привет", ",", "мир", "!", "Γειά", "σου", "κόσμε", ".", "안녕하세요", "세계"]


def test_cjk_runs_are_whole_unless_asked_per_character():
    assert tokenize("我们喜欢吃饭。東京タワーへ行く") == ["我们喜欢吃饭", "。", "東京タワーへ行く"]
    assert segment("我们喜欢", cjk="char")[0] == ["我", "们", "喜", "欢"]
    assert segment("我们喜欢吃饭", cjk=lambda s: [s[:2], s[2:4], s[4:]])[0] == ["我们", "喜欢", "吃饭"]
    with pytest.raises(ValueError):
        segment("我们", cjk=lambda s: ["你"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_segment_joins_back_to_any_text(text):
    tokens, seps = segment(text)
    assert join(tokens, seps) == text and len(seps) == len(tokens) + 1
    assert all(not s.strip() for s in seps) and all(t and t == t.strip() for t in tokens)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_the_ascii_fast_path_equals_the_unicode_segmentation(text):
    from augforge.augment import words

    assert words._ASCII_SPLIT.split(text) == words._SPLIT.split(text)
    assert surface(text) == words._PUNCT_OR_SPACE.sub("", text)


def test_edits_keep_untouched_text_byte_for_byte():
    text = 'He wrote -- twice -- "Sisters of Mercy"  (1987)\n'
    words = Words.of(text)
    i = words.tokens.index("twice")
    assert words.replace(i, "once").text() == 'He wrote -- once -- "Sisters of Mercy"  (1987)\n'
    assert words.delete({i}).text() == 'He wrote -- -- "Sisters of Mercy"  (1987)\n'
    assert words.delete({len(words.tokens) - 1}).text() == 'He wrote -- twice -- "Sisters of Mercy"  (1987\n'
    assert words.insert(1, "then").text() == 'He then wrote -- twice -- "Sisters of Mercy"  (1987)\n'
    assert Words.of("a b.").delete({1}).text() == "a." and Words.of("(b c)").delete({1}).text() == "(c)"
    assert Words.of("don't stop").gaps() == [0, 1, 2]  # never inside don't


def test_respace_restores_the_source_spacing_around_unchanged_tokens():
    source = 'He said -- "Sisters of Mercy" is great.'
    assert respace(source, 'He said - - " Sisters of Mercy " is grand .') == 'He said -- "Sisters of Mercy" is grand.'
    assert respace("我们喜欢吃饭。", "我们喜欢吃饭 。") == "我们喜欢吃饭。"


def test_surface_ignores_only_whitespace_and_punctuation():
    assert surface("a -- b,  c") == surface("a - - b c") == surface("a b c!")
    assert surface("A b c") != surface("a b c") and surface("a b") != surface("a c")


@pytest.mark.parametrize("technique", ["sr", "ri", "rs", "rd"])
def test_eda_on_the_unicode_sentence_keeps_accented_words_whole(technique):
    aug = EDA(0.5, 0.5, 0.5, 0.5, protect=Protect(numbers=True))
    source = set(tokenize(UNICODE))
    for seed in range(30):
        out = aug.augment(UNICODE, random.Random(seed), technique)
        tokens = tokenize(out)
        # each token is a whole source word, or a WordNet word (ASCII here): no fragments like "sum" or "é"
        assert all(t in source or t.replace("_", " ").isascii() for t in tokens), out
        if technique in ("rs", "rd"):
            assert set(tokens) <= source


def test_eda_does_not_space_out_cjk_or_touch_what_it_did_not_edit():
    aug = EDA(p_rd=0.5, min_words=1)
    text = "我们喜欢吃饭。 The weather -- today -- is lovely."
    for seed in range(20):
        out = aug.augment(text, random.Random(seed), "rd")
        assert out.count("--") == 2 and "我们喜欢吃饭" in out or "我" not in out  # the CJK run is one word
        kept = tokenize(out)
        assert out == Words.of(text).delete({i for i, t in enumerate(tokenize(text)) if t not in kept}).text()
