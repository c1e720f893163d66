"""A tiny document model for the report, rendered twice: Markdown, and self-contained HTML (PNGs inlined).

Blocks: ("h", level, text) ("p", text) ("ul", [items]) ("table", headers, rows) ("img", png_path, caption)
("code", text). Inline markup in text and cells: **bold** and `code` only.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from typing import Any

Doc = list[tuple]


def fmt(v: Any) -> str:
    """Numbers as the tables print them: 4 decimals below 10, 2 below 1000, thousands separated above."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    if abs(v) < 10:
        return f"{v:.4f}"
    return f"{v:.2f}" if abs(v) < 1000 else f"{v:,.1f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Doc) -> str:
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(map(_md_cell, headers)) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({Path(block[1]).name})", "", f"*{block[2]}*", ""]
        elif kind == "code":
            lines += ["```", block[1].rstrip("\n"), "```", ""]
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n".join(lines).rstrip("\n") + "\n"


def _inline(text: Any) -> str:
    out = html.escape(str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; margin-bottom: 1.5em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def to_html(doc: Doc, title: str) -> str:
    """One file, nothing fetched: styles inline, every image a data: URI read from its PNG now."""
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
    ]
    for block in doc:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{_inline(block[2])}</figcaption></figure>"
            )
        elif kind == "code":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_markdown(doc: Doc, path: Path) -> Path:
    return write_text(Path(path), to_markdown(doc))


def write_html(doc: Doc, path: Path, title: str) -> Path:
    return write_text(Path(path), to_html(doc, title))
