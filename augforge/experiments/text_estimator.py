"""An augforge text model as a scikit-learn classifier on raw texts, so that ``augforge report --evaluate`` can
cross-validate it next to the TF-IDF pipelines, inside the same folds and with the same samplers.

``TrainedTextClassifier(model="fasttext")`` fits the model's encoder on the training texts, builds the model
as ``augforge train`` does (``model_from`` with the encoder's options and state), and trains it with
augforge's ``Trainer`` under the model's own ``train:`` defaults (``parse_recipe`` of a recipe naming only
the model, its class weights, batch size and seed). Texts come as any 1-D or one-column 2-D array-like of
strings, so that imbalanced-learn's samplers (which need 2-D rows) can stand in front of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from augforge.pipelines.text_encoding import text_encoder_for
from augforge.recipe import parse_recipe
from augforge.recipe.train import with_training_rows
from augforge.train.long_tail import make_criterion
from augforge.train.loop import Trainer, collect_logits, predictions
from augforge.train.restore import model_arch, model_from


def as_texts(X) -> list[str]:
    """The texts of a 1-D or one-column 2-D array-like, as a list of strings."""
    return [str(t) for t in np.asarray(X, dtype=object).reshape(-1)]


def text_column(X) -> np.ndarray:
    """Texts as a one-column 2-D object array (the shape imbalanced-learn's samplers resample)."""
    return np.asarray(as_texts(X), dtype=object).reshape(-1, 1)


class TrainedTextClassifier(ClassifierMixin, BaseEstimator):
    """A registered augforge text model (``fasttext``, ``linear``, ...) trained by augforge's loop, as a
    scikit-learn classifier. ``class_weight``: None or ``"balanced"`` (``train.class_weights``); ``train``:
    more of the ``train:`` section (``epochs``, ``text``, ``model_options``, ...), checked as a recipe's."""

    def __init__(self, model: str = "fasttext", class_weight: str | None = None, batch_size: int = 32,
                 seed: int = 0, train: dict | None = None) -> None:
        self.model, self.class_weight, self.batch_size, self.seed = model, class_weight, batch_size, seed
        self.train = train

    def _batches(self, texts: list[str], labels: np.ndarray | None, order: np.ndarray):
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            y = torch.as_tensor(labels[rows] if labels is not None else np.zeros(len(rows)), dtype=torch.int64)
            yield self.encoder_.encode([texts[i] for i in rows]), y

    def fit(self, X, y) -> TrainedTextClassifier:
        """Fit the encoder on ``X``'s texts and train the model on them."""
        texts = as_texts(X)
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        train = {**(self.train or {}), "model": self.model, "batch_size": self.batch_size, "seed": self.seed}
        if self.class_weight is not None:
            train["class_weights"] = self.class_weight
        recipe = parse_recipe({"source": {"path": "texts.csv", "text_col": "text"}, "train": train})
        run, config = recipe.run, with_training_rows(recipe.train, len(texts))
        self.encoder_ = text_encoder_for(run.text, run.model, run.model_options, lambda: texts)
        torch.manual_seed(self.seed)
        manifest = {"payload": "text", "class_names": [str(c) for c in self.classes_]}
        self.model_ = model_from(model_arch(run, manifest, config, self.encoder_), pretrained=True,
                                 encoder=self.encoder_)
        counts = np.bincount(labels, minlength=len(self.classes_)).tolist()
        trainer = Trainer(self.model_, config, math.ceil(len(texts) / self.batch_size),
                          criterion=make_criterion(config, counts))
        rng = np.random.default_rng(self.seed)
        trainer.fit(lambda: self._batches(texts, labels, rng.permutation(len(texts))))
        self.model_ = trainer.final_model()
        return self

    def _logits(self, X) -> torch.Tensor:
        texts = as_texts(X)
        return collect_logits(self.model_, self._batches(texts, None, np.arange(len(texts))))[0]

    def predict(self, X) -> np.ndarray:
        """The class of each text."""
        return self.classes_[predictions(self._logits(X))]

    def predict_proba(self, X) -> np.ndarray:
        """Each text's class probabilities (the softmax of the logits), columns in ``classes_`` order."""
        return torch.softmax(self._logits(X).double(), dim=-1).numpy()
