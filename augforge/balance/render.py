"""Show a balancing report: a rich table in the terminal, or an HTML page with a bar chart."""

from __future__ import annotations

import base64
import html
import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from augforge.balance.report import finite_or_none
from augforge.balance.stats import ClassStats


def _ratio(value: float | None) -> str:
    return "inf (a class is empty)" if value is None else f"{value:.2f}"


def render_terminal(report: dict, console: Console) -> None:
    """Print the report as a table of classes followed by the summary lines."""
    projected = report.get("projected")
    table = Table(title=f"{report['source']} - split {report['split']} ({report['payload']})")
    table.add_column("class")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", min_width=20)
    if projected:
        table.add_column(f"after {projected['strategy']}", justify="right")
    peak = max([*report["counts"].values(), *(projected["counts"].values() if projected else [])], default=0) or 1
    minority = set(report["minority"])
    for name, count in report["counts"].items():
        bar = "#" * max(1 if count else 0, round(20 * count / peak))
        row = [name + (" *" if name in minority else ""), f"{count:,}", f"{report['shares'][name]:.1%}", bar]
        if projected:
            row.append(f"{projected['counts'][name]:,}")
        table.add_row(*row)
    console.print(table)
    if report.get("instances"):
        render_instances(report["instances"], console)
    if report.get("semantic"):
        render_semantic(report["semantic"], console)
    if report.get("image_labels"):
        render_image_labels(report["image_labels"], console)
    if report.get("instance_projection"):
        render_instance_balance(report["instance_projection"], console)
    console.print(f"rows: {report['total']:,}   classes: {report['num_classes']}   "
                  f"imbalance ratio: {_ratio(report['imbalance_ratio'])}   "
                  f"normalized entropy: {report['entropy']:.3f}")
    console.print(f"minority classes (*): {', '.join(report['minority']) or 'none'}")
    rec = report["recommendation"]
    console.print(f"recommendation: {rec['strategy'] or 'no resampling'}: {rec['reason']}", highlight=False)
    if rec.get("alternative"):
        console.print(f"  alternative: {rec['alternative']}", highlight=False)
    if rec.get("deep_training"):
        console.print(f"  deep training: {rec['deep_training']}", highlight=False)
    if projected:
        console.print(f"after {projected['strategy']}: rows {projected['total']:,}, imbalance ratio "
                      f"{_ratio(projected['imbalance_ratio'])}, entropy {projected['entropy']:.3f}"
                      f"{'' if projected['exact'] else ' (approximate)'}", highlight=False)
        for note in projected["notes"]:
            console.print(f"  note: {note}", highlight=False)
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    problems = report["problems"]
    if problems["count"]:
        console.print(f"[yellow]{problems['count']} input(s) excluded:[/yellow]")
        for item in problems["items"][:20]:
            console.print(f"  {item['path']}: {item['reason']}", highlight=False, markup=False)
        if problems["count"] > 20:
            console.print(f"  ... and {problems['count'] - 20} more (see --json)")


#: turned labels are cut to this many characters
LABEL_TURNED = 32
#: points per character of 10 pt tick text (a generous average), and the share of a slot a label may fill
_CHAR_PT, _FILL = 6.5, 0.9


def tick_labels(names: list[str], slot_pt: float) -> tuple[list[str], int]:
    """(labels, rotation) of the class axis, so that no two labels overlap: wrapped to the ``slot_pt`` points
    of axis each class has (10 pt text) when that takes at most three lines each, else one line each,
    turned upright (90 degrees) and cut with an ellipsis past ``LABEL_TURNED`` characters."""
    import textwrap

    chars = int(slot_pt * _FILL / _CHAR_PT)
    if chars >= 4:
        wrapped = [textwrap.wrap(name, chars) or [name] for name in names]
        if all(len(lines) <= 3 and max(map(len, lines)) <= chars for lines in wrapped):
            return ["\n".join(lines) for lines in wrapped], 0
    return [n if len(n) <= LABEL_TURNED else n[: LABEL_TURNED - 1] + "\u2026" for n in names], 90


def chart_png(report: dict) -> bytes:
    """A bar chart of class counts, before and (with a strategy) after, as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = chart_figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def chart_figure(report: dict):
    """The matplotlib figure of ``chart_png`` (laid out; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(report["counts"])
    before = np.array([report["counts"][n] for n in names])
    projected = report.get("projected")
    width_in = max(6.0, 0.5 * len(names) + 2)
    labels, rotation = tick_labels(names, width_in * 72 / max(1, len(names)))
    turned = max((len(label) for label in labels), default=0) if rotation else 0
    fig, ax = plt.subplots(figsize=(width_in, 4 + 0.075 * turned), dpi=100)  # room below for turned labels
    x = np.arange(len(names))
    width = 0.4 if projected else 0.7
    ax.bar(x - (width / 2 if projected else 0), before, width, label="before", color="#d95f02")
    if projected:
        after = np.array([projected["counts"][n] for n in names])
        ax.bar(x + width / 2, after, width, label=f"after {projected['strategy']}", color="#1b9e77")
    ax.set_xticks(x, labels, rotation=rotation, ha="center")
    ax.set_xlabel("class")
    ax.set_ylabel("rows")
    ax.set_title(f"class counts - split {report['split']}")
    ax.set_ylim(0, max(1, ax.get_ylim()[1]) * 1.2)  # headroom for the legend
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def render_html(report: dict) -> str:
    """A self-contained HTML page: summary, recommendation, the chart (embedded PNG) and the class table."""
    esc = html.escape
    projected = report.get("projected")
    chart = base64.b64encode(chart_png(report)).decode("ascii")
    head = "<tr><th>class</th><th>count</th><th>share</th>" + (
        f"<th>after {esc(projected['strategy'])}</th>" if projected else "") + "</tr>"
    rows = "".join(
        f"<tr><td>{esc(name)}{' *' if name in report['minority'] else ''}</td><td>{count:,}</td>"
        f"<td>{report['shares'][name]:.1%}</td>"
        + (f"<td>{projected['counts'][name]:,}</td>" if projected else "") + "</tr>"
        for name, count in report["counts"].items()
    )
    rec = report["recommendation"]
    after = ""
    if projected:
        after = (f"<p>After <code>{esc(projected['strategy'])}</code>: {projected['total']:,} rows, imbalance ratio "
                 f"{esc(_ratio(projected['imbalance_ratio']))}{'' if projected['exact'] else ' (approximate)'}.</p>"
                 + "".join(f"<p class='note'>{esc(n)}</p>" for n in projected["notes"]))
    problems = "".join(f"<li>{esc(p['path'])}: {esc(p['reason'])}</li>" for p in report["problems"]["items"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>augforge report: {esc(report['source'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child{{text-align:left}}
.note{{color:#555}}</style></head><body>
<h1>Class balance of {esc(report['source'])}</h1>
<p>Split <b>{esc(report['split'])}</b>, {esc(report['payload'])} payload: {report['total']:,} rows in
{report['num_classes']} classes. Imbalance ratio {esc(_ratio(report['imbalance_ratio']))},
normalized entropy {report['entropy']:.3f}. Minority classes (*): {esc(', '.join(report['minority']) or 'none')}.</p>
<p><b>Recommendation:</b> <code>{esc(rec['strategy'] or 'no resampling')}</code>: {esc(rec['reason'])}</p>
<p>{esc(rec.get('alternative') or '')}</p>
<p>{esc(rec.get('deep_training') or '')}</p>
{after}
<img id="chart" alt="bar chart of class counts" src="data:image/png;base64,{chart}">
<table>{head}{rows}</table>
{_instances_html(report.get('instances'))}
{_semantic_html(report.get('semantic'))}
{_image_labels_html(report.get('image_labels'))}
{_instance_projection_html(report.get('instance_projection'))}
<p>{report['problems']['count']} input(s) excluded.</p><ul>{problems}</ul>
</body></html>
"""


def render_instances(section: dict, console: Console) -> None:
    """The instance table of a detection or segmentation report: instances, images and box sizes per class."""
    table = Table(title=f"instances ({section['instances']:,} in {section['images']:,} images; rows above are "
                        "images, each under its rarest instance class)")
    for column in ("class", "instances", "images", "small", "medium", "large"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in section["per_class"].items():
        table.add_row(name, *(f"{row[k]:,}" for k in ("instances", "images", "small", "medium", "large")))
    console.print(table)
    console.print(f"instance imbalance ratio: {_ratio(section['instance_imbalance_ratio'] or float('nan'))}   "
                  f"crowd regions: {section['crowd_regions']:,}   images without instances: "
                  f"{section['images_without_instances']:,}", highlight=False)


SEMANTIC_COLUMNS = ("images", "pixels", "share", "median_frequency_weight")


def _cell(value) -> str:
    """A semantic table's cell: counts with separators, shares and weights as they are, n/a for None."""
    return "n/a" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"


def render_semantic(section: dict, console: Console) -> None:
    """The pixel table of a semantic segmentation report: images, pixels, share and loss weight per class."""
    table = Table(title=f"pixels per class ({section['images']:,} images; rows above are images, each under its "
                        "rarest class)")
    for column in ("class", *SEMANTIC_COLUMNS):
        table.add_column(column.replace("_", " "), justify="left" if column == "class" else "right")
    for name, row in section["per_class"].items():
        table.add_row(name, *(_cell(row[k]) for k in SEMANTIC_COLUMNS))
    console.print(table)
    console.print(f"pixel imbalance ratio: {_ratio(section['pixel_imbalance_ratio'] or float('nan'))}   "
                  f"ignored pixels (255): {section['ignored_pixels']:,} of {section['pixels']:,}", highlight=False)


def html_table(table_id: str, header: list[str], rows: list[list]) -> str:
    """An HTML table: a header row, then one row per list of cells (text escaped, counts with separators)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c if isinstance(c, str) else _cell(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def _semantic_html(section: dict | None) -> str:
    """The HTML table of ``render_semantic``, or nothing for a report without semantic masks."""
    if not section:
        return ""
    table = html_table("semantic", ["class", *(c.replace("_", " ") for c in SEMANTIC_COLUMNS)],
                       [[name, *(row[k] for k in SEMANTIC_COLUMNS)] for name, row in section["per_class"].items()])
    return (f"<h2>Pixels per class</h2><p>{section['images']:,} images, {section['ignored_pixels']:,} of "
            f"{section['pixels']:,} pixels ignored (255).</p>{table}")


def render_image_labels(section: dict, console: Console) -> None:
    """The image-level label table of a multilabel report: images per label, then the pairs seen together most."""
    table = Table(title=f"image-level labels ({section['images']:,} images, {section['labels_per_image']:g} labels "
                        f"per image, {section['images_without_labels']:,} without)")
    table.add_column("label")
    table.add_column("images", justify="right")
    for name, images in section["per_label"].items():
        table.add_row(name, f"{images:,}")
    console.print(table)
    pairs = ", ".join(f"{' + '.join(p['labels'])} {p['images']:,}" for p in section["co_occurrence"]) or "none"
    console.print(f"label imbalance ratio: {_ratio(section['label_imbalance_ratio'] or float('nan'))}   "
                  f"found together most: {pairs}", highlight=False)


def _image_labels_html(section: dict | None) -> str:
    """The HTML tables of ``render_image_labels``, or nothing for a report without image-level labels."""
    if not section:
        return ""
    labels = html_table("image-labels", ["label", "images"], [[name, n] for name, n in section["per_label"].items()])
    pairs = html_table("co-occurrence", ["labels", "images"],
                       [[" + ".join(p["labels"]), p["images"]] for p in section["co_occurrence"]])
    return (f"<h2>Image-level labels</h2><p>{section['images']:,} images, {section['labels_per_image']:g} labels per "
            f"image.</p>{labels}{pairs}")


def _instance_projection_html(section: dict | None) -> str:
    """The HTML table of ``render_instance_balance`` (instances per class before and after), or nothing."""
    if not section:
        return ""
    table = html_table("instance-projection", ["class", "repeat factor", "before", "after"],
                       [[name, row.get("repeat_factor"), row["before"], row["after"]]
                        for name, row in section["per_class"].items()])
    return (f"<h2>Instances after {html.escape(section['strategy'])}</h2><p>{section['images_before']:,} images "
            f"become {section['images_after']:,}.</p>{table}")


def _instances_html(section: dict | None) -> str:
    """The HTML table of ``render_instances``, or nothing for a report without instances."""
    if not section:
        return ""
    head = "<tr><th>class</th><th>instances</th><th>images</th><th>small</th><th>medium</th><th>large</th></tr>"
    rows = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{row[k]:,}</td>" for k in
                   ("instances", "images", "small", "medium", "large")) + "</tr>"
                   for name, row in section["per_class"].items())
    return (f"<h2>Instances</h2><p>{section['instances']:,} instances in {section['images']:,} images "
            f"({section['crowd_regions']:,} crowd regions); box sizes in COCO's ranges (small &lt; 32&sup2; "
            f"&le; medium &lt; 96&sup2; &le; large).</p><table id='instances'>{head}{rows}</table>")


def render_balance(manifest: dict, console: Console) -> None:
    """Print what ``augforge balance`` did: train counts before and after, and the summary figures."""
    info = manifest["balance"]
    names = list(manifest["class_names"])
    before = ClassStats(tuple(names), tuple(info["before"][n] for n in names))
    after = ClassStats(tuple(names), tuple(info["after"][n] for n in names))
    table = Table(title=f"train split balanced with {info['strategy']} ({info['mode']})")
    table.add_column("class")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    for name, b, a in zip(names, before.counts, after.counts):
        table.add_row(name, f"{b:,}", f"{a:,}", f"{a - b:+,}")
    console.print(table)
    for label, stats in (("before", before), ("after", after)):
        console.print(f"{label}: rows {stats.total:,}, imbalance ratio {_ratio(finite_or_none(stats.imbalance_ratio))}, "
                      f"normalized entropy {stats.entropy:.3f}", highlight=False)
    console.print(f"synthetic rows: {info['synthetic']:,} (marked synthetic=true, aug 'balance:<step>')",
                  highlight=False)
    if info.get("instances"):
        render_instance_balance(info["instances"], console)


def render_instance_balance(section: dict, console: Console) -> None:
    """An instance strategy's table: per class its instances before and after (and its repeat factor), then
    what a copy-paste plan could not do."""
    factors = all("repeat_factor" in row for row in section["per_class"].values())
    table = Table(title=f"instances per class, {section['strategy']} ({section['images_before']:,} -> "
                        f"{section['images_after']:,} images)")
    for column in ("class", *(("repeat factor",) if factors else ()), "before", "after", "change"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in section["per_class"].items():
        table.add_row(name, *((f"{row['repeat_factor']:g}",) if factors else ()), f"{row['before']:,}",
                      f"{row['after']:,}", f"{row['after'] - row['before']:+,}")
    console.print(table)
    if "pastes" in section:
        short = ", ".join(f"{name} {n:,}" for name, n in section["short"].items()) or "none"
        console.print(f"pastes: {section['pastes']:,}   given up (every placement refused): "
                      f"{section['pastes_given_up']:,}   instances dropped under pastes: "
                      f"{section['instances_dropped_by_occlusion']:,}   classes left short: {short}", highlight=False)


def _render_cleaning(manifest: dict, console: Console) -> None:
    """The line of what a build's ``clean:`` audit dropped (nothing without one)."""
    cleaning = (manifest.get("build") or {}).get("cleaning")
    if cleaning is not None:
        console.print(f"clean (audit): {cleaning['dropped']:,} train row(s) dropped, each listed with its reason in "
                      "the manifest's problems", highlight=False)


def render_build(manifest: dict, console: Console) -> None:
    """Print what ``augforge build`` did: per class, train rows after balancing and after augmenting (a feature
    table, which has no augmenting: its balance, or its rows per split)."""
    info = manifest.get("build") or {}
    names = list(manifest["class_names"])
    if "copies" not in info:  # a feature table: split, clean and balance only
        if manifest.get("balance"):
            render_balance(manifest, console)
        else:
            console.print("rows per split: " + ", ".join(f"{split} {sum(counts.values()):,}" for split, counts in
                                                         manifest["counts"].items()), highlight=False)
        _render_cleaning(manifest, console)
        return
    table = Table(title=f"train split: balance {info['balance']['strategy'] or 'none'}, augment on {info['device']}")
    for column in ("class", "source", "balanced", "copies", "written"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in names:
        table.add_row(name, f"{info['balance']['before'][name]:,}", f"{info['balance']['after'][name]:,}",
                      str(info["copies"][name]), f"{info['after_augment'][name]:,}")
    console.print(table)
    dropped = info["duplicates_dropped"]
    excluded = len(manifest.get("problems", [])) - dropped
    console.print(f"clean: {dropped} duplicate(s) dropped, {excluded} other input(s) excluded (empty, unreadable); "
                  f"{info['augmented']:,} augmented rows", highlight=False)
    if "variants_dropped_as_same" in info:
        console.print(f"variants dropped: {info['variants_dropped_as_same']:,} identical to their source or to "
                      f"another variant, {info['variants_rejected']:,} rejected (a protected token lost, or "
                      "fewer than min_words words)", highlight=False)
    _render_cleaning(manifest, console)


def render_evaluation(evaluation: dict, console) -> None:
    """The ``--evaluate`` table: each arm's cross-validated scores, and the verdict."""
    table = Table(title=f"{evaluation['folds']}-fold stratified CV, {evaluation['classifier']}, "
                        f"{evaluation['rows']:,} rows")
    table.add_column("arm")
    for metric in ("balanced accuracy", "macro-F1", "g-mean"):
        table.add_column(metric, justify="right")
    for name, result in evaluation["arms"].items():
        if "failed" in result:
            table.add_row(escape(name), f"failed: {escape(result['failed'])}", "", "")
            continue
        table.add_row(escape(name), *(f"{result[m]['mean']:.3f} ± {result[m]['std']:.3f}"
                                      for m in ("balanced_accuracy", "macro_f1", "g_mean")))
    console.print(table)
    console.print(f"verdict: {escape(evaluation['verdict'])}", highlight=False)
