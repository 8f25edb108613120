"""`augforge balance`: resampled train splits in the shard store, with provenance, from Python and the CLI."""

import json
from collections import Counter

import numpy as np
import polars as pl
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.under_sampling import RandomUnderSampler

from augforge.balance.apply import balance_dataset
from augforge.balance.strategy import parse_strategy, project
from augforge.cli import main
from augforge.datasets import open_dataset, open_source
from augforge.datasets.manifest import MANIFEST
from augforge.datasets.splits import SplitSpec
from augforge.errors import AugforgeError
from cli_process import start_cli
from conftest import kill_9_after_shards


def _table(path, X, labels, **extra):
    frame = pl.DataFrame(X.astype(np.float32), schema=[f"x{i}" for i in range(X.shape[1])])
    frame = frame.with_columns(pl.Series("label", labels), *(pl.Series(k, v) for k, v in extra.items()))
    frame.write_parquet(path)
    return path


@pytest.fixture
def digits_parquet(tmp_path, digits_table):
    """The digits features, long-tailed by keeping fewer rows of the higher digits."""
    keep = np.concatenate([np.flatnonzero(digits_table["label"] == f"d{c}")[: [170, 90, 50, 30, 20][c]]
                           for c in range(5)])
    frame = digits_table[keep]
    path = tmp_path / "digits.parquet"
    frame.write_parquet(path)
    return path


def _shard_checksums(path):
    return [s["checksum"] for s in json.loads((path / MANIFEST).read_text())["shards"]]


def test_images_are_balanced_by_marked_copies(digits_lt, tmp_path):
    out = tmp_path / "bal"
    result, _ = balance_dataset(open_source(digits_lt), out, "over", shard_rows=300)
    before = open_dataset(digits_lt, "train")
    after = open_dataset(out, "train")
    counts = after.class_counts()
    assert set(counts.values()) == {max(before.class_counts().values())}
    assert result.manifest["balance"]["mode"] == "copies"

    rows = after.take(np.arange(len(after))).to_pylist()
    by_id = {r["id"]: r for r in before.take(np.arange(len(before))).to_pylist()}
    assert len({r["id"] for r in rows}) == len(rows)
    originals = [r for r in rows if not r["synthetic"]]
    copies = [r for r in rows if r["synthetic"]]
    assert len(originals) == len(before) and len(copies) == len(after) - len(before)
    for row in copies:
        source_row = by_id[row["id"].split("~b")[0]]
        assert row["image"] == source_row["image"] and row["label"] == source_row["label"]
        assert row["source_id"] == source_row["source_id"] and row["aug"] == "balance:over"
    # test rows pass through untouched
    t_in, t_out = open_dataset(digits_lt, "test"), open_dataset(out, "test")
    assert t_in.take(np.arange(len(t_in))).equals(t_out.take(np.arange(len(t_out))))


def test_smote_then_under_on_features_gives_the_projected_counts(digits_parquet, tmp_path):
    strategy = "smote:{d2: 120, d3: 110, d4: 100}:k=4,under:{d0: 130}"
    source = open_source(digits_parquet)
    out = tmp_path / "bal"
    result, plan = balance_dataset(source, out, strategy, seed=3)
    names = source.class_names
    projected = project(parse_strategy(strategy), plan.before, names)
    train = open_dataset(out, "train")
    assert list(train.class_counts().values()) == projected.counts
    assert result.manifest["balance"]["after"] == dict(zip(names, projected.counts))

    # every synthetic row is within its origin's 4th-nearest-neighbour distance (t <= 1 on a segment)
    X = source.read(np.arange(len(source)), 10_000).__next__().column("features").to_numpy(zero_copy_only=False)
    X = np.stack(X)
    ids = source.ids()
    labels = source.labels()
    table = train.take(np.arange(len(train))).to_pydict()
    synthetic = [i for i, s in enumerate(table["synthetic"]) if s]
    assert len(synthetic) == 70 + 80 + 80
    for i in synthetic:
        a = ids.index(table["source_id"][i])
        same = X[labels == labels[a]]
        kth = np.sort(np.linalg.norm(same - X[a], axis=1))[4]
        assert np.linalg.norm(np.asarray(table["features"][i]) - X[a]) <= kth + 1e-4
        assert table["aug"][i].startswith("balance:smote")


def test_the_classic_binary_recipe_matches_imblearn(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (2000, 8)), rng.normal(2, 1, (150, 8))])
    y = np.r_[np.zeros(2000, int), np.ones(150, int)]
    path = _table(tmp_path / "b.parquet", X, y)
    out = tmp_path / "bal"
    assert main(["balance", str(path), str(out), "--strategy", "smote:0.5,under:0.8", "-q"]) == 0
    X_ref, y_ref = SMOTE(sampling_strategy=0.5, random_state=0).fit_resample(X.astype(np.float32), y)
    _, y_ref = RandomUnderSampler(sampling_strategy=0.8, random_state=1).fit_resample(X_ref, y_ref)
    counts = open_dataset(out).class_counts()
    assert [counts["0"], counts["1"]] == [Counter(y_ref)[0], Counter(y_ref)[1]] == [1250, 1000]


def test_deterministic_for_a_seed_and_idempotent(digits_parquet, tmp_path):
    args = ["balance", str(digits_parquet), None, "--strategy", "smote,under:{d0: 100}", "--test-split", "0.2",
            "--shard-rows", "200", "-q"]
    for name in ("a", "b"):
        args[2] = str(tmp_path / name)
        assert main(args) == 0
    assert _shard_checksums(tmp_path / "a") == _shard_checksums(tmp_path / "b")
    assert main(args) == 0  # rerun: already complete, untouched
    assert _shard_checksums(tmp_path / "b") == _shard_checksums(tmp_path / "a")
    assert main(args[:2] + [str(tmp_path / "c")] + args[3:] + ["--seed", "1"]) == 0
    assert _shard_checksums(tmp_path / "c") != _shard_checksums(tmp_path / "a")
    test_a, test_c = open_dataset(tmp_path / "a", "test"), open_dataset(tmp_path / "c", "test")
    assert len(test_a) == len(test_c) > 0


def test_val_and_test_pass_through(digits_parquet, tmp_path):
    source = open_source(digits_parquet)
    out = tmp_path / "bal"
    balance_dataset(source, out, "over", splits=SplitSpec(test=0.25, val=0.1))
    ingested = tmp_path / "plain"
    assert main(["ingest", str(digits_parquet), str(ingested), "--test-split", "0.25", "--val-split", "0.1",
                 "-q"]) == 0
    for split in ("val", "test"):
        a, b = open_dataset(ingested, split), open_dataset(out, split)
        assert a.take(np.arange(len(a))).equals(b.take(np.arange(len(b))))
        assert not b.to_polars()["synthetic"].any()



def test_kill_9_mid_balance_then_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(0)
    n_major, n_minor = 200_000, 20_000
    X = np.concatenate([rng.normal(0, 1, (n_major, 16)), rng.normal(1.5, 1, (n_minor, 16))])
    y = np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]
    src = _table(tmp_path / "big.parquet", X, y)
    run = lambda out: start_cli(["balance", str(src), str(out), "--strategy", "smote:0.5,under:0.9",  # noqa: E731
                                 "--shard-rows", "2000", "--test-split", "0.1", "-q"])
    full = tmp_path / "full"
    assert run(full).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    done_before = kill_9_after_shards(run(killed), killed)
    assert not (killed / MANIFEST).exists()
    total_shards = len(_shard_checksums(full))
    assert 3 <= done_before < total_shards

    assert run(killed).wait(timeout=300) == 0
    assert _shard_checksums(killed) == _shard_checksums(full)
    ids = open_dataset(killed, "all").to_polars(["id"])["id"]
    assert ids.n_unique() == len(ids) == json.loads((full / MANIFEST).read_text())["num_rows"]


def _fails(capsys, argv, *needles):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_gets_one_line_and_leaves_nothing(capsys, tmp_path, digits_lt, text_csv):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[17, 2] = np.nan
    y = np.r_[np.zeros(50, int), np.ones(10, int)]
    nan_path = _table(tmp_path / "nan.parquet", X, y, id=[f"row{i}" for i in range(60)])
    out = tmp_path / "out"
    _fails(capsys, ["balance", str(nan_path), str(out), "--strategy", "smote", "--id-col", "id"],
           "nan.parquet", "'x2'", "'row17'")
    small = _table(tmp_path / "small.parquet", rng.normal(size=(54, 3)), np.r_[np.zeros(50, int), np.ones(4, int)])
    _fails(capsys, ["balance", str(small), str(out), "--strategy", "smote"], "class '1' has 4 rows", "k_neighbors")
    _fails(capsys, ["balance", str(digits_lt), str(out), "--strategy", "smote"], "needs feature vectors", "'over'")
    _fails(capsys, ["balance", str(text_csv), str(out), "--strategy", "smote", "--text-col", "review",
                    "--label-col", "sentiment"], "payload is text")
    _fails(capsys, ["balance", str(small), str(out), "--strategy", "smoot"], "unknown sampler 'smoot'")
    _fails(capsys, ["balance", str(small), str(out), "--strategy", "smote:k_nieghbors=3"], "no option 'k_nieghbors'")
    _fails(capsys, ["balance", str(small), str(out), "--strategy", "over:{0: 10}"], "imbalanced-learn refuses it")
    _fails(capsys, ["balance", str(small), str(out), "--strategy", "over:{cat: 10}"], "unknown class 'cat'")
    assert not out.exists()


def test_refuses_to_clobber_another_dataset(tmp_path, digits_lt, capsys):
    out = tmp_path / "bal"
    assert main(["balance", str(digits_lt), str(out), "--strategy", "over", "-q"]) == 0
    _fails(capsys, ["balance", str(digits_lt), str(out), "--strategy", "under", "-q"], "pass --overwrite")
    assert main(["balance", str(digits_lt), str(out), "--strategy", "under", "--overwrite", "-q"]) == 0
    counts = open_dataset(out).class_counts()
    assert set(counts.values()) == {min(open_dataset(digits_lt).class_counts().values())}


def test_report_of_the_output_shows_the_balance(tmp_path, digits_lt, capsys):
    out = tmp_path / "bal"
    assert main(["balance", str(digits_lt), str(out), "--strategy", "over:not majority", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "imbalance ratio 1.00" in printed
    assert main(["report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["imbalance_ratio"] == 1.0 and report["entropy"] == 1.0


def test_python_api_errors_are_augforge_errors(tmp_path, digits_lt):
    with pytest.raises(AugforgeError, match="needs feature vectors"):
        balance_dataset(open_source(digits_lt), tmp_path / "x", "smote")


def test_bad_tables_are_refused_not_passed_silently(tmp_path, capsys):
    import polars as pl

    rng = np.random.default_rng(0)
    x = rng.normal(size=40).round(3).astype(str).tolist()
    x[17] = "oops"
    pl.DataFrame({"x": x, "z": rng.normal(size=40), "label": ["a"] * 30 + ["b"] * 10}).write_csv(tmp_path / "bad.csv")
    _fails(capsys, ["balance", str(tmp_path / "bad.csv"), str(tmp_path / "o1"), "--strategy", "over"],
           "column 'x' holds numbers but 'oops' at line 19")
    (tmp_path / "header.csv").write_text("x,label\n")
    _fails(capsys, ["report", str(tmp_path / "header.csv")], "the table has no rows")
    pl.DataFrame({"x": pl.Series([], dtype=pl.Float64), "label": pl.Series([], dtype=pl.String)}).write_parquet(
        tmp_path / "empty.parquet")
    _fails(capsys, ["report", str(tmp_path / "empty.parquet")], "the table has no rows")
    values = rng.normal(size=40)
    values[3] = np.nan
    pl.DataFrame({"x": values, "label": ["a"] * 30 + ["b"] * 10}).write_parquet(tmp_path / "nan.parquet")
    _fails(capsys, ["balance", str(tmp_path / "nan.parquet"), str(tmp_path / "o2"), "--strategy", "over"],
           "feature column 'x' is nan at row '3'")  # copies refuse NaN rows as interpolation does
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    names = pl.DataFrame({"name": ["ann", "bob", "42"] * 10, "v": rng.normal(size=30), "label": ["a", "b", "a"] * 10})
    names.write_csv(tmp_path / "names.csv")  # a text column with one number in it is not a broken number column
    assert main(["report", str(tmp_path / "names.csv")]) == 0


def test_the_iht_projection_says_it_is_a_lower_bound(capsys):
    assert main(["report", "digits", "--imbalance", "longtail", "--strategy", "iht"]) == 0
    assert "keeps at least these counts" in " ".join(capsys.readouterr().out.split())
