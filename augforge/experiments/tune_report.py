"""What `augforge tune` shows: ``study.html``, a self-contained page with the optimisation history (every
trial's validation value, pruned trials at their last reported epoch, the best so far), the parameter
importances, the trials table and, after ``--confirm``, the paired comparison of the best recipe with the
original one on the test split."""

from __future__ import annotations

import base64
import html
import io

from augforge.atomic import atomic_open
from augforge.experiments.ablate_report import delta_text, plus_minus, verdict_text

#: colours of the history chart (the Chromium test looks for the best-so-far line's colour)
BEST_COLOUR = "#d95f02"
COMPLETE_COLOUR = "#1b9e77"
PRUNED_COLOUR = "#999999"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def history_png(trials: list[dict], metric: str) -> str:
    """The optimisation history as a base64 PNG: a point per finished trial (pruned ones grey, at the last
    value they reported) and the best completed value so far as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for state, colour, label in (("COMPLETE", COMPLETE_COLOUR, "complete"), ("PRUNED", PRUNED_COLOUR, "pruned")):
        points = [(t["number"], t["value"]) for t in trials if t["state"] == state and t["value"] is not None]
        if points:
            ax.plot(*zip(*points), "o", color=colour, label=label, markersize=6)
    best, steps = None, []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] == "COMPLETE" and t["value"] is not None:
            best = t["value"] if best is None else max(best, t["value"])
        if best is not None:
            steps.append((t["number"], best))
    if steps:
        ax.step(*zip(*steps), where="post", color=BEST_COLOUR, linewidth=3, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history")
    ax.legend(loc="lower right")
    return _png(fig)


def importances_png(importances: dict[str, float]) -> str:
    """The parameter importances (fANOVA) as a base64 PNG of horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.45 * len(names)), dpi=100)
    ax.barh(names, [importances[n] for n in names], color="#7570b3")
    ax.set_xlabel("importance (fANOVA share of the validation metric's variance)")
    ax.set_xlim(0, 1)
    ax.set_title("parameter importances")
    return _png(fig)


def _confirmation(confirm: dict | None) -> str:
    if not confirm:
        return "<p>No confirmation run: <code>--confirm K</code> retrains both recipes over K paired seeds.</p>"

    metric = confirm["metric"]
    rows = "".join(
        f"<tr><td>{html.escape(arm['name'])}</td><td>{plus_minus(arm['spread'][metric])}</td>"
        f"<td>{plus_minus(arm['spread']['accuracy'])}</td><td>{delta_text(arm['comparison'])}</td>"
        f"<td>{html.escape('reference' if arm['kind'] == 'baseline' else verdict_text(arm['comparison']))}</td></tr>"
        for arm in confirm["arms"])
    return (f"<h2>Confirmation on the test split</h2><p>The original recipe (baseline) and the best trial's (tuned), "
            f"retrained over {confirm['seeds']} paired seeds; Δ is the tuned recipe's, with its 95% BCa interval "
            f"(as <code>augforge ablate</code> reports it).</p><table id=\"confirm\"><tr><th>recipe</th>"
            f"<th>{html.escape(metric)}</th><th>accuracy</th><th>Δ [95% CI]</th><th>verdict</th></tr>{rows}</table>")


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_html(summary: dict, trials: list[dict], importances: dict | str, path, confirm: dict | None = None) -> None:
    """``study.html`` (written atomically): the history and importance charts, the confirmation, the trials."""
    esc = html.escape
    metric = summary["metric"]
    names = sorted({name for t in trials for name in t["params"]})
    header = "".join(f"<th>{esc(n)}</th>" for n in ("trial", "state", f"validation {metric}", *names))
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            t["number"], t["state"].lower(), "-" if t["value"] is None else f"{t['value']:.4f}",
            *(_value(t["params"].get(n, "-")) for n in names))) + "</tr>" for t in trials)
    if isinstance(importances, dict):
        importance = f'<img id="importances" alt="parameter importances" src="data:image/png;base64,' \
                     f'{importances_png(importances)}">'
    else:
        importance = f"<p id=\"importances\">No parameter importances: {esc(importances)}</p>"
    best = summary["best"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>augforge tune: {esc(summary['recipe'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}th{{background:#f3f3f3}}</style>
</head><body>
<h1>Tuning {esc(summary['recipe'])}</h1>
<p>{summary['trials']} finished trials ({summary['pruned']} pruned); validation {esc(metric)}; best: trial
{best['number']}, {best['value']:.4f}, <code>{esc(', '.join(f'{k}: {_value(v)}' for k, v in best['params'].items()))}</code>. The best value is a maximum over
trials on the validation split, so it flatters the recipe: the confirmation below retrains on fresh seeds and
scores the test split.</p>
<img id="history" alt="optimisation history" src="data:image/png;base64,{history_png(trials, metric)}">
{importance}
{_confirmation(confirm)}
<h2>Trials</h2>
<table id="trials"><tr>{header}</tr>{body}</table>
</body></html>
"""
    with atomic_open(path) as fh:
        fh.write(page)
