"""Sources: the bundled digits, image folders and tables, with their bad-input errors."""

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from augforge.datasets import open_source
from augforge.datasets.sources import DatasetSource, DigitsSource, ImageFolderSource, TableSource
from augforge.datasets.sources.digits import uint8_to_digits
from augforge.datasets.schema import TEST, TRAIN, VAL
from augforge.errors import AugforgeError


def _batches(source):
    positions = np.arange(len(source.labels()))
    return pl.from_arrow(__import__("pyarrow").Table.from_batches(list(source.read(positions, 500))))


def test_digits_match_scikit_learns_arrays():
    source = open_source("digits")
    assert isinstance(source, DigitsSource)
    ref = load_digits()
    assert source.class_names == [str(i) for i in range(10)]
    assert np.array_equal(source.labels(), ref.target)
    rows = _batches(source)
    assert rows.height == 1797 and rows["id"][0] == "digits-0000"
    for i in (0, 17, 1796):
        pixels = np.asarray(Image.open(io.BytesIO(rows["image"][i])))
        assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
        assert np.array_equal(uint8_to_digits(pixels), ref.images[i])
    assert np.array_equal(rows["label"].to_numpy(), ref.target)


def test_image_folder_reads_classes_ids_and_original_bytes(image_folder):
    source = open_source(image_folder)
    assert isinstance(source, ImageFolderSource)
    assert source.class_names == ["china", "flower"]
    assert list(np.bincount(source.labels())) == [6, 3]
    assert source.ids()[0] == "china/img00.jpg"
    rows = _batches(source)
    assert rows["image"][1] == (image_folder / "china" / "img01.png").read_bytes()
    assert source.problems == []


def test_corrupt_truncated_and_non_image_files_are_listed_and_excluded(image_folder):
    good = (image_folder / "china" / "img00.jpg").read_bytes()
    (image_folder / "china" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (image_folder / "china" / "garbage.png").write_bytes(b"this is not a png")
    (image_folder / "flower" / "notes.txt").write_text("not an image")
    (image_folder / "flower" / ".DS_Store").write_bytes(b"\0")
    source = open_source(image_folder)
    assert list(np.bincount(source.labels())) == [6, 3]
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in source.problems}
    assert set(reasons) == {"truncated.jpg", "garbage.png", "notes.txt"}
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons["truncated.jpg"].startswith("unreadable image")


def test_decompression_bomb_guard(image_folder):
    Image.new("L", (400, 300)).save(image_folder / "flower" / "big.png")
    source = ImageFolderSource(image_folder, max_pixels=100_000)
    assert len(source.labels()) == 9
    assert any(p.reason.startswith("too large") and p.path.endswith("big.png") for p in source.problems)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no such file or directory"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root / "cats").mkdir(parents=True), "cats: class folder has no images"),
])
def test_image_folder_errors(tmp_path, setup, message):
    root = tmp_path / "imgs"
    setup(root)
    with pytest.raises(AugforgeError, match=message):
        open_source(root).labels()


def test_class_whose_images_are_all_corrupt_is_an_error(image_folder):
    for path in (image_folder / "flower").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(AugforgeError, match="flower: none of its images could be read"):
        open_source(image_folder).labels()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "tsv"])
def test_tables_in_every_format(tmp_path, digits_table, fmt):
    path = tmp_path / f"digits.{fmt}"
    {"csv": digits_table.write_csv, "parquet": digits_table.write_parquet, "jsonl": digits_table.write_ndjson,
     "tsv": lambda p: digits_table.write_csv(p, separator="\t")}[fmt](path)
    source = open_source(path)
    assert isinstance(source, TableSource) and source.payload == "features"
    assert source.class_names == [f"d{i}" for i in range(10)]
    assert source.feature_cols == [f"f{i}" for i in range(64)]
    assert np.array_equal(source.labels(), load_digits().target)
    rows = _batches(source)
    features = np.stack(rows["features"].to_numpy())
    assert features.dtype == np.float32 and features.shape == (1797, 64)
    assert np.array_equal(features, load_digits().data.astype(np.float32))
    assert rows["id"][:3].to_list() == ["0", "1", "2"]


def test_text_table_and_numeric_labels(tmp_path, text_csv):
    source = open_source(text_csv, label_col="sentiment", text_col="review")
    assert source.payload == "text" and source.class_names == ["neg", "pos"]
    assert _batches(source)["text"][0] == "a wonderful film with a moving story"
    numeric = tmp_path / "n.csv"
    pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [10, 2, 10, 2]}).write_csv(numeric)
    src = open_source(numeric)
    assert src.class_names == ["2", "10"] and list(src.labels()) == [1, 0, 1, 0]


def test_split_column_and_id_column_are_used(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"key": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "label": [0, 1, 0],
                  "split": ["train", "test", "val"]}).write_parquet(path)
    source = open_source(path, id_col="key")
    assert source.ids() == ["a", "b", "c"] and source.feature_cols == ["x"]
    assert list(source.native_splits()) == [TRAIN, TEST, VAL]


@pytest.mark.parametrize("frame, kwargs, message", [
    ({"x": [1.0], "y": [0]}, {}, r"no column 'label' \(columns: x, y\); set label_col$"),
    ({"x": [1.0, 2.0], "label": [0, None]}, {}, "column 'label' is null at row 1"),
    ({"x": [1.0], "label": [0.5]}, {}, "non-integer value 0.5"),
    ({"t": ["a"], "label": [0]}, {}, "no numeric feature columns"),
    ({"t": [1], "label": [0]}, {"text_col": "t"}, "holds Int64, not text"),
    ({"t": ["a"], "x": [1.0], "label": [0]}, {"feature_cols": ["t"]}, "feature column 't' holds String"),
    ({"x": [1.0, 2.0], "label": [0, 1], "split": ["train", "dev"]}, {}, "column 'split' holds 'dev' at row 1"),
    ({"k": ["a", "a"], "x": [1.0, 2.0], "label": [0, 1]}, {"id_col": "k"}, "repeats the id 'a'"),
])
def test_table_errors_name_the_column_and_row(tmp_path, frame, kwargs, message):
    path = tmp_path / "bad.parquet"
    pl.DataFrame(frame).write_parquet(path)
    with pytest.raises(AugforgeError, match=message):
        source = open_source(path, **kwargs)
        source.labels(), source.ids(), source.native_splits()


def test_null_text_is_dropped_and_listed_with_its_line(tmp_path):
    path = tmp_path / "t.csv"
    pl.DataFrame({"review": ["fine", None, "ok"], "label": ["a", "b", "a"]}).write_csv(path)
    source = open_source(path, text_col="review")
    assert [(p.path, p.reason) for p in source.problems] == [(f"{path} line 3", "empty text; dropped")]
    batch = next(source.read(np.arange(2), 10))
    assert batch.column("text").to_pylist() == ["fine", "ok"] and source.ids() == ["0", "2"]


def test_non_utf8_csv_is_named(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("review,label\ncaf\xe9 au lait,a\n".encode("latin-1"))
    with pytest.raises(AugforgeError, match="latin1.csv: not valid UTF-8"):
        open_source(path, text_col="review").labels()


def test_resolution_errors(tmp_path):
    with pytest.raises(AugforgeError, match="no such file or directory \\(bundled samples: digits\\)"):
        open_source(tmp_path / "missing")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(AugforgeError, match="not a dataset directory, image folder, COCO file, or table"):
        open_source(tmp_path / "data.xlsx")
    with pytest.raises(AugforgeError, match="^label_col do\\(es\\) not apply to the bundled sample"):
        open_source("digits", label_col="y")


def test_dataset_directory_is_a_source(digits_lt):
    source = open_source(digits_lt)
    assert isinstance(source, DatasetSource) and source.payload == "image"
    splits = source.native_splits()
    per_class = np.bincount(load_digits().target)
    assert (splits == TEST).sum() == sum(round(n * 0.25) for n in per_class)
    assert len(source.ids()) == len(splits) == 1002


def test_files_at_the_root_and_hidden_folders_are_listed_as_excluded(image_folder):
    (image_folder / "notes.txt").write_text("not a class")
    (image_folder / "stray.jpg").write_bytes((image_folder / "china" / "img00.jpg").read_bytes())
    (image_folder / ".cache").mkdir()
    (image_folder / ".cache" / "x.png").write_bytes((image_folder / "china" / "img01.png").read_bytes())
    source = open_source(str(image_folder))
    assert source.class_names == ["china", "flower"] and len(source.labels()) == 9
    reasons = {p.path.split("/")[-1]: p.reason for p in source.problems}
    assert "outside every class folder" in reasons["notes.txt"] and "outside every class folder" in reasons["stray.jpg"]
    assert "hidden folder" in reasons[".cache"]
