"""`augforge report --evaluate`: the recommendation measured on the user's own rows.

A recommendation from class counts alone can hurt: resampling that helps one table makes another worse.
So the report can check it, by stratified k-fold cross-validation of one fixed, simple classifier:

- ``none``: the classifier as it is;
- ``class weights``: the same with ``class_weight="balanced"`` (the alternative imbalanced-learn's
  maintainers advise trying first);
- ``threshold`` (binary targets): the decision threshold tuned for balanced accuracy by an inner CV
  (scikit-learn's ``TunedThresholdClassifierCV``);
- the strategy (the recommendation, or ``--strategy``): its samplers in an ``imblearn.pipeline.Pipeline``
  in front of the classifier, so that resampling only ever sees the training folds.

Features are standardised inside the pipeline. Texts compare two models as well as the balancing: ``linear``
(TF-IDF word 1-2-grams and char_wb 3-5-grams, stacked, into logistic regression: augforge's default text
model, ``train.model: linear``) and ``words`` (word 1-2-grams only); each arm is named ``MODEL + BALANCING``
(``--classifier linear`` or ``logistic`` keeps one of them; the CLI's ``--fasttext`` adds augforge's
fastText, ``augforge.experiments.text_estimator``, trained by augforge's loop in every fold). Each arm
reports balanced accuracy, macro-F1 and the geometric mean of the recalls, mean ± sample std over the
folds. An arm that fails inside a fold (too few neighbours, say) is reported as failed, with the reason.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import numpy as np

from augforge.balance.apply import read_features
from augforge.balance.resample import expand_steps, parse_for
from augforge.datasets import schema as S
from augforge.datasets.plan import plan_rows
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.errors import OptionError, first_line

CLASSIFIERS = ("logistic", "tree", "linear")
#: the text models ``--evaluate`` compares when no classifier is named: (name, character n-grams)
TEXT_MODELS = (("linear", True), ("words", False))
METRICS = ("balanced_accuracy", "macro_f1", "g_mean")


def _classifier(name: str, balanced: bool, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    weight = "balanced" if balanced else None
    if name == "logistic":
        return LogisticRegression(max_iter=2000, class_weight=weight)
    return DecisionTreeClassifier(random_state=seed, class_weight=weight)


def _front(payload: str, chars: bool = False):
    """The transform before any sampler: TF-IDF for texts (word 1-2-grams, and char_wb 3-5-grams when
    ``chars``: the ``linear`` model's features), standardisation for features."""
    if payload == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        if not chars:
            return words
        return FeatureUnion([("words", words), ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5),
                                                                          sublinear_tf=True))])
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


@dataclass(frozen=True)
class CandidateModel:
    """One model ``--evaluate`` compares: the arm prefix (empty for a lone model), the transform before any
    sampler (``front()``, a fresh one each call) and the classifier (``model(balanced, seed)``, with
    ``class_weight="balanced"`` when ``balanced``)."""

    prefix: str
    front: Callable[[], object]
    model: Callable[[bool, int], object]


def models_for(payload: str, classifier: str | None, extra: tuple[CandidateModel, ...] = ()) -> list[CandidateModel]:
    """The models to compare: both text models and ``extra`` (e.g. augforge's fastText, from the CLI) when
    texts name no classifier; else the one named (``linear``: logistic regression on word and character
    n-grams; texts only)."""
    if classifier == "linear" and payload != "text":
        raise OptionError("{classifier} linear: TF-IDF word and character n-grams are for texts; use logistic "
                          "or tree")

    def tfidf(prefix: str, name: str, chars: bool) -> CandidateModel:
        return CandidateModel(prefix, lambda: _front(payload, chars),
                              lambda balanced, seed: _classifier(name, balanced, seed))

    if classifier is None and payload == "text":
        return [tfidf(name, "logistic", chars) for name, chars in TEXT_MODELS] + list(extra)
    if classifier is None:
        return [tfidf("", "logistic", False)]
    return [tfidf("", "logistic" if classifier == "linear" else classifier, classifier == "linear")]


def arms(strategy: str | None, payload: str, class_names: list[str], models: list[CandidateModel], seed: int,
         binary: bool) -> dict[str, object]:
    """The pipelines to compare, by name (``MODEL + BALANCING`` when several models are compared)."""
    from imblearn.pipeline import Pipeline
    from sklearn.model_selection import TunedThresholdClassifierCV

    out = {}
    for candidate in models:
        def arm(label: str) -> str:
            prefix = candidate.prefix
            return f"{prefix} + {label}" if prefix and label != "none" else (prefix or label)

        front = candidate.front
        out[arm("none")] = Pipeline([("front", front()), ("model", candidate.model(False, seed))])
        out[arm("class weights")] = Pipeline([("front", front()), ("model", candidate.model(True, seed))])
        if binary:
            tuned = TunedThresholdClassifierCV(candidate.model(False, seed), scoring="balanced_accuracy", cv=3,
                                               random_state=seed)
            out[arm("threshold")] = Pipeline([("front", front()), ("model", tuned)])
        if strategy:
            steps = expand_steps(parse_for(strategy, payload))
            samplers = [(f"step{i}", step.build(class_names, random_state=seed + i)) for i, step in enumerate(steps)]
            out[arm(strategy)] = Pipeline([("front", front()), *samplers, ("model", candidate.model(False, seed))])
    return out


def _scores(y_true, y_pred) -> dict[str, float]:
    from imblearn.metrics import geometric_mean_score
    from sklearn.metrics import balanced_accuracy_score, f1_score

    return {"balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "g_mean": float(geometric_mean_score(y_true, y_pred, average="multiclass"))}


def evaluate_strategies(X, y: np.ndarray, class_names: list[str], strategy: str | None, *, payload: str,
                        folds: int = 5, classifier: str | None = None, seed: int = 0,
                        extra_models: tuple[CandidateModel, ...] = ()) -> dict:
    """Cross-validate the arms on (X, y); a JSON-able dict with each arm's mean and spread, and a verdict.
    ``classifier``: None compares the text models (texts; and ``extra_models``) or is logistic regression
    (features)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    if classifier is not None and classifier not in CLASSIFIERS:
        raise OptionError("{classifier} {value!r}: expected one of {choices}", value=classifier,
                          choices=", ".join(CLASSIFIERS))
    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        raise OptionError("{evaluate}: needs at least two classes with rows")
    smallest = int(np.bincount(y)[present].min())
    if smallest < 2:
        name = class_names[int(present[np.argmin(np.bincount(y)[present])])]
        raise OptionError("{evaluate}: class {name!r} has 1 row; cross-validation needs at least 2 per class",
                          name=name)
    k = min(int(folds), smallest)
    if k < 2:
        raise OptionError("{folds} {value}: expected at least 2", value=folds)
    models = models_for(payload, classifier, extra_models)
    candidates = arms(strategy, payload, class_names, models, seed, len(present) == 2)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    results = {}
    for name, pipeline in candidates.items():
        per_fold, failure = [], None
        for fold, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
            model = clone(pipeline)
            try:
                model.fit(_rows(X, train), y[train])
            except (ValueError, RuntimeError) as exc:
                failure = f"fold {fold + 1}: {first_line(exc)}"
                break
            per_fold.append(_scores(y[test], model.predict(_rows(X, test))))
        if failure:
            results[name] = {"failed": failure}
            continue
        results[name] = {m: {"mean": statistics.mean(s[m] for s in per_fold),
                             "std": statistics.stdev(s[m] for s in per_fold)} for m in METRICS}
    return {"folds": k, "classifier": _described(models, classifier), "rows": int(len(y)), "strategy": strategy,
            "arms": results, "verdict": verdict(results, strategy, [m.prefix for m in models])}


def _described(models: list[CandidateModel], classifier: str | None) -> str:
    """What was cross-validated, in words (the table's title)."""
    if len(models) > 1:
        return "text models " + ", ".join(m.prefix for m in models)
    if classifier == "linear":
        return "linear text model (word + char n-grams)"
    return f"{classifier or 'logistic'} classifier"


def _rows(X, index: np.ndarray):
    return [X[i] for i in index] if isinstance(X, list) else X[index]


def verdict(results: dict, strategy: str | None, models: list[str] = ("",)) -> str:
    """One sentence: which arm is best by balanced accuracy, and whether the strategy helped the best model
    (``models``: the arm prefixes of the models compared; ``""`` for one unnamed model)."""
    scored = {n: r["balanced_accuracy"]["mean"] for n, r in results.items() if "failed" not in r}
    if not scored:
        return "every arm failed; see the reasons"
    best = max(scored, key=scored.get)
    line = f"best by balanced accuracy: {best} ({scored[best]:.3f})"
    if not strategy:
        return line
    model = next((m for m in models if m and (best == m or best.startswith(f"{m} + "))), "")
    def named(label: str) -> str:
        return f"{model} + {label}" if model and label != "none" else (model or label)

    if named(strategy) not in scored:
        return (f"{line}; {named(strategy)} failed inside cross-validation ({results[named(strategy)]['failed']}): "
                "do not use it")
    plain = max((named(n) for n in ("none", "class weights") if named(n) in scored), key=scored.get, default=None)
    if plain is not None and scored[named(strategy)] < scored[plain]:
        instead = "class weights" if plain.endswith("class weights") else "no resampling"
        return (f"{line}; {strategy} did not beat {instead} ({scored[named(strategy)]:.3f} against "
                f"{scored[plain]:.3f}): prefer {instead}")
    return line


def evaluate_source(source, split: str, strategy: str | None, *, splits=None, imbalance=None, seed: int = 0,
                    folds: int = 5, classifier: str | None = None, extra_models: tuple[CandidateModel, ...] = ()) -> dict:
    """``evaluate_strategies`` on one split of a source: its feature vectors, or its texts."""
    if source.payload == S.IMAGE:
        raise OptionError("{evaluate}: needs feature vectors or texts; for images, ingest a feature column "
                          "(embeddings) and evaluate that")
    plan = plan_rows(source, splits or SplitSpec(), imbalance or ImbalanceSpec(), seed)
    chosen = plan.splits >= 0 if split == S.ALL_SPLITS else plan.splits == S.SPLITS.index(S.check_split(split))
    positions, y = plan.positions[chosen], plan.labels[chosen]
    if source.payload == S.FEATURES:
        X = read_features(source, positions)
    else:
        X = [t for batch in source.read(positions, 65_536) for t in batch.column(S.TEXT).to_pylist()]
    return evaluate_strategies(X, y, list(source.class_names), strategy, payload=source.payload, folds=folds,
                               classifier=classifier, seed=seed, extra_models=extra_models)
