"""`summary(model, input_size)`: layers, output shapes, parameters and multiply-accumulates (MACs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from augforge.errors import AugforgeError


@dataclass
class LayerRow:
    """One layer's line in the summary."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int


@dataclass
class Summary:
    """The layer table and its totals (MACs per sample)."""

    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [5])
        lines = [f"{'layer':<{width}}  {'type':<22} {'output':<22} {'params':>10} {'MACs':>14}"]
        for r in self.rows:
            lines.append(f"{r.name:<{width}}  {r.kind:<22} {str(list(r.output_shape)):<22} {r.params:>10,} "
                         f"{r.macs:>14,}")
        lines.append(f"total params: {self.total_params:,} (trainable {self.trainable_params:,}); "
                     f"MACs per sample: {self.total_macs:,} ({self.total_macs / 1e6:.1f} M)")
        return "\n".join(lines)


def _macs(module: nn.Module, inputs: tuple, output) -> int:
    """Multiply-accumulates of one call, per sample in the batch (norms and activations count zero)."""
    out = output[0] if isinstance(output, tuple) else output
    if isinstance(module, nn.Conv2d):
        per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return out[0].numel() * per_out
    if isinstance(module, nn.Linear):
        return out[0].numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention):
        tokens, dim = inputs[0].shape[1], module.embed_dim
        return 4 * tokens * dim * dim + 2 * tokens * tokens * dim  # q, k, v, out projections + QK^T and AV
    if isinstance(module, nn.LSTM):
        data = inputs[0]
        steps = data.data.shape[0] / max(1, int(data.batch_sizes[0])) if hasattr(data, "batch_sizes") \
            else data.shape[1]
        directions = 2 if module.bidirectional else 1
        per_step = 0
        for layer in range(module.num_layers):
            size_in = module.input_size if layer == 0 else module.hidden_size * directions
            per_step += 4 * module.hidden_size * (size_in + module.hidden_size) * directions
        return int(steps * per_step)
    return 0


def _shape(output) -> tuple:
    out = output[0] if isinstance(output, tuple) else output
    if hasattr(out, "batch_sizes"):  # a PackedSequence
        out = out.data
    return tuple(out.shape) if isinstance(out, torch.Tensor) else ()


#: Modules summarised as one layer (their children are implementation details).
ATOMIC = (nn.MultiheadAttention, nn.LSTM)


def example_inputs(model: nn.Module, input_size: tuple, batch: int = 1) -> tuple:
    """Inputs of the given per-sample size for the model's kind: images (C, H, W), features (F,), tokens (T,)."""
    kind = getattr(model, "input_kind", "image")
    if kind == "tokens":
        (length,) = input_size
        return torch.ones(batch, length, dtype=torch.long), torch.full((batch,), length, dtype=torch.long)
    return (torch.zeros(batch, *input_size),)


def summary(model: nn.Module, input_size: tuple | None = None, inputs: tuple | None = None) -> Summary:
    """Run one sample through ``model`` in eval mode and tabulate every layer."""
    if inputs is None:
        if input_size is None:
            raise AugforgeError("summary needs input_size (e.g. (3, 224, 224), (64,), or (128,) tokens) or inputs")
        inputs = example_inputs(model, tuple(input_size))
    result = Summary()
    hooks = []
    atomic_children = {id(c) for m in model.modules() if isinstance(m, ATOMIC) for c in m.modules() if c is not m}

    def hook(name):
        def record(module, args, output):
            params = sum(p.numel() for p in module.parameters())
            result.rows.append(LayerRow(name, type(module).__name__, _shape(output), params,
                                        _macs(module, args, output)))
        return record

    for name, module in model.named_modules():
        leaf = not any(True for _ in module.children())
        if (leaf or isinstance(module, ATOMIC)) and id(module) not in atomic_children and name:
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in hooks:
            handle.remove()
    result.total_params = sum(p.numel() for p in model.parameters())
    result.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.total_macs = sum(r.macs for r in result.rows)
    return result
