"""Text augmentation throughput: augforge's build vs a plain Python loop, on the same sentences.

Two augmenters:

- EDA (augforge's, on offline WordNet): the peer is EDA's function, ``eda(sentence, n_aug=...)``, called in
  a plain loop, one process (nlpaug's WordNet augmenter needs a POS tagger, which is not available offline);
- nlpaug's KeyboardAug: the peer is ``KeyboardAug.augment`` called in a plain loop, one process.

augforge runs them through the build's variant maker (``augforge.pipelines.text_rows``): one
process per core, each sentence's variants seeded from (seed, row id, copy). Both sides make the
same number of variants of the same sentences (the support tickets of examples/tickets.csv,
repeated). Prints sentences/s for each and the ratio.

    python benchmarks/text_augment.py [--sentences 4000] [--variants 4] [--workers N]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import nlpaug.augmenter.char as nac

from augforge.augment.text import Protect, build_text_augmenter, eda
from augforge.augment.wordnet import synonyms
from augforge.pipelines import text_rows as bt
from augforge.recipe import parse_recipe

TICKETS = Path(__file__).resolve().parents[1] / "examples" / "tickets.csv"


def sentences(count: int) -> list[str]:
    """``count`` ticket texts (the 222 of examples/tickets.csv, repeated)."""
    with open(TICKETS, encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    return [texts[i % len(texts)] for i in range(count)]


def augforge_rate(texts: list[str], ops: list[dict], variants: int, workers: int) -> float:
    """Sentences/s through the build's variant maker with ``workers`` processes."""
    import multiprocessing

    recipe = parse_recipe({"source": {"path": "x.csv"}, "augment": {"copies": variants, "text": ops}})
    augmenter = build_text_augmenter(recipe.augment.text, Protect(numbers=False), 1, corpus=texts)
    work = [(f"r{i}", text, variants) for i, text in enumerate(texts)]
    tasks = [work[i : i + bt.GROUPS_PER_TASK] for i in range(0, len(work), bt.GROUPS_PER_TASK)]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers, bt.init_variant_worker, (augmenter, 0)) as pool:
        made = pool.map(bt.make_variants, tasks)
    elapsed = time.perf_counter() - start
    assert sum(len(v) for chunk in made for v, _, _ in chunk) > 0
    return len(texts) / elapsed


def eda_loop_rate(texts: list[str], variants: int) -> float:
    """Sentences/s of EDA's function (``eda(sentence, n_aug=...)``, as EDA's code is called) in a plain loop."""
    start = time.perf_counter()
    for i, text in enumerate(texts):
        eda(text, n_aug=variants, seed=i, protect=Protect(numbers=False))
    return len(texts) / (time.perf_counter() - start)


def keyboard_loop_rate(texts: list[str], variants: int) -> float:
    """Sentences/s of nlpaug's KeyboardAug called in a plain loop, one process."""
    aug = nac.KeyboardAug(aug_char_p=0.1, aug_word_p=0.1)
    start = time.perf_counter()
    for text in texts:
        for _ in range(variants):
            aug.augment(text)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    for word in {w.lower() for t in texts[:300] for w in t.split()}:  # warm WordNet for both sides alike
        synonyms(word.strip(".,!?"))
    print(f"{args.sentences} sentences x {args.variants} variants; augforge with {args.workers} processes")
    for name, ops, peer in (("EDA", [{"op": "eda"}], eda_loop_rate),
                            ("nlpaug KeyboardAug", [{"op": "keyboard", "aug_char_p": 0.1, "aug_word_p": 0.1}],
                             keyboard_loop_rate)):
        theirs = peer(texts, args.variants)
        ours = augforge_rate(texts, ops, args.variants, args.workers)
        print(f"{name:20s} plain loop {theirs:8.0f} sentences/s   augforge {ours:8.0f} sentences/s   "
              f"ratio {ours / theirs:5.2f}x")


if __name__ == "__main__":
    main()
