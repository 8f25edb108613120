"""A model from what a checkpoint records: its architecture (``model_arch``, stored in every checkpoint),
the weights, and the loader that feeds it as training fed evaluation; ``evaluate_checkpoint`` on top."""

from __future__ import annotations

from pathlib import Path

import torch

from augforge.device import choose_device
from augforge.errors import AugforgeError, OptionError, first_line
from augforge.models import create, model_options
from augforge.models.text_encoder import local_config
from augforge.pipelines.stream import open_loader
from augforge.recipe.long_tail import ShotSpec
from augforge.recipe.train import RunSpec, TrainConfig
from augforge.train.checkpoint import load_checkpoint
from augforge.train.long_tail import posthoc_offset, shot_groups, shot_metrics
from augforge.train.loop import evaluate


def model_arch(run: RunSpec, manifest: dict, config: TrainConfig, encoder=None) -> dict:
    """What rebuilds the model: name, options, classes, input channels (or features), binary head. A text
    model's encoder options (``vocab_size``, ``pad_id``, ...: ``TextEncoder.model_options``) are its encoder's."""
    info = manifest.get("payload_info") or {}
    in_channels = len(info.get("feature_names") or ()) if manifest.get("payload") == "features" else \
        info.get("channels", 3)
    options = dict(run.model_options)
    if encoder is not None:
        known = model_options(run.model)
        options.update({k: v for k, v in encoder.model_options().items() if k in known})
    if run.model == "text_encoder":  # the architecture travels with the weights: evaluation needs no directory
        options["config"] = local_config(options.get("path"))
    return {"name": run.model, "options": options, "num_classes": len(manifest["class_names"]),
            "in_channels": int(in_channels or 3), "class_names": manifest["class_names"],
            "binary": bool(config.binary)}


def model_from(arch: dict, pretrained: bool = False, encoder=None) -> torch.nn.Module:
    """A fresh model as ``arch`` (stored in every checkpoint) describes it. ``pretrained``: a text_encoder
    loads its directory's weights (to train); otherwise its stored config rebuilds it (to load weights into).
    ``encoder``: a text model takes what the fitted encoder holds for it (``TextEncoder.model_state``: the
    linear model's idf weights)."""
    options = dict(arch["options"])
    if pretrained:
        options.pop("config", None)
    model = create(arch["name"], arch["num_classes"], in_channels=arch["in_channels"], **options)
    state = encoder.model_state() if encoder is not None else {}
    if state:
        with torch.no_grad():
            for name, tensor in state.items():
                model.get_buffer(name).copy_(tensor)
    return model


def loader_options(spec: dict) -> dict:
    """The loader options that feed a model as its checkpoint's input spec says: a text model's encoder, an
    image model's deterministic ops and colour mode."""
    return {"text": {"text": spec.get("text")}, "image": {"ops": spec.get("ops") or None,
                                                          "color": spec.get("color")}}.get(spec["payload"], {})


def checkpoint_model_and_loader(checkpoint: str | Path, data: str | Path, split: str = "test", device="auto",
                                batch_size: int = 256, rows=None, check_classes: bool = True,
                                state: dict | None = None):
    """(model, loader, arch, input spec, device) of a checkpoint on a dataset directory's split: the model
    rebuilt and loaded, the loader feeding it as training fed evaluation (the checkpoint's input spec).
    Data that cannot be made to fit (another payload, other classes, another width) is refused in one line.
    ``rows``: only these positions of the split, in storage order. ``check_classes``: False accepts data of
    other classes (embeddings need only the payload to fit). ``state``: the checkpoint already loaded."""
    path = Path(checkpoint)
    state = load_checkpoint(path) if state is None else state
    arch, spec = state.get("arch"), state.get("input")
    if not isinstance(arch, dict) or not {"name", "num_classes", "class_names"} <= set(arch):
        raise AugforgeError(f"{path}: has no model description (arch); was it written by augforge train?")
    if not isinstance(spec, dict) or "payload" not in spec:
        raise AugforgeError(f"{path}: has no input spec (preprocessing); it was written by an older augforge "
                            "train, which did not record it: retrain to evaluate it reproducibly")
    try:
        model = model_from({"in_channels": 3, "options": {}, **arch})
        model.load_state_dict(state["model"])
    except (AugforgeError, RuntimeError, TypeError, KeyError) as exc:
        raise AugforgeError(f"{path}: the weights do not fit model {arch.get('name')!r} ({first_line(exc)})") from None
    placement = choose_device(device)
    if spec["payload"] == "text" and not isinstance(spec.get("text"), dict):
        raise AugforgeError(f"{path}: records no text encoder (an older augforge stored a word list); retrain it to "
                            "evaluate it reproducibly")
    loader = open_loader(data, batch_size, split=split, shuffle=False, augment=False, device=placement, rows=rows,
                         **loader_options(spec))
    if loader.payload != spec["payload"]:
        raise AugforgeError(f"{data}: holds {loader.payload} rows; {path} was trained on {spec['payload']}")
    if check_classes and loader.dataset.class_names != arch["class_names"]:
        raise AugforgeError(f"{data}: classes {loader.dataset.class_names} differ from the checkpoint's "
                            f"{arch['class_names']}")
    if spec["payload"] == "features" and spec.get("dim") and loader.input_spec()["dim"] != spec["dim"]:
        raise AugforgeError(f"{data}: rows have {loader.input_spec()['dim']} features; {path} was trained on "
                            f"{spec['dim']}")
    return model.to(placement.torch).eval(), loader, arch, spec, placement


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test", device="auto",
                        adjust: float | None = None) -> dict:
    """Metrics of a checkpoint (``model.pt``, ``best.pt`` or ``last.pt``) on a dataset directory's split,
    with the many / medium / few-shot split of its training counts.

    The checkpoint's input spec decides the preprocessing: the deterministic part of the training ops,
    the colour mode (grey and RGB data are converted to what the model was trained on) and the text
    encoder (tokenizer and truncation). Post-hoc logit adjustment subtracts ``adjust * log prior`` (the
    priors the checkpoint records); without ``adjust``, the tau the run delivered its model with (none: the
    plain logits), so the metrics are the run's summary. Data that cannot be made to fit (another payload,
    other classes, another input shape) is refused in one line."""
    state = load_checkpoint(checkpoint)
    counts = state.get("counts")
    tau = state.get("posthoc_tau") if adjust is None else adjust
    if tau is not None and not counts:
        raise AugforgeError(f"{checkpoint}: records no class counts (an older augforge wrote it), so its logits "
                            "cannot be adjusted; retrain it to use post-hoc adjustment")
    if tau is not None and (tau < 0 or tau > 10):
        raise OptionError("{adjust} {tau}: expected a number in [0, 10]", tau=tau)
    model, loader, arch, spec, placement = checkpoint_model_and_loader(checkpoint, data, split, device, state=state)
    if tau and arch.get("binary"):
        raise OptionError("{adjust}: a binary head has one logit; post-hoc adjustment needs a softmax head")
    offset = posthoc_offset(counts["priors"], tau) if tau else None
    metrics = evaluate(model, loader, arch["class_names"], device=placement.torch,
                       binary=arch.get("binary", False), expect_shape=spec.get("shape"), source=str(data),
                       offset=offset)
    metrics.pop("input_shape", None)
    if counts and not arch.get("binary"):
        shots = ShotSpec(**state["shots"]) if state.get("shots") else ShotSpec()
        metrics["shots"] = shot_metrics(metrics["recall"], shot_groups(counts["source"], arch["class_names"], shots))
    metrics["posthoc_tau"] = tau
    return metrics
