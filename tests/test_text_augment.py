"""Text ops on real language: WordNet checked against the database, EDA invariants, protection, nlpaug,
local-model ops with tiny models built here, and text builds (determinism, resume, bad input)."""

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.augment.text import EDA, Protect, build_text_augmenter, eda
from augforge.augment.words import Words, tokenize
from augforge.augment.wordnet import LEXNAMES, lexnames_text, prepare_nltk_data, synonyms
from augforge.cli import main
from augforge.datasets import open_dataset
from augforge.datasets.manifest import MANIFEST
from augforge.errors import AugforgeError
from augforge.recipe import parse_recipe
from cli_process import start_cli
from conftest import kill_9_after_shards

WORDNET = Path("/usr/share/wordnet")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "My order 4417 arrived late and the refund never came.",
    "A wonderful film with a moving story and clever dialogue.",
    "Please reset my password because the email never arrives.",
    "The engine stopped working after the last update on my phone.",
]


def database_synonyms(word: str) -> set[str]:
    """Synonyms of ``word`` read straight from WordNet's index.* and data.* files (no NLTK)."""
    found = set()
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"index.{pos}", encoding="utf-8") as fh:
            line = next((ln for ln in fh if ln.startswith(word + " ")), None)
        if line is None:
            continue
        fields = line.split()
        offsets = fields[-int(fields[2]):]
        with open(WORDNET / f"data.{pos}", "rb") as data:
            for offset in offsets:
                data.seek(int(offset))
                parts = data.readline().decode().split()
                count = int(parts[3], 16)
                for i in range(count):
                    lemma = parts[4 + 2 * i].split("(")[0].replace("_", " ").replace("-", " ").lower()
                    if lemma != word and all(c.isalpha() or c == " " for c in lemma):
                        found.add(lemma)
    return found


def test_the_nltk_data_directory_is_prepared_offline(tmp_path):
    target = prepare_nltk_data(tmp_path / "nltk")
    corpus = target / "corpora" / "wordnet"
    assert (corpus / "data.noun").stat().st_size == (WORDNET / "data.noun").stat().st_size
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45 and lines[0] == "00\tadj.all\t3" and lines[44] == "44\tadj.ppl\t3"
    assert (corpus / "lexnames").read_text() == lexnames_text()
    assert prepare_nltk_data(tmp_path / "nltk") == target  # idempotent


@pytest.mark.parametrize("word", ["film", "quick", "happy", "car", "run", "bank"])
def test_synonyms_are_wordnet_synonyms(word):
    assert set(synonyms(word)) == database_synonyms(word) and len(synonyms(word)) > 2


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SENTENCES), st.integers(0, 10**6))
def test_eda_invariants(sentence, seed):
    protect = Protect(numbers=True, words=("refund",))
    aug = EDA(0.3, 0.3, 0.3, 0.5, protect=protect, min_words=3)
    words = Words.of(sentence, protect.mask)
    tokens, mask = words.tokens, words.flags
    rng = random.Random(seed)
    swapped = aug.random_swap(words, rng).tokens
    assert sorted(swapped) == sorted(tokens)  # swap keeps the multiset of tokens
    assert all(s == t for s, t, m in zip(swapped, tokens, mask) if m)  # protected tokens stay in place
    kept = aug.random_deletion(words, rng)
    assert tokenize(kept.text()) == kept.tokens  # what is rendered is what was edited
    kept = kept.tokens
    assert len([t for t in kept if t[:1].isalpha()]) >= 3 and all(t in kept for t, m in zip(tokens, mask) if m)
    inserted = aug.random_insertion(words, rng)
    added = list(inserted.tokens)
    for t in tokens:
        added.remove(t)
    allowed = {s for t in tokens for s in synonyms(t.lower())}
    assert all(a in allowed for a in added)  # insertion only adds synonyms of words in the text
    replaced = aug.synonym_replacement(words, rng).tokens
    for before, after, m in zip(tokens, replaced, mask):
        if before != after:
            assert not m and after.lower() in synonyms(before.lower()) and before.lower() not in aug.stop
            assert after[:1].isupper() == before[:1].isupper()  # case kept


def test_deletion_never_empties_a_text():
    aug = EDA(p_rd=1.0, min_words=1)
    for seed in range(20):
        out = aug.augment("Refund please", random.Random(seed), "rd")
        assert out.strip() and len(tokenize(out)) >= 1


def test_eda_function_and_determinism():
    a = eda(SENTENCES[2], n_aug=8, seed=3)
    assert a == eda(SENTENCES[2], n_aug=8, seed=3) and len(a) == 8
    assert a != eda(SENTENCES[2], n_aug=8, seed=4)
    assert len(set(a)) >= 4 and all(v != SENTENCES[2] for v in a[2::4])  # swaps always change this sentence


def test_case_and_spacing_are_kept():
    text = "Hello,  world! It's 12.5 % (really) -- \"Sisters of Mercy\"."
    assert Words.of(text).text() == text
    assert Words.of(text).swap(0, 2).text() == "world,  Hello! It's 12.5 % (really) -- \"Sisters of Mercy\"."
    out = EDA(alpha_sr=1.0).augment("The Quick brown FOX", random.Random(1), "sr")
    assert [t[:1].isupper() for t in tokenize(out)][:1] == [True]


def _augmenter(ops, **protect):
    recipe = parse_recipe({"source": {"path": "x.csv"}, "augment": {"copies": 1, "text": ops}})
    return build_text_augmenter(recipe.augment.text, Protect(**protect), 3, corpus=SENTENCES * 3)


@pytest.mark.parametrize("ops", [
    [{"op": "eda"}], [{"op": "keyboard", "aug_char_p": 0.3, "aug_word_p": 0.3}],
    [{"op": "ocr", "aug_char_p": 0.5, "aug_word_p": 0.9}], [{"op": "char_random", "action": "swap"}],
    [{"op": "word_random", "action": "swap", "aug_p": 0.3}], [{"op": "word_random", "action": "delete"}],
    [{"op": "word_random", "action": "substitute", "target_words": ["indeed", "truly"]}],
    [{"op": "tfidf", "aug_p": 0.3}], [{"op": "eda", "p": 0.5}, {"op": "keyboard", "p": 0.5}],
])
def test_nlpaug_and_eda_ops_through_the_recipe_keep_protected_tokens(ops):
    augmenter = _augmenter(ops, numbers=True, words=("refund", "password"))
    changed = 0
    for text in SENTENCES:
        for key in range(6):
            out = augmenter.variant(text, key)
            assert out == augmenter.variant(text, key)  # deterministic for (text, key)
            if out is None:
                continue
            for token in ("4417", "refund", "password"):
                assert (token in tokenize(text)) <= (token in tokenize(out))
            changed += out != text
    # OCR confusions exist for few letters (o/0, l/1, ...): fewer sentences change
    assert changed >= (2 if ops[0]["op"] == "ocr" else 10)


@pytest.mark.parametrize("op, cls, options", [
    ({"op": "keyboard", "aug_char_p": 0.3, "aug_word_p": 0.3}, "nlpaug.augmenter.char.KeyboardAug",
     dict(aug_char_p=0.3, aug_word_p=0.3)),
    ({"op": "word_random", "action": "swap", "aug_p": 0.3}, "nlpaug.augmenter.word.RandomWordAug",
     dict(action="swap", aug_p=0.3)),
])
def test_variants_of_a_row_are_what_nlpaug_makes_from_the_same_seeds(op, cls, options):
    """The variant maker seeds the global generators once per row and tokenizes each row once; the
    variants are exactly nlpaug's own calls in sequence from the same seeds, re-spaced against the source."""
    import importlib

    from augforge.augment.words import respace

    from augforge.augment.text import seed_everything

    augmenter = _augmenter([op], numbers=False)
    module, name = cls.rsplit(".", 1)
    plain = getattr(importlib.import_module(module), name)(**options)
    for key, text in enumerate(SENTENCES):
        ours = augmenter.variants(text, 4, key)
        rng = random.Random(key)
        seed_everything(rng.getrandbits(63))
        theirs = [respace(text, plain.augment(text)[0]) for _ in range(4)]
        assert ours == theirs and len(set(ours)) > 1


def test_word_embeddings_from_a_local_file(tmp_path):
    vocab = sorted({t.lower() for s in SENTENCES for t in tokenize(s) if t.isalpha()})
    rng = np.random.default_rng(0)
    glove = tmp_path / "tiny.glove.txt"
    glove.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=8)) + "\n" for w in vocab))
    augmenter = _augmenter([{"op": "word_embs", "model_type": "glove", "model_path": str(glove), "aug_p": 0.5}])
    outs = [augmenter.variant(SENTENCES[0], k) for k in range(5)]
    assert any(o != SENTENCES[0] for o in outs)
    assert all(t.lower() in vocab for o in outs if o for t in tokenize(o) if t.isalpha())
    with pytest.raises(AugforgeError, match="no such embeddings file"):
        _augmenter([{"op": "word_embs", "model_path": str(tmp_path / "nope.bin")}])


def _tiny_models(root: Path) -> tuple[Path, Path]:
    """A tiny random masked LM and a tiny random seq2seq model with a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM,
                              PreTrainedTokenizerFast)

    words = sorted({t.lower() for s in SENTENCES for t in tokenize(s) if t.isalpha()})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(special + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="<s>", eos_token="</s>")
    import torch

    torch.manual_seed(0)
    mlm_dir, s2s_dir = root / "mlm", root / "s2s"
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(mlm_dir)
    fast.save_pretrained(mlm_dir)
    BartForConditionalGeneration(BartConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                                            encoder_attention_heads=2, decoder_attention_heads=2,
                                            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                                            pad_token_id=0, bos_token_id=5, eos_token_id=6,
                                            decoder_start_token_id=5)).save_pretrained(s2s_dir)
    fast.save_pretrained(s2s_dir)
    return mlm_dir, s2s_dir


def test_local_model_ops_with_tiny_models(tmp_path):
    mlm, s2s = _tiny_models(tmp_path)
    contextual = _augmenter([{"op": "contextual", "model_path": str(mlm), "aug_p": 0.5}], numbers=True)
    out = contextual.variant(SENTENCES[1], 1)
    assert out is not None and "4417" in out and len(tokenize(out)) == len(tokenize(SENTENCES[1]))
    assert out == contextual.variant(SENTENCES[1], 1)
    back = _augmenter([{"op": "back_translation", "from_model": str(s2s), "to_model": str(s2s), "max_length": 16}],
                      numbers=False)
    first = back.variant(SENTENCES[0], 7)
    assert isinstance(first, str) and first == back.variant(SENTENCES[0], 7)
    with pytest.raises(AugforgeError, match="no such model directory"):
        _augmenter([{"op": "contextual", "model_path": str(tmp_path / "missing")}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AugforgeError, match="not a Hugging Face model directory"):
        _augmenter([{"op": "back_translation", "from_model": str(tmp_path / "empty"), "to_model": str(s2s)}])


TEXT_RECIPE = {
    "seed": 0,
    "source": {"path": "tickets.csv", "text_col": "text", "label_col": "label", "test_split": 0.2},
    "balance": {"strategy": "over"},
    "augment": {"copies": 2, "min_words": 4, "protect": {"numbers": True, "words": ["refund", "invoice"]},
                "text": [{"op": "eda"}, {"op": "keyboard", "aug_char_p": 0.05, "aug_word_p": 0.05, "p": 0.3}]},
    "output": {"shard_rows": 40},
}


def _recipe(tmp_path, data=None, name="r.yaml"):
    import shutil

    shutil.copy("examples/tickets.csv", tmp_path / "tickets.csv")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data or TEXT_RECIPE))
    return path


def _checksums(out):
    return [s["checksum"] for s in json.loads((out / MANIFEST).read_text())["shards"]]


def test_text_build_is_balanced_deterministic_and_keeps_test_texts(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["build", str(recipe), "--out", str(tmp_path / "a"), "--workers", "2", "-q"]) == 0
    assert main(["build", str(recipe), "--out", str(tmp_path / "b"), "--workers", "1", "-q"]) == 0
    assert _checksums(tmp_path / "a") == _checksums(tmp_path / "b")
    train = open_dataset(tmp_path / "a", "train")
    counts = train.class_counts()
    assert max(counts.values()) / min(counts.values()) <= 1.5
    rows = train.take(np.arange(len(train))).to_pydict()
    assert len(set(rows["text"])) == len(rows["text"])  # no variant equal to its source or to another
    assert len(set(rows["id"])) == len(rows["id"])
    source = pl.read_csv(tmp_path / "tickets.csv")
    texts = dict(zip(range(len(source)), source["text"]))
    for text, sid, aug in zip(rows["text"], rows["source_id"], rows["aug"]):
        for token in ("refund", "invoice"):
            assert (token in tokenize(texts[int(sid)])) <= (token in tokenize(text))
        assert aug in (None, "augment", "balance:over+augment")
    test = open_dataset(tmp_path / "a", "test").to_polars(["id", "synthetic"])
    assert not test["synthetic"].any() and len(test) == 44
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert "variants_dropped_as_same" in manifest["build"]


def _dies(group_texts):
    """A variant maker whose process dies at once, as one the kernel kills for memory."""
    os._exit(9)


def test_a_dead_worker_ends_the_build_with_one_line_not_a_hang(tmp_path, capsys, monkeypatch):
    """multiprocessing.Pool waits forever for a worker that died; the build's pool notices, and the build
    stops naming what happened, leaving no dataset."""
    monkeypatch.setattr("augforge.pipelines.text_rows.make_variants", _dies)
    started = time.monotonic()
    assert main(["build", str(_recipe(tmp_path)), "--out", str(tmp_path / "out"), "--workers", "2", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("augforge build: error: text augmentation: a worker process died (killed, or out of memory?); "
                   "rerun with fewer --workers than 2")
    assert time.monotonic() - started < 120 and not (tmp_path / "out").exists()


def test_kill_9_mid_text_build_then_resume(tmp_path):
    data = {**TEXT_RECIPE, "augment": {**TEXT_RECIPE["augment"], "copies": 12}, "output": {"shard_rows": 10}}
    recipe = _recipe(tmp_path, data)
    run = lambda out: start_cli(["build", str(recipe), "--out", str(out), "-q"])  # noqa: E731
    full = tmp_path / "full"
    assert run(full).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    done = kill_9_after_shards(run(killed), killed, shards=3)
    assert 3 <= done < len(_checksums(full))
    assert run(killed).wait(timeout=300) == 0
    assert _checksums(killed) == _checksums(full)


def test_bad_text_input(tmp_path, capsys, monkeypatch):
    def fails(path, *needles):
        assert main(["build", str(path), "--out", str(tmp_path / "out"), "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
        assert not (tmp_path / "out").exists()

    base = _recipe(tmp_path)
    pl.DataFrame({"text": [1, 2, 3], "label": ["a", "b", "a"]}).write_csv(tmp_path / "numbers.csv")
    fails(_recipe(tmp_path, {**TEXT_RECIPE, "source": {"path": "numbers.csv", "text_col": "text"}}, "n.yaml"),
          "numbers.csv", "not text")
    pl.DataFrame({"text": ["a b c d", "x y z", "e f g h"], "label": ["a", None, "a"]}).write_csv(tmp_path / "nulls.csv")
    fails(_recipe(tmp_path, {**TEXT_RECIPE, "source": {"path": "nulls.csv", "text_col": "text"}}, "u.yaml"),
          "nulls.csv", "null at line 3")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,a\n".encode("latin-1"))
    fails(_recipe(tmp_path, {**TEXT_RECIPE, "source": {"path": "latin1.csv", "text_col": "text"}}, "l.yaml"),
          "latin1.csv")
    fails(_recipe(tmp_path, {**TEXT_RECIPE, "augment": {**TEXT_RECIPE["augment"], "text": [
        {"op": "contextual", "model_path": str(tmp_path)}]}}, "m.yaml"), "not a Hugging Face model directory")
    from augforge.augment import wordnet

    wordnet.wordnet.cache_clear()
    wordnet.synonyms.cache_clear()
    monkeypatch.setattr(wordnet, "DEBIAN_WORDNET", tmp_path / "no-wordnet")
    monkeypatch.setattr(wordnet, "_user_nltk_wordnet", lambda: None)
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "cache"))
    fails(base, "WordNet 3.0 is not installed", "apt-get install wordnet-base wordnet-sense-index")
    wordnet.wordnet.cache_clear()
    wordnet.synonyms.cache_clear()


def test_the_shipped_text_example(tmp_path, capsys):
    out = tmp_path / "tickets"
    assert main(["build", "examples/text.yaml", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["imbalance_ratio"] <= 1.5 and report["num_classes"] == 4
    assert main(["preview", "examples/text.yaml", "--n", "2", "--variants", "2"]) == 0
    assert "text / variants" in capsys.readouterr().out


def test_a_pos_tagger_when_present_restricts_synonyms(monkeypatch):
    """No tagger data is installed here; with one, synonym replacement keeps the word's part of speech.
    The tagger is given as a function of the same signature as nltk.pos_tag (Penn tags)."""
    from augforge.augment import wordnet as wn

    def penn(tokens):
        return [(t, "VB" if t.lower() == "run" else "NN") for t in tokens]

    monkeypatch.setattr(wn, "pos_tagger", lambda: penn)
    assert wn.wordnet_pos(["run", "dog"]) == ["v", "n"]
    verbs, nouns = set(synonyms("run", "v")), set(synonyms("run", "n"))
    assert verbs - nouns and nouns - verbs
    aug = EDA(alpha_sr=1.0, stop=frozenset())
    for seed in range(30):
        out = tokenize(aug.augment("run", random.Random(seed), "sr"))
        assert " ".join(out).lower() in verbs


def test_tfidf_substitutes_from_its_own_corpus_after_another_in_the_same_process(tmp_path):
    """nlpaug keeps one TF-IDF model per process whatever its path: a second corpus must not be augmented with
    the first corpus's words (this made a Ray text build differ from the local one when a forked worker held
    an earlier model)."""
    from augforge.augment.text import NlpaugOp, seed_everything, train_tfidf

    first = ["zebra quokka narwhal axolotl pangolin", "quokka zebra okapi tapir", "narwhal okapi axolotl tapir"]
    second = ["copper silver cobalt nickel zinc", "silver zinc iron tin lead", "cobalt iron lead nickel tin"]
    words = {w for text in second for w in text.split()}
    for corpus, name in ((first, "a"), (second, "b")):
        op = NlpaugOp("tfidf", {"model_path": train_tfidf(corpus, tmp_path / name), "aug_p": 1.0, "aug_min": 5})
    seed_everything(0)
    out = [op.augment(text, []) for text in second for _ in range(5)]
    assert any(o != t for o, t in zip(out, [t for t in second for _ in range(5)]))  # it substituted
    assert {w for text in out for w in text.split()} <= words  # ...and only with the second corpus's words


def test_over_sampling_text_without_ops_is_refused_and_under_sampling_builds(tmp_path, text_csv):
    """A balance copy of a text keeps only augmented variants (an identical copy is dropped): over-sampling
    without augment.text ops would leave the classes as they were, so the build refuses it in one line and
    writes nothing; under-sampling needs no ops."""
    from augforge.pipelines.build import build

    source = {"path": str(text_csv), "text_col": "review", "label_col": "sentiment"}
    out = tmp_path / "over"
    with pytest.raises(AugforgeError) as caught:
        build(parse_recipe({"source": source, "balance": {"strategy": "over"}}, "t.yaml"), out)
    message = str(caught.value)
    assert "balance.strategy over: a balance copy of a text keeps only its augmented variants" in message
    assert "\n" not in message and not out.exists()
    under = build(parse_recipe({"source": source, "balance": {"strategy": "under"}}, "t.yaml"), tmp_path / "under")
    counts = under.write.manifest["counts"]["train"]
    assert len(set(counts.values())) == 1  # every class cut to the smallest
