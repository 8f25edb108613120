"""The offline GPU bundle (scripts/gpu_bundle.py) without network and without a GPU: split and reassembly give
back the same bytes with no part over the limit, a missing part or wheel stops the install in one line, and a
small rehearsal of `make gpu-check` installs a bundle of two tiny wheels from the bundle alone and reaches the
GPU steps (a dry run here, for want of a GPU)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent


def _bundler():
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gb = _bundler()


def _wheel(folder: Path, name: str, version: str, requires: list[str], payload: bytes) -> Path:
    """A real pure-Python wheel: a module holding ``payload``'s length, METADATA, WHEEL and a RECORD."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"SIZE = {len(payload)}\n".encode(),
        f"{module}/data.bin": payload,
        f"{dist}/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: augforge-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name_in_zip, data in files.items():
            wheel.writestr(name_in_zip, data)
    return path


@pytest.fixture
def tiny(tmp_path):
    """Two tiny wheels (tiny-a requires tiny-b) in a find-links folder, and an empty image list."""
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "tiny-a", "1.0", ["tiny-b>=1.0", "never-installed>=1; python_version < '3'"], os.urandom(3000))
    _wheel(links, "tiny-b", "1.2", [], os.urandom(5000))
    image = tmp_path / "image.txt"
    image.write_text("# nothing\n")
    return links, image


def _make(tiny, out: Path, part_mib: float, image: Path | None = None) -> dict:
    links, empty = tiny
    assert gb.main(["make", "--out", str(out), "--python-version", "3.12", "--part-mib", str(part_mib),
                    "--requires", "tiny-a>=1.0", "--image", str(image or empty), "--find-links", str(links)]) == 0
    return json.loads((out / "bundle.json").read_text())


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5000), part=st.integers(1, 1500))
def test_split_and_join_give_back_the_bytes_and_no_part_exceeds_the_limit(size, part):
    data = os.urandom(size)
    parts = gb.split_bytes(data, part)
    assert b"".join(parts) == data and all(len(p) <= part for p in parts)
    assert len(parts) == max(1, math.ceil(size / part))


def test_a_bundle_in_parts_reassembles_to_the_same_wheels(tiny, tmp_path, capsys):
    out = tmp_path / "bundle"
    manifest = _make(tiny, out, part_mib=2000 / (1 << 20))  # 2,000-byte parts: several of them
    printed = capsys.readouterr().out
    assert [w["file"] for w in manifest["wheels"]] == ["tiny_a-1.0-py3-none-any.whl", "tiny_b-1.2-py3-none-any.whl"]
    assert len(manifest["parts"]) >= 4 and all(p["bytes"] <= 2000 for p in manifest["parts"])
    assert all(p["sha256"] in printed for p in manifest["parts"]) and "2 wheels" in printed
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json"] + [p["file"] for p in manifest["parts"]]
    joined = gb.join_bundle(out, tmp_path / "joined")
    links, _ = tiny
    for path in joined:  # the very bytes that went in
        assert path.read_bytes() == (links / path.name).read_bytes()
    again = _make(tiny, tmp_path / "again", part_mib=2000 / (1 << 20))
    assert again["tar_sha256"] == manifest["tar_sha256"]  # a remade bundle of the same wheels is the same bytes


def test_the_real_requirements_resolve_for_the_target_without_the_images_packages():
    """The bundle is made for augforge's dependencies and the slim gpu extra, less what the image has: DALI,
    polars and the other packages the GPU image lacks are in it; torch, numpy and Ray are not."""
    requirements = gb.project_requirements("gpu")
    names = {gb.normalized(r.split(";")[0].split(">")[0].split("=")[0].split("<")[0]) for r in requirements}
    image = gb.image_packages()
    assert {"nvidia-dali-cuda130", "polars", "imbalanced-learn", "optuna", "albumentations"} <= names - image
    assert {"torch", "numpy", "pyarrow", "scipy", "pytest"} <= image and "ray" not in names
    assert "transformers" not in names and "gensim" not in names


def test_a_missing_part_or_wheel_stops_the_install_in_one_line(tiny, tmp_path):
    out = _make(tiny, tmp_path / "bundle", part_mib=2000 / (1 << 20))
    (tmp_path / "bundle" / "part-001").unlink()
    with pytest.raises(SystemExit, match=r"^gpu-bundle: the bundle lacks part-001 \(of \d+ parts\)"):
        gb.main(["install", "--bundle", str(tmp_path / "bundle"), "--target", str(tmp_path / "site")])
    assert out["parts"]
    image = tmp_path / "image-with-b.txt"  # as if the image had tiny-b: the bundle leaves it out
    image.write_text("tiny-b\n")
    partial = _make(tiny, tmp_path / "partial", part_mib=1, image=image)
    assert [w["file"] for w in partial["wheels"]] == ["tiny_a-1.0-py3-none-any.whl"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_bundle.py"), "install", "--bundle",
                           str(tmp_path / "partial"), "--target", str(tmp_path / "site2")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "gpu-bundle: the bundle has no wheel for tiny-b (required by tiny-a), and this Python does not have it; "
        "make the bundle again with scripts/gpu-bundle.sh"]


def test_a_small_rehearsal_installs_from_the_bundle_alone_and_reaches_the_gpu_steps(tiny, tmp_path):
    """`make gpu-check`'s script with GPU_CHECK_BUNDLE: the wheels come from the bundle only (pip with no index and
    no cache; PIP_INDEX_URL points nowhere), land in GPU_CHECK_SITE, and the check then runs (here: its dry run,
    for want of a GPU)."""
    bundle, site = tmp_path / "bundle", tmp_path / "site"
    _make(tiny, bundle, part_mib=2000 / (1 << 20))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "GPU_CHECK_BUNDLE": str(bundle),
           "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_SITE": str(site), "PIP_INDEX_URL": "http://127.0.0.1:9/",
           "PIP_NO_CACHE_DIR": "1", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("gpu-bundle: installed 2 wheels into") and lines[0].endswith("every requirement holds")
    assert lines[-1].startswith("gpu-check: no CUDA GPU on this machine; dry run: all")
    found = subprocess.run([sys.executable, "-c", "import tiny_a, tiny_b; print(tiny_a.SIZE, tiny_b.SIZE)"],
                           env={"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert found.stdout.split() == ["3000", "5000"]
