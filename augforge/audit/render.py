"""The audit report in the terminal: a summary table, then the worst rows of each finding."""

from __future__ import annotations


def _leaks(section: dict) -> str:
    """A near-duplicate section's leaking rows per split, as text ("none" without any)."""
    return ", ".join(f"{n} {split}" for split, n in section["leaking_rows"].items()) or "none"


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(finding, count, how it was found) per kind of finding."""
    dup = report["near_duplicates"]
    leaks = _leaks(dup)
    rows = [("near-duplicate pairs", f"{dup['pairs']:,}", dup["method"]),
            ("redundant rows (within a split)", f"{dup['redundant_rows']:,}",
             "rows beyond each cluster's representative (every member a near-duplicate of it)"),
            ("leaking rows (twin in another split)", leaks, "held-out rows whose near-twin is in another split")]
    if "embedding_neighbours" in report:
        near = report["embedding_neighbours"]
        rows.append(("embedding neighbour pairs", f"{near['pairs']:,} (leaking: {_leaks(near)})", near["method"]))
    if "annotations" in report:  # a detection or segmentation set's own annotations
        notes = report["annotations"]
        rows.append(("duplicate boxes", f"{notes['duplicate_boxes']['count']:,}", notes["duplicate_boxes"]["method"]))
        rows.append(("masks not covering their box", f"{notes['masks_not_covering_their_box']['count']:,}",
                     notes["masks_not_covering_their_box"]["method"]))
        rows.append(("empty masks", f"{notes['empty_masks']['count']:,}", "a mask or polygon of no pixel"))
        left = ", ".join(f"{kind.replace('_', ' ')} {v['count']:,}" for kind, v in notes["left_out"].items()
                         if v["count"]) or "none"
        rows.append(("annotations left out by the reader", left, "each line in the report's problems"))
    if "label_issues" in report:
        issues = report["label_issues"]
        rows.append(("label issues", f"{issues['count']:,}",
                     f"{issues['method']} (its out-of-fold accuracy: {issues['model_accuracy']:.1%})"))
        rows.append(("outliers", f"{len(report['outliers']['rows']):,}", report["outliers"]["method"]))
    return rows


def render_terminal(report: dict, console, show: int = 10) -> None:
    """Print the summary and up to ``show`` rows per finding."""
    from rich.table import Table

    splits = ", ".join(f"{split} {n:,}" for split, n in report["splits"].items())
    table = Table(title=f"audit of {report['source']}: {report['rows']:,} {report['payload']} rows ({splits})")
    for column in ("finding", "count", "how"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    unreadable = report.get("unreadable") or []
    if unreadable:
        console.print(f"[yellow]excluded {len(unreadable)} input(s) that could not be read[/yellow] (not audited):")
        for problem in unreadable[:show]:
            console.print(f"  unreadable: {problem['path']}: {problem['reason']}", highlight=False)
    for note in (report["near_duplicates"].get("note"), (report.get("label_issues") or {}).get("warning")):
        if note:
            console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for key, what in (("near_duplicates", ""), ("embedding_neighbours", " (embeddings)")):
        for cluster in (report.get(key) or {}).get("clusters", [])[:show]:
            members = ", ".join(f"{r['id']} ({r['split']})" for r in cluster["rows"][:6])
            more = f" and {len(cluster['rows']) - 6} more" if len(cluster["rows"]) > 6 else ""
            console.print(f"  {cluster['kind']}{what}: {members}{more}", highlight=False)
    for row in (report.get("label_issues") or {}).get("rows", [])[:show]:
        console.print(f"  label issue: {row['id']} ({row['split']}): given {row['given']}, suggested "
                      f"{row['suggested']}, label quality {row['score']:.3f}", highlight=False)
    for row in (report.get("outliers") or {}).get("rows", [])[:show]:
        console.print(f"  outlier: {row['id']} ({row['split']}, {row['label']}): score {row['score']:.3f}",
                      highlight=False)
