"""The ``linear`` text model: TF-IDF word and character n-grams (scikit-learn's, fitted on the train split) into a
logistic-regression head trained by augforge's loop. Its features equal scikit-learn's stacked vectorisers; a
run trains, evaluates (== its summary), cross-fits (the encoder fitted on each fold's training rows), feeds
``audit --probs`` and exports with its encoder beside it; its settings are checked when the recipe is read."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer

from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError
from augforge.models import create
from augforge.pipelines.text_encoding import encoder_from_spec, text_encoder_for
from augforge.pipelines.tfidf_encoding import TfidfEncoder
from augforge.recipe import parse_recipe
from augforge.recipe.train import TextOptions, with_training_rows
from augforge.train.schedules import lr_factor

WORDS = ["refund", "order", "never", "came", "password", "reset", "link", "expired", "Café", "crème", "naïve",
         "ship", "late", "a", "I", "x2", "4417", "don't", "e-mail", "Где", "заказ"]
text_strategy = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)


def sklearn_rows(train: list[str], texts: list[str]) -> np.ndarray:
    """The peer's features: word 1-2-grams and char_wb 3-5-grams, sublinear TF-IDF, stacked."""
    vectorizers = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)]
    for v in vectorizers:
        v.fit(train)
    return hstack([v.transform(texts) for v in vectorizers]).toarray()


def model_rows(encoder: TfidfEncoder, texts: list[str]) -> np.ndarray:
    """The linear model's TF-IDF rows of ``texts`` (dense, the two reserved ids left out)."""
    model = create("linear", 3, **encoder.model_options())
    model.load_state_dict({**model.state_dict(), **encoder.model_state()})
    feature, weight = model.tfidf(*encoder.encode(texts))
    dense = torch.zeros(len(texts), encoder.vocab_size, dtype=torch.float64)
    dense.scatter_add_(1, feature, weight.double())
    return dense[:, TfidfEncoder.RESERVED:].numpy()


@settings(max_examples=25, deadline=None)
@given(st.lists(text_strategy, min_size=2, max_size=8), st.lists(text_strategy, min_size=1, max_size=4))
def test_features_equal_scikit_learns_stacked_tfidf(train, unseen):
    if not any(len(w) > 1 and w.isalnum() for t in train for w in t.split()):
        return  # scikit-learn has no word vocabulary to fit; augforge refuses it too (below)
    encoder = TfidfEncoder.fit(train, TextOptions(tokenizer="tfidf"))
    texts = train + unseen
    assert np.allclose(model_rows(encoder, texts), sklearn_rows(train, texts), atol=1e-6)
    restored = encoder_from_spec(json.loads(json.dumps(encoder.spec())))
    assert [r.tolist() for r in restored.encode(texts)] == [r.tolist() for r in encoder.encode(texts)]


def test_counts_are_packed_with_their_ids_and_words_cut_to_max_tokens():
    encoder = TfidfEncoder.fit(["spam spam spam eggs", "eggs ham"], TextOptions(tokenizer="tfidf", char_ngrams=(0, 0)))
    ids, lengths = encoder.encode(["spam spam spam eggs"])
    size, spam = encoder.vocab_size, TfidfEncoder.RESERVED + encoder.terms[0].index("spam")
    assert spam + size * 2 in ids[0].tolist()  # three times: count - 1 = 2
    cut = TfidfEncoder.fit(["spam spam spam eggs", "eggs ham"], TextOptions(tokenizer="tfidf", char_ngrams=(0, 0),
                                                                           max_tokens=1))
    assert cut.terms[0] == ["eggs", "spam"] and cut.truncated(["spam spam spam eggs", "ham"]) == 1
    assert [t for t, i in zip(cut.terms[0], range(9)) if i + 2 in cut.encode(["eggs ham"])[0][0].tolist()] == ["eggs"]
    with pytest.raises(AugforgeError, match="no word n-grams"):
        TfidfEncoder.fit(["a b", "c"], TextOptions(tokenizer="tfidf"))
    with pytest.raises(AugforgeError, match="restored from a checkpoint"):
        encoder_from_spec(encoder.spec()).model_state()
    assert text_encoder_for(None, "linear", train_texts=lambda: ["spam eggs"]).kind == "tfidf"


def test_linear_settings_are_checked_when_the_recipe_is_read():
    text = {"path": "x.csv", "text_col": "text"}
    recipe = parse_recipe({"source": text, "train": {"model": "linear"}})
    assert (recipe.train.class_weights, recipe.train.l2, recipe.train.epochs) == ("balanced", "auto", 20)
    assert with_training_rows(recipe.train, 2000).l2 == pytest.approx(0.5 / 2000)  # scikit-learn's C=1
    assert with_training_rows(parse_recipe({"source": text, "train": {"l2": 0.01}}).train, 10).l2 == 0.01
    unweighted = parse_recipe({"source": text, "train": {"model": "linear", "class_weights": "none", "l2": 0}})
    assert (unweighted.train.class_weights, unweighted.train.l2) == ("none", 0.0)
    for train, where in (({"model": "linear", "text": {"tokenizer": "hashed"}}, "train.text.tokenizer"),
                         ({"model": "fasttext", "text": {"tokenizer": "tfidf"}}, "train.text.tokenizer"),
                         ({"l2": "big"}, "train.l2")):
        with pytest.raises(AugforgeError, match=where.replace(".", r"\.")):
            parse_recipe({"source": text, "train": train})
    assert [round(lr_factor("linear", s, 10, min_factor=0.1), 3) for s in (0, 5, 10)] == [1.0, 0.55, 0.1]


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """One linear run on the bundled tickets (4 epochs), its data and its cross-fit (3 folds)."""
    root = tmp_path_factory.mktemp("linear")
    shutil.copy("examples/tickets.csv", root / "tickets.csv")
    recipe = {"seed": 0, "source": {"path": str(root / "tickets.csv"), "text_col": "text", "label_col": "label",
                                    "test_split": 0.2, "val_split": 0.1},
              "output": {"dir": str(root / "data")}, "train": {"model": "linear", "epochs": 4, "batch_size": 32}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(root / "recipe.yaml"), "--run-dir", str(root / "run")]) == 0
    assert main(["crossfit", str(root / "recipe.yaml"), "--out", str(root / "cf"), "--folds", "3"]) == 0
    return root


def test_a_linear_run_evaluates_as_its_summary_from_plain_tensors(linear_run, capsys):
    summary = json.loads((linear_run / "run" / "summary.json").read_text())
    assert summary["model"] == "linear" and summary["config"]["class_weights"] == "balanced"
    train = Dataset(linear_run / "data", "train")
    assert summary["config"]["l2"] == pytest.approx(0.5 / len(train))
    capsys.readouterr()
    assert main(["evaluate", str(linear_run / "run" / "model.pt"), str(linear_run / "data"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} == \
        {k: summary[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    state = torch.load(linear_run / "run" / "model.pt", map_location="cpu", weights_only=True)
    spec = state["input"]["text"]
    assert spec["kind"] == "tfidf" and all(isinstance(t, str) for t in spec["terms"])  # plain strings
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(train.texts())
    words = spec["terms"][0].split("\n")
    assert words == sorted(reference.vocabulary_, key=reference.vocabulary_.get)
    assert np.allclose(state["model"]["idf"][2 : 2 + len(words)].numpy(), reference.idf_, atol=1e-6)


def test_cross_fit_folds_fit_their_own_vocabulary_and_feed_the_audit(linear_run, capsys):
    train = Dataset(linear_run / "data", "train")
    fitted = json.loads((linear_run / "cf" / "crossfit.json").read_text())
    saved = np.load(linear_run / "cf" / "probs.npz")
    probs, ids = saved["probs"], saved["ids"].tolist()
    splits = [Dataset(linear_run / "data", split) for split in ("train", "val", "test")]
    label_of = {i: y for ds in splits for i, y in zip(ds.to_polars(["id"])["id"].to_list(), ds.labels().tolist())}
    assert probs.shape == (len(label_of), len(train.class_names)) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    def words(path: Path) -> set[str]:
        return set(torch.load(path, weights_only=True)["input"]["text"]["terms"][0].split("\n"))

    whole = words(linear_run / "run" / "model.pt")
    folds = [words(p) for p in sorted((linear_run / "cf").glob("fold-*/model.pt"))]
    assert len(folds) == 3 and all(f < whole for f in folds)  # each fold saw only its training rows' words
    assert fitted["folds"] == 3
    capsys.readouterr()
    assert main(["audit", str(linear_run / "data"), "--probs", str(linear_run / "cf"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    issues = report["label_issues"]
    assert "3-fold out-of-fold probabilities of augforge run" in issues["method"] and "linear" in issues["method"]
    labels = np.array([label_of[i] for i in ids])
    assert issues["model_accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)), abs=1e-4)


def test_export_writes_the_encoder_beside_the_model(linear_run, capsys):
    import onnxruntime

    assert main(["export", str(linear_run / "run"), "--format", "onnx"]) == 0
    assert "model.encoder.json" in capsys.readouterr().out
    encoder = encoder_from_spec(json.loads((linear_run / "run" / "model.encoder.json").read_text()))
    test = Dataset(linear_run / "data", "test")
    ids, lengths = encoder.encode(test.texts())
    session = onnxruntime.InferenceSession(str(linear_run / "run" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    logits = session.run(None, {names[0]: ids.numpy(), names[1]: lengths.numpy()})[0]
    state = torch.load(linear_run / "run" / "model.pt", weights_only=True)
    model = create("linear", len(test.class_names), **state["arch"]["options"])
    model.load_state_dict(state["model"])
    with torch.no_grad():
        expected = model(ids, lengths).numpy()
    assert np.allclose(logits, expected, atol=1e-4) and np.array_equal(logits.argmax(1), expected.argmax(1))
