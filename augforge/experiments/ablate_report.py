"""What `augforge ablate` shows: the terminal table and ``ablation.html`` (a forest plot of Δ with its interval,
the per-seed points, the spreads and each arm's recipe diff)."""

from __future__ import annotations

import base64
import html
import io

from augforge.atomic import atomic_open


def plus_minus(spread: dict, scale: float = 1.0, digits: int = 4) -> str:
    """A spread (mean, std) as ``mean ± std``; ``-`` without a mean."""
    if spread.get("mean") is None:
        return "-"
    return f"{spread['mean'] * scale:.{digits}f} ± {spread['std'] * scale:.{digits}f}"


def delta_text(comparison: dict | None) -> str:
    """A paired comparison as ``+delta [ci low, ci high]``; ``-`` without one."""
    if not comparison:
        return "-"
    return (f"{comparison['mean_delta']:+.4f} [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]")


def verdict_text(comparison: dict | None) -> str:
    """The verdict, with the smallest detectable effect when nothing was detected."""
    if not comparison:
        return "fewer than 2 paired runs"
    if comparison["verdict"] == "no detectable effect":
        if comparison["detectable"] == 0:
            return "no effect: every paired run scored the same"
        return f"no detectable effect (could detect ≥ {comparison['detectable']:.4f})"
    return comparison["verdict"]


def meaning(arm: dict) -> str:
    """The verdict read as a statement about the technique: removing a technique that *hurts* the metric
    means the technique helps. Custom arms are read as they are."""
    c = arm["comparison"]
    if arm["kind"] == "baseline":
        return "the recipe as written"
    if not c or c["verdict"] in ("too few seeds",):
        return "-"
    technique = {"constant-lr": "the schedule", "plain": "the techniques together"}.get(
        arm["name"], arm["name"].removeprefix("no-"))
    if arm["kind"] == "custom":
        return f"{arm['name']} {c['verdict']}" if c["verdict"] != "no detectable effect" else \
            f"{arm['name']}: no detectable effect"
    plural = arm["name"] == "plain"
    if c["verdict"] == "hurts":
        return f"{technique} {'help' if plural else 'helps'}"
    if c["verdict"] == "helps":
        return f"{technique} {'hurt' if plural else 'hurts'}"
    return f"{technique}: no detectable effect"


def shots_text(arm: dict) -> str:
    """The mean many / medium / few-shot accuracies of an arm's runs (``-`` for a group it has not)."""
    spread = arm["spread"]
    return "/".join("-" if (spread.get(g) or {}).get("mean") is None else f"{spread[g]['mean']:.3f}"
                      for g in ("many", "medium", "few"))


def samples_text(arm: dict) -> str:
    """The mean training samples (rows drawn over all epochs) of an arm's runs."""
    mean = (arm["spread"].get("samples") or {}).get("mean")
    return "-" if mean is None else f"{mean:,.0f}"


def print_table(report: dict, console) -> None:
    """The terminal table: arm, verdict, Δ with its 95% interval, p-values, mean ± std, time."""
    from rich.table import Table

    metric = report["metric"]
    table = Table(title=f"ablation of {report['recipe']}: {metric}, {report['seeds']} paired seeds")
    for column in ("arm", "verdict", "meaning", "Δ [95% CI]", "p (Holm)", "P(better)", metric, "accuracy",
                   "many/med/few", "samples", "s/run", "to target (s)"):
        table.add_column(column, justify="left" if column in ("arm", "verdict", "meaning") else "right")
    for arm in report["arms"]:
        c = arm["comparison"]
        target = arm["spread"]["time_to_target_s"]
        reach = "n/a (no val split)" if not arm.get("target_measured") else \
            plus_minus(target, digits=1) + (f" ({arm['never_reached_target']} never)" if arm["never_reached_target"] else "")
        table.add_row(arm["name"], "reference" if arm["kind"] == "baseline" else verdict_text(c), meaning(arm),
                      delta_text(c),
                      f"{c['p_value']:.3f} ({c['p_holm']:.3f})" if c else "-", f"{c['p_better']:.2f}" if c else "-",
                      plus_minus(arm["spread"][metric]), plus_minus(arm["spread"]["accuracy"]), shots_text(arm),
                      samples_text(arm), plus_minus(arm["spread"]["wall_s"], digits=1), reach)
    console.print(table)
    if report.get("equal_compute"):
        console.print("equal compute: every arm trained on the baseline's samples (its epochs scaled to its train "
                      "rows)", highlight=False)
    floor = report.get("noise_floor")
    if floor is not None:
        console.print(f"noise floor of one accuracy on {report['test_rows']} test rows: ±{floor:.4f} "
                      "(binomial standard error); Δ intervals: BCa bootstrap, 10,000 resamples; p: exact sign-flip "
                      "test, Holm-adjusted across arms", highlight=False)
    if report["stopped_by_budget"]:
        console.print(f"[yellow]budget spent: {report['runs_finished']} of {report['runs_total']} runs finished; "
                      "rerun to continue[/yellow]")


def forest_png(report: dict) -> bytes:
    """The forest plot: per arm, Δ against the baseline with its interval and the per-seed differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in report["arms"] if a["comparison"]]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.55 * max(1, len(arms))), dpi=100)
    colours = {"helps": "#1b9e77", "hurts": "#d95f02", "no detectable effect": "#7570b3", "too few seeds": "#999999"}
    for row, arm in enumerate(reversed(arms)):
        c = arm["comparison"]
        colour = colours[c["verdict"]]
        ax.plot([c["ci_low"], c["ci_high"]], [row, row], color=colour, linewidth=3)
        ax.plot([c["mean_delta"]], [row], "o", color=colour, markersize=8)
        ax.plot(c["deltas"], [row + 0.22] * len(c["deltas"]), "|", color="#444444", markersize=8, alpha=0.7)
    ax.axvline(0.0, color="#888888", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(arms)), [a["name"] for a in reversed(arms)])
    ax.set_xlabel(f"Δ {report['metric']} against the baseline (95% BCa interval; ticks: seeds)")
    ax.set_title("what each arm changes")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_html(report: dict, path) -> None:
    """A self-contained page: the forest plot, the table and each arm's recipe diff (written atomically)."""
    esc = html.escape
    metric = report["metric"]
    rows = []
    for arm in report["arms"]:
        c = arm["comparison"]
        rows.append(
            "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
                arm["name"], "reference" if arm["kind"] == "baseline" else verdict_text(c), meaning(arm), delta_text(c),
                f"{c['p_value']:.3f} / {c['p_holm']:.3f}" if c else "-", plus_minus(arm["spread"][metric]),
                plus_minus(arm["spread"]["accuracy"]), shots_text(arm), samples_text(arm),
                plus_minus(arm["spread"]["wall_s"], digits=1),
                "; ".join(arm["changes"]) or "(the recipe as written)")) + "</tr>")
    chart = base64.b64encode(forest_png(report)).decode("ascii")
    floor = report.get("noise_floor")
    equal = "equal compute (every arm trained on the baseline's samples); " if report.get("equal_compute") else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>augforge ablate: {esc(report['recipe'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}}th{{background:#f3f3f3}}</style>
</head><body>
<h1>Ablation of {esc(report['recipe'])}</h1>
<p>{report['seeds']} paired seeds; metric {esc(metric)}; {report['runs_finished']} of {report['runs_total']} runs;
{report['test_rows']} test rows{f", noise floor ±{floor:.4f}" if floor is not None else ""};
{'training rows bootstrapped per seed; ' if report['bootstrap_train'] else ''}{equal}wall {report['wall_s'] / 60:.1f} min.</p>
<img id="forest" alt="forest plot" src="data:image/png;base64,{chart}">
<table id="arms"><tr><th>arm</th><th>verdict</th><th>meaning</th><th>Δ [95% CI]</th><th>p / Holm</th><th>{esc(metric)}</th>
<th>accuracy</th><th>many / medium / few</th><th>samples</th><th>s/run</th><th>recipe diff</th></tr>
{''.join(rows)}
</table>
<p>Verdicts are about the arm against the baseline: <b>helps</b> or <b>hurts</b> when the 95% interval of the
mean paired difference excludes 0; otherwise no detectable effect, with the smallest effect these seeds could
detect (80% power, 5% level). An arm that removes a technique and hurts means the technique helps: the
meaning column says so.</p>
</body></html>
"""
    with atomic_open(path) as fh:
        fh.write(page)
