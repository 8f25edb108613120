"""The real text corpora the text benchmark measures on, made from Debian packages (nothing downloaded): WordNet's
noun definitions, the fortunes' quotations by topic, the manual pages' summaries by section."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, "examples")
from text_corpus import unique_texts  # noqa: E402  (examples/ is not a package)


def make(script: str, out: Path) -> pl.DataFrame:
    """Run an example's corpus script into ``out`` and read what it wrote."""
    subprocess.run([sys.executable, f"examples/{script}", "--out", str(out)], check=True, capture_output=True)
    return pl.read_csv(out)


def test_repeated_texts_are_kept_once_and_conflicting_ones_dropped():
    rows = [("1", "same", "a"), ("2", "same", "a"), ("3", "both", "a"), ("4", "both", "b"), ("5", "alone", "b")]
    assert unique_texts(rows) == [("1", "same", "a"), ("5", "alone", "b")]


def test_quotes_and_manual_pages_are_real_labelled_and_long_tailed(tmp_path):
    for need in ("/usr/share/games/fortunes/computers", "/usr/share/man/man2"):
        if not Path(need).exists():
            pytest.fail(f"{need} is missing: scripts/setup.sh installs fortunes, manpages and manpages-dev")
    quotes = make("make_quotes.py", tmp_path / "quotes.csv")
    counts = Counter(quotes["label"].to_list())
    assert counts["computers"] == 843 and counts["medicine"] == 56 and len(counts) == 8 and len(quotes) == 2685
    assert quotes["text"].n_unique() == len(quotes) and quotes["text"].str.len_chars().is_between(20, 400).all()
    pages = make("make_manpages.py", tmp_path / "manpages.csv")
    sections = Counter(str(s) for s in pages["label"].to_list())
    assert set(sections) == {"1", "2", "3", "4", "5", "7", "8"} and len(pages) > 1200
    assert sections.most_common(1)[0][0] == "3" and min(sections.values()) >= 20
    assert pages.filter(pl.col("id") == "dir.1")["text"].to_list() == ["list directory contents"]
    assert not pages["text"].str.contains(r"\\").any()  # no roff escapes left
    again = make("make_manpages.py", tmp_path / "again.csv")
    assert again.equals(pages)
