"""The long-tail options of the ``train:`` section, validated without importing torch.

- ``loss``: ``ce | focal | logit_adjusted | balanced_softmax | ldam``, or a mapping ``{name: ..., tau:,
  gamma:, max_margin:, scale:}`` with the parameters of that loss (``augforge.train.losses``);
- ``rebalance``: ``{mode: drw | drs, start: EPOCH}``: deferred re-weighting (effective-number class weights,
  ``beta``) or deferred re-sampling (class-balanced draws) from that epoch on;
- ``priors``: which class counts the priors come from: ``train`` (the built train split) or ``source``
  (the train split before the recipe's balance step);
- ``posthoc_tau``: a number, or ``auto`` (picked on the val split), subtracted as ``tau * log prior`` from
  the delivered model's logits;
- ``decouple``: ``{mode: crt, epochs: N}`` re-trains the classifier (the last Linear of the model's head, freshly
  initialised) on class-balanced draws with the backbone frozen; ``{mode: tau_norm, tau: auto | T}`` divides
  each class's classifier weights by their norm to the power tau (Kang et al. 2020);
- ``shots``: ``{many: 100, few: 20}``: a class with more than ``many`` train rows is many-shot, one with
  fewer than ``few`` few-shot, the rest medium (the long-tail literature's split).

A combination that corrects the same imbalance twice (a prior-adjusted loss with class weights or balanced
draws, post-hoc adjustment of such a model) is refused here, naming the key; whether the built train split
is itself balanced is checked when training starts (``augforge.train.long_tail``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: the losses of ``train.loss`` and the parameters each takes (with their defaults)
LOSSES = ("ce", "focal", "logit_adjusted", "balanced_softmax", "ldam")
LOSS_PARAMETERS = {"focal": ("gamma",), "logit_adjusted": ("tau",), "ldam": ("max_margin", "scale")}
#: losses whose logits are shifted by the class priors (they correct the imbalance themselves)
PRIOR_LOSSES = ("logit_adjusted", "balanced_softmax")
REBALANCE_MODES = ("drw", "drs")
DECOUPLE_MODES = ("crt", "tau_norm")
PRIORS = ("train", "source")


@dataclass(frozen=True)
class LossSpec:
    """``train.loss``: the loss's name and parameters (those of other losses keep their defaults)."""

    name: str = "ce"
    tau: float = 1.0  # logit_adjusted: the weight of log prior
    gamma: float = 2.0  # focal: the focusing exponent (Lin et al.'s default)
    max_margin: float = 0.5  # ldam: the margin of the rarest class (Cao et al.'s default)
    scale: float = 1.0  # ldam: logits are multiplied by it (Cao et al. use 30 on a cosine classifier)

    @property
    def uses_priors(self) -> bool:
        """Whether the loss needs the class priors (counts)."""
        return self.name in (*PRIOR_LOSSES, "ldam")


@dataclass(frozen=True)
class RebalanceSpec:
    """``train.rebalance``: ``drw`` (class weights) or ``drs`` (balanced draws) from epoch ``start`` on."""

    mode: str = "drw"
    start: int = 0
    beta: float = 0.9999  # drw: the effective number's beta (Cui et al. 2019; Cao et al.'s default)


@dataclass(frozen=True)
class DecoupleSpec:
    """``train.decouple``: a second stage on the trained backbone (``augforge.train.decouple``)."""

    mode: str = "crt"
    epochs: int = 5  # crt: epochs of classifier re-training
    tau: float | str = "auto"  # tau_norm: the exponent, or auto (picked on the val split)


@dataclass(frozen=True)
class ShotSpec:
    """``train.shots``: the thresholds of the many / medium / few-shot split (train rows per class)."""

    many: int = 100  # more than this: many-shot
    few: int = 20  # fewer than this: few-shot


def parse_loss(c, raw) -> LossSpec:
    """``train.loss`` (a name or a mapping with ``name`` and that loss's parameters), checked."""
    if raw is None or isinstance(raw, str):
        return LossSpec(name=c.choice(raw or "ce", "train.loss", LOSSES))
    raw = c.mapping(raw, "train.loss", ("name", "tau", "gamma", "max_margin", "scale"))
    name = c.choice(raw.get("name", "ce"), "train.loss.name", LOSSES)
    values = {}
    for key, (low, high) in {"tau": (0.0, 10.0), "gamma": (0.0, 10.0), "max_margin": (1e-6, 10.0),
                             "scale": (1e-6, 100.0)}.items():
        if key not in raw:
            continue
        if key not in LOSS_PARAMETERS.get(name, ()):
            takes = [loss for loss, keys in LOSS_PARAMETERS.items() if key in keys]
            c.fail(f"train.loss.{key}", f"loss {name} has no parameter {key} (it is {' and '.join(takes)}'s)")
        values[key] = float(c.number(raw[key], f"train.loss.{key}", low, high))
    return LossSpec(name=name, **values)


def _moded(c, raw, where: str, keys: tuple, modes: tuple) -> tuple[dict, str]:
    """(the mapping, its required ``mode``) of a section such as ``train.rebalance``, both checked."""
    raw = c.mapping(raw, where, ("mode", *keys))
    if "mode" not in raw:
        c.fail(f"{where}.mode", f"missing; expected one of {', '.join(modes)}")
    return raw, c.choice(raw["mode"], f"{where}.mode", modes)


def parse_rebalance(c, raw, epochs: int) -> RebalanceSpec | None:
    """``train.rebalance`` (``{mode: drw|drs, start: EPOCH[, beta]}``), its start below ``epochs``."""
    if raw is None:
        return None
    raw, mode = _moded(c, raw, "train.rebalance", ("start", "beta"), REBALANCE_MODES)
    start = int(c.number(raw.get("start", 0), "train.rebalance.start", 0, 100_000, integer=True))
    if start >= epochs:
        c.fail("train.rebalance.start", f"epoch {start} is not below train.epochs ({epochs}); the deferred "
                                        f"{mode} would never start")
    if "beta" in raw and mode != "drw":
        c.fail("train.rebalance.beta", "only drw takes beta (its effective-number weights)")
    beta = float(c.number(raw.get("beta", 0.9999), "train.rebalance.beta", 0.0, 0.999999999))
    return RebalanceSpec(mode=mode, start=start, beta=beta)


def parse_decouple(c, raw) -> DecoupleSpec | None:
    """``train.decouple`` (``{mode: crt, epochs: N}`` or ``{mode: tau_norm, tau: auto | T}``), checked."""
    if raw is None:
        return None
    raw, mode = _moded(c, raw, "train.decouple", ("epochs", "tau"), DECOUPLE_MODES)
    for key, owner in (("epochs", "crt"), ("tau", "tau_norm")):
        if key in raw and mode != owner:
            c.fail(f"train.decouple.{key}", f"only {owner} takes {key}")
    epochs = int(c.number(raw.get("epochs", 5), "train.decouple.epochs", 1, 100_000, integer=True))
    tau = raw.get("tau", "auto")
    tau = tau if tau == "auto" else float(c.number(tau, "train.decouple.tau", 0.0, 10.0))
    return DecoupleSpec(mode=mode, epochs=epochs, tau=tau)


def parse_posthoc(c, raw) -> float | str | None:
    """``train.posthoc_tau``: None, ``auto`` or a number in [0, 10]."""
    if raw is None or raw == "auto":
        return raw
    return float(c.number(raw, "train.posthoc_tau", 0.0, 10.0))


def parse_shots(c, raw) -> ShotSpec:
    """``train.shots`` (``{many: N, few: M}``, few <= many)."""
    raw = c.mapping(raw, "train.shots", ("many", "few"))
    many = int(c.number(raw.get("many", 100), "train.shots.many", 1, 10**9, integer=True))
    few = int(c.number(raw.get("few", 20), "train.shots.few", 1, 10**9, integer=True))
    if few > many:
        c.fail("train.shots", f"few ({few}) is above many ({many})")
    return ShotSpec(many=many, few=few)


def check_long_tail(c, config) -> None:
    """Refuse options that correct the same imbalance twice, or that a binary head cannot take."""
    loss, rebalance = config.loss, config.rebalance
    others = [name for name, on in (
        ("train.class_weights: balanced", config.class_weights == "balanced"),
        ("train.rebalance", rebalance is not None)) if on]
    if config.binary and (loss.name != "ce" or rebalance is not None or config.posthoc_tau is not None):
        c.fail("train.loss" if loss.name != "ce" else "train.rebalance" if rebalance else "train.posthoc_tau",
               "a binary head trains with binary cross-entropy; the long-tail options need a softmax head "
               "(set train.binary: false)")
    if loss.name in PRIOR_LOSSES and others:
        c.fail("train.loss", f"{loss.name} already corrects for the class priors; with {others[0]} the "
                             "imbalance would be corrected twice")
    decouple = config.decouple
    if decouple is not None and (loss.name in PRIOR_LOSSES or config.posthoc_tau is not None or config.binary):
        what = "a binary head" if config.binary else f"train.loss: {loss.name}" if loss.name in PRIOR_LOSSES \
            else "train.posthoc_tau"
        c.fail("train.decouple", f"{decouple.mode} re-balances the classifier of a plainly trained model; with "
                                 f"{what} it cannot (or would correct the imbalance twice)")
    if config.posthoc_tau is not None and (loss.uses_priors or others):
        what = f"train.loss: {loss.name}" if loss.uses_priors else others[0]
        c.fail("train.posthoc_tau", f"post-hoc adjustment corrects a plainly trained model; with {what} the "
                                    "imbalance would be corrected twice")


def check_sampler(c, config, sampler: str) -> None:
    """Refuse balanced draws together with a prior-adjusted loss, a deferred schedule or post-hoc adjustment."""
    if sampler != "balanced":
        return
    if config.loss.name in PRIOR_LOSSES:
        c.fail("train.loss", f"{config.loss.name} already corrects for the class priors; with train.sampler: "
                             "balanced the imbalance would be corrected twice")
    if config.rebalance is not None:
        c.fail("train.rebalance", f"train.sampler is balanced from the first epoch; {config.rebalance.mode} "
                                  "defers re-balancing, so use one of them")
    if config.posthoc_tau is not None:
        c.fail("train.posthoc_tau", "post-hoc adjustment corrects a plainly trained model; with train.sampler: "
                                    "balanced the imbalance would be corrected twice")
