"""What `augforge search-policy` shows: the terminal summary and ``search.html`` (the proxy's candidates, the
confirmed policies with their intervals and verdicts, the comparisons, the cost and the proxy's agreement)."""

from __future__ import annotations

import html

from augforge.atomic import atomic_open


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def interval_text(entry: dict) -> str:
    """A confirmed policy's mean with its interval: ``0.9312 [0.9250, 0.9371]``."""
    if entry["mean"] is None:
        return "-"
    if entry["ci_low"] is None:
        return _number(entry["mean"])
    return f"{entry['mean']:.4f} [{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]"


def delta_text(entry: dict) -> str:
    """The paired difference against the entry's reference with its interval; ``-`` for the reference."""
    if entry.get("delta") is None:
        return "-"
    low, high = entry["delta_ci"]
    return f"{entry['delta']:+.4f} [{low:+.4f}, {high:+.4f}] vs {entry['against']}"


def cost_lines(result: dict) -> list[str]:
    """The search's and the confirmation's cost, one line each."""
    s = result["search"]
    lines = [f"search: {s['trials']} trials ({s['pruned']} pruned, {s['repeats']} repeats scored once) in "
             f"{s['seconds'] / 60:.1f} min of a {s['budget_minutes']:g} min budget; {s['proxy_epochs']} epochs each, "
             f"scored on {s['val_rows']} held-out training rows"]
    if "confirm" in result:
        c = result["confirm"]
        lines.append(f"confirm: {c['runs']} runs over {len(c['paired_seeds'])} paired seeds in {c['seconds'] / 60:.1f} "
                     f"min (estimated {c['estimate_seconds'] / 60:.1f} min)")
    return lines


def print_summary(result: dict, console) -> None:
    """The terminal view: the proxy's winner, the confirmed table, the conclusion and the cost."""
    from rich.table import Table

    s = result["search"]
    se = f" ± {s['standard_error']:.4f} (binomial SE)" if s["standard_error"] is not None else ""
    console.print(f"proxy winner: [bold]{s['winner']}[/bold] {result['metric']} {s['winner_value']:.4f}{se} on the "
                  "held-out rows")
    if s["tied_with_winner"]:
        console.print(f"within 2 SE of it on the proxy: {', '.join(s['tied_with_winner'])}")
    if "confirmed" in result:
        table = Table(title=f"confirmed on the test split ({result['metric']}, paired seeds, equal compute)")
        for column in ("policy", "mean [95% CI]", "Δ [95% CI]", "Holm p", "verdict"):
            table.add_column(column)
        for entry in result["confirmed"]:
            table.add_row(entry["policy"], interval_text(entry), delta_text(entry), _number(entry["p_holm"], 3),
                          entry["verdict"])
        console.print(table)
        console.print(f"[bold]{result['conclusion']}[/bold]")
        console.print(f"proxy vs confirmed: {result['agreement']['note']}")
    for line in cost_lines(result):
        console.print(line)


def write_html(result: dict, path) -> None:
    """A self-contained page: the conclusion, the confirmed policies, the comparisons and every candidate the
    search scored (written atomically)."""
    esc = html.escape
    s = result["search"]
    confirmed = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            e["policy"], interval_text(e), delta_text(e), _number(e["p_holm"], 3), e["verdict"])) + "</tr>"
        for e in result.get("confirmed", []))
    comparisons = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            f"{c['policy']} vs {c['against']}", f"{c['mean_delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            f"{c['p_value']:.3f} / {c['p_holm']:.3f}", c["verdict"])) + "</tr>"
        for c in result.get("comparisons", []))
    candidates = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            r["number"], r["policy"], r["state"].lower(), _number(r["value"]), r["epochs"] or "-",
            "-" if r["same_as"] is None else f"trial {r['same_as']}", _number(r["seconds"], 1))) + "</tr>"
        for r in sorted(s["candidates"], key=lambda r: -(r["value"] or 0)))
    agreement = result.get("agreement", {}).get("note", "no confirmation was run")
    unconfirmed = f"not confirmed (--confirm-seeds 0): the proxy's winner is {s['winner']}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>augforge search-policy: {esc(result['recipe'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}th{{background:#f3f3f3}}</style>
</head><body>
<h1>Augmentation policy search: {esc(result['recipe'])}</h1>
<p id="conclusion"><b>{esc(result.get('conclusion', unconfirmed))}</b></p>
<h2>Confirmed on the test split</h2>
<table id="confirmed"><tr><th>policy</th><th>{esc(result['metric'])} mean [95% CI]</th><th>Δ [95% CI]</th>
<th>Holm p</th><th>verdict</th></tr>{confirmed}</table>
<table id="comparisons"><tr><th>comparison</th><th>Δ [95% CI]</th><th>p / Holm</th><th>verdict</th></tr>
{comparisons}</table>
<p>Verdicts: <b>better</b> or <b>worse</b> when the 95% interval of the mean paired difference excludes 0 and the
Holm-adjusted sign-flip p-value is below 0.05. Proxy against confirmation: {esc(agreement)}.</p>
<h2>Cost</h2><ul>{''.join(f'<li>{esc(line)}</li>' for line in cost_lines(result))}</ul>
<h2>Candidates on the proxy (held-out training rows)</h2>
<table id="candidates"><tr><th>trial</th><th>policy</th><th>state</th><th>{esc(result['metric'])}</th><th>epochs</th>
<th>repeat of</th><th>s</th></tr>{candidates}</table>
</body></html>
"""
    with atomic_open(path) as fh:
        fh.write(page)
