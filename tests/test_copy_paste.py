"""Copy-paste of rare instances: occlusion updates against exact ground truth on composed scenes (masks, boxes,
keypoints, what is dropped or refused), provenance per pasted instance, and the balance step from a recipe: what
report --strategy promises is what the build writes, only train rows feed a paste."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from augforge.augment.copy_paste import PastePolicy, plan_paste, render_paste
from augforge.augment.target_geometry import transform_points, warp_image
from augforge.balance.apply import plan_balance
from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.datasets.sources import open_source
from augforge.datasets.targets import Instances, from_columns, instance_mask, mask_box
from augforge.errors import OptionError
from augforge.pipelines.dense_rows import decode_rgb
from conftest import rebuilt_train_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def _scenes(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [composed_scenes.scene(rng, objects=3, min_radius=8.0) for _ in range(2)]


@pytest.mark.parametrize("seed", range(6))
def test_a_paste_cuts_the_instances_it_covers_exactly(seed):
    (image, recipient), (donor_image, donor) = _scenes(seed)
    policy = PastePolicy(scale=(0.8, 1.6), max_occlusion=0.6)
    paste = plan_paste(np.random.default_rng(seed), recipient, (96, 64), donor, 0, (96, 64), "donor.png", policy)
    assert paste.instances is not None
    source = instance_mask(donor, 0, 64, 96)
    expected = warp_image(source.astype(np.uint8), paste.matrix, (96, 64), nearest=True).astype(bool)
    assert np.array_equal(paste.mask, expected) and expected.any()
    out = paste.instances
    pasted = len(out) - 1
    assert out.classes[pasted] == donor.classes[0] and out.origin[pasted] == f"paste:donor.png#{donor.origin[0]}"
    np.testing.assert_array_equal(out.boxes[pasted], mask_box(expected))  # the pasted box is its mask's
    np.testing.assert_allclose(out.keypoints[pasted, :, :2], transform_points(donor.keypoints[0, :, :2], paste.matrix))
    kept = [recipient.origin.index(o) for o in out.origin[:pasted]]
    for j, i in enumerate(kept):
        before = instance_mask(recipient, i, 64, 96)
        hidden = (before & expected).sum() / before.sum()
        assert hidden <= 0.6
        after = instance_mask(out, j, 64, 96)
        assert np.array_equal(after, before & ~expected)  # what the paste leaves, exactly
        np.testing.assert_array_equal(out.boxes[j], mask_box(after) if hidden else recipient.boxes[i])
        for x, y, v in out.keypoints[j]:
            original = recipient.keypoints[i][np.all(np.isclose(recipient.keypoints[i][:, :2], [x, y]), axis=1)][0]
            under = expected[min(int(y), 63), min(int(x), 95)]
            assert v == (1 if under and original[2] == 2 else original[2])
    for i in set(range(len(recipient))) - set(kept):  # dropped: covered beyond the policy
        before = instance_mask(recipient, i, 64, 96)
        assert (before & expected).sum() / before.sum() > 0.6
    assert paste.dropped == len(recipient) - len(kept)
    pixels = render_paste(image, donor_image, paste)
    moved = warp_image(donor_image, paste.matrix, (96, 64))
    assert np.array_equal(pixels[expected], moved[expected]) and np.array_equal(pixels[~expected], image[~expected])


def test_reject_paste_redraws_until_no_instance_is_covered_beyond_the_policy():
    (_, recipient), (_, donor) = _scenes(3)
    policy = PastePolicy(scale=(1.0, 2.0), max_occlusion=0.05, on_covered="reject_paste", attempts=200)
    paste = plan_paste(np.random.default_rng(0), recipient, (96, 64), donor, 0, (96, 64), "d", policy)
    assert paste.instances is not None and paste.dropped == 0 and len(paste.instances) == len(recipient) + 1
    for i in range(len(recipient)):
        before = instance_mask(recipient, i, 64, 96)
        assert (before & paste.mask).sum() / before.sum() <= 0.05
    # a recipient covered everywhere: every placement refused, the paste given up and counted
    full = Instances(np.array([0]), np.array([[0.0, 0, 96, 64]]), [[np.array([0, 0, 96, 0, 96, 64, 0, 64.0])]])
    big = PastePolicy(scale=(3.0, 4.0), max_occlusion=0.05, on_covered="reject_paste", attempts=20)
    given_up = plan_paste(np.random.default_rng(0), full, (96, 64), donor, 0, (96, 64), "d", big)
    assert given_up.instances is None and given_up.refused == 20
    with pytest.raises(OptionError, match="on_covered"):
        PastePolicy(on_covered="vanish")


def test_a_fully_covered_instance_is_always_dropped():
    (_, _), (_, donor) = _scenes(1)
    tiny = Instances(np.array([1]), np.array([[40.0, 30, 42, 32]]), [[np.array([40, 30, 42, 30, 42, 32, 40, 32.0])]])
    policy = PastePolicy(scale=(3.0, 3.0), max_occlusion=1.0)
    outcomes = set()
    for seed in range(30):
        paste = plan_paste(np.random.default_rng(seed), tiny, (96, 64), donor, 0, (96, 64), "d", policy)
        covered = bool(paste.mask[instance_mask(tiny, 0, 64, 96)].all())
        assert (len(paste.instances) == 1) == covered  # under the paste entirely: gone with its label
        outcomes.add(covered)
    assert outcomes == {True, False}


@pytest.fixture(scope="module")
def longtail(tmp_path_factory):
    root = tmp_path_factory.mktemp("cp-longtail")
    composed_scenes.write_coco_set(root, 60, seed=5, objects=3, class_weights=[50, 10, 1], with_keypoints=False)
    return root / "annotations.json"


def test_the_balance_step_writes_what_report_promises_from_train_rows_only(longtail, tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(longtail), "--strategy", "copy_paste:40", "--test-split", "0.2", "--json"]) == 0
    promised = json.loads(capsys.readouterr().out)["instance_projection"]
    assert all(row["after"] >= 40 for row in promised["per_class"].values()) and promised["short"] == {}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(longtail), "test_split": 0.2},
                                      "balance": {"strategy": "copy_paste:40"},
                                      "output": {"dir": str(tmp_path / "out"), "format": "png"}}))
    assert main(["build", str(recipe), "-q"]) == 0
    train = Dataset(tmp_path / "out", "train")
    table = train.take(np.arange(len(train)))
    rows = from_columns(table)
    counts = np.bincount(np.concatenate([r.classes for r in rows]), minlength=3)
    assert counts.tolist() == [promised["per_class"][c]["after"] for c in composed_scenes.CLASSES]
    assert len(train) == promised["images_after"]
    test_ids = set(Dataset(tmp_path / "out", "test").take(np.arange(12), ["id"]).column("id").to_pylist())
    train_ids = set(table.column("id").to_pylist())
    pasted = [o for r in rows for o in r.origin if o.startswith("paste:")]
    assert 0 < len(pasted) <= promised["pastes"]  # a later paste onto the same row may cover an earlier one
    donors = {o.split(":", 1)[1].split("#", 1)[0] for o in pasted}
    assert donors <= train_ids and not donors & test_ids  # val/test never feed a paste
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["build"]["balance"]["instances"] == promised
    # the written pixels are the planned paste rendered: replay the plan and compare
    source = open_source(longtail)
    from augforge.datasets.splits import SplitSpec

    plan = plan_balance(source, "copy_paste:40", splits=SplitSpec(0.2, 0.0))
    images = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist()))
    job_ids = [i for i in table.column("id").to_pylist() if "~a" in i]
    job = plan.pastes[min(plan.pastes)]
    recipient_id = source.ids()[int(plan.train_positions[job.recipient])]
    written = decode_rgb(images[next(i for i in job_ids if i.startswith(recipient_id))])
    expected = decode_rgb(images[recipient_id])
    for donor, _, paste in job.pastes:  # each paste rendered on what the previous left
        expected = render_paste(expected, decode_rgb(images[source.ids()[int(plan.train_positions[donor])]]), paste)
    assert np.array_equal(written, expected) and len(job.pastes) >= 1
    assert len(pasted) == sum(o.startswith("paste:") for j in plan.pastes.values() for o in j.instances.origin)


def test_the_balance_command_sends_copy_paste_to_a_build(longtail, tmp_path, capsys):
    capsys.readouterr()
    assert main(["balance", str(longtail), str(tmp_path / "b"), "--strategy", "copy_paste:40"]) == 1
    assert "run it as a recipe's balance.strategy" in capsys.readouterr().err


def test_copy_paste_as_an_op_in_the_stream_and_in_a_build(longtail, tmp_path):
    recipe = tmp_path / "op.yaml"
    data = {"source": {"path": str(longtail), "test_split": 0.2},
            "augment": {"mode": "online", "image": [{"op": "hflip", "p": 0.5}],
                        "targets": {"copy_paste": {"p": 1.0, "max_instances": 2, "classes": ["shard"]}}},
            "output": {"dir": str(tmp_path / "data"), "format": "png"}}
    recipe.write_text(yaml.safe_dump(data))
    assert main(["build", str(recipe), "-q"]) == 0
    plain = Dataset(tmp_path / "data", "train")
    shards = sum(int((r.classes == 2).sum()) for r in from_columns(plain.take(np.arange(len(plain)))))
    from augforge.pipelines.dense_loader import open_dense_loader

    streamed = [t for _, ts in open_dense_loader(tmp_path / "data", 12, recipe=str(recipe), seed=3) for t in ts]
    assert sum(int((t["labels"] == 2).sum()) for t in streamed) > shards  # shards pasted from the batch's others
    data["augment"] = {"copies": 1, "image": [{"op": "hflip", "p": 0.5}],
                       "targets": {"copy_paste": {"p": 1.0, "max_instances": 2, "classes": ["shard"]}}}
    _, rows = rebuilt_train_rows(recipe, data, tmp_path / "built")
    pasted = [o for i, r in rows.items() if "~a" in i for o in r.origin if o.startswith("paste:")]
    assert pasted and all(rows[o.split(":", 1)[1].split("#", 1)[0]] is not None for o in pasted)  # train donors
    donor_classes = {int(r.classes[r.origin.index(o)]) for r in rows.values() for o in r.origin if o in pasted}
    assert donor_classes == {2}  # only the class named
    data["augment"]["targets"]["copy_paste"]["classes"] = ["unicorn"]
    recipe.write_text(yaml.safe_dump(data))
    assert main(["build", str(recipe), "--out", str(tmp_path / "bad"), "-q"]) == 1
