"""augforge audit --embed MODEL: a checkpoint's penultimate features as embeddings, their cosine neighbours
(redundancy and leakage), and the label model fitted on them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from augforge.audit.labels import label_issues, out_of_fold_probabilities
from augforge.audit.rows import read_rows
from augforge.audit.run import audit, embedding_pairs
from augforge.cli import main
from augforge.errors import AugforgeError
from augforge.recipe import parse_recipe
from augforge.train.decouple import classifier_of
from augforge.experiments.embed import checkpoint_embedder
from augforge.train.restore import checkpoint_model_and_loader
from augforge.train.run import train_recipe

COPIES = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder of 600 digits with COPIES of them saved twice under other names, built (test 25%) and
    trained on for 3 epochs (simple_cnn)."""
    root = tmp_path_factory.mktemp("embed")
    digits = load_digits()
    folder = root / "digits"
    for i in range(600):
        path = folder / str(digits.target[i])
        path.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8))
        image.save(path / f"{i:04d}.png")
        if i < COPIES:
            image.save(path / f"copy-{i:04d}.png")
    recipe = parse_recipe({"seed": 0, "source": {"path": str(folder), "test_split": 0.25},
                           "clean": {"drop_duplicates": False},  # the copies stay, for the audit to find
                           "augment": {"color": "gray"}, "output": {"format": "raw", "dir": str(root / "data")},
                           "train": {"model": "simple_cnn", "epochs": 3, "lr": 0.003, "batch_size": 32,
                                     "threads": 1}}, str(root / "r.yaml"))
    train_recipe(recipe, root / "run", log=lambda _: None)
    return root


def test_the_embeddings_are_what_the_classifier_receives(trained):
    embed = checkpoint_embedder(trained / "run" / "model.pt")
    features = embed(trained / "data", "test")
    model, loader, *_ = checkpoint_model_and_loader(trained / "run" / "model.pt", trained / "data", "test", "cpu")
    head = classifier_of(model)
    assert features.shape == (len(loader.dataset), head.in_features) and features.dtype == np.float32
    x, _ = next(iter(loader))
    with torch.no_grad():
        logits = model(x.float() / 255.0)
    rebuilt = torch.from_numpy(features[: len(x)]) @ head.weight.T + head.bias
    assert torch.allclose(logits, rebuilt, atol=1e-4)  # the classifier applied to them gives the logits
    assert np.array_equal(features, embed(trained / "data", "test"))  # the same rows, the same embeddings


def test_copies_are_embedding_neighbours_and_the_label_model_uses_the_embeddings(trained):
    embed = checkpoint_embedder(trained / "run" / "model.pt")
    report = audit(trained / "data", embed=embed, cosine=0.999, seed=0)
    near = report["embedding_neighbours"]
    clusters = [{r["id"] for r in c["rows"]} for c in near["clusters"]]
    digits = load_digits()
    for i in range(COPIES):  # every copy is in its original's cluster
        pair = {f"{digits.target[i]}/{i:04d}.png", f"{digits.target[i]}/copy-{i:04d}.png"}
        assert any(pair <= c for c in clusters), pair
    assert "cosine similarity >= 0.999 of the penultimate features" in near["method"]
    leaking = [c for c in near["clusters"] if c["kind"] == "leakage"]
    assert near["leaking_rows"] == {"test": sum(sum(r["split"] == "test" for r in c["rows"]) for c in leaking)}

    rows = read_rows(trained / "data", embed=embed)
    by_hand = label_issues(rows.labels, out_of_fold_probabilities(rows, 0, rows.embeddings))
    assert [r["id"] for r in report["label_issues"]["rows"]] == [rows.ids[i] for i in by_hand["flagged"]]
    assert "standardised embeddings" in report["label_issues"]["method"]


def test_embedding_pairs_are_exact_on_cosine():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8))
    x[10] = 3.0 * x[3] + 1e-3  # the same direction, another length
    pairs = embedding_pairs(x, 0.99)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    similar = unit @ unit.T
    expected = {(i, j) for i in range(60) for j in range(i + 1, 60) if similar[i, j] >= 0.99}
    assert {(a, b) for a, b, _ in pairs} == expected and (3, 10) in expected
    assert all(abs(s - similar[a, b]) < 1e-4 for a, b, s in pairs)


def test_the_cli_embeds_and_refuses_bad_input_in_one_line(trained, capsys, tmp_path):
    assert main(["audit", str(trained / "data"), "--embed", str(trained / "run" / "model.pt"), "--cosine", "0.999",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedding_neighbours"]["pairs"] >= COPIES
    assert main(["audit", str(trained / "data"), "--embed", str(trained / "run" / "model.pt"), "--cosine", "2"]) != 0
    assert "--cosine 2.0: expected a cosine similarity in [-1, 1]" in capsys.readouterr().err
    assert main(["audit", str(trained / "data"), "--embed", str(tmp_path / "none.pt")]) != 0
    err = capsys.readouterr().err
    assert "none.pt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(AugforgeError, match="holds text rows"):
        text = tmp_path / "t.csv"
        text.write_text("text,label\n" + "".join(f"row number {i},{'ab'[i % 2]}\n" for i in range(20)))
        audit(text, label_col="label", text_col="text", embed=checkpoint_embedder(trained / "run" / "model.pt"))
