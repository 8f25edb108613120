"""The model registry: shapes, parameter counts, gradient flow, determinism, attention, efficiency options."""

import pytest
import torch
from torch import nn

from augforge.errors import AugforgeError
from augforge.models import TransformerBlock2d, available, create, summary
from augforge.models.attention import sincos_2d
from augforge.models.summary import example_inputs

IMAGE_MODELS = ["simple_cnn", "mobilenet_v3_small", "mobilenet_v3_large"]


def _inputs(name, batch=4, size=32, in_channels=3):
    if name.startswith("text_") or name == "fasttext":
        ids = torch.randint(1, 100, (batch, 12))
        lengths = torch.tensor([12, 7, 3, 1][:batch])
        ids[torch.arange(12)[None, :] >= lengths[:, None]] = 0
        return ids, lengths
    if name == "mlp":
        return (torch.randn(batch, 20),)
    return (torch.randn(batch, in_channels, size, size),)


def _create(name, num_classes, **options):
    extra = {"vocab_size": 100} if name.startswith("text_") or name == "fasttext" else {"in_features": 20} if name == "mlp" else {}
    return create(name, num_classes, **extra, **options)


def test_registry_lists_every_model():
    assert available() == ["fasttext", "linear", "mlp", "mobilenet_v3_large", "mobilenet_v3_small", "simple_cnn",
                           "text_bilstm", "text_encoder", "text_transformer"]
    with pytest.raises(AugforgeError, match="unknown model 'resnet'"):
        create("resnet", 10)
    with pytest.raises(AugforgeError, match="has no option 'width'"):
        create("mobilenet_v3_small", 10, width=2)
    with pytest.raises(AugforgeError, match="num_classes must be a positive integer"):
        create("mlp", 0)


@pytest.mark.parametrize("name, alpha, expected", [
    ("mobilenet_v3_small", 1.0, 2_542_856),  # torchvision's reference count, the paper's 2.5 M
    ("mobilenet_v3_large", 1.0, 5_483_032),  # torchvision's reference count, the paper's 5.4 M
])
def test_mobilenet_v3_parameter_counts_match_the_reference(name, alpha, expected):
    model = create(name, 1000, alpha=alpha)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name, alpha, minimalistic, params_m, macs_m", [
    ("mobilenet_v3_large", 1.0, False, 5.4, 217),   # the authors' table (Keras applications)
    ("mobilenet_v3_large", 1.0, True, 3.9, 209),
    ("mobilenet_v3_small", 1.0, False, 2.5, 56),    # the paper, Table 4
    ("mobilenet_v3_small", 0.75, False, 2.0, None),
    ("mobilenet_v3_small", 1.0, True, 2.0, None),
])
def test_mobilenet_v3_variants_match_published_sizes(name, alpha, minimalistic, params_m, macs_m):
    model = create(name, 1000, alpha=alpha, minimalistic=minimalistic)
    result = summary(model, (3, 224, 224))
    assert result.total_params / 1e6 == pytest.approx(params_m, abs=0.1)  # tables print one decimal
    if macs_m:
        assert result.total_macs / 1e6 == pytest.approx(macs_m, rel=0.02)


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    model = create("mobilenet_v3_large", 1000, alpha=0.75)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert model.stage_channels == [16, 24, 32, 88, 720]
    assert model.head[0].out_features == 1280  # the head keeps its width for alpha <= 1


def test_minimalistic_has_no_se_no_hardswish_and_only_3x3_kernels():
    model = create("mobilenet_v3_small", 10, minimalistic=True)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SqueezeExcite" not in kinds and "Hardswish" not in kinds
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.kernel_size == (3, 3) for m in depthwise)
    full = create("mobilenet_v3_small", 10)
    assert "SqueezeExcite" in {type(m).__name__ for m in full.modules()}
    assert {m.kernel_size for m in full.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {(3, 3), (5, 5)}


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("size, num_classes", [(32, 10), (64, 1), (96, 1000)])
def test_image_forward_shapes(name, size, num_classes):
    model = create(name, num_classes).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, num_classes)


def test_grey_inputs_and_224():
    assert create("simple_cnn", 10, in_channels=1).eval()(torch.randn(1, 1, 8, 8)).shape == (1, 10)
    with torch.no_grad():
        assert create("mobilenet_v3_large", 5).eval()(torch.randn(1, 3, 224, 224)).shape == (1, 5)


@pytest.mark.parametrize("name", ["fasttext", "text_transformer", "text_bilstm", "mlp"])
@pytest.mark.parametrize("num_classes", [2, 7])
def test_text_and_feature_forward_shapes(name, num_classes):
    model = _create(name, num_classes).eval()
    assert model(*_inputs(name)).shape == (4, num_classes)


@pytest.mark.parametrize("name", ["fasttext", "text_transformer", "text_bilstm"])
def test_text_models_ignore_padding(name):
    model = _create(name, 3, dropout=0.0).eval()
    ids, lengths = _inputs(name)
    noisy = ids.clone()
    noisy[ids == 0] = 55  # change only the padded positions
    assert torch.allclose(model(ids, lengths), model(noisy, lengths), atol=1e-5)


ALL = IMAGE_MODELS + ["fasttext", "text_transformer", "text_bilstm", "mlp"]


@pytest.mark.parametrize("name", ALL + ["attention"])
def test_gradients_reach_every_parameter(name):
    model = (create("simple_cnn", 5, attention_after=[0, -1]) if name == "attention" else _create(name, 5)).train()
    inputs = _inputs("simple_cnn" if name == "attention" else name)
    loss = nn.functional.cross_entropy(model(*inputs), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", ALL)
def test_every_model_trains_on_cpu(name):
    model = _create(name, 4, seed=0).train()
    inputs = _inputs(name)
    target = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(*inputs), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("name", ALL)
def test_initialisation_is_deterministic_for_a_seed(name):
    a, b, c = (_create(name, 3, seed=s) for s in (7, 7, 8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    state = torch.random.get_rng_state()
    _create(name, 3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched


def test_attention_after_chosen_stages():
    model = create("mobilenet_v3_small", 10, attention_after=[-2, -1])
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock2d)]
    assert [b.channels for b in blocks] == [48, 576]
    assert isinstance(model.stages[-1][1], TransformerBlock2d) and isinstance(model.stages[-2][1], TransformerBlock2d)
    for size in (32, 64, 128):
        assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 10)
    with pytest.raises(AugforgeError, match="stage 5 does not exist"):
        create("simple_cnn", 10, attention_after=[5])
    with pytest.raises(AugforgeError, match="divisible by 4"):
        create("simple_cnn", 10, widths=(30,), attention_after=[0])


def test_attention_block_uses_positions_and_keeps_shape():
    block = TransformerBlock2d(16).eval()
    x = torch.randn(2, 16, 5, 7)
    assert block(x).shape == x.shape
    swapped = x.flip(-1)  # the same tokens in another order
    assert not torch.allclose(block(swapped).flip(-1), block(x), atol=1e-4)
    codes = sincos_2d(3, 4, 16)
    assert codes.shape == (12, 16) and len({tuple(r.tolist()) for r in codes}) == 12


def test_channels_last_and_compile_give_the_same_outputs():
    x = torch.randn(2, 3, 64, 64)
    plain = create("mobilenet_v3_small", 10, seed=3).eval()
    fast = create("mobilenet_v3_small", 10, seed=3, channels_last=True).eval()
    assert fast.stages[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain(x), fast(x.to(memory_format=torch.channels_last)), atol=1e-5)
    compiled = create("mlp", 3, in_features=16, seed=0, compile=True).eval()
    eager = create("mlp", 3, in_features=16, seed=0).eval()
    features = torch.randn(4, 16)
    assert torch.allclose(compiled(features), eager(features), atol=1e-5)


def test_summary_rows_and_example_inputs():
    model = create("simple_cnn", 10, in_channels=1)
    result = summary(model, (1, 8, 8))
    first = result.rows[0]
    assert (first.name, first.kind, first.output_shape, first.params, first.macs) == \
        ("stages.0.0.0", "Conv2d", (1, 32, 8, 8), 288, 32 * 8 * 8 * 9)
    assert result.total_params == sum(p.numel() for p in model.parameters())
    assert "MACs per sample" in str(result) and "head.3" in str(result)
    ids, lengths = example_inputs(_create("text_bilstm", 2), (9,))
    assert ids.shape == (1, 9) and lengths.tolist() == [9]
    bilstm = summary(_create("text_bilstm", 2, embed_dim=8, hidden=4), (10,))
    assert [r.kind for r in bilstm.rows if r.kind == "LSTM"] == ["LSTM"]
    assert next(r.macs for r in bilstm.rows if r.kind == "LSTM") == 10 * 4 * 4 * (8 + 4) * 2
