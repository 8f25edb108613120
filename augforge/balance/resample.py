"""Run a strategy chain on rows and keep track of where every output row came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.balance.strategy import SAMPLERS, Step, parse_strategy, project
from augforge.errors import AugforgeError, first_line

#: Samplers that need nothing but the rows' identities (they copy or drop rows).
INDEX_ONLY = ("over", "under")
#: Combined samplers run as their two parts, which lets provenance follow every row.
COMBINED = {"smote_tomek": "tomek", "smote_enn": "enn"}


@dataclass
class Resampled:
    """The output rows of a chain, in order.

    ``origin[i]`` is the input row that output row ``i`` is (original rows and copies) or was
    interpolated from (SMOTE family), or -1 when no single row is its source (cluster centroids).
    ``aug[i]`` names the step that made a synthetic row and is None for original rows.
    """

    X: np.ndarray | None
    y: np.ndarray
    origin: np.ndarray
    synthetic: np.ndarray
    aug: np.ndarray


def expand_steps(steps: list[Step]) -> list[Step]:
    """Split SMOTETomek / SMOTEENN into SMOTE followed by their cleaning step on every class."""
    out = []
    for step in steps:
        if step.sampler.name in COMBINED:
            out.append(Step(step.text, SAMPLERS["smote"], step.sampling_strategy, {}))
            out.append(Step(step.text, SAMPLERS[COMBINED[step.sampler.name]], "all", {}))
        else:
            out.append(step)
    return out


def check_payload(steps: list[Step], payload: str) -> None:
    """Images and text can be copied or dropped, not interpolated or measured: only over/under apply."""
    if payload == "features":
        return
    for step in steps:
        if step.sampler.name not in INDEX_ONLY or step.options.get("shrinkage"):
            raise AugforgeError(
                f"strategy step {step.text!r}: {step.sampler.cls.__name__} needs feature vectors, but this dataset's "
                f"payload is {payload}; use 'over' (marked copies that augmentation varies) and 'under', or ingest "
                "a feature column (e.g. embeddings)"
            )


def check_class_sizes(steps: list[Step], counts, class_names: list[str]) -> None:
    """Refuse a neighbour-based over-sampling step for a class with fewer than k_neighbors + 1 rows."""
    from imblearn.utils import check_sampling_strategy

    current = np.asarray(counts, dtype=np.int64).copy()
    for step in steps:
        y = np.repeat(np.arange(len(current)), current)
        plan = check_sampling_strategy(step.target(class_names), y, step.sampler.sampling_type)
        k = step.options.get("k_neighbors", step.options.get("n_neighbors"))
        if k is None:
            k = next((step.sampler.cls().get_params().get(p) for p in ("k_neighbors", "n_neighbors")
                      if p in step.sampler.parameters), None)
        if step.sampler.interpolates and isinstance(k, int):
            for label, n_new in plan.items():
                if n_new and current[int(label)] < k + 1:
                    raise AugforgeError(
                        f"strategy step {step.text!r}: class {class_names[int(label)]!r} has {current[int(label)]} "
                        f"rows, fewer than k_neighbors + 1 = {k + 1}; lower k ({step.sampler.name}:...:k=N), use "
                        "'over' for it, or collect more rows"
                    )
        after = project([step], current, class_names)
        current = np.asarray(after.counts)


def check_finite(X: np.ndarray, feature_names: list[str] | None, row_name=None) -> None:
    """Refuse NaN or infinite features, naming the column and the first bad row.

    ``row_name(i)`` names row ``i`` in the message (its id); by default the row number is used.
    """
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = feature_names[col] if feature_names and col < len(feature_names) else f"#{col}"
        where = f"row {row_name(int(row))!r}" if row_name else f"row {row}"
        raise AugforgeError(
            f"feature column {name!r} is {X[row, col]} at {where} ({int(bad.sum())} bad values); "
            "impute or drop those rows before balancing"
        )


def resample(steps: list[Step], y: np.ndarray, class_names: list[str], X: np.ndarray | None = None,
             seed: int = 0, knn_backend: str = "auto") -> Resampled:
    """Apply the chain to labels ``y`` and features ``X`` (None for images/text: rows are then copied or
    dropped by index). Step ``i`` is seeded with ``seed + i``; the result is deterministic for a seed."""
    n = len(y)
    index_only = X is None
    data = np.arange(n, dtype=np.float64)[:, None] if index_only else X
    del X  # `data` is the only reference here: the input is freed as soon as the first step replaces it
    origin = np.arange(n, dtype=np.int64)
    synthetic = np.zeros(n, dtype=bool)
    aug = np.full(n, None, dtype=object)
    for i, step in enumerate(expand_steps(steps)):
        sampler = step.build(class_names, random_state=seed + i, knn_backend=knn_backend)
        try:
            data_out, y_out = sampler.fit_resample(data, y)
        except (ValueError, RuntimeError) as exc:  # imbalanced-learn's refusals (ADASYN raises RuntimeError)
            raise AugforgeError(f"strategy step {step.text!r}: {first_line(exc)}") from None
        kept = getattr(sampler, "sample_indices_", None)
        if kept is not None:
            kept = np.asarray(kept)
            first = np.zeros(len(kept), dtype=bool)
            _, first_pos = np.unique(kept, return_index=True)
            first[first_pos] = True  # a repeated index is a copy
            new_synth = synthetic[kept] | ~first
            new_aug = aug[kept].copy()
            new_aug[~first] = step.text
            origin, synthetic, aug = origin[kept], new_synth, new_aug
        elif len(y_out) >= len(y) and np.array_equal(np.asarray(data_out[: len(y)]), np.asarray(data)):
            extra = len(y_out) - len(y)  # over-samplers keep every row and append the new ones
            sources = getattr(sampler, "sample_origin_", None)
            parents = origin[sources] if sources is not None else np.full(extra, -1)
            origin = np.concatenate([origin, parents])
            synthetic = np.concatenate([synthetic, np.ones(extra, dtype=bool)])
            aug = np.concatenate([aug, np.full(extra, step.text, dtype=object)])
        else:  # rows replaced by new ones (cluster centroids): match what survived by value
            lookup = {row.tobytes(): j for j, row in enumerate(np.asarray(data))}
            found = np.array([lookup.get(row.tobytes(), -1) for row in np.asarray(data_out)])
            origin = np.where(found >= 0, origin[np.maximum(found, 0)], -1)
            synthetic = np.where(found >= 0, synthetic[np.maximum(found, 0)], True)
            aug = np.where(found >= 0, aug[np.maximum(found, 0)], step.text)
        data, y = data_out, np.asarray(y_out)
    return Resampled(None if index_only else np.asarray(data), y, origin, synthetic, aug)


def parse_for(strategy: str, payload: str) -> list[Step]:
    """Parse a strategy and check that it applies to this payload."""
    steps = parse_strategy(strategy)
    check_payload(steps, payload)
    return steps
