"""Random geometry with targets and the dense rows PyTorch takes: object-aware crops, rejected draws, one draw
per row and epoch, torchvision-style target dicts and padded targets, from a dataset ingested from COCO."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augforge.augment.target_geometry import FramePolicy
from augforge.augment.target_ops import RandomGeometry, coverage
from augforge.cli import main
from augforge.datasets.targets import Instances
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.dense_loader import open_dense_loader
from augforge.pipelines.dense_stream import DenseDataset, collate_detection, pad_targets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


@pytest.fixture(scope="module")
def dense_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    dense = composed_scenes.write_coco_set(root, 12, seed=11)
    assert main(["ingest", str(root / "annotations.json"), str(root / "data")]) == 0
    return root / "data", dense


def test_object_aware_crops_keep_enough_of_some_instance():
    rng = np.random.default_rng(0)
    inst = Instances(np.array([0]), np.array([[70.0, 40, 90, 60]]))
    geometry = RandomGeometry(size=(32, 32), crop_scale=(0.05, 0.2), min_coverage=0.8)
    for _ in range(50):
        window = geometry._window(rng, 96, 64, inst)
        assert coverage(window, inst.boxes)[0] >= 0.8
    np.testing.assert_allclose(coverage((0, 0, 10, 10), np.array([[5.0, 5, 15, 15], [0, 0, 0, 0]])), [0.25, 0.0])


def test_rejected_draws_are_drawn_again_and_counted():
    image = np.zeros((64, 96, 3), np.uint8)
    inst = Instances(np.array([1]), np.array([[0.0, 0, 30, 30]]))
    geometry = RandomGeometry(shift=0.3, policy=FramePolicy(min_visibility=0.95, on_lost="reject_sample"))
    rng = np.random.default_rng(1)
    results = [geometry(rng, image, inst) for _ in range(20)]
    assert sum(r.rejected for r in results) > 0  # some draws pushed the box out, and were drawn again
    for r in results:
        if r.rejected < geometry.attempts:  # a draw passed: the instance is nearly all there
            assert r.moved.visibility[0] >= 0.95 and len(r.moved.instances) == 1
    with pytest.raises(OptionError, match="hflip"):
        RandomGeometry(hflip=2)


def test_dense_dataset_gives_torchvision_style_targets_drawn_per_row_and_epoch(dense_data):
    path, dense = dense_data
    plain = DenseDataset(path, "all", masks=True)
    image, target = plain[0]
    row_id = plain.data.take([0], ["id"]).column("id")[0].as_py()
    truth = next(t for t in dense.images if t.file == row_id)
    assert image.shape == (3, 64, 96) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    np.testing.assert_allclose(target["boxes"].numpy(), truth.instances.boxes, atol=1e-4)
    assert target["masks"].shape == (len(truth.instances), 64, 96) and target["keypoints"].shape[1:] == (2, 3)
    assert torch.equal(target["area"], target["masks"].flatten(1).sum(1).float())
    geometry = RandomGeometry(size=(48, 48), degrees=20, hflip=0.5, crop_scale=(0.5, 1.0), min_coverage=0.5,
                              flip_pairs=((0, 1),))
    moving = DenseDataset(path, "all", augment=geometry, seed=3)
    first = [moving[i][1]["boxes"] for i in range(4)]
    again = [moving[i][1]["boxes"] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same epoch: the same draws
    moving.set_epoch(1)
    assert not all(torch.equal(a, moving[i][1]["boxes"]) for i, a in enumerate(first))  # the next: new draws
    loader = torch.utils.data.DataLoader(moving, batch_size=4, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert len(images) == 4 and all(i.shape == (3, 48, 48) for i in images) and len(targets) == 4
    for t in targets:
        boxes = t["boxes"]
        assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= 48) & (boxes[:, 0] < boxes[:, 2])).all()
        assert len(t["labels"]) == len(boxes) == len(t["keypoints"])
    padded = pad_targets(targets)
    counts = [len(t["labels"]) for t in targets]
    assert padded["count"].tolist() == counts and padded["boxes"].shape == (4, max(counts), 4)
    assert (padded["labels"][0, counts[0]:] == -1).all()
    with pytest.raises(AugforgeError, match="raise it"):
        pad_targets(targets, max_instances=0 if max(counts) else -1)


def test_a_classification_dataset_is_refused(tmp_path):
    assert main(["ingest", "digits", str(tmp_path / "digits")]) == 0
    with pytest.raises(AugforgeError, match="no target columns"):
        DenseDataset(tmp_path / "digits")


def test_drawn_targets_are_where_the_instances_are():
    """On a black image: the box outline in the class colour at its corners, the mask tinted at alpha, a visible
    keypoint filled, a hidden one hollow, an unlabelled one not drawn."""
    from augforge.datasets.targets import rle_encode
    from augforge.pipelines.preview_dense import PALETTE, draw_instances

    mask = np.zeros((40, 60), bool)
    mask[20:30, 30:50] = True
    inst = Instances(np.array([1, 2]), np.array([[5.0, 5, 25, 15], [30, 20, 50, 30]]), masks=[None, rle_encode(mask)],
                     keypoints=np.array([[[10.0, 10, 2], [20, 10, 1]], [[40.0, 25, 0], [45, 25, 0]]]))
    drawn = draw_instances(np.zeros((40, 60, 3), np.uint8), inst, ["a", "b", "c"], alpha=0.5)
    assert tuple(drawn[5, 5]) == PALETTE[1] and tuple(drawn[14, 24]) == PALETTE[1]  # the box's corners
    assert tuple(drawn[25, 40]) == tuple(round(0.5 * c) for c in PALETTE[2])  # inside the mask, away from lines
    assert tuple(drawn[10, 10]) == PALETTE[1] and tuple(drawn[10, 20]) == (0, 0, 0)  # filled, hollow centre
    assert drawn[24:27, 44:47].max() == round(0.5 * max(PALETTE[2]))  # not labelled: only the tint


def test_preview_data_writes_the_grid_of_drawn_images(dense_data, tmp_path):
    path, _ = dense_data
    assert main(["preview-data", str(path), "--out", str(tmp_path / "p.png"), "--n", "3", "--variants", "2"]) == 0
    grid = Image.open(tmp_path / "p.png")
    assert grid.size == (4 + 3 * (96 + 4), 4 + 3 * (96 + 14 + 4))
    with pytest.raises(AugforgeError, match="no boxes, masks or keypoints to draw"):
        from augforge.datasets.sources import open_source
        from augforge.pipelines.preview_dense import preview_dense

        assert main(["ingest", "digits", str(tmp_path / "digits")]) == 0
        preview_dense(open_source(tmp_path / "digits"))


def _stream_recipe(tmp_path, data) -> Path:
    recipe = tmp_path / "stream.yaml"
    recipe.write_text(f"source:\n  path: {data}\naugment:\n  mode: online\n  image:\n"
                      "    - {op: random_resized_crop, size: [48, 48], scale: [0.5, 1.0]}\n"
                      "    - {op: rotate, degrees: 15}\n"
                      "    - {op: hflip, p: 0.5}\n    - {op: color, brightness: [0.8, 1.2]}\n"
                      "  targets: {min_visibility: 0.2, flip_pairs: [[0, 1]]}\n")
    return recipe


def test_open_loader_on_a_dense_dataset_streams_the_recipe_ops_with_targets(dense_data, tmp_path):
    from augforge.pipelines.stream import open_loader

    path, _ = dense_data
    recipe = _stream_recipe(tmp_path, path)
    loader = open_loader(path, 4, split="all", recipe=str(recipe), seed=5, augment=True)
    assert len(loader) == 3
    epoch0 = list(loader)
    assert sum(len(images) for images, _ in epoch0) == 12
    for images, targets in epoch0:
        assert all(image.shape == (3, 48, 48) and image.dtype == torch.float32 for image in images)
        for t in targets:
            boxes = t["boxes"]
            assert ((boxes >= 0) & (boxes <= 48)).all() and (boxes[:, 2] > boxes[:, 0]).all()
            assert len(t["labels"]) == len(boxes) == len(t["keypoints"])
    again = list(open_loader(path, 4, split="all", recipe=str(recipe), seed=5, augment=True))
    assert all(torch.equal(a[1][k]["boxes"], b[1][k]["boxes"]) for a, b in zip(epoch0, again) for k in range(4))
    with_workers = open_dense_loader(path, 4, split="all", recipe=str(recipe), seed=5, workers=2, augment=True)
    assert all(torch.equal(a[0][k], b[0][k]) for a, b in zip(epoch0, with_workers) for k in range(4))
    loader.set_epoch(1)
    assert not all(torch.equal(a[1][0]["boxes"], b[1][0]["boxes"]) for a, b in zip(epoch0, loader))
    # ranks share the rows out, disjoint
    halves = [open_dense_loader(path, 2, split="all", seed=5, rank=r, world_size=2) for r in (0, 1)]
    rows = [h.order.epoch_rows(0) for h in halves]
    assert len(rows[0]) == len(rows[1]) == 6 and sorted(np.concatenate(rows).tolist()) == list(range(12))
    assert sum(len(images) for images, _ in halves[1]) == 6
    # fixed shapes with a count
    images, padded = next(iter(open_dense_loader(path, 4, split="all", recipe=str(recipe), padded=8, augment=True)))
    assert images.shape == (4, 3, 48, 48) and padded["boxes"].shape == (4, 8, 4)
    assert ((padded["labels"] >= 0).sum(1) == padded["count"]).all()
    with pytest.raises(AugforgeError, match="padded batches need every image the same size"):
        next(iter(open_dense_loader(path, 12, split="all", padded=True, ops=[{"op": "rotate", "degrees": 30,
                                                                              "expand": True}], augment=True)))
    with pytest.raises(AugforgeError, match="sampler: .* is a detection or segmentation dataset"):
        open_loader(path, 4, sampler="balanced")


def test_a_training_loop_takes_the_batches_as_they_come(dense_data, tmp_path):
    """A small model learns from the streamed targets (which classes an image holds): the loss falls."""
    path, _ = dense_data
    torch.manual_seed(0)
    loader = open_dense_loader(path, 4, split="all", recipe=str(_stream_recipe(tmp_path, path)), seed=1,
                               augment=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for epoch in range(8):
        loader.set_epoch(epoch)
        total = 0.0
        for images, targets in loader:
            present = torch.stack([torch.bincount(t["labels"], minlength=3).clamp(max=1).float() for t in targets])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.stack(images)), present)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss)
        losses.append(total)
    assert losses[-1] < losses[0]


@pytest.mark.gpu
def test_the_dense_loader_on_a_gpu_moves_batches_with_dali_and_agrees_with_the_cpu(dense_data, tmp_path):
    path, _ = dense_data
    recipe = str(_stream_recipe(tmp_path, path))
    cpu = list(open_dense_loader(path, 4, split="all", recipe=recipe, seed=2, augment=True, device="cpu"))
    gpu = list(open_dense_loader(path, 4, split="all", recipe=recipe, seed=2, augment=True, device="cuda"))
    for (ci, ct), (gi, gt) in zip(cpu, gpu):
        assert all(image.is_cuda for image in gi) and all(t["boxes"].is_cuda for t in gt)
        for a, b in zip(ct, gt):
            assert torch.equal(a["labels"], b["labels"].cpu())
            torch.testing.assert_close(a["boxes"], b["boxes"].cpu(), atol=1.0, rtol=0)
        assert max(float((x - y.cpu()).abs().mean()) for x, y in zip(ci, gi)) <= 0.5 / 255


def test_a_batch_moved_by_dali_equals_the_rows_moved_one_by_one(dense_data, tmp_path):
    """The loader's GPU path (DenseDataset.batch with a DaliMover), run on DALI's CPU ops."""
    from augforge.recipe import load_recipe

    path, _ = dense_data
    recipe = load_recipe(_stream_recipe(tmp_path, path))
    augment = recipe.augment.targets.augmenter(recipe.train_ops)
    data = DenseDataset(path, "all", augment, seed=4)
    together = data.batch([0, 3, 5, 7], augment.dali_mover(4, "cpu"))
    for (image, target), index in zip(together, [0, 3, 5, 7]):
        alone_image, alone = data[index]
        assert image.shape == alone_image.shape and float((image - alone_image).abs().mean()) <= 0.5 / 255
        assert torch.equal(target["labels"], alone["labels"])
        torch.testing.assert_close(target["boxes"], alone["boxes"], atol=1.0, rtol=0)
