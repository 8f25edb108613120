"""The command line: ingest, inspect and report, their output, and one-line errors on bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from augforge.cli import main
from augforge.datasets import open_dataset
from augforge.errors import AugforgeError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_digits_and_report_all_splits(tmp_path, capsys):
    code, out, _ = run(capsys, "ingest", "digits", tmp_path / "d", "-q")
    assert code == 0 and "wrote 1,797 rows" in out
    code, out, _ = run(capsys, "report", tmp_path / "d", "--json", "--split", "all")
    report = json.loads(out)
    assert code == 0 and report["total"] == 1797 and report["num_classes"] == 10
    assert report["counts"] == {str(c): int(n) for c, n in enumerate(np.bincount(
        __import__("sklearn.datasets").datasets.load_digits().target))}
    assert set(report) >= {"total", "num_classes", "counts", "imbalance_ratio", "entropy", "minority",
                           "recommendation", "shares", "majority", "problems", "schema"}


def test_longtail_train_split_and_balanced_test_split(digits_lt, capsys):
    _, out, _ = run(capsys, "report", digits_lt, "--json")
    train = json.loads(out)
    assert 9.0 <= train["imbalance_ratio"] <= 11.0 and train["minority"][0] == "9"
    assert train["recommendation"]["strategy"] == "over"
    _, out, _ = run(capsys, "report", digits_lt, "--json", "--split", "test")
    test = json.loads(out)
    assert test["imbalance_ratio"] < 1.1 and test["total"] == 450


def test_report_projects_a_chain(digits_lt, capsys):
    code, out, _ = run(capsys, "report", digits_lt, "--json", "--strategy", "over:not majority,under:{0: 100}")
    projected = json.loads(out)["projected"]
    assert code == 0 and projected["exact"] and projected["counts"]["0"] == 100
    assert all(projected["counts"][str(c)] == 134 for c in range(1, 10))
    assert [s["sampler"] for s in projected["steps"]] == ["RandomOverSampler", "RandomUnderSampler"]


def test_report_terminal_output(digits_lt, capsys):
    code, out, _ = run(capsys, "report", digits_lt, "--strategy", "smote")
    out = " ".join(out.split())  # rich wraps long lines off a terminal
    assert code == 0
    assert "imbalance ratio: 9.57" in out and "minority classes (*): 9, 8, 7, 6, 5, 4" in out
    assert "recommendation: over" in out and "after smote: rows 1,340" in out
    assert "needs a feature column" in out  # SMOTE on images is flagged


def test_report_on_sources_directly(tmp_path, image_folder, digits_table, capsys):
    (image_folder / "flower" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out, _ = run(capsys, "report", image_folder, "--json")
    report = json.loads(out)
    assert code == 0 and report["counts"] == {"china": 6, "flower": 3}
    assert report["problems"]["count"] == 1 and report["problems"]["items"][0]["path"].endswith("broken.jpg")
    path = tmp_path / "digits.parquet"
    digits_table.write_parquet(path)
    code, out, _ = run(capsys, "report", path, "--json", "--test-split", "0.2", "--split", "test")
    assert code == 0 and json.loads(out)["total"] == sum(round(n * 0.2) for n in
                                                          digits_table["label"].value_counts()["count"])


def test_ingest_image_folder_counts_excluded_files(tmp_path, image_folder, capsys):
    (image_folder / "china" / "bad.png").write_bytes(b"nope")
    code, out, _ = run(capsys, "ingest", image_folder, tmp_path / "ds", "-q")
    assert code == 0 and "wrote 9 rows" in out and "excluded 1 input(s)" in out
    manifest = open_dataset(tmp_path / "ds").manifest
    assert manifest["problems"][0]["path"].endswith("bad.png")
    code, out, _ = run(capsys, "inspect", tmp_path / "ds", "--verify", "--shards")
    assert code == 0 and "9 rows, 2 classes, 1 shard(s)" in out and "all shards verified" in out
    assert "1 input(s) were excluded" in out
    code, again, _ = run(capsys, "ingest", image_folder, tmp_path / "ds", "-q")
    assert code == 0 and "nothing to do" in again


def test_inspect_json(digits_lt, capsys):
    code, out, _ = run(capsys, "inspect", digits_lt, "--json")
    manifest = json.loads(out)
    assert code == 0 and manifest["num_rows"] == 1002 and "shards" not in manifest
    assert manifest["imbalance"] == {"profile": "longtail", "factor": 10.0}


def _csv(tmp_path, name, frame):
    path = tmp_path / name
    pl.DataFrame(frame).write_csv(path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["report", "{tmp}/missing"], "no such file or directory"),
    (["report", "{tmp}/empty_dir"], "no class folders"),
    (["report", "{tmp}/nolabel.csv"], "no column 'label' (columns: x, y); set --label-col"),
    (["report", "{tmp}/nulls.csv"], "column 'label' is null at line 3"),
    (["report", "digits", "--strategy", "smote:0.5"], "can be a float only when the type of target is binary"),
    (["report", "digits", "--strategy", "warp:0.5"], "unknown sampler 'warp'"),
    (["report", "digits", "--split", "dev"], "unknown split 'dev'"),
    (["ingest", "digits", "{tmp}/out", "--test-split", "1.5"], "--test-split 1.5"),
    (["ingest", "digits", "{tmp}/out", "--label-col", "y"], "--label-col do(es) not apply"),
    (["ingest", "{tmp}/nulls.csv", "{tmp}/out"], "column 'label' is null at line 3"),
    (["inspect", "{tmp}/empty_dir"], "not an augforge dataset"),
])
def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path, capsys, argv, message):
    (tmp_path / "empty_dir").mkdir()
    _csv(tmp_path, "nolabel.csv", {"x": [1.0], "y": [2]})
    _csv(tmp_path, "nulls.csv", {"x": [1.0, 2.0], "label": ["a", None]})
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_console_script_and_help():
    exe = shutil.which("augforge", path=str(__import__("pathlib").Path(sys.executable).parent))
    for sub in ("ingest", "inspect", "report"):
        proc = subprocess.run([exe, sub, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and f"usage: augforge {sub}" in proc.stdout
    proc = subprocess.run([exe, "report", "nowhere"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "augforge report: error: nowhere: no such file or directory (bundled samples: digits)")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("Chromium is needed to look at the HTML report: apt-get install chromium "
                         "(scripts/setup.sh does this when run as root)")


def test_html_report_shows_the_chart_in_a_browser(digits_lt, tmp_path, capsys):
    page = tmp_path / "r.html"
    code, out, _ = run(capsys, "report", digits_lt, "--strategy", "over", "--html", page)
    assert code == 0 and f"wrote {page}" in out.replace("\n", "")
    html = page.read_text()
    assert '<img id="chart"' in html and "data:image/png;base64," in html
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,1200",
         page.as_uri()],
        check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    orange = (np.abs(pixels - [0xD9, 0x5F, 0x02]).sum(axis=2) < 30).sum()  # "before" bars
    green = (np.abs(pixels - [0x1B, 0x9E, 0x77]).sum(axis=2) < 30).sum()   # "after" bars
    assert orange > 2000 and green > 2000 and green > orange  # after 'over' every class is as tall as the first


def test_models_list_and_summary(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and all(name in out for name in ("mobilenet_v3_small", "text_transformer", "simple_cnn", "mlp"))
    code, out, _ = run(capsys, "models", "mobilenet_v3_small")
    assert code == 0 and "total params: 2,542,856" in out and "(56.5 M)" in out
    code, out, _ = run(capsys, "models", "simple_cnn", "--in-channels", "1", "--num-classes", "10",
                       "--input-size", "1x8x8", "--option", "attention_after=[-1]")
    assert code == 0 and "MultiheadAttention" in out and "[1, 10]" in out
    code, out, _ = run(capsys, "models", "text_bilstm", "--num-classes", "2", "--option", "vocab_size=500")
    assert code == 0 and "LSTM" in out


@pytest.mark.parametrize("argv, message", [
    (["models", "resnet50"], "unknown model 'resnet50'"),
    (["models", "mlp", "--option", "hidden"], "expected NAME=VALUE"),
    (["models", "mobilenet_v3_small", "--option", "alpha=abc"], "bad option value"),
    (["models", "mobilenet_v3_small", "--input-size", "3xbig"], "expected sizes joined by x"),
])
def test_models_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1 and message in err and err.count("\n") == 1


def test_report_and_inspect_do_not_load_torch_or_scikit_learn(digits_lt):
    code = ("import sys; from augforge.cli import main; main(['report', 'digits']); main(['inspect', sys.argv[1]]);"
            "heavy = sorted(m for m in ('torch', 'sklearn', 'imblearn', 'nvidia.dali') if m in sys.modules);"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(digits_lt)], capture_output=True, text=True, check=True).stdout
    assert "imbalance ratio" in out and out.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("names", [
    [f"class {i}" for i in range(5)],
    [f"supplier invoice dispute {i}" for i in range(6)],
    [f"a very long class name that goes on and on, number {i}" for i in range(9)],
    [f"c{i}" for i in range(40)],
])
def test_class_labels_of_the_chart_never_overlap(names):
    import matplotlib.pyplot as plt

    from augforge.balance.render import chart_figure

    fig = chart_figure({"counts": {n: 10 + i for i, n in enumerate(names)}, "split": "train"})
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in fig.axes[0].get_xticklabels()]
    plt.close(fig)
    assert len(boxes) == len(names)
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 <= b.x0, (a, b)  # left to right, with no two labels sharing a column of pixels


def test_printed_paths_have_no_dot_dot_segments(tmp_path, capsys):
    spelled = tmp_path / "x" / ".." / "d"
    code, out, _ = run(capsys, "ingest", "digits", spelled, "-q")
    assert code == 0 and f"to {tmp_path / 'd'}" in out and ".." not in out


@pytest.mark.parametrize("argv, message", [
    (["build", "examples/digits.yaml", "--out", "gs://bucket/aug"], "--out gs://bucket/aug: the scheme gs://"),
    (["ingest", "digits", "hdfs://nn/digits"], "out hdfs://nn/digits: the scheme hdfs://"),
    (["ingest", "ftp://host/table.csv", "local"], "source ftp://host/table.csv: the scheme ftp://"),
    (["report", "hdfs://nn/table.parquet"], "source hdfs://nn/table.parquet: the scheme hdfs://"),
    (["audit", "gs://bucket/photos", "--no-labels"], "source gs://bucket/photos"),
    (["balance", "digits", "az://bucket/bal", "--strategy", "over"], "out az://bucket/bal: the scheme az://"),
    (["inspect", "gs://bucket/data"], "path gs://bucket/data: the scheme gs://"),
    (["ingest", "digits", "s3://B/x"], "out s3://B/x: 'B' is not a valid bucket name"),
    (["train", "examples/digits.yaml", "--run-dir", "s3://bucket/run"], "--run-dir s3://bucket/run is a URL"),
])
def test_a_url_augforge_cannot_use_is_refused_in_one_line_and_never_taken_as_a_path(tmp_path, monkeypatch, capsys,
                                                                                     argv, message):
    """`build --out s3://bucket/x` used to write a local folder `s3:`: s3:// URLs are read and written (see
    test_remote.py); any other scheme, a bad bucket name, and a URL where a local path is needed (a run
    directory) are refused before anything is read or written."""
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    argv = [str(root / a) if a.startswith("examples/") else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # no folder named s3: (or anything else) was made


def test_a_recipe_naming_a_url_is_refused_at_its_key():
    from augforge.recipe import parse_recipe

    with pytest.raises(AugforgeError, match=r"output\.dir: gs://bucket/x: the scheme gs:// is not supported"):
        parse_recipe({"source": {"path": "digits"}, "output": {"dir": "gs://bucket/x"}}, "r.yaml")
    with pytest.raises(AugforgeError, match=r"source\.path: gs://bucket/t\.csv: the scheme gs://"):
        parse_recipe({"source": {"path": "gs://bucket/t.csv"}}, "r.yaml")
    with pytest.raises(AugforgeError, match=r"source\.path: s3://x/t\.csv: 'x' is not a valid bucket name"):
        parse_recipe({"source": {"path": "s3://x/t.csv"}}, "r.yaml")
    recipe = parse_recipe({"source": {"path": "s3://bucket/data/t.csv", "text_col": "text"},
                           "output": {"dir": "s3://bucket/out/"}}, "r.yaml")
    assert (recipe.source.path, recipe.output.dir) == ("s3://bucket/data/t.csv", "s3://bucket/out")
