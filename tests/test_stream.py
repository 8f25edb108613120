"""The streaming loader on real built datasets: epochs, determinism, resume, DDP ranks, mixing, dtypes."""

import numpy as np
import pytest
import torch

from augforge.augment.mix import MixConfig, cutmix_box, mix_batch
from augforge.cli import main
from augforge.datasets import open_dataset
from augforge.errors import AugforgeError
from augforge.pipelines.build import build
from augforge.pipelines.order import epoch_order, rank_rows
from augforge.pipelines.stream import open_loader
from augforge.recipe import parse_recipe

DIGITS = {"source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
          "balance": {"strategy": "over"},
          "augment": {"copies": 1, "color": "gray", "image": [{"op": "pad", "padding": 1},
                                                               {"op": "random_crop", "size": 8}]},
          "output": {"format": "png", "shard_rows": 300}}
OPS = [{"op": "rotate", "degrees": 10}]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    png = root / "png"
    build(parse_recipe(DIGITS, "r.yaml"), png)
    raw = root / "raw"
    build(parse_recipe({**DIGITS, "output": {"format": "raw", "shard_rows": 300}}, "r.yaml"), raw)
    return png, raw


def labels_of(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_every_row_once_per_epoch_and_shapes(built):
    png, _ = built
    loader = open_loader(png, 100, ops=OPS, seed=3)
    split = open_dataset(png)
    assert len(loader) == -(-len(split) // 100)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == sorted(split.labels().tolist())
    rows = loader.rows_of_epoch(0)
    assert sorted(rows.tolist()) == list(range(len(split)))  # a permutation: every row exactly once
    assert loader.epoch == 1 and loader.position == 0


@pytest.mark.parametrize("group_bytes", [1, 8 << 20])  # a gather per batch / the whole epoch in one gather
@pytest.mark.parametrize("shuffle", [True, False])
def test_raw_batches_hold_the_epochs_rows_in_storage_order(built, monkeypatch, group_bytes, shuffle):
    import augforge.pipelines.row_reader as row_reader
    from augforge.datasets import schema as S

    monkeypatch.setattr(row_reader, "GROUP_BYTES", group_bytes)
    _, raw = built
    split = open_dataset(raw)
    table = split.take(np.arange(len(split)), [S.IMAGE, S.LABEL])
    pixels = np.stack([np.frombuffer(b, np.uint8) for b in table.column(S.IMAGE).to_pylist()]).reshape(-1, 1, 8, 8)
    labels = table.column(S.LABEL).to_numpy()
    loader = open_loader(raw, 50, seed=4, shuffle=shuffle)
    rows = loader.rows_of_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) and len(split) > 300  # rows from several shards per batch
    for i, (x, y) in enumerate(batches):
        members = np.sort(rows[i * 50 : (i + 1) * 50])  # the shuffle picks the rows; storage order within
        assert torch.equal(y, torch.from_numpy(labels[members]))
        assert torch.equal(x, torch.from_numpy(pixels[members]))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


@pytest.mark.parametrize("which, order", [(0, {}), (1, {}),  # png shards (decoded by DALI), raw shards with ops
                                           (0, {"sampler": "balanced"}), (1, {"balanced_from": 1, "bootstrap": 2})])
def test_parallel_external_source_gives_the_threads_batches(built, which, order):
    """reader_workers processes read through DALI's parallel external_source: the same batches, pixel for
    pixel (the same pipeline seed and the same batches in the same order), epoch after epoch, under every
    row order (the processes cut epochs with the loader's own RowOrder: class-balanced draws included)."""
    data = built[which]
    threaded = open_loader(data, 64, ops=OPS, seed=3, **order)
    parallel = open_loader(data, 64, ops=OPS, seed=3, reader_workers=2, **order)
    for _ in range(2):
        assert _same(list(threaded), list(parallel))
    assert parallel.epoch == 2


def test_parallel_source_resumes_and_continues(built):
    png, _ = built
    full = list(open_loader(png, 64, seed=5, reader_workers=2))
    loader = open_loader(png, 64, seed=5, reader_workers=2)
    part = []
    for x, y in loader:
        part.append((x, y))
        if len(part) == 10:
            break
    state = loader.state_dict()
    part += list(loader)  # the same loader goes on where it stopped: its workers had read ahead in order
    assert _same(full, part)
    resumed = open_loader(png, 64, seed=5, reader_workers=2)
    resumed.load_state_dict(state)
    assert _same(full[10:], list(resumed))
    resumed.set_epoch(0)  # a jump: the workers are started afresh at the new place
    assert _same(full, list(resumed))
    from augforge.errors import AugforgeError

    with pytest.raises(AugforgeError, match="reader_workers -1"):
        open_loader(png, 64, reader_workers=-1)


def test_order_is_deterministic_per_seed_and_epoch(built):
    _, raw = built
    a = [x for x, _ in open_loader(raw, 64, seed=5)]
    b = [x for x, _ in open_loader(raw, 64, seed=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(epoch_order(500, 5, 0, True), epoch_order(500, 5, 1, True))
    assert not np.array_equal(epoch_order(500, 5, 0, True), epoch_order(500, 6, 0, True))
    assert np.array_equal(epoch_order(10, 5, 0, False), np.arange(10))


def test_raw_shards_stream_their_exact_pixels(built):
    _, raw = built
    loader = open_loader(raw, 50, shuffle=False)
    x, y = next(iter(loader))
    stored = open_dataset(raw).take(np.arange(50)).column("image").to_pylist()
    expected = np.stack([np.frombuffer(b, np.uint8).reshape(8, 8, 1) for b in stored]).transpose(0, 3, 1, 2)
    assert torch.equal(x, torch.from_numpy(expected))


def test_mid_epoch_resume_sees_exactly_the_rest(built):
    _, raw = built
    full = [(x.clone(), y.clone()) for x, y in open_loader(raw, 64, seed=9)]
    first = open_loader(raw, 64, seed=9)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    it.close()
    resumed = open_loader(raw, 64, seed=9)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, full[3:]))
    assert resumed.epoch == 1


def test_ddp_ranks_are_disjoint_and_equal(built):
    png, _ = built
    n = len(open_dataset(png))
    for world, last in ((2, "keep"), (3, "keep"), (3, "drop"), (4, "drop")):
        parts = [rank_rows(epoch_order(n, 1, 0, True), r, world, last) for r in range(world)]
        assert len({len(p) for p in parts}) == 1
        union = np.concatenate(parts)
        if last == "drop":
            assert len(set(union.tolist())) == len(union) == (n // world) * world
        else:
            assert set(union.tolist()) == set(range(n)) and len(union) - n == (-n) % world
    loaders = [open_loader(png, 50, rank=r, world_size=2, last="drop") for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])
    a, b = (set(ld.rows_of_epoch(0).tolist()) for ld in loaders)
    assert not a & b


def test_last_batch_keep_drop_pad(built):
    _, raw = built
    n = len(open_dataset(raw))
    sizes = {last: [len(y) for _, y in open_loader(raw, 64, last=last)] for last in ("keep", "drop", "pad")}
    assert sum(sizes["keep"]) == n and sizes["keep"][-1] == n % 64
    assert all(s == 64 for s in sizes["drop"]) and len(sizes["drop"]) == n // 64
    assert all(s == 64 for s in sizes["pad"]) and len(sizes["pad"]) == -(-n // 64)


def test_normalize_and_bfloat16(built):
    png, _ = built
    ops = [{"op": "normalize", "mean": [0.5], "std": [0.25]}]
    x, _ = next(iter(open_loader(png, 32, ops=ops, shuffle=False)))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 8, 8)
    raw = open_dataset(png).torch_dataset()[0][0]
    torch.testing.assert_close(x[0], (raw.float() / 255 - 0.5) / 0.25, atol=1e-4, rtol=0)
    xb, _ = next(iter(open_loader(png, 32, ops=ops, shuffle=False, dtype="bfloat16")))
    assert xb.dtype == torch.bfloat16
    # resize + flip + normalize: the fused CPU pass, or DALI's own ops with fuse=False
    ops = [{"op": "resize", "size": 16}, {"op": "hflip"}, *ops]
    fused, _ = next(iter(open_loader(png, 32, ops=ops, shuffle=False)))
    own, _ = next(iter(open_loader(png, 32, ops=ops, shuffle=False, fuse=False)))
    assert fused.shape == own.shape == (32, 1, 16, 16)
    torch.testing.assert_close(fused, own, atol=0.02, rtol=0)  # DALI's chain rounds to uint8 after the resize


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_gives_soft_labels_that_sum_to_one(kind):
    rng = np.random.default_rng(0)
    x = torch.rand(16, 3, 32, 32)
    y = torch.arange(16) % 5
    config = MixConfig(mixup_alpha=0.4 if kind == "mixup" else 0.0, cutmix_alpha=1.0 if kind == "cutmix" else 0.0)
    before = x.clone()
    mixed, soft, used = mix_batch(x, y, 5, config, rng)
    assert used == kind and torch.equal(x, before)  # inputs never mutated
    torch.testing.assert_close(soft.sum(1), torch.ones(16))
    lam = soft[torch.arange(16), y].clone()
    same = y == y.flip(0)
    lam[same] = float("nan")
    lam = lam[~same]
    assert torch.allclose(lam, lam[0].expand_as(lam))  # one lambda for the batch
    if kind == "cutmix":
        changed = (mixed != x).any(1).float().mean(dim=(1, 2))
        assert abs(float(changed.max()) - (1 - float(lam[0]))) < 0.05  # pasted area matches the label weight
    else:
        torch.testing.assert_close(mixed, x * lam[0] + x.flip(0) * (1 - lam[0]))


def test_mixing_in_the_loader_and_the_box():
    rng = np.random.default_rng(1)
    y0, y1, x0, x1 = cutmix_box(32, 32, 0.75, rng)
    assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 32


def test_loader_mixes_and_reports_stats(built):
    png, _ = built
    loader = open_loader(png, 64, ops=OPS, mix=MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0))
    for x, y in loader:
        assert y.dtype == torch.float32 and torch.allclose(y.sum(1), torch.ones(len(y)))
    stats = loader.stats()
    assert stats["batches"] == len(loader) + 1 and 0 <= stats["wait_fraction"] <= 1 and stats["rows_per_s"] > 0


def test_features_and_text(tmp_path, digits_table, text_csv):
    path = tmp_path / "d.parquet"
    digits_table.write_parquet(path)
    assert main(["ingest", str(path), str(tmp_path / "feat"), "-q"]) == 0
    x, y = next(iter(open_loader(tmp_path / "feat", 32, shuffle=False)))
    assert x.dtype == torch.float32 and x.shape == (32, 64)
    np.testing.assert_array_equal(x.numpy(), digits_table.drop("label").to_numpy()[:32])
    assert main(["ingest", str(text_csv), str(tmp_path / "text"), "--text-col", "review", "--label-col",
                 "sentiment", "-q"]) == 0
    (ids, lengths), y = next(iter(open_loader(tmp_path / "text", 4, shuffle=False)))
    assert ids.dtype == torch.int64 and ids.shape[0] == 4 and lengths.max() == ids.shape[1]
    assert (ids[0, : lengths[0]] > 1).all()  # words of the train split are known
    from augforge.errors import AugforgeError

    with pytest.raises(AugforgeError, match="reader_workers: .* holds features rows"):
        open_loader(tmp_path / "feat", 32, reader_workers=2)


def test_a_five_line_loop_trains_a_model(built):
    from augforge.models import create

    png, _ = built
    torch.manual_seed(0)
    model = create("simple_cnn", 10, in_channels=1)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    losses = []
    for epoch in range(3):
        for x, y in open_loader(png, 64, ops=OPS, seed=epoch):
            loss = torch.nn.functional.cross_entropy(model(x.float() / 255), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.gpu
def test_gpu_batches_are_on_the_device(built):
    png, _ = built
    x, y = next(iter(open_loader(png, 32, ops=OPS, device="gpu")))
    assert x.is_cuda and x.shape == (32, 1, 8, 8)


def test_torch_fallback_dataset(built, sample_images):
    from augforge.augment.torch_ops import TorchAugment
    from augforge.errors import AugforgeError
    from augforge.pipelines.fallback import FallbackDataset

    png, _ = built
    ds = FallbackDataset(png, ops=OPS + [{"op": "normalize", "mean": [0.5], "std": [0.25]}], seed=2)
    x, y = ds[4]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(ds[4][0], x)  # reproducible for (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[4][0], x)
    loader = torch.utils.data.DataLoader(ds, batch_size=128, num_workers=2)
    labels = torch.cat([yb for _, yb in loader])
    assert sorted(labels.tolist()) == sorted(open_dataset(png).labels().tolist())
    policy = FallbackDataset(png, ops=["trivial", "rand-n2-m9-mstd0.5"], seed=2)  # the policies run without DALI
    assert policy[4][0].shape == (1, 8, 8) and policy[4][0].dtype == torch.uint8
    assert torch.equal(policy[4][0], FallbackDataset(png, ops=["trivial", "rand-n2-m9-mstd0.5"], seed=2)[4][0])
    with pytest.raises(AugforgeError, match=r"ops\[1\]: 'rand-n2-m99': M runs 0..30 with 31 bins"):
        FallbackDataset(png, ops=["trivial", "rand-n2-m99"])
    # colour photo: every fallback op keeps shapes and uint8 where expected
    photo = torch.from_numpy(np.ascontiguousarray(sample_images[0][:120, :160].transpose(2, 0, 1)))
    ops = parse_recipe({"source": {"path": "-"}, "augment": {"image": [
        {"op": "random_resized_crop", "size": 64}, {"op": "hflip", "p": 0.5}, {"op": "rotate", "degrees": 20},
        {"op": "color", "brightness": [0.5, 1.5], "saturation": [0, 2], "hue": [-20, 20]},
        {"op": "grayscale", "p": 0.3},
        {"op": "gaussian_blur"}, {"op": "random_erasing"}, {"op": "cutout", "size": 8}, {"op": "pad", "padding": 2},
        {"op": "center_crop", "size": 60}, {"op": "resize", "size": [48, 40]}]}}).augment.image
    outs = [TorchAugment(ops)(photo, torch.Generator().manual_seed(s)) for s in range(4)]
    assert all(o.shape == (3, 48, 40) and o.dtype == torch.uint8 for o in outs)
    assert len({o.numpy().tobytes() for o in outs}) == 4
    flip = parse_recipe({"source": {"path": "-"}, "augment": {"image": [{"op": "hflip"}]}}).augment.image
    assert torch.equal(TorchAugment(flip)(photo, torch.Generator()), photo.flip(-1))


def test_len_counts_the_batches_every_rank_gets(built):
    _, raw = built
    for world in (1, 2, 3):
        for last in ("keep", "drop", "pad"):
            for batch in (1, 7, 64, 5000):
                for rank in range(world):
                    loader = open_loader(raw, batch, rank=rank, world_size=world, last=last)
                    assert len(loader) == len(loader.order.batches(loader.rows_of_epoch(0)))


def test_bootstrapped_training_rows(built):
    png, _ = built
    plain = open_loader(png, 64, seed=0)
    n = len(plain.dataset)
    a, b = (open_loader(png, 64, seed=0, bootstrap=s) for s in (1, 2))
    rows_a, rows_b = a.rows_of_epoch(0), b.rows_of_epoch(0)
    assert len(rows_a) == n and len(np.unique(rows_a)) < n  # drawn with replacement: repeats, and rows left out
    assert not np.array_equal(np.sort(rows_a), np.sort(rows_b))  # another seed, another resample
    assert np.array_equal(np.sort(rows_a), np.sort(a.rows_of_epoch(3)))  # the same resample every epoch
    assert np.array_equal(rows_a, open_loader(png, 64, seed=0, bootstrap=1).rows_of_epoch(0))
    assert len(a) == len(plain) and sum(len(y) for _, y in a) == n


def test_a_loader_over_chosen_rows_covers_exactly_them(built):
    png, raw = built
    n = len(open_loader(raw, 64).dataset)
    chosen = np.random.default_rng(0).choice(n, n // 3, replace=False)
    for last in ("keep", "drop"):
        loader = open_loader(raw, 16, seed=4, rows=chosen[::-1], last=last)
        for epoch in (0, 1):
            rows = loader.rows_of_epoch(epoch)
            if last == "keep":
                assert np.array_equal(np.sort(rows), np.sort(chosen))  # each chosen row once, no other
            assert len(loader) == len(loader.order.batches(rows))
        assert not np.array_equal(loader.rows_of_epoch(0), loader.rows_of_epoch(1))  # shuffled per epoch
    labels = open_loader(raw, 64).dataset.labels()
    loader = open_loader(raw, 16, seed=4, rows=chosen)
    assert sorted(labels_of(loader)) == sorted(labels[chosen].tolist())
    ordered = open_loader(raw, 16, shuffle=False, augment=False, rows=chosen)  # evaluation: storage order
    assert labels_of(ordered) == labels[np.sort(chosen)].tolist()
    boot = open_loader(png, 16, seed=0, bootstrap=1, rows=chosen)  # the resample stays among the chosen rows
    drawn = boot.rows_of_epoch(0)
    assert len(drawn) == len(chosen) and set(drawn.tolist()) < set(chosen.tolist())
    balanced = open_loader(raw, 16, seed=0, sampler="balanced", rows=chosen)
    assert set(balanced.rows_of_epoch(0).tolist()) <= set(chosen.tolist())
    for bad, message in (([], "selects no row"), ([0, n], f"row position {n} is outside 0..{n - 1}"),
                         ([0.5], "must be a list of row positions")):
        with pytest.raises(AugforgeError, match=message):
            open_loader(raw, 16, rows=bad)


def test_a_run_stopped_on_4_ranks_resumes_on_2_and_sees_every_row_once(tmp_path, digits_table):
    """Four ranks each take 5 batches, rank 0's state is saved; two ranks load it and finish the epoch: the
    rows seen are the epoch's rows, each once, but for the one padding row the 2-rank segment needs."""
    from collections import Counter

    table = tmp_path / "digits.parquet"
    digits_table.write_parquet(table)
    data = tmp_path / "features"
    from augforge.cli import main

    assert main(["ingest", str(table), str(data), "--shard-rows", "300", "-q"]) == 0
    seen = Counter()
    state = None
    for rank in range(4):
        loader = open_loader(data, 32, seed=4, rank=rank, world_size=4)
        for i, (x, _) in enumerate(loader):
            seen.update(bytes(row) for row in x.numpy())
            if i == 4:
                state = loader.state_dict() if rank == 0 else state
                break
    assert state["samples"] == 4 * 5 * 32 and state["world_size"] == 4
    for rank in range(2):
        loader = open_loader(data, 32, seed=4, rank=rank, world_size=2)
        loader.load_state_dict(state)
        seen.update(bytes(row) for x, _ in loader for row in x.numpy())
        assert loader.epoch == 1
    everything = Counter(bytes(row) for x, _ in open_loader(data, 256, shuffle=False) for row in x.numpy())
    assert not everything - seen  # every row at least as often as it is in the split
    assert sum((seen - everything).values()) == (1797 - 640) % 2  # the padding of the 2-rank segment
    with pytest.raises(AugforgeError, match="seed=4, this loader 5"):
        open_loader(data, 32, seed=5).load_state_dict(state)
