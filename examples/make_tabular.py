"""Write build/breast_cancer.csv: scikit-learn's breast cancer table (569 rows, 30 features; 212 malignant
against 357 benign), the tabular example of examples/tabular.yaml. The data ship with scikit-learn; this
only writes them as a CSV with a `label` column:

    python examples/make_tabular.py
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from sklearn.datasets import load_breast_cancer


def main() -> None:
    data = load_breast_cancer()
    frame = pl.DataFrame(data.data, schema=[name.replace(" ", "_") for name in data.feature_names])
    frame = frame.with_columns(pl.Series("label", [str(data.target_names[t]) for t in data.target]))
    out = Path(__file__).resolve().parent.parent / "build" / "breast_cancer.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    print(f"wrote {out}: {frame.height} rows, {frame.width - 1} features")


if __name__ == "__main__":
    main()
