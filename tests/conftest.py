"""Shared fixtures: real images, real tables, a real ingested digits dataset, all in tmp dirs."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import polars as pl
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from augforge.cli import main as cli_main


def pytest_configure(config):
    """Under ``pytest -n N`` (``make test`` runs two workers), each worker's torch, DALI and subprocesses get
    their share of the cores instead of all of them: N workers times all cores oversubscribes the CPU."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


#: the longest test files (``--durations``), handed to the xdist workers first so that no long file starts last
LONGEST_FIRST = ("test_distributed", "test_faults", "test_quantize", "test_train_cli", "test_tune", "test_policy_search", "test_text_augment",
                 "test_text_models", "test_build", "test_balance", "test_store", "test_check_op")


def pytest_collection_modifyitems(config, items):
    """The longest files first (the order within a file kept); tests marked ``gpu`` need a CUDA GPU: skipped
    without one (``make gpu-check`` runs them on a GPU)."""
    import torch

    def rank(item):
        stem = item.path.stem
        return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check runs these on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_images() -> list[np.ndarray]:
    """scikit-learn's two real photos (china, flower), 427x640x3 uint8."""
    return list(load_sample_images().images)


def make_image_folder(root, sample_images, per_class=(6, 3), size=48):
    """ROOT/<class>/*.jpg|png: crops of the real photos, one class per photo."""
    names = ["china", "flower"]
    for label, (name, count) in enumerate(zip(names, per_class)):
        folder = root / name
        folder.mkdir(parents=True)
        photo = sample_images[label]
        for i in range(count):
            crop = photo[i * 20 : i * 20 + size, i * 30 : i * 30 + size]
            ext = "jpg" if i % 2 == 0 else "png"
            Image.fromarray(crop).save(folder / f"img{i:02d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path, sample_images):
    """A two-class image folder of real photo crops (6 china, 3 flower)."""
    return make_image_folder(tmp_path / "photos", sample_images)


@pytest.fixture(scope="session")
def digits_table(tmp_path_factory) -> pl.DataFrame:
    """The digits as a feature table: 64 pixel columns f0..f63 and a string label."""
    d = load_digits()
    frame = pl.DataFrame(d.data.astype(np.float32), schema=[f"f{i}" for i in range(64)])
    return frame.with_columns(pl.Series("label", [f"d{t}" for t in d.target]))


@pytest.fixture(scope="session")
def digits_lt(tmp_path_factory):
    """The bundled digits, long-tailed (factor 10) after a 25% stratified test split."""
    out = tmp_path_factory.mktemp("lt") / "lt"
    assert cli_main(["ingest", "digits", str(out), "--imbalance", "longtail", "--test-split", "0.25",
                     "--shard-rows", "256", "-q"]) == 0
    return out


TEXTS = {
    "pos": ["a wonderful film with a moving story", "great acting and a clever plot", "i loved every minute",
            "the best concert of the year", "warm, funny and beautifully shot", "a delight from start to end"],
    "neg": ["a dull and lifeless script", "i want those two hours back"],
}


@pytest.fixture
def text_csv(tmp_path):
    """A small imbalanced sentiment CSV with a text column."""
    rows = [(t, lab) for lab, texts in TEXTS.items() for t in texts]
    path = tmp_path / "reviews.csv"
    pl.DataFrame({"review": [r[0] for r in rows], "sentiment": [r[1] for r in rows]}).write_csv(path)
    return path


def kill_9_after_shards(proc, out, shards: int = 3, timeout: float = 200.0) -> int:
    """SIGKILL the writing subprocess ``proc`` once its journal in ``out`` lists ``shards`` shards.

    Returns how many shards the journal lists after the kill.
    """
    from augforge.datasets.manifest import PROGRESS

    journal = out / PROGRESS
    deadline = time.time() + timeout
    while time.time() < deadline:
        if journal.exists() and len(json.loads(journal.read_text())["shards"]) >= shards:
            break
        time.sleep(0.005)
    proc.kill()  # CliProcess.kill: through a pidfd, so never a process that reused the pid
    proc.wait()
    return len(json.loads(journal.read_text())["shards"])


@pytest.fixture(scope="session", autouse=True)
def augforge_cache(tmp_path_factory):
    """Keep the prepared NLTK WordNet directory (and any cache) out of the user's home during tests."""
    folder = tmp_path_factory.mktemp("augforge-cache")
    previous = os.environ.get("AUGFORGE_CACHE")
    os.environ["AUGFORGE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("AUGFORGE_CACHE", None)
    else:
        os.environ["AUGFORGE_CACHE"] = previous


def rebuilt_train_rows(recipe, data: dict, out):
    """Write ``data`` as the ``recipe`` file with ``output.dir`` ``out``, build it, and return the train split's
    table and its instances by row id."""
    import numpy as np
    import yaml

    from augforge.cli import main
    from augforge.datasets.reader import Dataset
    from augforge.datasets.targets import from_columns

    data["output"]["dir"] = str(out)
    recipe.write_text(yaml.safe_dump(data))
    assert main(["build", str(recipe), "-q"]) == 0
    train = Dataset(out, "train")
    table = train.take(np.arange(len(train)))
    return table, dict(zip(table.column("id").to_pylist(), from_columns(table)))
