"""Write build/glosses.csv: a real, imbalanced English text corpus from WordNet 3.0 (Debian's wordnet-base).

Each row is the definition of a noun sense (its gloss without the quoted examples) and its class is the
sense's lexicographer file: what kind of thing the definition describes (an animal, a plant, a food, a
body part, a substance, a place, an event, a feeling). The definitions are written by people, vary in
length and vocabulary, and the classes keep WordNet's own proportions: a long tail (about 18:1).

A seeded 10% sample of each class is kept (about 2,700 rows, the size of a typical labelled set), so
that the file is the same on every run; ``--fraction 1`` keeps every sense:

    python examples/make_glosses.py [--out build/glosses.csv] [--fraction 0.1] [--wordnet /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

from text_corpus import write_corpus

from augforge.augment.wordnet import LEXNAMES

CLASSES = ("noun.animal", "noun.plant", "noun.food", "noun.body", "noun.substance", "noun.location",
           "noun.event", "noun.feeling")
_EXAMPLE = re.compile(r';?\s*"[^"]*"')


def read_glosses(wordnet: Path) -> list[tuple[str, str, str]]:
    """(synset id, definition, class) of every noun synset of ``CLASSES``, in file order."""
    rows = []
    with open(wordnet / "data.noun", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition("|")
            fields = head.split()
            lexname = LEXNAMES[int(fields[1])]
            if lexname not in CLASSES:
                continue
            definition = _EXAMPLE.sub("", gloss).strip().strip(";").strip()
            if definition:
                rows.append((f"n{fields[0]}", definition, lexname.split(".", 1)[1]))
    return rows


def main() -> None:
    """Write the sampled corpus (atomically)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "glosses.csv"))
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    args = parser.parse_args()
    wordnet = Path(args.wordnet)
    if not (wordnet / "data.noun").is_file():
        raise SystemExit(f"{wordnet}: no WordNet 3.0 database (apt-get install wordnet-base)")
    rng = random.Random(0)
    rows = [row for row in read_glosses(wordnet) if rng.random() < args.fraction]
    write_corpus(args.out, rows, tuple(name.split(".", 1)[1] for name in CLASSES))


if __name__ == "__main__":
    main()
