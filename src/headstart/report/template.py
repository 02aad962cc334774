"""The report page: inline CSS, HTML helpers that escape every value, and the page skeleton."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["Section", "figure", "note", "page", "pct", "short", "table"]

CSS = """
:root { --ink:#1f2328; --muted:#656d76; --line:#d0d7de; --bad:#b42318; --bg-bad:#fef3f2;
        --accent:#0b5cad; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       max-width: 1100px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 12px; }
nav { font-size: 13px; margin: 8px 0 16px; } nav a { margin-right: 12px; color: var(--accent); }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: var(--bg-bad); color: var(--bad); font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 170px; }
.card .big { font-size: 22px; font-weight: 600; }
.card .ci { color: var(--muted); font-size: 12px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 6px 0; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; }
.note { color: var(--muted); font-style: italic; }
.warn { color: var(--bad); font-weight: 600; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; }
.err { border: 1px solid var(--line); border-radius: 6px; padding: 8px; break-inside: avoid; }
.err .pics { display: flex; gap: 6px; } .err img { width: 160px; height: auto; }
.err .path { font-size: 11px; color: var(--muted); word-break: break-all; }
.txt { background: #f6f8fa; border-left: 3px solid var(--line); padding: 6px 8px; margin: 6px 0;
       font-size: 13px; white-space: pre-wrap; overflow-wrap: anywhere; }
table.examples td { max-width: 320px; } table.examples th { white-space: nowrap; }
.ex { font-size: 12px; overflow-wrap: anywhere; }
.txt .w { border-radius: 3px; padding: 0 1px; }
pre { background: #f6f8fa; padding: 8px; font-size: 12px; overflow-x: auto; white-space: pre-wrap; }
code { font-size: 12px; word-break: break-all; }
ul { margin: 4px 0; padding-left: 20px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; } nav { display: none; }
  h2 { break-after: avoid; } figure, table, .card { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


class Section:
    """One numbered section of the report: an anchor id, a title and its HTML body."""

    def __init__(self, anchor: str, title: str, body: str) -> None:
        self.anchor = anchor
        self.title = title
        self.body = body

    def html(self) -> str:
        return f'<section id="{self.anchor}"><h2>{escape(self.title)}</h2>\n{self.body}\n</section>'


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * value:.1f}%"


def short(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace made one space), cut to ``limit`` characters
    at a word boundary when one is near, with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(1, limit - 1)]
    space = cut.rfind(" ")
    if space >= limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + "…"


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{escape(text)}</p>'


def figure(chart: str, caption: str = "") -> str:
    """A chart (inline ``<svg>`` markup from :mod:`headstart.report.plots`, already escaped)
    with an optional caption."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{chart}{cap}</figure>"


def table(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    bad_rows: Iterable[int] = (),
) -> str:
    """An HTML table; cells are escaped, columns in ``numeric`` right-aligned, ``bad_rows``
    (row indices) highlighted; no header row when ``header`` is None."""
    nums, bad = set(numeric), set(bad_rows)
    head = "".join(f"<th>{escape(h)}</th>" for h in header or ())
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{escape(str(v))}</td>' if c in nums else f"<td>{escape(str(v))}</td>"
            for c, v in enumerate(row)
        )
        body.append(f'<tr class="bad">{cells}</tr>' if r in bad else f"<tr>{cells}</tr>")
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole self-contained document: inline CSS, no scripts, no external references."""
    nav = "".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(s.html() for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="sub">{escape(subtitle)}</p><nav>{nav}</nav>\n'
        f"{body}\n</body></html>\n"
    )
