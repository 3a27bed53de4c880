"""Reports as two renderings of one markdown text: ``report.md`` (figures as file links) and a self-contained
``report.html`` (figures inline), the HTML being Python-Markdown's rendering of the same text."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import markdown

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}code{background:#f4f4f4}"
         "blockquote{border-left:4px solid #e0a000;margin:1em 0;padding:0.2em 1em;background:#fff8e0}")


def md_table(rows: list[list[str]]) -> str:
    """A markdown table; the first row is the header."""
    head, *body = rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body])


def write_report(folder: Path, document: Callable[[Callable[[Path], str]], str], title: str, write_text) -> Path:
    """Write ``report.md`` and ``report.html`` into ``folder``; ``document(image)`` returns the markdown,
    rendering each figure with ``image(path)``. ``write_text(path, text)`` writes atomically."""
    write_text(folder / "report.md", document(lambda p: f"![{p.stem}]({p.name})"))

    def inline(p: Path) -> str:
        return f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"

    body = markdown.markdown(document(inline), extensions=["tables"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")
    write_text(folder / "report.html", page)
    return folder / "report.md"
