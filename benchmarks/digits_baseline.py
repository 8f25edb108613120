"""The baseline the digits chain should beat: scikit-learn's SVC on the same long-tailed training rows.

Reads the dataset `make demo` writes (the long-tailed digits, test split held out before the imbalance)
and prints the SVC's test accuracy and balanced accuracy, next to `augforge train`'s summary when the
demo run exists.

    make demo && python benchmarks/digits_baseline.py [--data build/demo/digits-lt]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from sklearn.svm import SVC

from augforge.datasets import open_dataset


def rows(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = open_dataset(root, split)
    table = ds.take(np.arange(len(ds))).to_pydict()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)), dtype=np.float64).ravel() for b in table["image"]])
    return pixels / 255.0, np.asarray(table["label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="build/demo/digits-lt")
    parser.add_argument("--run", default="build/demo/run")
    args = parser.parse_args()
    x_train, y_train = rows(Path(args.data), "train")
    x_test, y_test = rows(Path(args.data), "test")
    for c in (1.0, 10.0):
        pred = SVC(C=c, gamma="scale").fit(x_train, y_train).predict(x_test)
        print(f"SVC (RBF, C={c:g}) on {len(y_train)} long-tailed train rows: test accuracy "
              f"{(pred == y_test).mean():.4f}, balanced accuracy {balanced_accuracy_score(y_test, pred):.4f}")
    summary = Path(args.run) / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        print(f"augforge train ({s['model']}): test accuracy {s['accuracy']:.4f}, balanced accuracy "
              f"{s['balanced_accuracy']:.4f}")


if __name__ == "__main__":
    main()
