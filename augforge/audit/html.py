"""The audit as one self-contained HTML page: the summary, then the worst rows of each finding with a
thumbnail (images), a snippet (text) or the first values (features), each with its id and reason."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from augforge.atomic import atomic_open
from augforge.audit.hashing import image_from_array
from augforge.audit.render import summary_rows
from augforge.datasets import schema as S

#: the side thumbnails are drawn at (small images are enlarged without smoothing)
THUMB = 96
SNIPPET = 240


def _thumbnail(image: np.ndarray) -> str:
    pil = image_from_array(image)
    scale = THUMB / max(pil.size)
    size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    pil = pil.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pil.save(buffer, "PNG")
    return f'<img class="thumb" alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _preview(rows, index: int) -> str:
    """The row's payload as HTML: a thumbnail, a text snippet, or its first feature values."""
    if rows.payload == S.IMAGE:
        return _thumbnail(rows.values[index])
    if rows.payload == S.TEXT:
        text = rows.values[index]
        return f'<span class="snippet">{html.escape(text[:SNIPPET] + ("…" if len(text) > SNIPPET else ""))}</span>'
    values = ", ".join(f"{v:.3g}" for v in rows.values[index][:8])
    return f'<span class="snippet">[{values}{", …" if len(rows.values[index]) > 8 else ""}]</span>'


def _cell(rows, position: dict, row_id: str, reason: str) -> str:
    index = position[row_id]
    return (f'<div class="row">{_preview(rows, index)}<div><code>{html.escape(row_id)}</code> '
            f'({html.escape(rows.splits[index])}, {html.escape(rows.class_names[rows.labels[index]])})<br>'
            f'{html.escape(reason)}</div></div>')


def write_html(report: dict, rows, path, show: int = 10) -> None:
    """Write the page for ``report`` (``rows``: the audited rows, for thumbnails and snippets), atomically."""
    esc = html.escape
    position = {row_id: i for i, row_id in enumerate(rows.ids)}
    summary = "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>" for a, b, c in
                      summary_rows(report))
    sections = []
    for key, anchor, title in (("near_duplicates", "duplicates", "Near-duplicates"),
                               ("embedding_neighbours", "embedding", "Embedding neighbours")):
        blocks = []
        for cluster in (report.get(key) or {}).get("clusters", [])[:show]:
            reason = f"{cluster['kind']}: {title.lower()} across {', '.join(cluster['splits'])}"
            blocks.append('<div class="cluster">' + "".join(_cell(rows, position, r["id"], reason)
                                                             for r in cluster["rows"][:6]) + "</div>")
        if blocks:
            sections.append(f'<h2 id="{anchor}">{title}</h2>{"".join(blocks)}')
    for key, title, reason in (
            ("label_issues", "Label issues", lambda r: f"given {r['given']}, suggested {r['suggested']}, "
                                                       f"label quality {r['score']:.3f}"),
            ("outliers", "Outliers", lambda r: f"least typical: score {r['score']:.3f}")):
        listed = (report.get(key) or {}).get("rows", [])[:show]
        if listed:
            cells = "".join(_cell(rows, position, r["id"], reason(r)) for r in listed)
            sections.append(f'<h2 id="{key}">{title}</h2><div class="cluster">{cells}</div>')
    splits = ", ".join(f"{s} {n:,}" for s, n in report["splits"].items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>augforge audit: {esc(report['source'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}}
.cluster{{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 16px 0;padding:8px;background:#f6f6f6}}
.row{{display:flex;gap:8px;max-width:360px;font-size:13px}}.thumb{{border:4px solid #d95f02}}
.snippet{{border-left:4px solid #d95f02;padding-left:6px}}</style></head><body>
<h1>Audit of {esc(report['source'])}</h1>
<p>{report['rows']:,} {esc(report['payload'])} rows ({esc(splits)}); seed {report['seed']}.</p>
<table id="summary"><tr><th>finding</th><th>count</th><th>how</th></tr>{summary}</table>
{''.join(sections)}
</body></html>
"""
    with atomic_open(path, "w") as fh:
        fh.write(page)
