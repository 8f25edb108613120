"""The chain where DALI does not install: ingest -> build -> stream -> train -> evaluate with ``nvidia.dali``
unimportable, through the torch pipeline (``augforge.augment.backend``), next to the same chain with DALI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from augforge.cli import main

RECIPE = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail", "imbalance_factor": 10},
    "balance": {"strategy": "over"},
    "augment": {"copies": 1, "keep_original": True, "color": "gray", "image": [
        {"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 12, "p": 0.8}]},
    "output": {"format": "png"},
    "train": {"model": "simple_cnn", "epochs": 2, "batch_size": 64, "lr": 0.003,
              "stream": [{"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}]},
}

CHAIN = """
import json, sys
from augforge.cli import main
recipe, root = sys.argv[1], sys.argv[2]
try:
    import nvidia.dali  # noqa: F401
    sys.exit("nvidia.dali imported: the fixture did not hide it")
except ImportError:
    pass
steps = [["ingest", "digits", root + "/ingested", "--test-split", "0.25", "-q"],
         ["build", recipe, "--out", root + "/data", "-q"],
         ["train", recipe, "--data", root + "/data", "--run-dir", root + "/run"],
         ["evaluate", root + "/run/model.pt", root + "/data", "--split", "test", "--json"]]
for step in steps:
    code = main(step)
    if code != 0:
        sys.exit(f"{step[0]} exited {code}")
print("MODULES", json.dumps(sorted(m for m in sys.modules if m.startswith("nvidia"))))
"""


@pytest.fixture
def without_dali(tmp_path):
    """The environment of a Python that cannot import ``nvidia.dali``: a regular ``nvidia`` package first on
    the path hides the installed namespace package, as on a machine where DALI has no wheel."""
    blocker = tmp_path / "no-dali"
    (blocker / "nvidia").mkdir(parents=True)
    (blocker / "nvidia" / "__init__.py").write_text('"""Hides nvidia.dali for the test."""\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("AUGFORGE_IMAGE_BACKEND", None)
    return env


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_the_chain_runs_without_dali_with_the_same_rows_and_a_trained_model(tmp_path, without_dali, capsys):
    recipe = tmp_path / "digits.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    torch_root = tmp_path / "torch"
    done = subprocess.run([sys.executable, "-c", CHAIN, str(recipe), str(torch_root)], env=without_dali,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("images go through the torch ops on the CPU (nvidia.dali is not installed)") == 1
    assert 'MODULES ["nvidia"]' in done.stdout  # only the blocker: nothing of DALI was loaded
    metrics = json.loads(done.stdout[done.stdout.index("{"):done.stdout.rindex("}") + 1])
    assert metrics["rows"] == 450 and metrics["accuracy"] > 0.6  # a model that learned from the torch batches

    # the same build with DALI, in this process: the same rows, ids, labels and splits; other pixels
    assert main(["build", str(recipe), "--out", str(tmp_path / "dali"), "-q"]) == 0
    capsys.readouterr()
    torch_data, dali_data = _manifest(torch_root / "data"), _manifest(tmp_path / "dali")
    assert torch_data["counts"] == dali_data["counts"] and torch_data["num_rows"] == dali_data["num_rows"] == 3130
    assert torch_data["build"]["augmented"] == dali_data["build"]["augmented"] == 2128
    assert torch_data["build"]["images"].startswith("torch ") and dali_data["build"]["images"].startswith("dali ")
    assert torch_data["fingerprint"] != dali_data["fingerprint"]  # other pixels: never mistaken for each other
    from augforge.datasets.reader import Dataset

    mine, theirs = Dataset(torch_root / "data", split="train"), Dataset(tmp_path / "dali", split="train")
    a, b = mine.take(np.arange(len(mine)), ["id", "label"]), theirs.take(np.arange(len(theirs)), ["id", "label"])
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("label").to_pylist() == b.column("label").to_pylist()


def test_the_torch_pipeline_gives_the_dali_pipelines_shapes_and_reruns_equal(sample_images):
    """``TorchImageAugmenter`` against ``ImageAugmenter`` on real photos: the same output shapes and dtypes,
    the same images for a deterministic op list within rounding, and the same draws again for the same seed."""
    import io

    from PIL import Image

    from augforge.augment.image import ImageAugmenter
    from augforge.augment.torch_pipeline import TorchImageAugmenter
    from augforge.pipelines.loader_ops import parse_ops

    encoded = []
    for photo in sample_images:
        buffer = io.BytesIO()
        Image.fromarray(photo[:96, :128]).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    resize = parse_ops([{"op": "resize", "size": [48, 64]}], "test")
    dali = ImageAugmenter(resize, device="cpu").augment(encoded)
    torch_out = TorchImageAugmenter(resize, device="cpu").augment(encoded)
    for x, y in zip(dali, torch_out):
        assert x.shape == y.shape == (48, 64, 3) and x.dtype == y.dtype == np.uint8
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 3.0  # two bilinear resizers, antialiased
    random_ops = parse_ops([{"op": "rotate", "degrees": 20}, {"op": "hflip", "p": 0.5}], "test")
    first = TorchImageAugmenter(random_ops, seed=7).augment(encoded)
    again = TorchImageAugmenter(random_ops, seed=7).augment(encoded)
    other = TorchImageAugmenter(random_ops, seed=8).augment(encoded)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))
    gray = TorchImageAugmenter((), color="gray", decode_only=True).augment(encoded)
    assert [g.shape for g in gray] == [(96, 128, 1)] * 2
