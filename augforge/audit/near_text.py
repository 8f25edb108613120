"""Text near-duplicates: normalised exact matches, and MinHash LSH (``datasketch``) over word shingles with
every candidate checked on its exact Jaccard similarity, so a reported pair is always within the threshold.

Normalisation: lower case, every run of characters that are not letters or digits becomes one space. The
shingles are the text's word 3-grams (a text of fewer words is its word set).
"""

from __future__ import annotations

import re

import numpy as np

from augforge.errors import AugforgeError

#: MinHash permutations (the LSH bands are chosen by datasketch for the threshold)
NUM_PERM = 128
SHINGLE = 3
_NOT_WORD = re.compile(r"[^\w]+|_+")


def normalise(text: str) -> str:
    """The text lower-cased with every run of non-word characters as one space, stripped."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """The normalised text's word ``size``-grams (its words when it has fewer)."""
    words = normalise(text).split()
    if len(words) < size:
        return set(words)
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def exact_text_pairs(texts: list[str]) -> np.ndarray:
    """Pairs (i, j), i < j, of texts equal after normalisation."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(normalise(text), []).append(i)
    pairs = [(a, b) for members in groups.values() for k, a in enumerate(members) for b in members[k + 1:]]
    return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def near_text_pairs(texts: list[str], threshold: float = 0.8, seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard), i < j, whose shingle sets have Jaccard similarity >= ``threshold``: candidates
    from MinHash LSH, each checked exactly (LSH may miss a pair near the threshold; it never adds one)."""
    from datasketch import MinHash, MinHashLSH  # the LSH library: imported when texts are audited

    if not 0.0 < threshold <= 1.0:
        raise AugforgeError(f"threshold {threshold}: expected a Jaccard similarity in (0, 1]")
    sets = [shingles(t) for t in texts]
    if threshold == 1.0:  # equal shingle sets: grouped exactly (LSH needs a threshold below 1 for its bands)
        groups: dict[frozenset, list[int]] = {}
        for i, items in enumerate(sets):
            groups.setdefault(frozenset(items), []).append(i)
        return sorted((a, b, 1.0) for members in groups.values() for k, a in enumerate(members)
                      for b in members[k + 1:])
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    signatures = []
    for i, items in enumerate(sets):
        signature = MinHash(num_perm=NUM_PERM, seed=seed)
        signature.update_batch([s.encode("utf-8") for s in items])
        signatures.append(signature)
        lsh.insert(str(i), signature)
    found = []
    for i, signature in enumerate(signatures):
        for key in lsh.query(signature):
            j = int(key)
            if j > i:
                similarity = jaccard(sets[i], sets[j])
                if similarity >= threshold:
                    found.append((i, j, similarity))
    return sorted(found)
