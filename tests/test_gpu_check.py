"""`make gpu-check` without a GPU: one line and a dry run that parses every step; its pieces on real commands."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_the_check_says_so_in_one_line_and_parses_every_step(tmp_path):
    extra = ["--dry-run"] if torch.cuda.is_available() else []  # on a GPU machine, the same dry run, asked for
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--out", str(tmp_path / "out"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "VENV": str(Path(sys.executable).parent.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: ")
    assert ("--dry-run" if extra else "no CUDA GPU on this machine") in lines[0]
    driver = _driver()
    plan = driver.steps(tmp_path / "work")
    assert f"dry run: all {len(plan)} steps parse" in lines[0]
    for step in plan:
        assert f"{step.name}: " in lines[0]
    gpu_tests = int(lines[0].split("gpu tests: ")[1].split("/")[0])
    assert gpu_tests >= 70  # every test marked gpu: the op checks on the GPU, the GPU pipeline, the device batches
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_a_step_that_does_not_parse_stops_the_dry_run(tmp_path):
    driver = _driver()
    bad = driver.Step("smote", ["benchmarks/smote.py", "--sizes"], 10, "benchmark")
    with pytest.raises(SystemExit):
        driver.dry_run([bad], sys.executable)
    bad_option = driver.Step("loop", ["benchmarks/trainer_overhead.py", "--precision", "fp8"], 10, "benchmark")
    with pytest.raises(SystemExit):
        driver.dry_run([bad_option], sys.executable)


def test_steps_run_under_their_limits_and_the_results_name_the_gpu(tmp_path):
    driver = _driver()
    ok = driver.Step("echo", ["-c", "print('rate 12 img/s'); print('noise')"], 30, "benchmark", ("img/s",))
    slow = driver.Step("slow", ["-c", "import time; print('started', flush=True); time.sleep(30)"], 1, "benchmark")
    failing = driver.Step("fails", ["-c", "import sys; sys.exit(3)"], 30, "benchmark")
    results = [driver.run_step(step, sys.executable, lambda _: None) for step in (ok, slow, failing)]
    assert [r["exit"] for r in results] == [0, "timeout", 3]
    assert results[0]["lines"] == ["rate 12 img/s"] and results[1]["wall_s"] < 10
    json_path, md_path = driver.write_results(tmp_path / "out", "NVIDIA H200", results)
    record = json.loads(json_path.read_text())
    assert record["gpu"] == "NVIDIA H200" and [s["step"] for s in record["steps"]] == ["echo", "slow", "fails"]
    table = md_path.read_text()
    assert table.startswith("# make gpu-check on NVIDIA H200") and "| echo | 0 |" in table and "| fails | 3 |" in table
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-check.json", "gpu-check.md"]
