"""Long-tail learning against re-sampling, at equal compute, over paired seeds (docs/training.md).

Each data set is long-tailed on its train split only (val and test keep their balance). The baseline is plain
cross-entropy on the long-tailed rows; every other arm changes one thing: class weights, the balanced sampler,
``balance: over`` (+ augmented copies for images, EDA variants for text), SMOTE (tabular), the logit-adjusted loss, post-hoc
adjustment (tau on val), balanced softmax, LDAM-DRW, focal loss, cRT. The arms run through ``augforge
ablate`` with ``equal_compute``: every arm sees as many training samples as the baseline (an arm with more
rows trains fewer epochs), so "the copies help" is not "more training helps". The paired differences to
plain CE come with BCa intervals and Holm-adjusted sign-flip p-values (``augforge.experiments.compare``).

    python examples/make_glosses.py && python examples/make_tabular.py
    python benchmarks/long_tail.py [--seeds 5] [--jobs 2] [--only digits-lt10 ...] [--out build/long-tail]

Writes OUT/<set>/ablation.json (every run), OUT/long_tail.json and OUT/long_tail.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import yaml

from augforge.recipe import load_recipe
from augforge.experiments.ablate import run_ablation
from augforge.experiments.arms import Arm

ROOT = Path(__file__).resolve().parent.parent
IMAGE_OPS = [{"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 12, "p": 0.8}]
#: a balance copy of a text keeps only augmented variants: over-sampling text needs ops (EDA on WordNet)
TEXT_OPS = [{"op": "eda", "alpha_sr": 0.1, "alpha_ri": 0.1, "alpha_rs": 0.1, "p_rd": 0.1}]


def _recipe(source: dict, train: dict, **extra) -> dict:
    return {"seed": 0, "source": {"test_split": 0.25, "val_split": 0.15, "imbalance": "longtail", **source},
            "train": {"batch_size": 32, "schedule": "cosine", "warmup": 0.05, **train}, **extra}


def datasets() -> dict[str, dict]:
    """The data sets and their plain-CE recipes (the epochs are the baseline's compute)."""
    digits = {"augment": {"color": "gray"}, "output": {"format": "raw"}}
    cnn = {"model": "simple_cnn", "epochs": 30, "lr": 0.003, "weight_decay": 0.01}
    return {
        "digits-lt10": _recipe({"path": "digits", "imbalance_factor": 10}, cnn, **digits),
        "digits-lt50": _recipe({"path": "digits", "imbalance_factor": 50}, cnn, **digits),
        "glosses-lt10": _recipe({"path": str(ROOT / "build" / "glosses.csv"), "text_col": "text", "label_col": "label",
                                 "id_col": "id", "imbalance_factor": 10},
                                {"model": "fasttext", "epochs": 10,
                                 "text": {"word_ngrams": 2, "char_ngrams": [3, 5], "max_tokens": 512}}),
        "tabular-lt10": _recipe({"path": str(ROOT / "build" / "breast_cancer.csv"), "label_col": "label",
                                 "imbalance_factor": 10},
                                {"model": "mlp", "model_options": {"hidden": [64, 32], "dropout": 0.2}, "epochs": 30,
                                 "lr": 0.003, "weight_decay": 0.01}),
    }


def methods(name: str, epochs: int) -> list[Arm]:
    """The arms for one data set: the baseline (plain CE) first."""
    arms = [Arm("baseline", "baseline")]

    def add(arm: str, *changes) -> None:
        arms.append(Arm(arm, "custom", list(changes)))

    add("class-weights", ("train.class_weights", "balanced"))
    add("balanced-sampler", ("train.sampler", "balanced"))
    if name.startswith("digits"):
        add("over+copies", ("balance.strategy", "over"), ("augment.copies", 1), ("augment.image", IMAGE_OPS))
    elif name.startswith("glosses"):
        add("over+eda", ("balance.strategy", "over"), ("augment.text", TEXT_OPS))
    else:
        add("over", ("balance.strategy", "over"))
    if name.startswith("tabular"):
        add("smote", ("balance.strategy", "smote"))
    add("logit-adjusted", ("train.loss", "logit_adjusted"))
    add("posthoc", ("train.posthoc_tau", "auto"))
    add("balanced-softmax", ("train.loss", "balanced_softmax"))
    add("ldam-drw", ("train.loss", "ldam"), ("train.rebalance", {"mode": "drw", "start": int(epochs * 0.8)}))
    add("focal", ("train.loss", {"name": "focal", "gamma": 2.0}))
    add("crt", ("train.decouple", {"mode": "crt", "epochs": max(2, epochs // 5)}))
    return arms


def _cell(spread: dict, digits: int = 3) -> str:
    return "-" if spread.get("mean") is None else f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def table(name: str, report: dict) -> list[str]:
    """The markdown table of one data set."""
    lines = [f"### {name} ({report['seeds']} paired seeds, equal compute, {report['test_rows']} test rows)", "",
             "| arm | balanced accuracy | macro-F1 | Δ bal. acc. vs CE [95% CI] | verdict | many / medium / few | "
             "samples |", "|---|---|---|---|---|---|---|"]
    for arm in report["arms"]:
        c = arm["comparison"]
        delta = "reference" if c is None else f"{c['mean_delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        verdict = "-" if c is None else c["verdict"] + (f" (p Holm {c['p_holm']:.3f})" if c else "")
        shots = " / ".join("-" if arm["spread"][g]["mean"] is None else f"{arm['spread'][g]['mean']:.3f}"
                           for g in ("many", "medium", "few"))
        lines.append(f"| {'plain CE' if arm['kind'] == 'baseline' else arm['name']} | "
                     f"{_cell(arm['spread']['balanced_accuracy'])} | {_cell(arm['spread']['macro_f1'])} | {delta} | "
                     f"{verdict} | {shots} | {arm['spread']['samples']['mean']:,.0f} |")
    return lines + [""]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "build" / "long-tail"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, lines = {}, [f"CPU: {cpu_name()}; {args.seeds} paired seeds; metric: balanced accuracy", ""]
    for name, data in datasets().items():
        if args.only and name not in args.only:
            continue
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        started = time.perf_counter()
        report = run_ablation(load_recipe(path), out / name, seeds=args.seeds, jobs=args.jobs,
                              arms=methods(name, data["train"]["epochs"]), equal_compute=True,
                              log=lambda text: print(f"[{name}] {text}", flush=True))
        results[name] = {"wall_s": time.perf_counter() - started, "report": str(out / name / "ablation.json")}
        lines += table(name, report)
        print("\n".join(table(name, report)), flush=True)
    (out / "long_tail.json").write_text(json.dumps(results, indent=2))
    (out / "long_tail.md").write_text("\n".join(lines))
    print(f"wrote {out}/long_tail.md")


if __name__ == "__main__":
    main()
