"""The training loop's techniques, each shown to do what it claims."""

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from augforge.errors import AugforgeError
from augforge.train.loop import TrainConfig, Trainer, evaluate
from augforge.train.losses import binary_cross_entropy_sum, cross_entropy_sum
from augforge.train.metrics import classification_metrics
from augforge.train.optim import decay_groups
from augforge.train.schedules import lr_factor


def mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)]
    if bn:
        layers.insert(1, torch.nn.BatchNorm1d(16))
    return torch.nn.Sequential(*layers)


def data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


@pytest.mark.parametrize("sizes", [[4, 4, 4], [5, 4, 3], [1, 10, 1]])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_accumulation_equals_the_large_batch(sizes, optimizer):
    x, y = data(sum(sizes))
    big, small = mlp(), mlp()
    cfg = dict(optimizer=optimizer, lr=0.1, schedule="constant", epochs=1, weight_decay=0.01)
    Trainer(big, TrainConfig(**cfg), 1).optimizer_step([(x, y)])
    parts, at = [], 0
    for s in sizes:
        parts.append((x[at : at + s], y[at : at + s]))
        at += s
    Trainer(small, TrainConfig(**cfg, accumulate=len(sizes)), len(sizes)).optimizer_step(parts)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_schedule_counts_optimizer_steps_not_micro_batches():
    x, y = data(40)
    batches = [(x[i : i + 5], y[i : i + 5]) for i in range(0, 40, 5)]  # 8 micro-batches
    trainer = Trainer(mlp(), TrainConfig(epochs=1, accumulate=4, schedule="cosine", lr=1.0), len(batches))
    assert trainer.total_steps == 2
    trainer.train_epoch(batches)
    assert trainer.step == 2 and trainer.scheduler.last_epoch == 2


def test_label_smoothing_matches_torch_and_never_mutates():
    logits = torch.randn(8, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    before = y.clone()
    ours = cross_entropy_sum(logits, y, 0.1)
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1,
                                                                       reduction="sum"))
    assert torch.equal(y, before)
    soft = torch.nn.functional.one_hot(y, 5).float()
    soft_before = soft.clone()
    torch.testing.assert_close(cross_entropy_sum(logits, soft, 0.1), ours)
    assert torch.equal(soft, soft_before)
    b_logits, b_y = torch.randn(6), torch.tensor([0, 1, 1, 0, 1, 0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(b_logits, b_y * 0.8 + 0.1, reduction="sum")
    torch.testing.assert_close(binary_cross_entropy_sum(b_logits, b_y, 0.2), expected)


def test_swa_weights_are_the_mean_of_its_snapshots_and_bn_is_recomputed():
    x, y = data(64)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = mlp(bn=True)
    trainer = Trainer(model, TrainConfig(epochs=4, lr=0.05, optimizer="sgd", swa_start=1, swa_lr=0.05), 4)
    snapshots = []
    for _ in range(4):
        trainer.train_epoch(batches)
        if trainer.epoch - 1 >= 1:
            snapshots.append(copy.deepcopy(model.state_dict()))
    assert trainer.snapshots == 3
    averaged = trainer.swa.module
    for name, param in averaged.named_parameters():
        torch.testing.assert_close(param, torch.stack([s[name] for s in snapshots]).mean(0))
    trainer.finish_swa(batches)
    bn = averaged[1]
    with torch.no_grad():
        hidden = averaged[0](x)
    torch.testing.assert_close(bn.running_mean, hidden.mean(0), atol=1e-5, rtol=1e-4)
    assert trainer.final_model() is averaged


def test_ema_follows_its_formula():
    x, y = data(32)
    model = mlp()
    trainer = Trainer(model, TrainConfig(epochs=1, lr=0.1, optimizer="sgd", ema_decay=0.9), 3)
    expected = [p.detach().clone() for p in model.parameters()]
    for k in range(3):
        trainer.optimizer_step([(x, y)])
        current = [p.detach().clone() for p in model.parameters()]
        expected = current if k == 0 else [0.9 * e + 0.1 * c for e, c in zip(expected, current)]
    for e, p in zip(expected, trainer.ema.module.parameters()):
        torch.testing.assert_close(p, e)


def test_nonfinite_loss_stops_naming_the_step_or_skips():
    x, y = data(8)
    model = mlp()
    trainer = Trainer(model, TrainConfig(epochs=1), 2)
    trainer.optimizer_step([(x, y)])
    bad = x.clone()
    bad[0, 0] = float("nan")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(AugforgeError, match=r"step 1 \(epoch 0\): the loss is nan"):
        trainer.optimizer_step([(bad, y)])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    skipper = Trainer(model, TrainConfig(epochs=1, nonfinite="skip"), 2)
    skipper.optimizer_step([(bad, y)])
    assert skipper.skipped == 1 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_schedules():
    assert [round(lr_factor("cosine", s, 10, warmup=2), 4) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.0381]
    assert lr_factor("cosine", 5, 100, warmup=0.1) == 0.6  # a fraction of training: 10 steps
    assert [lr_factor("step", s, 100, step_size=10, gamma=0.5) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_factor("onecycle", 29, 100, pct_start=0.3) == 1.0 and lr_factor("onecycle", 0, 100) < 0.05
    assert lr_factor("constant", 50, 100) == 1.0
    with pytest.raises(AugforgeError, match="unknown schedule"):
        lr_factor("exponential", 0, 10)


def test_weight_decay_skips_norms_and_biases():
    model = mlp(bn=True)
    decay, keep = decay_groups(model, 0.1)
    assert all(p.ndim >= 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert len(keep["params"]) == 4 and keep["weight_decay"] == 0.0


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    m = classification_metrics(true, pred, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(true, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro"))
    assert m["confusion"] == confusion_matrix(true, pred).tolist()


def test_bf16_training_learns_and_evaluates():
    x, y = data(300)
    batches = [(x[i : i + 30], y[i : i + 30]) for i in range(0, 300, 30)]
    model = mlp()
    trainer = Trainer(model, TrainConfig(epochs=15, lr=3e-2, precision="bf16", label_smoothing=0.1,
                                         schedule="cosine", warmup=0.1, clip_grad_norm=1.0), len(batches))
    history = trainer.fit(batches)
    assert history[-1]["loss"] < history[0]["loss"]
    assert evaluate(trainer.final_model(), batches, ["0", "1", "2"])["accuracy"] > 0.8


def test_l2_penalty_and_gradient_clipping_do_what_they_say():
    x, y = data(16)
    model = mlp()
    plain = copy.deepcopy(model)
    l2 = 0.05
    Trainer(model, TrainConfig(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, schedule="constant", l2=l2),
            1).optimizer_step([(x, y)])
    Trainer(plain, TrainConfig(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, schedule="constant"),
            1).optimizer_step([(x, y)])
    start = mlp()
    for (name, a), b, w in zip(model.named_parameters(), plain.parameters(), start.parameters()):
        if w.ndim >= 2:  # the penalty's gradient 2*l2*w, applied with lr 1
            torch.testing.assert_close(a, b - 2 * l2 * w, atol=1e-6, rtol=1e-5)
        else:
            torch.testing.assert_close(a, b)
    clipped = mlp()
    trainer = Trainer(clipped, TrainConfig(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, schedule="constant",
                                           clip_grad_norm=0.01), 1)
    reference = mlp()
    trainer.optimizer_step([(x * 100, y)])
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(clipped.parameters(), reference.parameters())))
    assert float(moved) == pytest.approx(0.01, rel=1e-3)  # lr 1 x a gradient of norm 0.01


def test_a_resume_on_another_world_size_continues_the_schedule_at_its_epoch():
    """A run of 4 processes (8 steps an epoch) checkpointed after epoch 2, resumed on 1 process (32 steps an
    epoch): the step count and the learning rate are those of the start of epoch 2 as the new run counts."""
    config = TrainConfig(epochs=5, lr=0.1, schedule="cosine", warmup=0.1)
    before = Trainer(mlp(), config, 8)
    for _ in range(2 * 8):
        before.optimizer.step()
        before.scheduler.step()
    before.step, before.epoch = 16, 2
    after = Trainer(mlp(), config, 32)
    after.optimizer.load_state_dict(before.optimizer.state_dict())
    after.scheduler.load_state_dict(before.scheduler.state_dict())
    after.step, after.epoch = before.step, before.epoch
    after.continue_at_epoch_start()
    assert after.step == 64 and after.scheduler.last_epoch == 64
    expected = 0.1 * lr_factor("cosine", 64, 5 * 32, warmup=0.1)
    assert after.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert expected == pytest.approx(0.1 * lr_factor("cosine", 16, 5 * 8, warmup=0.1), rel=0.02)  # same progress
