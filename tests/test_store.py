"""The shard store: writer, reader, manifest, checksums, atomicity and resume after kill -9."""

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.atomic import write_json
from augforge.datasets import ImbalanceSpec, SplitSpec, ingest, open_dataset, open_source
from augforge.datasets.manifest import MANIFEST, PROGRESS
from augforge.datasets.schema import dataset_schema
from augforge.datasets.writer import DatasetWriter
from augforge.errors import AugforgeError
from cli_process import start_cli
from conftest import kill_9_after_shards


def _rows(n, start=0):
    ids = [f"r{i:05d}" for i in range(start, start + n)]
    texts = ["x" * (i % 50) for i in range(start, start + n)]
    return pa.record_batch({
        "id": ids, "label": pa.array(np.arange(start, start + n) % 3, pa.int64()),
        "text": pa.array(texts, pa.large_string()), "source_id": ids,
        "synthetic": pa.array(np.zeros(n, bool)), "aug": pa.nulls(n, pa.string()),
        "split": pa.array(["train" if i % 5 else "test" for i in range(start, start + n)]),
    })


def _write(root, batches, **kwargs):
    writer = DatasetWriter(root, dataset_schema("text"), ["a", "b", "c"], fingerprint="fp", **kwargs)
    for batch in batches:
        writer.write(batch)
    return writer.close()


@st.composite
def _layouts(draw):
    """(batch sizes, shard_rows): batches of up to 300 rows, but at most 20 shards' worth each, so that a draw
    of 1-row shards writes about a hundred shards rather than 1,800 (the boundaries are the same question)."""
    shard_rows = draw(st.integers(1, 400))
    sizes = draw(st.lists(st.integers(1, min(300, 20 * shard_rows)), min_size=1, max_size=6))
    return sizes, shard_rows


@settings(max_examples=25, deadline=None)
@given(layout=_layouts())
def test_shard_boundaries_depend_only_on_the_row_sequence(tmp_path_factory, layout):
    sizes, shard_rows = layout
    total = sum(sizes)
    one = _write(tmp_path_factory.mktemp("a") / "d", [_rows(total)], shard_rows=shard_rows)
    starts = np.cumsum([0, *sizes])
    many = _write(tmp_path_factory.mktemp("b") / "d",
                  [_rows(n, s) for n, s in zip(sizes, starts)], shard_rows=shard_rows)
    assert [s["rows"] for s in one["shards"]] == [s["rows"] for s in many["shards"]]
    assert [s["checksum"] for s in one["shards"]] == [s["checksum"] for s in many["shards"]]
    assert all(s["rows"] == shard_rows for s in one["shards"][:-1]) and one["num_rows"] == total


def test_shard_mb_cuts_by_size(tmp_path):
    manifest = _write(tmp_path / "d", [_rows(2000)], shard_mb=0.02)
    sizes = [s["bytes"] for s in manifest["shards"]]
    assert len(sizes) > 3 and max(sizes) < 40_000
    assert sum(s["rows"] for s in manifest["shards"]) == 2000


def test_roundtrip_counts_and_views(tmp_path):
    manifest = _write(tmp_path / "d", [_rows(100)], shard_rows=30)
    assert manifest["counts"]["train"] == {"a": 27, "b": 27, "c": 26}
    assert manifest["counts"]["test"] == {"a": 7, "b": 6, "c": 7}  # labels of rows 0, 5, 10, ... cycle 0, 2, 1
    assert not (tmp_path / "d" / PROGRESS).exists()
    train = open_dataset(tmp_path / "d")
    assert len(train) == 80 and train.class_counts() == manifest["counts"]["train"] == train.manifest_counts()
    assert train[0]["id"] == "r00001" and train[-1]["id"] == "r00099"
    picked = train.take([5, 0, 5])
    assert picked.column("id").to_pylist() == [train[5]["id"], "r00001", train[5]["id"]]
    frame = train.to_polars()
    assert frame.columns == ["id", "label", "source_id", "synthetic", "aug", "split"]
    assert frame["split"].unique().to_list() == ["train"] and frame.height == 80
    everything = open_dataset(tmp_path / "d", split="all")
    assert len(everything) == 100 and sum(b.num_rows for b in everything.iter_batches(["id"])) == 100
    with pytest.raises(IndexError):
        train[80]


def test_torch_view_of_digits(digits_lt):
    dataset = open_dataset(digits_lt).torch_dataset()
    x, y = dataset[3]
    assert x.shape == (1, 8, 8) and x.dtype == torch.uint8 and isinstance(y, int)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2)
    xs, ys = zip(*loader)
    assert sum(len(b) for b in ys) == len(dataset) == 552
    assert torch.cat(xs).shape == (552, 1, 8, 8)
    assert np.array_equal(torch.cat(ys).numpy(), open_dataset(digits_lt).labels())


def test_a_flipped_byte_is_reported_with_the_shard_name(tmp_path):
    _write(tmp_path / "d", [_rows(90)], shard_rows=30)
    shard = tmp_path / "d" / "shards" / "part-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    dataset = open_dataset(tmp_path / "d", split="all")
    assert dataset[0]["id"] == "r00000"  # shard 0 is fine and read lazily
    with pytest.raises(AugforgeError, match=r"part-00001.arrow: checksum mismatch"):
        dataset[40]
    with pytest.raises(AugforgeError, match="part-00001.arrow: checksum mismatch"):
        open_dataset(tmp_path / "d")  # the train view reads every shard's split column



def test_a_truncated_shard_is_reported_by_verify(tmp_path):
    _write(tmp_path / "d", [_rows(90)], shard_rows=30)
    truncated = tmp_path / "d" / "shards" / "part-00002.arrow"
    truncated.write_bytes(truncated.read_bytes()[:100])
    dataset = open_dataset(tmp_path / "d", split="all")
    assert dataset[59]["id"] == "r00059"
    with pytest.raises(AugforgeError, match="part-00002.arrow: size is 100 bytes, the manifest says"):
        dataset.verify()


def test_bad_manifests_are_named(tmp_path):
    with pytest.raises(AugforgeError, match="not an augforge dataset"):
        open_dataset(tmp_path)
    (tmp_path / MANIFEST).write_text("{ nope")
    with pytest.raises(AugforgeError, match="manifest.json: not a valid augforge manifest"):
        open_dataset(tmp_path)
    write_json(tmp_path / MANIFEST, {"format": "other/9"})
    with pytest.raises(AugforgeError, match="is not 'augforge.dataset/1'"):
        open_dataset(tmp_path)


def test_ingest_is_deterministic_and_idempotent(tmp_path):
    kwargs = dict(splits=SplitSpec(0.2, 0.1), imbalance=ImbalanceSpec("longtail", 5.0), seed=3, shard_rows=200)
    a = ingest(open_source("digits"), tmp_path / "a", **kwargs).manifest
    b = ingest(open_source("digits"), tmp_path / "b", **kwargs).manifest
    assert [s["checksum"] for s in a["shards"]] == [s["checksum"] for s in b["shards"]]
    assert a["counts"] == b["counts"] and set(a["counts"]) == {"train", "val", "test"}
    again = ingest(open_source("digits"), tmp_path / "a", **kwargs)
    assert again.up_to_date and again.written_rows == 0
    other = ingest(open_source("digits"), tmp_path / "c", **{**kwargs, "seed": 4}).manifest
    assert other["counts"]["test"] == a["counts"]["test"]  # stratified sizes do not depend on the seed
    ids = lambda root: set(open_dataset(root, "test").to_polars(["id"])["id"])  # noqa: E731
    assert ids(tmp_path / "a") != ids(tmp_path / "c")


def test_ingest_refuses_to_clobber(tmp_path):
    ingest(open_source("digits"), tmp_path / "d")
    with pytest.raises(AugforgeError, match="holds another dataset .* pass --overwrite"):
        ingest(open_source("digits"), tmp_path / "d", seed=1)
    assert ingest(open_source("digits"), tmp_path / "d", seed=1, overwrite=True).manifest["seed"] == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(AugforgeError, match="not empty and is not an augforge dataset"):
        ingest(open_source("digits"), tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep me"


def test_failed_ingest_leaves_nothing(tmp_path):
    path = tmp_path / "t.csv"
    pl.DataFrame({"review": ["good"] * 51, "label": ["a", "b"] * 25 + [None]}).write_csv(path)
    with pytest.raises(AugforgeError, match="null at line 52"):
        ingest(open_source(path, text_col="review"), tmp_path / "out", shard_rows=10)
    assert not (tmp_path / "out").exists()



def test_kill_9_mid_ingest_then_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(0)
    n = 300_000
    table = pl.DataFrame(rng.normal(size=(n, 16)).astype(np.float32), schema=[f"x{i}" for i in range(16)])
    table = table.with_columns(pl.Series("label", rng.integers(0, 5, n)))
    src = tmp_path / "big.parquet"
    table.write_parquet(src)
    run = lambda out: start_cli(["ingest", str(src), str(out), "--shard-rows", "2000", "--test-split", "0.1",  # noqa: E731
                                 "-q"])

    full = tmp_path / "full"
    assert run(full).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    done_before = kill_9_after_shards(run(killed), killed)
    assert not (killed / MANIFEST).exists()
    assert 3 <= done_before < 150

    assert run(killed).wait(timeout=300) == 0
    a = json.loads((full / MANIFEST).read_text())
    b = json.loads((killed / MANIFEST).read_text())
    assert [s["checksum"] for s in a["shards"]] == [s["checksum"] for s in b["shards"]]
    assert a["counts"] == b["counts"] and b["num_rows"] == n
    assert sorted(p.name for p in (killed / "shards").iterdir()) == sorted(p.name for p in (full / "shards").iterdir())
    assert open_dataset(killed, "all").to_polars(["id"])["id"].n_unique() == n
