"""Write build/quotes.csv: real, imbalanced short English texts, the quotations of Debian's ``fortunes``.

Each row is one fortune cookie (a quotation, aphorism or joke of 20 to 400 characters, whitespace runs
joined) and its class is the topical file it ships in: computers, science, politics, law, love, sports,
drugs, medicine. The texts were written and collected by people over decades; the classes keep the
files' own sizes, a long tail from computers to medicine (about 15:1). A text found in two files is
dropped; one found twice in a file is kept once. The package is BSD-licensed (see
/usr/share/doc/fortunes/copyright); nothing is downloaded:

    apt-get install fortunes
    python examples/make_quotes.py [--out build/quotes.csv] [--fortunes /usr/share/games/fortunes]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from text_corpus import unique_texts, write_corpus

CLASSES = ("computers", "science", "politics", "law", "love", "sports", "drugs", "medicine")
SHORTEST, LONGEST = 20, 400


def read_fortunes(path: Path) -> list[str]:
    """The cookies of one fortune file (separated by ``%`` lines), whitespace runs joined."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    cookies = (" ".join(part.split()) for part in re.split(r"^%\s*$", text, flags=re.M))
    return [c for c in cookies if SHORTEST <= len(c) <= LONGEST]


def main() -> None:
    """Write the corpus (atomically)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "quotes.csv"))
    parser.add_argument("--fortunes", default="/usr/share/games/fortunes")
    args = parser.parse_args()
    folder = Path(args.fortunes)
    missing = [name for name in CLASSES if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"{folder}: no fortune files {', '.join(missing)} (apt-get install fortunes)")
    rows = [(f"{name}-{i}", text, name) for name in CLASSES for i, text in enumerate(read_fortunes(folder / name))]
    write_corpus(args.out, unique_texts(rows), CLASSES)


if __name__ == "__main__":
    main()
