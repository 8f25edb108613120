"""`augforge train --profile`: a trace TensorBoard and Perfetto open, the top operators, the data-wait share;
training itself unchanged."""

import json

import torch
import yaml

from augforge.cli import main
from augforge.train.profile import load_trace
from augforge.train.checkpoint import load_checkpoint


def test_a_profiled_run_writes_a_trace_that_loads_and_trains_the_same_weights(tmp_path, capsys):
    recipe = {"seed": 0, "source": {"path": "digits", "test_split": 0.2}, "output": {"dir": str(tmp_path / "data")},
              "train": {"epochs": 1, "batch_size": 32}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "plain")]) == 0
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--profile", "--profile-steps", "3"]) == 0
    out = capsys.readouterr().out
    profile = json.loads((tmp_path / "run" / "profile" / "summary.json").read_text())
    assert profile["steps"] == 3 and 0.0 <= profile["wait_share"] <= 1.0 and len(profile["trace"]) == 1
    assert "profile: 3 batches" in out and profile["top"][0]["name"] in out
    assert all(not row["name"].startswith("ProfilerStep") and row["self_cpu_ms"] > 0 for row in profile["top"])
    trace = load_trace(tmp_path / "run" / "profile" / profile["trace"][0])
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("aten::") for name in names) and any("ProfilerStep#" in name for name in names)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["profile"]["steps"] == 3
    plain = load_checkpoint(tmp_path / "plain" / "model.pt")["model"]
    profiled = load_checkpoint(tmp_path / "run" / "model.pt")["model"]
    assert all(torch.equal(plain[k], profiled[k]) for k in plain)  # profiling changes no number
