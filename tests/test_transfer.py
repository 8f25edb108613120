"""Transfer learning on real digits: pre-train, save, load for another class count, freeze, fine-tune."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from augforge.errors import AugforgeError
from augforge.models import (create, freeze_backbone, load_weights, param_groups, read_state_dict, save_weights)
from augforge.models.transfer import FrozenBatchNorm


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target)


def _train(model, x, y, steps, params=None, lr=3e-3):
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = slice((step * 64) % (len(x) - 64), (step * 64) % (len(x) - 64) + 64)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    return model


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrain_save_load_freeze_finetune(tmp_path, digits, suffix):
    x, y = digits
    first = y < 5  # task A: digits 0-4
    source = _train(create("simple_cnn", 5, in_channels=1, seed=0), x[first], y[first], steps=30)
    path = tmp_path / f"task_a{suffix}"
    save_weights(source, path)

    same = create("simple_cnn", 5, in_channels=1, seed=9)
    assert load_weights(same, path, strict=True).clean
    with torch.no_grad():
        assert torch.equal(same.eval()(x[:32]), source.eval()(x[:32]))  # exact transfer of every tensor

    target = create("simple_cnn", 10, in_channels=1, seed=1)
    report = load_weights(target, path)
    assert sorted(k for k, *_ in report.mismatched) == ["head.3.bias", "head.3.weight"]
    assert report.missing == []  # the head's keys are in the file, with another shape
    assert not report.unexpected and "shape mismatch" in str(report)
    src_state = source.state_dict()
    for key, value in target.state_dict().items():
        if not key.startswith("head.3"):
            assert torch.equal(value, src_state[key]), key
    with pytest.raises(AugforgeError, match="weights do not fit the model"):
        load_weights(create("simple_cnn", 10, in_channels=1), path, strict=True)

    frozen = freeze_backbone(target)
    assert frozen == sum(p.numel() for n, p in target.named_parameters() if not n.startswith("head."))
    assert any(isinstance(m, FrozenBatchNorm) for m in target.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in target.stages.modules())
    before = {k: v.clone() for k, v in target.state_dict().items()}
    groups = param_groups(target, lr=1e-2)
    assert [g["name"] for g in groups] == ["head"] and groups[0]["lr"] == 1e-2
    _train(target, x, y, steps=5, params=groups)
    after = target.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)  # backbone weights and BN statistics kept

    target.eval()
    with torch.no_grad():
        features_eval = target.forward_features(x[:8])
    target.train()
    with torch.no_grad():
        features_train = target.forward_features(x[:8])
    assert torch.equal(features_eval, features_train)  # frozen BN ignores train mode


def test_discriminative_learning_rates():
    model = create("mobilenet_v3_small", 10)
    backbone, head = param_groups(model, lr=1e-3)
    assert (backbone["name"], backbone["lr"], head["lr"]) == ("backbone", 1e-4, 1e-3)
    assert len(head["params"]) == 4 and len(backbone["params"]) + 4 == len(list(model.parameters()))
    assert param_groups(model, lr=1e-3, backbone_lr=0)[0]["lr"] == 0


def test_wrapped_checkpoints_and_bad_files(tmp_path):
    model = create("mlp", 3, in_features=8, seed=0)
    wrapped = {"epoch": 3, "model": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    assert set(read_state_dict(tmp_path / "ckpt.pt")) == set(model.state_dict())
    assert load_weights(create("mlp", 3, in_features=8, seed=1), tmp_path / "ckpt.pt", strict=True).clean
    with pytest.raises(AugforgeError, match="no such weights file"):
        read_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AugforgeError, match="junk.pt: not a weights file"):
        read_state_dict(tmp_path / "junk.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(AugforgeError, match="evil.pt: not a weights file"):  # weights_only refuses pickled code
        read_state_dict(tmp_path / "evil.pt")
