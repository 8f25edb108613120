"""What the corpus scripts in examples/ share: write ``(id, text, label)`` rows to a CSV atomically, and say
what was written (rows per class)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from pathlib import Path


def unique_texts(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``rows`` with each text kept once: the first of repeated texts with one label, none of a text that
    carries two labels (it cannot be classified either way)."""
    labels: dict[str, set[str]] = {}
    for _, text, label in rows:
        labels.setdefault(text, set()).add(label)
    seen: set[str] = set()
    out = []
    for row in rows:
        if len(labels[row[1]]) == 1 and row[1] not in seen:
            seen.add(row[1])
            out.append(row)
    return out


def write_corpus(out: str | os.PathLike, rows: list[tuple[str, str, str]], classes: tuple[str, ...]) -> None:
    """Write ``rows`` to ``out`` (temp file + rename) and print the count per class, in ``classes`` order."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    os.replace(tmp, out)
    counts = Counter(label for _, _, label in rows)
    print(f"{out}: {len(rows)} rows; " + ", ".join(f"{name} {counts[name]}" for name in classes))
