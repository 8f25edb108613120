"""Faults that stay tested: SIGKILL at every crash point of every writing job (chosen by the writer's hooks,
not by sleeps) with byte-identical reruns, leftovers of early kills, full disks, concurrent jobs, hostile
manifests and checkpoints, changed resumes, fuzzed recipes and inputs that must never be skipped silently."""

import copy
import fcntl
import json
import math
import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from augforge.cli import main
from augforge.datasets.manifest import LOCK, MANIFEST, PROGRESS
from augforge.errors import AugforgeError
from augforge.recipe import parse_recipe
from cli_process import run_cli

RECIPE = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
    "balance": {"strategy": "over"},
    "augment": {"copies": 1, "color": "gray", "image": [{"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}]},
    "output": {"format": "png", "shard_rows": 500},
}
POINTS = ["marked", "shard@1", "shard@3", "before-manifest", "manifest-write"]


def job_argv(job: str, out: Path, recipe: Path) -> list[str]:
    return {
        "ingest": ["ingest", "digits", str(out), "--test-split", "0.25", "--shard-rows", "300", "-q"],
        "balance": ["balance", "digits", str(out), "--strategy", "over", "--imbalance", "longtail", "--test-split",
                    "0.25", "--shard-rows", "300", "-q"],
        "build": ["build", str(recipe), "--out", str(out), "--workers", "2", "-q"],
    }[job]


def cli(argv: list[str], fault: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``augforge ARGV`` in a process of its own, killed at ``fault`` when given. Forked from a server that has
    the imports done (``cli_process``), unless ``kwargs`` ask for a subprocess (``preexec_fn``)."""
    env = {k: v for k, v in os.environ.items() if k != "AUGFORGE_FAULT"}
    if fault:
        env["AUGFORGE_FAULT"] = fault
    if not kwargs:
        return run_cli(argv, env)
    return subprocess.run([sys.executable, "-m", "augforge.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def snapshot(out: Path) -> dict:
    """Every file under ``out`` with its bytes; the manifest without its creation time."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(path.relative_to(out))
        if rel == MANIFEST:
            manifest = json.loads(path.read_text())
            manifest.pop("created")
            files[rel] = manifest
        else:
            files[rel] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    refs = {}
    for job in ("ingest", "balance", "build"):
        out = root / f"ref-{job}"
        done = cli(job_argv(job, out, recipe))
        assert done.returncode == 0, done.stderr
        refs[job] = snapshot(out)
        assert len([k for k in refs[job] if k.startswith("shards/")]) >= 3
    return recipe, refs


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("job", ["ingest", "balance", "build"])
def test_sigkill_at_every_point_then_rerun_is_byte_identical(tmp_path, references, job, point):
    recipe, refs = references
    out = tmp_path / "out"
    killed = cli(job_argv(job, out, recipe), fault=point)
    assert killed.returncode == -9, killed.stderr
    assert not (out / MANIFEST).exists()  # killed before the manifest's rename, at the latest
    rerun = cli(job_argv(job, out, recipe))
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(out) == refs[job]  # the same files, nothing stale (no lock, journal or temporary file)


def test_a_job_killed_before_its_first_shard_resumes_and_overwrite_works(tmp_path, references):
    recipe, refs = references
    out = tmp_path / "out"
    assert cli(job_argv("ingest", out, recipe), fault="marked").returncode == -9
    assert (out / PROGRESS).exists() and not any((out / "shards").glob("*.arrow"))
    again = cli([*job_argv("ingest", out, recipe), "--overwrite"])
    assert again.returncode == 0, again.stderr
    assert snapshot(out) == refs["ingest"]
    legacy = tmp_path / "legacy"  # what older versions left: an empty shards/ and nothing else
    (legacy / "shards").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        done = cli([*job_argv("ingest", legacy, recipe), *extra])
        assert done.returncode == 0, done.stderr
    assert snapshot(legacy) == refs["ingest"]


def test_stale_temporary_files_are_removed_on_resume(tmp_path, references):
    recipe, refs = references
    out = tmp_path / "out"
    assert cli(job_argv("ingest", out, recipe), fault="shard@2").returncode == -9
    (out / f".tmp-{PROGRESS}.x1y2").write_text("{")  # a journal write the kill cut short
    (out / "shards" / ".tmp-part-00002.arrow.z9").write_bytes(b"partial")
    assert cli(job_argv("ingest", out, recipe)).returncode == 0
    assert snapshot(out) == refs["ingest"]


# -- full disks -------------------------------------------------------------------------------------------------


def _big_text_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"])
    texts = [" ".join(rng.choice(words, 24)) + f" {i}" for i in range(rows)]
    pl.DataFrame({"text": texts, "label": rng.integers(0, 3, rows)}).write_csv(path)
    return path


def _fill_up(tmp_path, out: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    src = _big_text_csv(tmp_path / "big.csv", 60_000)  # about 10 MB of text
    return cli(["ingest", str(src), str(out), "--text-col", "text", "--shard-mb", "8", "-q"], preexec_fn=preexec_fn)


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))


def _mounted_tmpfs(folder: Path) -> bool:
    """A 4 MB tmpfs on ``folder`` (root only)."""
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                                capture_output=True).returncode == 0


def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "small" / "ds"
    done = _fill_up(tmp_path, out, preexec_fn=_limit_file_size)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "file too large" in lines[0] and str(out) in lines[0] and "removed" in lines[0]
    assert not out.exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """On a 4 MB tmpfs when the test may mount one (root); else the file size limit stands for the disk."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = _mounted_tmpfs(small)
    try:
        done = _fill_up(tmp_path, small / "ds", preexec_fn=None if mounted else _limit_file_size)
        assert done.returncode == 1, done.stderr
        line = done.stderr.strip()
        reason = "no space left on device" if mounted else "file too large"
        assert len(line.splitlines()) == 1 and reason in line and "removed" in line
        assert not (small / "ds").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)


# -- one job per directory ----------------------------------------------------------------------------------------


def test_a_second_job_on_a_locked_directory_fails_naming_the_holder(tmp_path, references):
    recipe, refs = references
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242")
        held.flush()
        done = cli([*job_argv("ingest", out, recipe), "--overwrite"])
        assert done.returncode == 1
        assert "another augforge job is writing it (pid 4242)" in done.stderr and len(done.stderr.splitlines()) == 1
    assert cli(job_argv("ingest", out, recipe)).returncode == 0  # free again
    assert snapshot(out) == refs["ingest"]


def test_racing_overwrites_never_both_claim_the_directory(tmp_path, references):
    recipe, refs = references
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "augforge.cli", *job_argv("ingest", out, recipe), "--overwrite"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 or (code == 1 and "another augforge job is writing it" in err), err
    assert snapshot(out) == refs["ingest"]


# -- hostile manifests and checkpoints ------------------------------------------------------------------------------


def test_a_manifest_naming_a_file_outside_the_dataset_is_refused(tmp_path, capsys):
    from augforge.datasets.checksums import file_checksum

    out = tmp_path / "d"
    assert main(["ingest", "digits", str(out), "-q"]) == 0
    secret = tmp_path / "secret.arrow"
    secret.write_bytes(b"not yours")
    manifest = json.loads((out / MANIFEST).read_text())
    for name in ("../../secret.arrow", str(secret), "shards/../../secret.arrow"):
        manifest["shards"][0] = {**manifest["shards"][0], "file": name, "bytes": secret.stat().st_size,
                                 "checksum": file_checksum(secret)}
        (out / MANIFEST).write_text(json.dumps(manifest))
        capsys.readouterr()
        assert main(["inspect", str(out), "--verify"]) == 1
        err = capsys.readouterr().err
        assert "is not a file inside" in err and len(err.splitlines()) == 1
    (out / "shards" / "part-00000.arrow").unlink()
    (out / "shards" / "part-00000.arrow").symlink_to(secret)  # a link leading out
    manifest["shards"][0]["file"] = "shards/part-00000.arrow"
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert main(["inspect", str(out), "--verify"]) == 1


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/augforge-pwned",))


@pytest.mark.parametrize("kind", ["pickle", *(f"garbage-{i}" for i in range(12)), "empty", "list", "bad-arch",
                                  "bad-weights", "missing"])
def test_unreadable_checkpoints_are_one_line_naming_the_file(tmp_path, capsys, kind):
    path = tmp_path / "model.pt"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"model": _Payload()}))
    elif kind.startswith("garbage"):  # fixed random bytes: torch's unpickler fails on each in another way
        path.write_bytes(np.random.default_rng(int(kind.split("-")[1])).bytes(300))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "bad-arch":
        torch.save({"model": {}, "arch": {"name": "no_such_model", "num_classes": 2, "class_names": ["a", "b"]},
                    "input": {"payload": "image"}}, path)
    elif kind == "bad-weights":
        torch.save({"model": {"w": torch.zeros(2)}, "arch": {"name": "simple_cnn", "num_classes": 10,
                                                             "class_names": [str(i) for i in range(10)]},
                    "input": {"payload": "image"}}, path)
    assert main(["evaluate", str(path), "digits-data-not-needed"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"augforge evaluate: error: {path}") and len(err.strip().splitlines()) == 1
    assert not Path("/tmp/augforge-pwned").exists()


# -- resumes under changed settings ----------------------------------------------------------------------------------


def test_resume_with_a_changed_train_section_is_refused_naming_the_keys(tmp_path, capsys):
    data = {**RECIPE, "source": {**RECIPE["source"], "val_split": 0.1},
            "train": {"model": "simple_cnn", "epochs": 2, "batch_size": 64, "lr": 0.003}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    argv = ["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "data")]
    assert main(argv) == 0
    recipe.write_text(yaml.safe_dump({**data, "train": {**data["train"], "epochs": 3, "lr": 0.01}}))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "train.epochs: 2 -> 3" in err and "train.lr: 0.003 -> 0.01" in err and "--resume-changed" in err
    assert main([*argv, "--resume-changed"]) == 0
    assert "resuming under changed settings" in capsys.readouterr().out
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_setting_newer_than_the_checkpoint_counts_as_changed_only_off_its_default(tmp_path, capsys):
    """A checkpoint written before a setting existed records no value for it: the old code behaved as the
    default, so a resume with the default goes on, and one with another value is refused naming it."""
    import torch

    data = {**RECIPE, "train": {"model": "simple_cnn", "epochs": 1, "batch_size": 64}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    argv = ["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "data")]
    assert main(argv) == 0
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["settings"]["train.sampler"], state["settings"]["train.text"]  # as an older augforge wrote it
    torch.save(state, last)
    capsys.readouterr()
    recipe.write_text(yaml.safe_dump({**data, "train": {**data["train"], "epochs": 2}}))
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "train.epochs: 1 -> 2" in err and "train.sampler" not in err and "train.text" not in err
    recipe.write_text(yaml.safe_dump({**data, "train": {**data["train"], "sampler": "balanced"}}))
    assert main([*argv, "--resume"]) == 1
    assert 'train.sampler: null -> "balanced"' in capsys.readouterr().err
    recipe.write_text(yaml.safe_dump(data))
    assert main([*argv, "--resume"]) == 0


# -- fuzzed recipes ----------------------------------------------------------------------------------------------


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


EXAMPLES = {name: yaml.safe_load(Path(f"examples/{name}.yaml").read_text()) for name in ("digits", "text")}
JUNK = [math.nan, math.inf, -math.inf, 10 ** 30, 2 ** 70, -1, 0, 1e-300, 1e300, "abc", "", [], {}, None, True,
        [math.nan, 1], [1, 2, 3], {"op": "hflip"}, "../../etc/passwd", 3.5]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EXAMPLES)), st.data())
def test_mutated_example_recipes_validate_or_fail_cleanly(name, data):
    recipe = copy.deepcopy(EXAMPLES[name])
    paths = [p for p in _paths(recipe) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = recipe
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent[f"{path[-1]}_x"] = parent.pop(path[-1])  # a renamed key
            else:
                parent[path[-1]] = data.draw(st.sampled_from(JUNK))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this path
    try:
        parse_recipe(recipe, f"{name}.yaml", "examples")
    except AugforgeError as exc:  # a RecipeError: one line naming the file and the place
        assert str(exc).startswith(f"{name}.yaml: ") and "\n" not in str(exc).strip(), str(exc)


# -- inputs never skipped silently --------------------------------------------------------------------------------


def test_decompression_bombs_quote_max_pixels(tmp_path):
    from augforge.datasets.sources.image_folder import ImageFolderSource

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / c / "ok.png")
    Image.new("1", (20_000, 10_000)).save(tmp_path / "a" / "bomb.png")  # 200 M pixels: past Pillow's own guard
    Image.new("L", (300, 300)).save(tmp_path / "b" / "big.png")
    source = ImageFolderSource(tmp_path, max_pixels=50_000)
    assert len(source.labels()) == 2  # the files are checked when the rows are first listed
    reasons = {Path(p.path).name: p.reason for p in source.problems}
    assert reasons["bomb.png"] == "too large: 200,000,000 pixels exceeds the limit of 50,000 (--max-pixels)"
    assert reasons["big.png"] == "too large: 300x300 pixels exceeds the limit of 50,000"


def test_link_loops_and_folder_links_are_listed(tmp_path):
    from augforge.datasets.sources.image_folder import ImageFolderSource

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / c / "ok.png")
    (tmp_path / "a" / "loop1").symlink_to("loop2")
    (tmp_path / "a" / "loop2").symlink_to("loop1")
    (tmp_path / "a" / "up").symlink_to("..")  # a folder link that loops back to the root
    (tmp_path / "b" / "gone.png").symlink_to("nowhere.png")
    source = ImageFolderSource(tmp_path)
    assert len(source.labels()) == 2
    reasons = {Path(p.path).name: p.reason for p in source.problems}
    assert "loop" in reasons["loop1"] and "loop" in reasons["loop2"]
    assert "link to a folder" in reasons["up"] and "broken symbolic link" in reasons["gone.png"]


def test_the_smote_projection_warns_for_classes_it_will_refuse(capsys):
    assert main(["report", "digits", "--imbalance", "longtail", "--imbalance-factor", "100",
                 "--strategy", "smote:k=20"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "needs more than k_neighbors=20; it will refuse" in out


def test_a_complete_dataset_is_reused_while_another_job_holds_its_lock(tmp_path, references):
    """Reusing a finished dataset only reads it: parallel trainings that share a build must not collide."""
    recipe, refs = references
    out = tmp_path / "out"
    assert cli(job_argv("ingest", out, recipe)).returncode == 0
    with open(out / LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        again = cli(job_argv("ingest", out, recipe))
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    (out / LOCK).unlink()
    assert snapshot(out) == refs["ingest"]
