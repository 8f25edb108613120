"""Quantization-aware fine-tuning for `augforge quantize --qat-epochs E`, on torchao's PT2E flow, and its control.

The run's model (behind the loop's input conversion) is captured with ``torch.export`` in training mode,
``prepare_qat_pt2e`` inserts fake-quantize observers (x86 quantizer: per-channel int8 weights, uint8
activations, the layout ONNX Runtime's QDQ path uses), and the model is fine-tuned for ``epochs`` passes
over the training split with cross-entropy and AdamW at a small learning rate. ``convert_pt2e`` then
folds the observers into quantize/dequantize ops with int8 weights, and the result is exported to an ONNX
QDQ model that ONNX Runtime runs, measured exactly like the post-training int8 model.

The control: the same fine-tuning without fake quantization, exported as a float model. Extra epochs
can lift an under-trained model by themselves; the control shows how much of the QAT model's accuracy
is theirs rather than quantization's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError, OptionError, first_line, require_at_least
from augforge.pipelines.stream import open_loader
from augforge.train.checkpoint import load_checkpoint
from augforge.deploy.export import AsTrained, dynamic_shapes, model_inputs, quiet_loggers
from augforge.train.restore import checkpoint_model_and_loader, loader_options


def _torchao():
    """torchao's PT2E pieces, imported quietly."""
    with quiet_loggers("torchao", "torch.utils._pytree"):
        try:
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
            from torchao.quantization.pt2e import move_exported_model_to_eval
            from torchao.quantization.pt2e.quantize_pt2e import (
                convert_pt2e,
                prepare_qat_pt2e,
            )
        except ImportError:
            raise OptionError("{qat_epochs} needs torchao: pip install 'augforge[export]'") from None
    return x86, move_exported_model_to_eval, convert_pt2e, prepare_qat_pt2e


def finetune_onnx(checkpoint: Path, data: Path, out: Path, epochs: int, lr: float, quantize: bool = True,
                  seed: int = 0, log=print) -> dict:
    """Fine-tune the checkpoint's model with fake quantization and write the int8 QDQ ONNX model to ``out``
    (``quantize``), or fine-tune it alike in float and write the float ONNX model: the control that tells
    what the extra epochs alone buy. Returns {epochs, steps, lr, final_loss}."""
    x86, move_exported_model_to_eval, convert_pt2e, prepare_qat_pt2e = _torchao()

    require_at_least("qat_epochs", epochs)
    checkpoint_data = load_checkpoint(checkpoint)
    if checkpoint_data["input"].get("payload") == "text":
        raise AugforgeError(f"{checkpoint}: quantization-aware fine-tuning is for image and feature models, not "
                            "text models (their embeddings stay float in the x86 quantizer)")
    model, _, arch, _, _ = checkpoint_model_and_loader(checkpoint, data, "test", device="cpu", batch_size=64)
    options = loader_options(checkpoint_data["input"])
    train = open_loader(data, 64, split="train", shuffle=True, augment=False, seed=seed, drop_last=True, **options)
    torch.manual_seed(seed)
    first, _ = next(iter(train))
    example = model_inputs(first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = torch.export.export(AsTrained(model).train(), example,
                                        dynamic_shapes=dynamic_shapes(example)).module()
            if quantize:
                quantizer = x86.X86InductorQuantizer().set_global(
                    x86.get_default_x86_inductor_quantization_config(is_qat=True))
                prepared = prepare_qat_pt2e(graph, quantizer)
            else:
                prepared = graph
        except Exception as exc:
            raise AugforgeError(f"model {arch['name']!r}: torchao cannot prepare it for quantization-aware "
                                f"training ({first_line(exc, 200)})") \
                from None
        optimizer = torch.optim.AdamW(prepared.parameters(), lr=lr, weight_decay=0.0)
        steps, loss = 0, float("nan")
        for epoch in range(epochs):
            train.set_epoch(epoch)
            total, rows = 0.0, 0
            for x, y in train:
                batch_loss = torch.nn.functional.cross_entropy(prepared(*model_inputs(x)), y)
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                steps += 1
                total += float(batch_loss) * len(y)
                rows += len(y)
            loss = total / max(rows, 1)
            log(f"{'qat' if quantize else 'float'} fine-tuning epoch {epoch}: loss {loss:.4f}")
        move_exported_model_to_eval(prepared)
        converted = convert_pt2e(prepared) if quantize else prepared
        with atomic_path(out) as tmp, quiet_loggers("torch.onnx"):
            torch.onnx.export(converted, example, str(tmp), dynamo=True, dynamic_shapes=dynamic_shapes(example),
                              verbose=False, external_data=False)
    return {"epochs": epochs, "steps": steps, "lr": lr, "final_loss": loss}
