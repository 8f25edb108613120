"""Balancing strategies: imbalanced-learn samplers by name, chains of them, and their projected counts.

A strategy is a comma-separated chain of steps, ``name[:sampling_strategy][:option=value...]``:
``smote:0.5,under:0.8`` or ``smote:{3: 120, 7: 120}:k=7,tomek``. Each step's
``sampling_strategy`` means exactly what it means in imbalanced-learn (a float ratio,
'auto', 'minority', 'not majority', 'not minority', 'all', or a dict of class name to
count); imbalanced-learn's own ``check_sampling_strategy`` computes the counts, so what
it refuses is refused here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import yaml

from augforge.errors import AugforgeError, OptionError

STRATEGY_WORDS = ("auto", "minority", "majority", "not majority", "not minority", "all")


@dataclass(frozen=True)
class SamplerInfo:
    """One imbalanced-learn sampler and how its output size can be predicted."""

    name: str
    path: str
    #: the counts it produces are a function of the class counts alone
    exact: bool = True
    #: neighbour-count parameters whose search runs on augforge's exact neighbour backend
    neighbour_params: tuple[str, ...] = ()

    @cached_property
    def cls(self) -> type:
        """The imbalanced-learn class."""
        module, _, attr = self.path.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    @property
    def sampling_type(self) -> str:
        """imbalanced-learn's ``_sampling_type``: over-sampling, under-sampling or clean-sampling."""
        return self.cls._sampling_type

    @property
    def cleans(self) -> bool:
        """Whether it removes a data-dependent number of rows (alone, or after over-sampling)."""
        return self.sampling_type == "clean-sampling" or self.path.startswith("imblearn.combine.")

    @property
    def interpolates(self) -> bool:
        """Whether it synthesises rows by interpolating features (the SMOTE family, ADASYN)."""
        return self.sampling_type == "over-sampling" and self.name != "over"

    @cached_property
    def parameters(self) -> list[str]:
        """Constructor parameters it accepts."""
        return list(inspect.signature(self.cls).parameters)


_OVER, _UNDER, _COMBINE = "imblearn.over_sampling.", "imblearn.under_sampling.", "imblearn.combine."
SAMPLERS: dict[str, SamplerInfo] = {
    info.name: info
    for info in (
        SamplerInfo("over", _OVER + "RandomOverSampler"),
        SamplerInfo("smote", "augforge.balance.fast_smote.FastSMOTE"),
        SamplerInfo("adasyn", _OVER + "ADASYN", exact=False, neighbour_params=("n_neighbors",)),
        # only minority rows "in danger" seed new rows, so fewer than asked may come out
        SamplerInfo("borderline_smote", _OVER + "BorderlineSMOTE", exact=False,
                    neighbour_params=("k_neighbors", "m_neighbors")),
        SamplerInfo("svm_smote", _OVER + "SVMSMOTE", exact=False, neighbour_params=("k_neighbors", "m_neighbors")),
        SamplerInfo("kmeans_smote", _OVER + "KMeansSMOTE", exact=False),
        SamplerInfo("smotenc", _OVER + "SMOTENC"),
        SamplerInfo("smoten", _OVER + "SMOTEN"),
        SamplerInfo("under", _UNDER + "RandomUnderSampler"),
        SamplerInfo("cluster_centroids", _UNDER + "ClusterCentroids"),
        SamplerInfo("nearmiss", _UNDER + "NearMiss"),
        SamplerInfo("iht", _UNDER + "InstanceHardnessThreshold", exact=False),
        SamplerInfo("tomek", "augforge.balance.cleaning.ExactTomekLinks", exact=False),
        SamplerInfo("enn", _UNDER + "EditedNearestNeighbours", exact=False, neighbour_params=("n_neighbors",)),
        SamplerInfo("renn", _UNDER + "RepeatedEditedNearestNeighbours", exact=False,
                    neighbour_params=("n_neighbors",)),
        SamplerInfo("allknn", _UNDER + "AllKNN", exact=False, neighbour_params=("n_neighbors",)),
        SamplerInfo("oss", _UNDER + "OneSidedSelection", exact=False),
        SamplerInfo("cnn", _UNDER + "CondensedNearestNeighbour", exact=False),
        SamplerInfo("ncr", _UNDER + "NeighbourhoodCleaningRule", exact=False),
        SamplerInfo("smote_tomek", _COMBINE + "SMOTETomek", exact=False),
        SamplerInfo("smote_enn", _COMBINE + "SMOTEENN", exact=False),
    )
}
ALIASES = {
    "ros": "over", "random_over": "over", "rus": "under", "random_under": "under", "borderline": "borderline_smote",
    "tomek_links": "tomek", "tomeklinks": "tomek", "edited_nearest_neighbours": "enn", "instance_hardness_threshold": "iht",
    "one_sided_selection": "oss", "condensed_nearest_neighbour": "cnn", "neighbourhood_cleaning_rule": "ncr",
    **{info.path.rpartition(".")[2].lower(): info.name for info in SAMPLERS.values()},
}
OPTION_ALIASES = {"k": ("k_neighbors", "n_neighbors"), "m": ("m_neighbors",), "n": ("n_neighbors",)}


def sampler_info(name: str) -> SamplerInfo:
    """Look a sampler up by short name, alias or imbalanced-learn class name (any case)."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise AugforgeError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[key]


@dataclass(frozen=True)
class Step:
    """One step of a chain: a sampler, its sampling_strategy and its options."""

    text: str
    sampler: SamplerInfo
    sampling_strategy: object = "auto"
    options: dict = field(default_factory=dict)

    def target(self, class_names: list[str]):
        """The sampling_strategy with class names (dict keys) turned into label indices."""
        if not isinstance(self.sampling_strategy, dict):
            return self.sampling_strategy
        out = {}
        for key, count in self.sampling_strategy.items():
            name = str(key)
            if name not in class_names:
                raise AugforgeError(
                    f"strategy step {self.text!r}: unknown class {name!r}; classes: {', '.join(class_names)}"
                )
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise AugforgeError(f"strategy step {self.text!r}: count for class {name!r} must be a whole number")
            out[class_names.index(name)] = count
        return out

    def build(self, class_names: list[str], random_state: int | None = None, knn_backend: str = "auto"):
        """A sampler instance for this step: FastSMOTE for ``smote``, imbalanced-learn's class otherwise,
        with neighbour searches on augforge's exact backend where the sampler takes a neighbours object."""
        from augforge.balance.fast_smote import neighbours  # lazy: torch (`augforge report` stays light)

        options = dict(self.options)
        if random_state is not None and "random_state" in self.sampler.parameters:
            options.setdefault("random_state", random_state)
        if "knn_backend" in self.sampler.parameters:
            options.setdefault("knn_backend", knn_backend)
        defaults = inspect.signature(self.sampler.cls).parameters
        for param in self.sampler.neighbour_params:
            count = options.get(param, defaults[param].default)
            if isinstance(count, int):  # imbalanced-learn adds the point itself to an int count
                options[param] = neighbours(count + 1, knn_backend)
        try:
            return self.sampler.cls(sampling_strategy=self.target(class_names), **options)
        except (TypeError, ValueError) as exc:
            raise AugforgeError(f"strategy step {self.text!r}: {exc}") from None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces and brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise AugforgeError(f"strategy {text!r}: unbalanced braces")
    parts.append("".join(current))
    return parts


def _strategy_value(text: str, step: str):
    value = text.strip()
    if value.startswith("{"):
        try:  # keys stay the strings written: yes, no, on, 01 are class names here, not booleans or numbers
            parsed = yaml.load(value, Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise AugforgeError(f"strategy step {step!r}: {value!r} is not a mapping like {{classA: 100, classB: 50}}")
        counts = {}
        for key, count in parsed.items():
            if not re.fullmatch(r"\d+", count.strip()):
                raise AugforgeError(f"strategy step {step!r}: class {key!r}: count {count!r} is not a whole number")
            counts[key] = int(count)
        return counts
    if value.replace("_", " ") in STRATEGY_WORDS:
        return value.replace("_", " ")
    try:
        ratio = float(value)
    except ValueError:
        raise AugforgeError(
            f"strategy step {step!r}: {value!r} is not a sampling_strategy; use a ratio (0.5), one of "
            f"{', '.join(STRATEGY_WORDS)}, or a mapping {{class: count}}"
        ) from None
    if not 0 < ratio <= 1:
        raise AugforgeError(f"strategy step {step!r}: ratio {ratio} must be in (0, 1]")
    return ratio


def _option(info: SamplerInfo, text: str, step: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    key = key.strip()
    candidates = OPTION_ALIASES.get(key, (key,))
    name = next((c for c in candidates if c in info.parameters), None)
    settable = [p for p in info.parameters if p != "sampling_strategy"]
    if name is None or name == "sampling_strategy":
        raise AugforgeError(
            f"strategy step {step!r}: {info.cls.__name__} has no option {key!r}; options: {', '.join(settable)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw.strip()
    return name, value


def parse_strategy(text: str) -> list[Step]:
    """Parse a chain like ``smote:0.5:k=7,under:0.8`` into steps (imbalanced-learn semantics)."""
    if not text or not text.strip():
        raise OptionError("empty {strategy}; e.g. 'smote', 'smote:0.5,under:0.8' or 'over:not majority'")
    steps = []
    for step_text in _split_top(text, ","):
        step_text = step_text.strip()
        if not step_text:
            raise AugforgeError(f"strategy {text!r}: empty step")
        name, *rest = _split_top(step_text, ":")
        info = sampler_info(name)
        strategy, options, given = "auto", {}, False
        for part in rest:
            if "=" in part and not part.strip().startswith("{"):
                key, value = _option(info, part, step_text)
                options[key] = value
            elif given or options:
                raise AugforgeError(f"strategy step {step_text!r}: give the sampling_strategy once, before options")
            else:
                strategy, given = _strategy_value(part, step_text), True
        steps.append(Step(step_text, info, strategy, options))
    return steps


@dataclass
class Projection:
    """Class counts predicted after a chain of samplers."""

    strategy: str
    counts: list[int]
    exact: bool
    steps: list[dict]
    notes: list[str]


def _labels_for(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _too_few_for_neighbours(step: Step, plan: dict, current: np.ndarray, class_names: list[str]) -> list[str]:
    """Warnings for the classes a neighbour-based over-sampler is asked to grow but has too few rows for:
    SMOTE and its kin need more than ``k_neighbors`` rows of the class, or imbalanced-learn refuses."""
    params = inspect.signature(step.sampler.cls).parameters
    name = next((p for p in ("k_neighbors", "n_neighbors") if p in params), None)
    if name is None or step.sampler.name in ("over", "kmeans_smote"):
        return []
    k = step.options.get(name, params[name].default)
    if not isinstance(k, int):
        return []
    out = []
    for label, n in plan.items():
        have = int(current[int(label)])
        if int(n) > 0 and have <= k:
            out.append(f"{step.text}: class {class_names[int(label)]!r} has {have} row(s), but "
                       f"{step.sampler.cls.__name__} needs more than {name}={k}; it will refuse: lower k "
                       f"(e.g. {step.sampler.name}:k={max(1, have - 1)}) or copy rows with 'over'")
    return out


def project(steps: list[Step], counts, class_names: list[str], strategy_text: str = "") -> Projection:
    """Apply each step's imbalanced-learn sampling_strategy to class counts.

    Over-samplers add what ``check_sampling_strategy`` asks to generate; under-samplers
    keep what it asks to keep; cleaning samplers (Tomek links, ENN, ...) remove a
    data-dependent number of rows, so their counts are upper bounds (``exact=False``).
    """
    from imblearn.utils import check_sampling_strategy

    current = np.asarray(counts, dtype=np.int64).copy()
    exact, notes, trail = True, [], []
    for step in steps:
        kind = step.sampler.sampling_type
        y = _labels_for(current)
        try:
            plan = check_sampling_strategy(step.target(class_names), y, kind)
        except ValueError as exc:
            raise AugforgeError(f"strategy step {step.text!r}: imbalanced-learn refuses it: {exc}") from None
        if kind == "over-sampling":
            notes += _too_few_for_neighbours(step, plan, current, class_names)
            for label, n in plan.items():
                current[int(label)] += int(n)
        elif kind == "under-sampling":
            for label, n in plan.items():
                current[int(label)] = int(n)
        if step.sampler.cleans:
            where = (", ".join(class_names[int(label)] for label in plan) if kind == "clean-sampling"
                     else "the classes it cleans")
            notes.append(f"{step.text}: {step.sampler.cls.__name__} removes a data-dependent number of rows "
                         f"from {where}; counts are upper bounds")
        elif step.sampler.name == "iht":
            notes.append(f"{step.text}: InstanceHardnessThreshold keeps at least these counts, not at most: every "
                         "row tied at its hardness threshold is kept, often many more than asked")
        elif not step.sampler.exact:
            notes.append(f"{step.text}: {step.sampler.cls.__name__} produces approximately these counts")
        if step.sampler.name == "nearmiss" and step.options.get("version") == 3:
            notes.append(f"{step.text}: NearMiss-3 may keep fewer rows than asked")
            exact = False
        exact = exact and step.sampler.exact and not step.sampler.cleans
        trail.append({"step": step.text, "sampler": step.sampler.cls.__name__,
                      "counts": dict(zip(class_names, (int(n) for n in current)))})
    return Projection(strategy_text or ",".join(s.text for s in steps), [int(n) for n in current], exact, trail,
                      notes)


def instance_step(strategy: str | None, name: str, usage: str, key: str | None = None) -> str | None:
    """The argument of a one-step instance strategy ``name[:value]`` (``key=value`` accepted when ``key`` is
    given): None when ``strategy`` is another strategy, ``""`` when no value is given; ``name`` inside a chain is
    refused in one line showing ``usage``."""
    if not strategy:
        return None
    prefix = rf"(?:{key}\s*=\s*)?" if key else ""
    match = re.fullmatch(rf"\s*{name}\s*(?::\s*{prefix}([^,]+?))?\s*", strategy)
    if match is None:
        if name in strategy:
            raise AugforgeError(f"strategy {strategy!r}: {name} is a strategy of its own, {usage}, not a step of a "
                                "chain")
        return None
    return match.group(1) or ""


def step_number(strategy: str, value: str | None, default: float, high: float, what: str) -> float | None:
    """An instance step's number (``instance_step``'s value): None for another strategy, ``default`` when none
    is given, else a float in (0, ``high``], refused in one line naming ``what`` it is."""
    if value is None:
        return None
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number <= high:
        raise AugforgeError(f"strategy {strategy!r}: {what} in (0, {high:g}], got {value!r}")
    return number
