"""The recipe's ``train:`` section, validated without importing torch.

``parse_train`` turns the section into a ``TrainConfig`` (what the loop does) and a ``RunSpec`` (the
model, the data, the device and the logging around it). Every value is checked here, every enumerated
string against its list, so that ``build``, ``preview`` and ``train`` all refuse a bad ``train:`` section
before any work starts, naming its place in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from augforge.augment.image_ops import check_image_ops
from augforge.errors import AugforgeError
from augforge.recipe.long_tail import PRIORS, DecoupleSpec, LossSpec, RebalanceSpec, ShotSpec, check_long_tail, \
    check_sampler, parse_decouple, parse_loss, parse_posthoc, parse_rebalance, parse_shots

#: optimizers of ``augforge.train.optim`` and schedules of ``augforge.train.schedules``
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "onecycle", "constant", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")
NONFINITE = ("stop", "skip")
#: what the device decision may be told (augforge.device)
TRAIN_DEVICES = ("auto", "cpu", "cuda")
#: validation metrics early stopping (and ``best.pt``) can follow; larger is better for each
#: The classification metrics every run reports: what early stopping, a study and an ablation can target.
METRICS = ("balanced_accuracy", "accuracy", "macro_f1")
#: the loss's class weights: none, or inversely proportional to the training rows' class counts
CLASS_WEIGHTS = ("none", "balanced")
#: how an epoch's training rows are drawn: a permutation, or class-balanced draws with replacement
SAMPLERS = ("shuffle", "balanced")
#: the model a recipe trains when it names none, by payload
DEFAULT_MODELS = {"image": "simple_cnn", "text": "linear", "features": "mlp"}
#: the ``train:`` defaults of models whose training differs from the general ones (measured in docs/text.md):
#: fastText's averaged embeddings under a linear head need larger steps (at 1e-3 it underfits small sets);
#: ``linear`` is scikit-learn's ``LogisticRegression(class_weight="balanced")`` (C=1: ``l2: auto``), trained by
#: the loop to within its seed spread of that optimum
MODEL_DEFAULTS = {"fasttext": {"lr": 0.03},
                  "linear": {"lr": 0.03, "epochs": 20, "l2": "auto", "class_weights": "balanced"}}
#: ``train.l2: auto``: ``AUTO_L2 / training rows``, which makes the loop's mean loss + l2 * |w|^2 the objective
#: of scikit-learn's ``LogisticRegression(C=1)`` (sum of losses + |w|^2 / 2) divided by the rows
AUTO_L2 = 0.5
#: text encoders (augforge.pipelines.text_encoding) and truncation modes
TEXT_TOKENIZERS = ("auto", "bpe", "wordpiece", "word", "hashed", "pretrained", "tfidf")
TRUNCATE = ("head", "tail", "head+tail")


@dataclass(frozen=True)
class TextOptions:
    """The ``train.text`` section: how texts become token ids (``augforge.pipelines.text_encoding``)."""

    tokenizer: str = "auto"  # one of TEXT_TOKENIZERS, or a path to a tokenizer.json
    vocab_size: int | None = None  # trained tokenizers: the vocabulary's size (None: the model's vocab_size)
    lowercase: bool = True
    max_tokens: int = 512
    truncate: str = "head"
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] = (3, 5)  # (0, 0): none
    buckets: int = 1 << 17
    path: str | None = None  # pretrained: the local model directory (the text_encoder's path option)

    def kind_for(self, model: str) -> str:
        """The encoder kind: ``auto`` is ``hashed`` for fastText, ``pretrained`` for a text_encoder, ``tfidf``
        for linear and ``bpe`` for the other models; any other string is a tokenizer file (``file``)."""
        if self.tokenizer != "auto":
            return self.tokenizer if self.tokenizer in TEXT_TOKENIZERS else "file"
        return {"fasttext": "hashed", "text_encoder": "pretrained", "linear": "tfidf"}.get(model, "bpe")


@dataclass
class TrainConfig:
    """Everything the loop does; the recipe's ``train:`` section maps onto these names."""

    epochs: int = 10
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup: float = 0.0
    min_lr_factor: float = 0.0
    step_size: int = 1000
    gamma: float = 0.1
    accumulate: int = 1
    label_smoothing: float = 0.0
    binary: bool = False
    l1: float = 0.0
    l2: float | str = 0.0  # or "auto": AUTO_L2 / the training rows (resolved when the data is known)
    clip_grad_norm: float | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16 (GPU only)
    nonfinite: str = "stop"  # stop | skip
    class_weights: str = "none"  # none | balanced (weights n / (classes * count) in the loss)
    ema_decay: float | None = None
    swa_start: int | None = None  # the first epoch (0-based) whose weights are averaged
    swa_lr: float | None = None
    swa_every: int = 1  # epochs between snapshots
    loss: LossSpec = LossSpec()  # ce, or a long-tail loss (augforge.recipe.long_tail)
    rebalance: RebalanceSpec | None = None  # deferred re-weighting (drw) or re-sampling (drs)
    priors: str = "train"  # the counts behind the priors: train (the built split) or source (before balance)
    posthoc_tau: float | str | None = None  # subtract tau * log prior from the logits; auto: picked on val
    decouple: DecoupleSpec | None = None  # a second stage on the trained backbone: crt or tau_norm


def with_training_rows(config: TrainConfig, rows: int) -> TrainConfig:
    """``config`` with ``l2: auto`` resolved for ``rows`` training rows (unchanged otherwise)."""
    if config.l2 != "auto":
        return config
    return replace(config, l2=AUTO_L2 / max(1, rows))


@dataclass(frozen=True)
class RunSpec:
    """What surrounds the loop: model, batches, seed, device, threads, mixing, streamed ops, logging."""

    model: str = "simple_cnn"  # the recipe's, else DEFAULT_MODELS of its payload
    model_options: dict = field(default_factory=dict)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None: torch's default (one per core)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    stream: tuple = ()  # OpSpec of the streamed ops
    early_metric: str = "balanced_accuracy"
    patience: int | None = None
    tensorboard: bool = False
    log_every: float = 30.0  # seconds between progress lines when the output is not a terminal
    bootstrap: int | None = None  # resample the training rows with replacement from this seed
    sampler: str = "shuffle"  # shuffle | balanced
    text: TextOptions = TextOptions()
    shots: ShotSpec = ShotSpec()  # the many / medium / few-shot thresholds of the metrics

    def mix(self):
        """The loader's MixConfig (imported lazily: it needs torch)."""
        from augforge.augment.mix import MixConfig  # lazy: torch

        return MixConfig(self.mixup_alpha, self.cutmix_alpha, self.mix_prob)


#: per TrainConfig field: (low, high, integer) of a number, or the options of a string
_NUMBERS = {
    "epochs": (1, 100_000, True), "lr": (0.0, 100.0, False), "weight_decay": (0.0, 10.0, False),
    "momentum": (0.0, 1.0, False), "warmup": (0.0, 1e9, False), "min_lr_factor": (0.0, 1.0, False),
    "step_size": (1, 10**9, True), "gamma": (0.0, 1.0, False), "accumulate": (1, 4096, True),
    "label_smoothing": (0.0, 0.99, False), "l1": (0.0, 10.0, False), "l2": (0.0, 10.0, False),
    "clip_grad_norm": (1e-12, 1e9, False), "ema_decay": (0.0, 0.999999, False), "swa_start": (0, 100_000, True),
    "swa_lr": (0.0, 100.0, False), "swa_every": (1, 100_000, True),
}
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": PRECISIONS, "nonfinite": NONFINITE,
            "class_weights": CLASS_WEIGHTS}
RUN_KEYS = ("model", "model_options", "batch_size", "seed", "device", "threads", "mixup_alpha", "cutmix_alpha",
            "mix_prob", "stream", "early_stopping_metric", "early_stopping_patience", "tensorboard", "log_every",
            "bootstrap", "sampler", "text", "shots")
#: TrainConfig fields parsed by augforge.recipe.long_tail (not plain numbers or choices)
_LONG_TAIL = ("loss", "rebalance", "priors", "posthoc_tau", "decouple")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig)) + RUN_KEYS


def parse_train(c, raw, recipe_seed: int = 0, check_model: bool = True,
                payload: str = "image") -> tuple[TrainConfig, RunSpec]:
    """Validate a ``train:`` mapping with the recipe ``Checker`` ``c``; (TrainConfig, RunSpec).

    ``payload`` (image, text, features) picks the model when the section names none. ``check_model``
    also checks the model name and its options against the registry (which imports torch).
    """
    raw = c.mapping(raw, "train", TRAIN_KEYS)
    values = {}
    for f in fields(TrainConfig):
        if f.name in _LONG_TAIL or f.name not in raw or (raw[f.name] is None and f.default is None):
            continue
        where, value = f"train.{f.name}", raw[f.name]
        if isinstance(f.default, bool):
            values[f.name] = c.flag(value, where)
        elif f.name == "l2" and value == "auto":
            values[f.name] = "auto"
        elif f.name in _CHOICES:
            values[f.name] = c.choice(value, where, _CHOICES[f.name])
        else:
            low, high, integer = _NUMBERS[f.name]
            number = c.number(value, where, low, high, integer=integer)
            values[f.name] = int(number) if integer else float(number)
    model = c.text(raw.get("model", DEFAULT_MODELS.get(payload, "simple_cnn")), "train.model")
    values = {**MODEL_DEFAULTS.get(model, {}), **values}
    values["loss"] = parse_loss(c, raw.get("loss"))
    values["rebalance"] = parse_rebalance(c, raw.get("rebalance"), values.get("epochs", TrainConfig.epochs))
    values["priors"] = c.choice(raw.get("priors", "train"), "train.priors", PRIORS)
    values["posthoc_tau"] = parse_posthoc(c, raw.get("posthoc_tau"))
    values["decouple"] = parse_decouple(c, raw.get("decouple"))
    config = TrainConfig(**values)
    check_long_tail(c, config)
    if config.precision == "fp16" and raw.get("device", "auto") == "cpu":
        c.fail("train.precision", "fp16 needs a GPU (its GradScaler); use bf16 on the CPU")
    if config.swa_start is not None and config.swa_start >= config.epochs:
        c.fail("train.swa_start", f"epoch {config.swa_start} is not below train.epochs ({config.epochs}); SWA "
                                  "would never take a snapshot")
    options = raw.get("model_options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        c.fail("train.model_options", f"expected a mapping of option names to values, got {options!r}")
    if check_model:
        _check_model(c, model, dict(options))
    patience = raw.get("early_stopping_patience")
    run = RunSpec(
        model=model,
        model_options=dict(options),
        batch_size=int(c.number(raw.get("batch_size", 64), "train.batch_size", 1, 65_536, integer=True)),
        seed=int(c.number(raw.get("seed", recipe_seed), "train.seed", 0, 2**63 - 1, integer=True)),
        device=c.choice(raw.get("device", "auto"), "train.device", TRAIN_DEVICES),
        threads=None if raw.get("threads") is None else int(c.number(raw["threads"], "train.threads", 1, 1024,
                                                                      integer=True)),
        mixup_alpha=float(c.number(raw.get("mixup_alpha", 0.0), "train.mixup_alpha", 0.0, 100.0)),
        cutmix_alpha=float(c.number(raw.get("cutmix_alpha", 0.0), "train.cutmix_alpha", 0.0, 100.0)),
        mix_prob=float(c.number(raw.get("mix_prob", 1.0), "train.mix_prob", 0.0, 1.0)),
        stream=check_image_ops(c, raw.get("stream") or [], "train.stream"),
        early_metric=c.choice(raw.get("early_stopping_metric", "balanced_accuracy"), "train.early_stopping_metric",
                              METRICS),
        patience=None if patience is None else int(c.number(patience, "train.early_stopping_patience", 1, 100_000,
                                                            integer=True)),
        tensorboard=c.flag(raw.get("tensorboard", False), "train.tensorboard"),
        log_every=float(c.number(raw.get("log_every", 30.0), "train.log_every", 0.1, 86_400.0)),
        bootstrap=None if raw.get("bootstrap") is None else int(c.number(raw["bootstrap"], "train.bootstrap", 0,
                                                                          2**63 - 1, integer=True)),
        sampler=c.choice(raw.get("sampler", "shuffle"), "train.sampler", SAMPLERS),
        text=_text_options(c, raw.get("text"), model),
        shots=parse_shots(c, raw.get("shots")),
    )
    check_sampler(c, config, run.sampler)
    return config, run


def _text_options(c, raw, model: str) -> TextOptions:
    """The ``train.text`` mapping, checked."""
    raw = c.mapping(raw, "train.text", tuple(f.name for f in fields(TextOptions) if f.name != "path"))
    tokenizer = c.text(raw.get("tokenizer", "auto"), "train.text.tokenizer")
    grams = raw.get("char_ngrams", [3, 5])
    if grams in (0, None, False):
        grams = [0, 0]
    if not isinstance(grams, list) or len(grams) != 2:
        c.fail("train.text.char_ngrams", f"expected [min, max] (e.g. [3, 5]) or 0 for none, got {grams!r}")
    low = int(c.number(grams[0], "train.text.char_ngrams[0]", 0, 20, integer=True))
    high = int(c.number(grams[1], "train.text.char_ngrams[1]", 0, 20, integer=True))
    if (low == 0) != (high == 0) or low > high:
        c.fail("train.text.char_ngrams", f"expected 1 <= min <= max, or 0 for none; got {grams!r}")
    if (model == "linear") != (TextOptions(tokenizer=tokenizer).kind_for(model) == "tfidf"):
        c.fail("train.text.tokenizer", "the linear model takes the tfidf encoder and only it takes tfidf; got "
                                       f"model {model} with tokenizer {tokenizer}")
    size = raw.get("vocab_size")
    return TextOptions(
        tokenizer=tokenizer,
        vocab_size=None if size is None else int(c.number(size, "train.text.vocab_size", 3, 10_000_000, integer=True)),
        lowercase=c.flag(raw.get("lowercase", True), "train.text.lowercase"),
        max_tokens=int(c.number(raw.get("max_tokens", 512), "train.text.max_tokens", 1, 10_000_000, integer=True)),
        truncate=c.choice(raw.get("truncate", "head"), "train.text.truncate", TRUNCATE),
        word_ngrams=int(c.number(raw.get("word_ngrams", 2), "train.text.word_ngrams", 1, 10, integer=True)),
        char_ngrams=(low, high),
        buckets=int(c.number(raw.get("buckets", 1 << 17), "train.text.buckets", 1, 1 << 26, integer=True)),
    )


def _check_model(c, name: str, options: dict) -> None:
    """The model name and option names against the registry (values are checked when the model is built)."""
    from augforge.models import available, model_options  # lazy: the registry imports torch

    if name not in available():
        c.fail("train.model", f"unknown model {name!r}; available: {', '.join(available())}")
    known = [*model_options(name), "channels_last", "compile"]
    for key in options:
        if key not in known:
            c.fail(f"train.model_options.{key}", f"{name} has no option {key!r}; options: {', '.join(known)}")
    try:
        if name == "text_encoder":  # its weights are loaded when training starts; the directory is checked now
            from augforge.models.text_encoder import local_config  # lazy: torch

            local_config(options.get("path"))
            return
        from augforge.models import create  # lazy: torch

        create(name, 2, **options)  # a tiny head: option values that cannot build a model fail here
    except AugforgeError as exc:
        c.fail("train.model_options", str(exc))
