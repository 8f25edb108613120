"""`--engine ray`: builds and ingests on Ray Data give the local engine's bytes, through worker kills, a driver
killed with kill -9 and a two-node cluster on localhost; bad input ends the build naming the file. Every test
starts and stops its own Ray processes, and a fixture checks that none is left behind."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from augforge.cli import main
from augforge.datasets import ingest, open_source
from augforge.datasets.manifest import MANIFEST
from augforge.errors import AugforgeError
from augforge.datasets.ingest import READ_BATCH_ROWS
from augforge.pipelines.build import CHUNK_ROWS, build
from augforge.engine import EngineSpec
from augforge.recipe import load_recipe, parse_recipe
from conftest import make_image_folder

import ray  # noqa: E402  (`make` installs augforge[ray]: these tests run, never skip)

IMAGES = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
    "balance": {"strategy": "over"},
    "augment": {"copies": 1, "color": "gray", "image": [
        {"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 12, "p": 0.8},
        {"op": "gaussian_blur", "sigma": [0.1, 0.6], "kernel": 3, "p": 0.3}]},
    "output": {"format": "png", "shard_rows": 600},
}


def test_ray_is_installed_for_the_suite():
    """`make` installs the ray extra: the distributed tests must run, not skip, in CI."""
    assert ray.__version__


def _ray_processes() -> set[int]:
    """PIDs of Ray's own processes on this machine (GCS, raylets, workers, agents)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray::" in command or "/ray/core/src/ray/" in command or "ray/_private/" in command:
            found.add(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_ray_left_behind(monkeypatch):
    """Each test leaves no Ray process; manifests carry a fixed `created` so that whole files compare."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    before = _ray_processes()
    yield
    deadline = time.monotonic() + 90  # Ray's shutdown on 2 busy cores can take half a minute; a leak stays a leak
    while time.monotonic() < deadline and _ray_processes() - before:
        time.sleep(0.5)
    left = _ray_processes() - before
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray processes left behind: {sorted(left)}"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _units(out: Path) -> int:
    """How many units of work a Ray build of ``out``'s size has: its train chunks, then its val/test rows a
    read batch at a time."""
    counts = json.loads((out / MANIFEST).read_text())["counts"]
    train = sum(counts["train"].values())
    others = sum(sum(c.values()) for split, c in counts.items() if split != "train")
    return -(-train // CHUNK_ROWS) + -(-others // READ_BATCH_ROWS)


def _same_bytes(a: Path, b: Path) -> None:
    left, right = _files(a), _files(b)
    assert sorted(left) == sorted(right)
    different = [name for name in left if left[name] != right[name]]
    assert not different, f"files differ: {different}"


@pytest.fixture(scope="module")
def images_recipe(tmp_path_factory) -> Path:
    """The image recipe's file (its path is recorded in the manifest, so every build here uses this one)."""
    path = tmp_path_factory.mktemp("recipe") / "images.yaml"
    path.write_text(yaml.safe_dump(IMAGES))
    return path


@pytest.fixture(scope="module")
def local_images(tmp_path_factory, images_recipe):
    """The image recipe built by the local engine (the reference bytes)."""
    out = tmp_path_factory.mktemp("local") / "digits"
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        build(load_recipe(images_recipe), out, workers=2)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert len(manifest["shards"]) >= 4 and manifest["counts"]["train"]
    return out


def test_an_image_build_on_ray_to_s3_is_byte_identical_to_the_local_one(local_images, images_recipe, capsys):
    """2 workers, through the CLI, straight to an S3 endpoint (moto's server on 127.0.0.1): the objects are the
    local engine's files, byte for byte (1 worker: the resumed build of the kill -9 test; Ray to a local
    directory: the tests below)."""
    from augforge.storage import ObjectStore, parse_url
    from s3_server import S3Server

    server = S3Server()
    before = server.activate()
    try:
        url = f"s3://{server.bucket()}/digits"
        assert main(["build", str(images_recipe), "--engine", "ray", "--workers", "2", "--out", url]) == 0
        printed = capsys.readouterr().out
        assert f"Ray: {_units(local_images)} units of work on 1 node(s)" in printed and f"to {url}" in printed
        store = ObjectStore(parse_url(url))
        assert {name: store.get(name) for name in store.names()} == _files(local_images)
    finally:
        server.stop()
        server.deactivate(before)


def test_a_text_build_on_ray_is_byte_identical_to_the_local_one(tmp_path, text_csv):
    """keyboard typos, TF-IDF substitution (each worker fits the model on the same corpus) and EDA swaps and
    deletions: the variants are the local engine's."""
    data = {"seed": 0, "source": {"path": str(text_csv), "text_col": "review", "label_col": "sentiment",
                                  "test_split": 0.2},
            "balance": {"strategy": "over"},
            "augment": {"copies": 2, "text": [{"op": "keyboard", "aug_char_p": 0.1, "aug_word_p": 0.2},
                                              {"op": "tfidf", "aug_p": 0.2},
                                              {"op": "eda", "alpha_sr": 0, "alpha_ri": 0, "alpha_rs": 0.2,
                                               "p_rd": 0.1}]}}
    recipe = parse_recipe(data, "text.yaml")
    build(recipe, tmp_path / "local", workers=2)
    result = build(recipe, tmp_path / "ray", engine=EngineSpec("ray", workers=2))
    assert result.engine["units"] >= 1 and result.augmented > 0
    _same_bytes(tmp_path / "local", tmp_path / "ray")


def test_a_killed_worker_is_retried_and_the_output_is_still_identical(tmp_path, local_images, images_recipe,
                                                                     monkeypatch):
    """The first Ray worker to start a chunk is SIGKILLed mid-task (a marker file makes it happen once
    across processes); Ray restarts the actor and retries the chunk."""
    marker = tmp_path / "killed"
    monkeypatch.setenv("AUGFORGE_FAULT", "ray-unit")
    monkeypatch.setenv("AUGFORGE_FAULT_ONCE", str(marker))
    result = build(load_recipe(images_recipe), tmp_path / "ray", engine=EngineSpec("ray", workers=2))
    assert marker.exists()  # a worker did die mid-chunk
    assert result.engine["units"] == _units(local_images) == 2 + 1  # 2,680 train rows in chunks of 2,048; the test rows
    _same_bytes(local_images, tmp_path / "ray")
    again = build(load_recipe(images_recipe), tmp_path / "ray", engine=EngineSpec("ray", workers=2))
    assert again.write.up_to_date and again.engine["units"] == 0  # a complete build starts no Ray work


def test_a_driver_killed_with_kill_9_resumes_to_the_same_bytes(tmp_path, local_images, images_recipe):
    """The driver dies by SIGKILL right after committing its 2nd shard; rerunning the command (with 1 worker
    instead of 2) verifies and keeps the finished shards and makes the rest, to the local engine's bytes."""
    from augforge.datasets.manifest import PROGRESS

    out = tmp_path / "ray"
    command = [sys.executable, "-m", "augforge", "build", str(images_recipe), "--engine", "ray", "--workers", "2",
               "--out", str(out), "--quiet"]
    driver = subprocess.Popen(command, env={**os.environ, "AUGFORGE_FAULT": "shard@2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    output = driver.communicate(timeout=600)[0].decode(errors="replace")
    assert driver.returncode == -signal.SIGKILL, output
    try:  # Ray's processes of that driver live in its session: end them as a reboot would
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert not (out / MANIFEST).exists() and len(json.loads((out / PROGRESS).read_text())["shards"]) == 2
    second = subprocess.run([*command[:8], "1", *command[9:]], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    _same_bytes(local_images, out)


def test_a_bad_input_ends_the_build_naming_the_file(tmp_path, sample_images):
    """A train image deleted after planning: the worker's chunk fails, the build stops with the file's name
    and leaves no manifest (a fresh output directory is removed)."""
    folder = make_image_folder(tmp_path / "photos", sample_images, per_class=(12, 6), size=32)
    data = {"seed": 0, "source": {"path": str(folder), "test_split": 0.25},
            "augment": {"copies": 1, "image": [{"op": "hflip", "p": 0.5}]}}
    recipe = parse_recipe(data, "photos.yaml")
    gone = []

    def on_stage(text: str) -> None:
        if text.startswith("augmenting and writing") and not gone:
            victim = sorted((folder / "china").iterdir())[0]
            victim.unlink()
            gone.append(victim)

    started = time.monotonic()
    with pytest.raises(AugforgeError) as failure:
        build(recipe, tmp_path / "out", engine=EngineSpec("ray", workers=2), on_stage=on_stage)
    assert time.monotonic() - started < 300
    assert str(gone[0]) in str(failure.value) and "No such file" in str(failure.value)
    assert not (tmp_path / "out").exists()


def test_ingest_on_ray_checks_an_image_folder_like_the_local_engine(tmp_path, sample_images, monkeypatch):
    """The decoding check of every file runs on the workers, 4 files a unit: the same problems, the same bytes."""
    monkeypatch.setattr("augforge.datasets.sources.image_folder.CHECKS_PER_UNIT", 4)
    folder = make_image_folder(tmp_path / "photos", sample_images, per_class=(14, 8), size=24)
    (folder / "china" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    ingest(open_source(folder), tmp_path / "local", splits=_splits())
    from augforge.engine import RayEngine

    mapped = []
    original = RayEngine.map_ordered

    def counted(self, make_worker, state, units):
        mapped.append(len(units))
        yield from original(self, make_worker, state, units)

    monkeypatch.setattr(RayEngine, "map_ordered", counted)
    source = open_source(folder)
    ingest(source, tmp_path / "ray", splits=_splits(), engine=EngineSpec("ray", workers=2))
    assert mapped == [-(-23 // 4)]  # the 23 files went to the workers, 4 a unit
    assert source.engine is None  # the connection is not kept on the source
    manifest = json.loads((tmp_path / "ray" / MANIFEST).read_text())
    assert [p["path"] for p in manifest["problems"]] == [str(folder / "china" / "broken.jpg")]
    _same_bytes(tmp_path / "local", tmp_path / "ray")


def _splits():
    from augforge.datasets import SplitSpec

    return SplitSpec(0.2, 0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_two_node_cluster_on_localhost_shares_the_build(tmp_path, local_images, images_recipe):
    """`ray start --head` and a second `ray start --address`, one CPU each: a 2-worker build has a worker on
    each node, and the bytes are the local engine's."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(200 * 1024 * 1024),
              "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}", *common],
                       check=True, capture_output=True, timeout=120)
        result = build(load_recipe(images_recipe), tmp_path / "ray",
                       engine=EngineSpec("ray", address=f"127.0.0.1:{port}", workers=2))
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
    assert len(result.engine["nodes"]) == 2 and all(n >= 1 for n in result.engine["nodes"].values())
    _same_bytes(local_images, tmp_path / "ray")


def test_engine_options_are_checked(tmp_path, monkeypatch, capsys):
    with pytest.raises(AugforgeError, match="^address and gpus_per_worker need engine ray"):
        EngineSpec("local", address="auto")
    with pytest.raises(AugforgeError, match="^workers 0: expected at least 1"):
        EngineSpec("ray", workers=0)
    features = tmp_path / "features.csv"
    features.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    with pytest.raises(AugforgeError, match="^engine ray distributes image and text builds"):
        build(parse_recipe({"source": {"path": str(features)}}, "f.yaml"), tmp_path / "f", engine=EngineSpec("ray"))
    recipe = tmp_path / "images.yaml"
    recipe.write_text(yaml.safe_dump(IMAGES))
    for engine in ("local", "ray"):
        assert main(["build", str(recipe), "--engine", engine, "--workers", "0", "--out", str(tmp_path / "x")]) == 1
        assert "--workers 0: expected at least 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["build", str(recipe), "--engine", "ray", "--out", str(tmp_path / "x")]) == 1
    assert "--engine ray needs Ray Data: pip install 'augforge[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    table = tmp_path / "rows.csv"
    table.write_text("text,label\nhello there,a\nhi again,b\n")
    monkeypatch.delitem(sys.modules, "ray")
    assert main(["ingest", str(table), str(tmp_path / "t"), "--text-col", "text", "--engine", "ray"]) == 1
    assert "ingest distributes the checking of image folders" in capsys.readouterr().err


def test_source_date_epoch_fixes_the_manifest_time(monkeypatch):
    from augforge.datasets.writer import created_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert created_time() == "2023-11-14T22:13:20+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(AugforgeError, match="SOURCE_DATE_EPOCH='yesterday': expected whole seconds since 1970"):
        created_time()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert created_time().endswith("+00:00") and created_time() != "2023-11-14T22:13:20+00:00"


def test_raw_output_of_mixed_sizes_is_refused_on_ray_as_locally(tmp_path, sample_images):
    """output.format raw needs one image shape; the Ray build refuses a folder of two sizes with the local
    engine's message (the shapes are checked across workers too)."""
    from PIL import Image

    folder = make_image_folder(tmp_path / "photos", sample_images, per_class=(8, 4), size=32)
    Image.fromarray(sample_images[1][:40, :48]).save(folder / "flower" / "wide.png")
    data = {"seed": 0, "source": {"path": str(folder), "test_split": 0.25}, "output": {"format": "raw"}}
    messages = []
    for engine in (None, EngineSpec("ray", workers=2)):
        with pytest.raises(AugforgeError) as failure:
            build(parse_recipe(data, "raw.yaml"), tmp_path / f"out{len(messages)}", engine=engine)
        messages.append(str(failure.value))
        assert not (tmp_path / f"out{len(messages) - 1}").exists()
    assert all("output.format raw needs every image 32x32x3" in m or "needs every image 40x48x3" in m
               for m in messages), messages
