"""`augforge audit`: the perceptual hash and its exact radius search against all pairs, injected image
near-duplicates and train/test leakage found, text and feature duplicates, label issues against injected
noise (and equal to cleanlab run by hand), determinism, and one-line errors."""

import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance
from sklearn.datasets import load_digits

from augforge.audit.hashing import dhash, hamming, hash_images, near_pairs
from augforge.audit.labels import out_of_fold_probabilities
from augforge.audit.near_text import exact_text_pairs, near_text_pairs
from augforge.audit.rows import read_rows
from augforge.audit.run import audit
from augforge.cli import main
from augforge.recipe import parse_recipe
from augforge.datasets import SplitSpec
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError


def _brute_force(hashes: np.ndarray, radius: int) -> set:
    n = len(hashes)
    i, j = np.triu_indices(n, k=1)
    d = hamming(hashes[i], hashes[j])
    return {(int(a), int(b), int(c)) for a, b, c in zip(i[d <= radius], j[d <= radius], d[d <= radius])}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 8), st.integers(2, 120))
def test_the_radius_search_finds_exactly_the_pairs_all_pairs_finds(seed, radius, n):
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    twins = rng.integers(0, n, n // 3)  # plant near-twins: copies with a few bits flipped
    for t in twins:
        flips = rng.choice(64, rng.integers(0, radius + 2), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        hashes[rng.integers(0, n)] = hashes[t] ^ mask
    found = {tuple(p) for p in near_pairs(hashes, radius).tolist()}
    assert found == _brute_force(hashes, radius)


def _photo_crops(sample_images, count=24, size=64):
    """Non-overlapping textured crops of the two real photos (flat sky or wall patches, which are near-twins
    of each other, are left out: pixel std above 45)."""
    crops = []
    for photo in sample_images:
        for r in range(0, 427 - size, size):
            for c in range(0, 640 - size, size):
                crop = photo[r : r + size, c : c + size]
                if crop.std() > 45:
                    crops.append(crop)
    return crops[:: max(1, len(crops) // count)][:count]


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """The near-duplicates a dataset collects: resized, JPEG re-compressed, brightened, slightly cropped."""
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=35)
    side = image.shape[0]
    return {"resized": np.asarray(pil.resize((side * 3 // 4, side * 3 // 4), Image.Resampling.BILINEAR)),
            "jpeg": np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")),
            "brighter": np.asarray(ImageEnhance.Brightness(pil).enhance(1.25)),
            "cropped": image[2:-2, 2:-2]}


def test_dhash_keeps_near_duplicates_close_and_distinct_photos_apart(sample_images):
    crops = _photo_crops(sample_images)
    hashes = hash_images(crops)
    distinct = hamming(hashes[:, None].repeat(len(hashes), 1).ravel(), np.tile(hashes, len(hashes)))
    distinct = distinct.reshape(len(hashes), len(hashes))[np.triu_indices(len(hashes), k=1)]
    assert distinct.min() > 10  # different crops are farther apart than the default radius
    distances = {kind: [] for kind in ("resized", "jpeg", "brighter", "cropped")}
    for crop in crops:
        for kind, variant in _variants(crop).items():
            distances[kind].append(hamming(np.array([dhash(crop)], np.uint64), np.array([dhash(variant)], np.uint64))[0])
    for kind in ("resized", "jpeg", "brighter"):
        assert max(distances[kind]) <= 10, kind  # measured: at most 4, 10 and 8 bits
    assert np.mean(np.array(distances["cropped"]) <= 10) >= 0.75  # a 2-pixel crop shifts the grid: 89% measured
    encoded = io.BytesIO()
    Image.fromarray(crops[0]).save(encoded, "PNG")
    assert dhash(encoded.getvalue()) == dhash(crops[0]) == dhash(Image.fromarray(crops[0]))  # bytes, array, PIL


@pytest.fixture(scope="module")
def dup_folder(tmp_path_factory, sample_images):
    """An image folder of 24 distinct crops (two classes) with 4 injected near-duplicates of each of 6 of
    them; returns (folder, injected {file: its original's file})."""
    root = tmp_path_factory.mktemp("dups") / "photos"
    crops = _photo_crops(sample_images)
    injected = {}
    for i, crop in enumerate(crops):
        folder = root / ("china" if i < len(crops) // 2 else "flower")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"img{i:02d}.png")
        if i % 4 == 0:
            for kind, variant in _variants(crop).items():
                name = f"img{i:02d}-{kind}.png"
                Image.fromarray(variant).save(folder / name)
                injected[f"{folder.name}/{name}"] = f"{folder.name}/img{i:02d}.png"
    return root, injected


def test_injected_image_near_duplicates_are_found_with_full_recall_and_no_false_pair(dup_folder):
    root, injected = dup_folder
    report = audit(root, labels=False)
    clusters = report["near_duplicates"]["clusters"]
    assert report["rows"] == 24 + len(injected) and report["payload"] == "image"
    together = {}
    for number, cluster in enumerate(clusters):
        for row in cluster["rows"]:
            together[row["id"]] = number
    ids = {row_id for row_id in together}
    found = {name for name, original in injected.items() if name in ids and together.get(name) == together.get(original)}
    for kind in ("resized", "jpeg", "brighter"):  # recall 1.0 for these
        assert all(name in found for name in injected if name.endswith(f"-{kind}.png")), kind
    cropped = [name for name in injected if name.endswith("-cropped.png")]
    assert sum(name in found for name in cropped) >= len(cropped) // 2
    originals = {row["id"] for c in clusters for row in c["rows"] if "-" not in row["id"]}
    assert all(sum("-" not in row["id"] for row in c["rows"]) == 1 for c in clusters)  # no two originals joined
    assert len(originals) == len(clusters) == len(injected) // 4
    assert report["near_duplicates"]["redundant_rows"] == len(found)


def test_a_test_row_with_its_twin_in_train_is_leakage(tmp_path, dup_folder):
    root, injected = dup_folder
    report = audit(root, labels=False, split_spec=SplitSpec(test=0.3), seed=1)
    leaks = [c for c in report["near_duplicates"]["clusters"] if c["kind"] == "leakage"]
    assert leaks and all(set(c["splits"]) == {"train", "test"} for c in leaks)
    held_out = sum(1 for c in leaks for r in c["rows"] if r["split"] == "test")
    assert report["near_duplicates"]["leaking_rows"] == {"test": held_out}
    within = [c for c in report["near_duplicates"]["clusters"] if c["kind"] == "redundancy"]
    assert all(len(c["splits"]) == 1 for c in within)


def test_text_duplicates_normalised_and_near():
    texts = ["The quick brown fox jumps over the lazy dog near the river bank today",
             "the QUICK brown fox -- jumps over the lazy dog, near the river bank today!",
             "The quick brown fox jumps over the lazy dog near the river bank tonight",
             "An entirely different sentence about the stock market and interest rates",
             "Short one", "short ONE."]
    assert exact_text_pairs(texts).tolist() == [[0, 1], [4, 5]]
    near = near_text_pairs(texts, threshold=0.8)
    assert [(a, b) for a, b, _ in near] == [(0, 1), (0, 2), (1, 2), (4, 5)]
    assert all(s >= 0.8 for *_, s in near)
    assert [(a, b) for a, b, _ in near_text_pairs(texts, threshold=1.0)] == [(0, 1), (4, 5)]


def _noisy_digits(tmp_path, share: float, seed: int = 0, duplicates: int = 0):
    """The digits as a CSV with ``share`` of the labels flipped uniformly to another class, and the first
    ``duplicates`` rows repeated; returns (path, the flipped row numbers)."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    labels = digits.target.copy()
    flipped = rng.choice(len(labels), int(share * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    x = digits.data
    if duplicates:
        x, labels = np.vstack([x, x[:duplicates]]), np.r_[labels, labels[:duplicates]]
    table = pl.DataFrame({f"p{i}": x[:, i] for i in range(64)}).with_columns(pl.Series("label", labels.astype(str)))
    path = tmp_path / "digits.csv"
    table.write_csv(path)
    return path, set(flipped.tolist())


def test_label_issues_recover_injected_noise_and_equal_cleanlab_by_hand(tmp_path):
    from cleanlab.filter import find_label_issues

    path, flipped = _noisy_digits(tmp_path, 0.05)
    report = audit(path, label_col="label", seed=0)
    flagged = {int(r["id"]) for r in report["label_issues"]["rows"]}
    recall, precision = len(flagged & flipped) / len(flipped), len(flagged & flipped) / len(flagged)
    assert recall >= 0.8 and precision >= 0.6, (recall, precision)
    assert all(r["suggested"] != r["given"] for r in report["label_issues"]["rows"][:20])
    rows = read_rows(path, label_col="label")
    probs = out_of_fold_probabilities(rows, seed=0)
    by_hand = find_label_issues(rows.labels, probs, return_indices_ranked_by="self_confidence")
    assert [rows.ids[i] for i in by_hand] == [r["id"] for r in report["label_issues"]["rows"]]
    assert len(report["outliers"]["rows"]) == round(0.01 * len(rows))


def test_feature_duplicates_exact_and_within_epsilon(tmp_path):
    path, _ = _noisy_digits(tmp_path, 0.0, duplicates=5)
    exact = audit(path, label_col="label", labels=False)["near_duplicates"]
    pairs = {tuple(sorted(int(r["id"]) for r in c["rows"])) for c in exact["clusters"]}
    assert {(i, 1797 + i) for i in range(5)} <= pairs
    loose = audit(path, label_col="label", labels=False, epsilon=30.0)["near_duplicates"]
    assert loose["pairs"] > exact["pairs"]


def test_the_report_is_the_same_for_the_same_seed(tmp_path, dup_folder):
    path, _ = _noisy_digits(tmp_path, 0.05)
    first, second = (json.dumps(audit(path, label_col="label", seed=3)) for _ in range(2))
    assert first == second
    assert json.dumps(audit(dup_folder[0], labels=False)) == json.dumps(audit(dup_folder[0], labels=False))


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, capsys, text_csv):
    one = tmp_path / "one.csv"
    pl.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "a", "a"]}).write_csv(one)
    with pytest.raises(AugforgeError, match="label issues need at least two classes"):
        audit(one, label_col="label")
    lonely = tmp_path / "lonely.csv"
    pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": ["a", "a", "a", "b"]}).write_csv(lonely)
    with pytest.raises(AugforgeError, match="at least 2 rows per class .* class b has 1"):
        audit(lonely, label_col="label")
    assert main(["audit", str(lonely), "--label-col", "label"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "class b has 1" in err
    assert main(["audit", str(lonely), "--label-col", "label", "--epsilon", "-1"]) == 1
    assert "--epsilon -1.0: expected a distance of 0 or more" in capsys.readouterr().err
    assert main(["audit", str(text_csv), "--text-col", "review", "--label-col", "sentiment", "--threshold", "0"]) == 1
    assert "--threshold 0.0: expected a Jaccard similarity" in capsys.readouterr().err


def test_the_cli_prints_a_table_and_json(capsys, dup_folder):
    root, injected = dup_folder
    assert main(["audit", str(root), "--no-labels"]) == 0
    out = capsys.readouterr().out
    assert "near-duplicate pairs" in out and "redundancy:" in out
    assert main(["audit", str(root), "--no-labels", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["near_duplicates"]["redundant_rows"] >= 3 * len(injected) // 4


def test_tiny_images_are_compared_by_their_pixels_not_a_hash():
    """The 8x8 digits: a 64-bit hash of a 9x8 grid would join different digits; equal pixels do not."""
    report = audit("digits", split_spec=SplitSpec(test=0.25), labels=False)
    dup = report["near_duplicates"]
    assert "compared by their pixels: equal pixels" in dup["method"] and report["rows"] == 1797
    assert dup["pairs"] == 0 and dup["clusters"] == []  # scikit-learn's digits hold no two equal images
    loose = audit("digits", labels=False, epsilon=300.0)["near_duplicates"]
    assert loose["pairs"] > 0 and all(len(c["rows"]) >= 2 for c in loose["clusters"])


def test_the_html_page_shows_thumbnails_in_a_browser(tmp_path, dup_folder, text_csv):
    import subprocess

    from test_cli import _chromium

    root, _ = dup_folder
    page = tmp_path / "audit.html"
    assert main(["audit", str(root), "--no-labels", "--html", str(page), "--show", "4"]) == 0
    text = page.read_text()
    assert text.count('<img class="thumb"') == 4 * 5 and '<h2 id="duplicates">' in text
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1400",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    frames = (np.abs(pixels - [0xD9, 0x5F, 0x02]).sum(axis=2) < 30).sum()  # the thumbnails' orange frames
    assert frames > 20 * 4 * 96 * 0.8  # 20 framed thumbnails drawn, each frame about 4 x 4 x 96 pixels
    snippets = tmp_path / "text.html"
    audit(text_csv, text_col="review", label_col="sentiment", html=snippets)
    assert snippets.read_text().count('class="snippet"') >= 1  # the outlier (1% of rows, at least one) as text


# -- clean: in the recipe ------------------------------------------------------------------------------------

#: these fixtures are mostly copies, or hold 5% flipped labels: their builds drop past the default guard on
#: purpose, so they raise its bounds as a user would (the guard itself is tested below)
UNGUARDED = {"max_drop": 1.0, "max_drop_class": 1.0}


def test_the_cleaning_guard_stops_a_bulk_drop_in_one_line_and_writes_nothing(tmp_path, dup_folder, capsys):
    """A near-duplicate drop of half the train rows stops at clean.max_drop 0.05; one class losing more than
    clean.max_drop_class stops too; nothing is written either way; raising the bound lets the build through."""
    import yaml

    root, injected = dup_folder
    recipe = {"seed": 0, "source": {"path": str(root)}, "clean": {"near_duplicates": "drop"},
              "output": {"dir": str(tmp_path / "out"), "format": "png"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["build", str(tmp_path / "r.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clean would drop 24 of 48 train rows (50.0%; near_duplicates 24), more than " \
        "clean.max_drop 0.05" in err[0] and "raise clean.max_drop" in err[0]
    assert not (tmp_path / "out").exists()  # nothing written
    recipe["clean"]["max_drop"] = 0.6  # past the share of the split: the per-class bound (0.2) is next
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["build", str(tmp_path / "r.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert "of class china's" in err and "more than clean.max_drop_class 0.2" in err and "raise clean.max_drop_class" in err
    assert not (tmp_path / "out").exists()
    recipe["clean"]["max_drop_class"] = 0.6
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["build", str(tmp_path / "r.yaml")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sum(manifest["counts"]["train"].values()) == 48 - 24
    guarded = parse_recipe(recipe, "r.yaml").fingerprint_parts()
    recipe["clean"].pop("max_drop"), recipe["clean"].pop("max_drop_class")
    assert guarded == parse_recipe(recipe, "r.yaml").fingerprint_parts()  # the guard does not change the rows


def _build(tmp_path, source_path, clean, **source):
    from augforge.pipelines.build import build
    from augforge.recipe import parse_recipe

    recipe = parse_recipe({"seed": 0, "source": {"path": str(source_path), **source}, "clean": clean,
                           "output": {"format": "png"}}, str(tmp_path / "r.yaml"))
    out = tmp_path / "data"
    return recipe, build(recipe, out).write.manifest, out


def test_clean_drops_near_duplicates_and_lists_every_dropped_row(tmp_path, dup_folder):
    root, injected = dup_folder
    recipe, manifest, out = _build(tmp_path, root, {"near_duplicates": "drop", **UNGUARDED})
    dropped = [p for p in manifest["problems"] if "clean.near_duplicates: drop" in p["reason"]]
    found = audit(root, labels=False)["near_duplicates"]["redundant_rows"]
    assert len(dropped) == found == manifest["build"]["cleaning"]["dropped"] and found >= len(injected) * 3 // 4
    groups = {original.rsplit(".", 1)[0] for original in injected.values()}
    assert all(p["path"].split("-")[0].rsplit(".", 1)[0] in groups for p in dropped)  # only rows of copied crops
    assert sum(manifest["counts"]["train"].values()) == 24 + len(injected) - found
    assert audit(out, labels=False)["near_duplicates"]["pairs"] == 0  # the built train split has no near-twin left
    assert "clean" in recipe.fingerprint_parts()


def test_clean_leakage_drops_the_train_twin_or_refuses_in_one_line(tmp_path, dup_folder):
    from augforge.checks import RecipeError

    root, _ = dup_folder
    _, manifest, out = _build(tmp_path / "drop", root, {"leakage": "drop", **UNGUARDED}, test_split=0.3)
    assert manifest["build"]["cleaning"]["leaking_train_rows"] > 0
    assert audit(out, labels=False)["near_duplicates"]["leaking_rows"] == {}  # no test row has a twin in train
    assert sum(manifest["counts"]["test"].values()) == sum(audit(root, labels=False,
                                                                 split_spec=SplitSpec(test=0.3))["splits"].values()) - \
        sum(manifest["counts"]["train"].values()) - manifest["build"]["cleaning"]["dropped"]
    with pytest.raises(RecipeError) as caught:
        _build(tmp_path / "error", root, {"leakage": "error"}, test_split=0.3)
    assert "clean.leakage:" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "error" / "data").exists()
    _, warned, _ = _build(tmp_path / "warn", root, {"leakage": "warn"}, test_split=0.3)
    assert any(w.startswith("clean.leakage:") for w in warned["warnings"])


def test_clean_drops_train_label_issues_from_an_image_folder_with_flipped_labels(tmp_path):
    digits = load_digits()
    rng = np.random.default_rng(0)
    flipped = set(rng.choice(len(digits.target), 90, replace=False).tolist())
    root = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        given = (label + 1 + i % 9) % 10 if i in flipped else label
        folder = root / str(given)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    _, manifest, _ = _build(tmp_path / "b", root, {"label_issues": "drop", **UNGUARDED}, test_split=0.25)
    dropped = {int(p["path"].split("/")[1][:4]) for p in manifest["problems"] if "clean.label_issues" in p["reason"]}
    assert len(dropped) == len(manifest["build"]["cleaning"]["label_issues"]) > 0
    assert len(dropped & flipped) / len(dropped) >= 0.6  # most dropped rows were the flipped ones
    assert len(dropped & flipped) >= 0.6 * 0.75 * len(flipped)  # and most flipped train rows went
    _, uncleaned, _ = _build(tmp_path / "plain", root, {}, test_split=0.25)
    assert manifest["counts"]["test"] == uncleaned["counts"]["test"]  # the test split is never cleaned


def test_a_feature_table_build_cleans_label_issues_and_duplicates_and_lists_them(tmp_path, capsys):
    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target.copy()
    flipped = rng.choice(len(labels), 90, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    table = pl.DataFrame({f"p{i}": digits.data[:, i] for i in range(64)}).with_columns(
        pl.Series("label", labels), pl.Series("id", [f"r{i}" for i in range(len(labels))]))
    table = pl.concat([table, table[:5].with_columns(pl.Series("id", [f"copy{i}" for i in range(5)]))])
    table.write_csv(tmp_path / "digits.csv")
    import yaml

    base = {"seed": 0, "source": {"path": str(tmp_path / "digits.csv"), "label_col": "label", "id_col": "id",
                                  "test_split": 0.2}, "balance": {"strategy": "smote"}}
    for name, clean in (("plain", {}), ("clean", {"label_issues": "drop", "near_duplicates": "drop", **UNGUARDED})):
        recipe = {**base, "clean": clean, "output": {"dir": str(tmp_path / name)}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
        assert main(["build", str(tmp_path / f"{name}.yaml")]) == 0  # prints a feature build's table
    printed = capsys.readouterr().out
    assert "train split balanced with smote" in printed and "train row(s) dropped" in printed
    plain, clean = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("plain", "clean"))
    reasons = {p["path"]: p["reason"] for p in clean["problems"]}
    cleaning = clean["build"]["cleaning"]
    issues = {p for p, r in reasons.items() if "clean.label_issues: drop" in r}
    twins = {p for p, r in reasons.items() if "clean.near_duplicates: drop" in r}
    assert cleaning["dropped"] == len(reasons) == len(issues | twins)
    truth = {f"r{i}" for i in flipped}
    assert len(issues & truth) / len(issues) >= 0.6 and len(issues & truth) >= 0.6 * 0.8 * len(truth)
    assert twins and all(reasons[t].startswith("near-duplicate of ") for t in twins)  # one of each copied pair
    train_ids = set(Dataset(tmp_path / "clean", "train").take(
        np.arange(len(Dataset(tmp_path / "clean", "train"))), ["id"]).column("id").to_pylist())
    assert not train_ids & set(reasons)  # what is listed as dropped is not in train
    assert clean["counts"]["test"] == plain["counts"]["test"]  # held-out rows are never cleaned
    assert clean["fingerprint"] != plain["fingerprint"] and "build" not in plain


def test_no_clean_step_keeps_the_fingerprint_and_ablate_gets_an_arm_per_step():
    from augforge.recipe import parse_recipe
    from augforge.experiments.arms import build_arms
    from augforge.recipe.changes import REMOVE

    plain = parse_recipe({"source": {"path": "digits"}}, "r.yaml")
    assert "clean" not in plain.fingerprint_parts()
    recipe = parse_recipe({"source": {"path": "digits"}, "clean": {"near_duplicates": "drop", "label_issues": "drop",
                                                                   "leakage": "warn"}}, "r.yaml")
    arms = {a.name: a for a in build_arms(recipe)}
    assert arms["no-clean-near-duplicates"].changes == [("clean.near_duplicates", REMOVE)]
    assert "no-clean-label-issues" in arms and "no-clean-leakage" not in arms
    with pytest.raises(AugforgeError, match="clean.label_issues: expected one of keep, flag, drop"):
        parse_recipe({"source": {"path": "digits"}, "clean": {"label_issues": "remove"}}, "r.yaml")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 10), st.integers(2, 300))
def test_the_block_all_pairs_search_equals_the_chunk_search(seed, radius, n):
    from augforge.audit.hashing import all_pairs

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, 4, dtype=np.uint64)  # few centres: clustered hashes
    hashes = base[rng.integers(0, 4, n)] ^ rng.integers(0, 2**12, n, dtype=np.uint64)
    assert all_pairs(hashes, radius).tolist() == sorted(map(list, _brute_force(hashes, radius)))
    assert near_pairs(hashes, radius).tolist() == all_pairs(hashes, radius).tolist()


# -- homogeneous sets: verified near-duplicates, clusters that do not chain, what the report says -------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import homogeneous_sets as homogeneous  # noqa: E402  (the benchmark's set makers: one definition of the sets)


def _folder(root: Path, images: list, labels, names: list[str]) -> dict[int, str]:
    """The images as PNG files in class folders; each row's id (its path under ``root``)."""
    ids = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"r{i:05d}.png")
        ids[i] = f"{names[int(label)]}/r{i:05d}.png"
    return ids


def _duplicate_scores(tmp_path, maker, copies: int, limit: int | None = None) -> dict:
    images, labels, names = maker()
    if limit:
        images, labels = images[:limit], labels[:limit]
    images, labels, pairs, _ = homogeneous.inject_copies(images, labels, copies, seed=3)
    ids = _folder(tmp_path / "set", images, labels, names)
    report = audit(tmp_path / "set", labels=False)
    dup = report["near_duplicates"]
    truth = {frozenset((ids[a], ids[b])) for a, b in pairs}
    found = {frozenset((c["representative"], r["id"])) for c in dup["clusters"] for r in c["rows"]
             if r["id"] != c["representative"]}
    hits = len(found & truth)
    return {"precision": hits / max(1, len(found)), "recall": hits / len(truth), "dup": dup,
            "largest": max((len(c["rows"]) for c in dup["clusters"]), default=0), "rows": len(images),
            "copies": len(pairs)}


@pytest.mark.parametrize("maker, copies", [(homogeneous.glyphs, 12), (homogeneous.crops, 12)])
def test_homogeneous_sets_keep_only_verified_near_duplicates(tmp_path, maker, copies):
    """Glyphs of nine faces and textured photo crops, with injected near-copies (resized, JPEG, cropped,
    brightened, rotated): the verified pairs reach precision and recall >= 0.95, no giant cluster, and the rows
    flagged redundant stay within twice the injected share."""
    scores = _duplicate_scores(tmp_path, maker, copies)
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.95, scores
    assert scores["largest"] <= 3 and scores["dup"]["redundant_rows"] <= 2 * scores["copies"]
    assert scores["dup"]["candidates"] >= scores["dup"]["pairs"]


def test_upscaled_digits_are_far_from_one_cluster(tmp_path):
    """400 of the digits upscaled to 32 px: nearly every row has a hash neighbour, so the report says the set is
    homogeneous; verification keeps the copies and no distinct pair (precision and recall >= 0.95), never one
    giant cluster."""
    scores = _duplicate_scores(tmp_path, homogeneous.digits, 10, limit=400)
    dup = scores["dup"]
    assert dup["hash_neighbour_share"] > 0.9 and "this set is homogeneous" in dup["note"]
    assert scores["recall"] >= 0.95 and scores["precision"] >= 0.95, scores
    assert scores["largest"] <= 3 and dup["redundant_rows"] <= 2 * scores["copies"]


def test_copies_stored_larger_or_zoomed_align_back_and_distinct_glyphs_do_not():
    """The verification's two hard cases, on glyphs: a copy stored larger (28 -> 36 px: one more resampling
    than the original went through) and a 2 px crop of 28 resized back (a 17% zoom, beyond the basin of
    gradient steps from the identity) both align back above the threshold; the same letter in another face
    stays below it."""
    from augforge.audit.verify import THRESHOLD, pair_similarity

    images, labels, _ = homogeneous.glyphs()
    picks = [i for i in range(36) if labels[i] in (0, 11, 22, 33)]  # 0, B, M, X in DejaVu Sans
    larger = [np.asarray(Image.fromarray(images[i]).resize((36, 36), Image.Resampling.BILINEAR)) for i in picks]
    zoomed = [np.asarray(Image.fromarray(images[i]).crop((2, 2, 26, 26)).resize((28, 28), Image.Resampling.BILINEAR))
              for i in picks]
    other_face = [i + 36 * 5 for i in picks]  # the same characters in DejaVu Serif
    pool = images + larger + zoomed
    n, k = len(images), len(picks)
    similarity = pair_similarity(pool, np.array(picks * 3), np.r_[n : n + k, n + k : n + 2 * k, other_face])
    assert (similarity[: 2 * k] >= THRESHOLD).all() and (similarity[2 * k :] < THRESHOLD).all(), similarity


def test_gradient_histograms_put_an_edge_in_its_orientation_and_cells():
    """A vertical edge (the gradient points along x) fills orientation bin 0 of the cells it crosses and
    nothing else; a horizontal edge fills bin 4 (90 degrees of 0-180 in 8 bins); flat cells stay 0; every
    histogram with an edge has unit length."""
    from augforge.audit.labels import gradient_histograms

    vertical = np.zeros((32, 32), np.uint8)
    vertical[:, 16:] = 255
    histograms = gradient_histograms([vertical, np.ascontiguousarray(vertical.T)]).reshape(2, 8, 8, 8)
    edge = histograms[0][:, 3:5]  # the cells either side of column 16
    assert np.allclose(edge[..., 0], 1.0, atol=1e-5) and np.allclose(edge[..., 1:], 0.0)
    assert np.allclose(histograms[0][:, :3], 0.0) and np.allclose(histograms[0][:, 5:], 0.0)
    assert np.allclose(histograms[1][3:5, :, 4], 1.0, atol=1e-5)


def test_fast_label_model_finds_flipped_glyph_labels():
    """The fast image model (pixels and gradient histograms) on the 324 glyphs with 5% of the labels flipped:
    over three noise draws, uniform and class-dependent, precision >= 0.6 at recall >= 0.7 on average (one
    draw has only 16 flipped rows, so a single draw moves by 0.06 a row)."""
    from augforge.audit.labels import label_issues, out_of_fold_probabilities
    from augforge.audit.rows import AuditRows

    images, labels, names = homogeneous.glyphs()
    scores = []
    for kind in ("uniform", "class-dependent"):
        for seed in range(3):
            noisy, truth = homogeneous.flip_labels(labels, 0.05, kind, len(names), seed=seed)
            rows = AuditRows("image", names, [str(i) for i in range(len(images))], noisy, ["train"] * len(images),
                             images, "glyphs", [None] * len(images))
            flagged = set(label_issues(noisy, out_of_fold_probabilities(rows, seed=0))["flagged"].tolist())
            scores.append((len(flagged & truth) / max(1, len(flagged)), len(flagged & truth) / len(truth)))
    precision, recall = np.mean(scores, axis=0)
    assert precision >= 0.6 and recall >= 0.7, scores


@settings(max_examples=60, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=40))
def test_clusters_never_chain(edges):
    """Every member of a cluster is a partner of its representative, no row is in two clusters, and a chain
    A~B~C~D never ends up in one cluster."""
    from augforge.audit.clusters import star_clusters

    pairs = [(a, b) for a, b in edges if a != b]
    partners = {frozenset(p) for p in pairs}
    clusters = star_clusters(pairs, 16)
    seen = [row for cluster in clusters for row in cluster]
    assert len(seen) == len(set(seen))
    for representative, *members in clusters:
        assert members and all(frozenset((representative, m)) in partners for m in members)
    assert star_clusters([(0, 1), (1, 2), (2, 3)], 4) == [[1, 0, 2]]


def test_formulaic_short_texts_do_not_chain_into_one_cluster():
    """Log lines and product titles from templates share most words; only the injected copies are pairs."""
    rng = np.random.default_rng(0)
    lines = [f"user {user} logged in from host {rng.integers(1, 250)} at port {rng.integers(1000, 65000)}"
             for user in rng.permutation(np.arange(1000, 9999))[:300].tolist()]
    models = iter(rng.permutation(np.arange(100, 999)).tolist())  # no two titles alike but the injected
    lines += [f"{c} cotton t-shirt size {s} model {next(models)}" for c in ("blue", "red", "black")
              for s in ("S", "M", "L", "XL") for _ in range(20)]
    copies = [(i, len(lines) + n) for n, i in enumerate(rng.choice(len(lines), 15, replace=False).tolist())]
    lines += [lines[i].upper() + "  " for i, _ in copies]
    path = Path(tempfile.mkdtemp()) / "lines.csv"
    pl.DataFrame({"text": lines, "label": [f"c{i % 3}" for i in range(len(lines))]}).write_csv(path)
    dup = audit(path, text_col="text", label_col="label", labels=False)["near_duplicates"]
    assert dup["pairs"] == len(copies) and max(len(c["rows"]) for c in dup["clusters"]) == 2


def test_an_undecodable_file_is_listed_by_the_audit(tmp_path, sample_images, capsys):
    root = tmp_path / "photos"
    crops = _photo_crops(sample_images)[:8]
    for i, crop in enumerate(crops):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(root / f"c{i % 2}" / f"img{i}.png")
    good = (root / "c0" / "img0.png").read_bytes()
    (root / "c1" / "broken.png").write_bytes(good[: len(good) // 3])
    report = audit(root, labels=False)
    assert report["rows"] == 8 and [Path(p["path"]) for p in report["unreadable"]] == [root / "c1" / "broken.png"]
    assert report["unreadable"][0]["reason"].startswith("unreadable image")
    assert main(["audit", str(root), "--no-labels"]) == 0
    out = capsys.readouterr().out
    assert "excluded 1 input(s) that could not be read" in out and "broken.png: unreadable image" in out


def test_the_report_gives_the_models_own_accuracy_and_warns_when_it_is_low(tmp_path):
    """Photo crops labelled by photo and third are hard for a linear model on pixels: the report says how often
    it is right out of fold and warns; the 64-pixel digits are easy for it: no warning."""
    images, labels, names = homogeneous.crops()
    _folder(tmp_path / "crops", images, labels, names)
    hard = audit(tmp_path / "crops")["label_issues"]
    assert hard["model_accuracy"] < 0.85 and "is right on only" in hard["warning"]
    easy = audit("digits", split_spec=SplitSpec(test=0.25))["label_issues"]
    assert easy["model_accuracy"] > 0.9 and "warning" not in easy


def test_images_get_label_issues_from_the_better_of_a_cross_fitted_cnn_and_the_linear_model(tmp_path, capsys):
    """`augforge audit FOLDER` on images: a small CNN is cross-fitted within the budget, the linear model is
    measured on the same rows, and the probabilities of the one right on more rows out of fold are used; both
    accuracies are in the report. A budget too small for the CNN says so and uses the linear model."""
    images, labels, names = homogeneous.digits()
    keep = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    images, labels = [images[i] for i in keep], labels[keep]
    noisy, truth = homogeneous.flip_labels(labels, 0.05, "uniform", 10, seed=0)
    ids = _folder(tmp_path / "digits", images, noisy, names)
    # a budget any machine fits (the epochs are capped at MAX_EPOCHS): the path taken never depends on its speed
    assert main(["audit", str(tmp_path / "digits"), "--budget-minutes", "10", "--folds", "2", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    issues = report["label_issues"]
    assert "cross-fitting simple_cnn" in captured.err and report["source"] == str(tmp_path / "digits")
    compared = issues["models_compared"]
    assert set(compared) == {"simple_cnn", "logistic regression"} and issues["model_accuracy"] == max(compared.values())
    used_cnn = compared["simple_cnn"] >= compared["logistic regression"]
    assert ("augforge run" in issues["method"]) == used_cnn
    flagged = {row["id"] for row in issues["rows"]}
    assert len(flagged & {ids[i] for i in truth}) >= len(truth) // 2  # most flipped labels are among the flagged
    assert main(["audit", str(tmp_path / "digits"), "--budget-minutes", "0.001", "--json"]) == 0
    captured = capsys.readouterr()
    assert "label issues come from the fast linear model (raise --budget-minutes" in captured.err
    assert "logistic regression" in json.loads(captured.out)["label_issues"]["method"]
    assert main(["audit", str(tmp_path / "digits"), "--fast", "--json"]) == 0
    assert "cross-fitting" not in capsys.readouterr().err


def test_the_budget_gives_the_cnn_the_epochs_that_fit():
    """Pure arithmetic: steps per epoch from the rows and folds, wall time per step times the overhead."""
    from augforge.experiments.audit_model import BATCH, MAX_EPOCHS, OVERHEAD, epochs_for_budget

    steps = -(-1000 * 4 // 5 // BATCH)  # 1,000 rows, 5 folds: 800 rows a fold, 13 steps
    assert epochs_for_budget(1000, 5, 1.0, 0.05) == int(60 / (5 * steps * 0.05 * OVERHEAD))
    assert epochs_for_budget(1000, 5, 1000.0, 0.05) == MAX_EPOCHS
    assert epochs_for_budget(1000, 5, 0.001, 0.05) == 0
