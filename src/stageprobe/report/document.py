"""A tiny document model rendered both as Markdown and as HTML.

FINDINGS.md and report.html are built from the same blocks, so they carry the same content by
construction. Inline markup is limited to `**bold**` and `` `code` ``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Pre:
    text: str


@dataclass(frozen=True)
class Callout:
    kind: Literal["warning", "note"]
    title: str
    text: str


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the run directory, e.g. artifacts/decay_curves.png
    caption: str


@dataclass(frozen=True)
class Rule:
    pass


@dataclass(frozen=True)
class Details:
    """A collapsible section: `<details>` in HTML and in Markdown (which GitHub folds too)."""

    summary: str
    blocks: list[Heading | Para | Bullets | Table | Pre | Callout | Figure | Rule]
    pre: str = ""


Block = Heading | Para | Bullets | Table | Pre | Callout | Figure | Rule | Details


@dataclass
class Document:
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out: list[str] = []
    for block in doc.blocks:
        if isinstance(block, Details):
            # GitHub and most Markdown viewers fold raw <details>; plain viewers show everything
            inner = Document([*block.blocks] + ([Pre(block.pre)] if block.pre else []))
            out.append(f"<details><summary>{html.escape(block.summary, quote=False)}</summary>\n\n"
                       f"{to_markdown(inner).rstrip()}\n\n</details>")
            continue
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"{f'{i}.' if block.ordered else '-'} {item}"
                                 for i, item in enumerate(block.items, start=1)))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                     "|" + "|".join("---" for _ in block.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            if block.caption:
                lines.append("")
                lines.append(f"*{block.caption}*")
            out.append("\n".join(lines))
        elif isinstance(block, Pre):
            out.append(f"```\n{block.text}\n```")
        elif isinstance(block, Callout):
            body = f"**{block.title}** {block.text}"
            out.append("\n".join(f"> {line}" if line else ">" for line in body.split("\n")))
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.path})")
        elif isinstance(block, Rule):
            out.append("---")
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML (body only; html.py wraps it in the page)

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_VERDICT = re.compile(r"\b(PASS|FAIL|UNAVAILABLE|GREEN|YELLOW|RED)\b")


def inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


_CI = re.compile(r"\[-?\d+\.\d+, -?\d+\.\d+\]")
_NUMERIC = re.compile(r"^(-?\d+(\.\d+)?|n/a)( |$)")


def _cell_html(text: str) -> str:
    """Verdict words become badges and CIs are set small, so a table can be scanned at a glance."""
    body = inline_html(text)
    body = _CI.sub(lambda m: f'<span class="ci">{m.group(0)}</span>', body)
    body = _VERDICT.sub(lambda m: f'<span class="badge {m.group(1).lower()}">{m.group(1)}</span>', body)
    # Numbers with their CI and short labels stay on one line; prose cells may wrap.
    nowrap = bool(_NUMERIC.match(text)) or len(text) <= 24
    return f'<td class="nowrap">{body}</td>' if nowrap else f"<td>{body}</td>"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_html(doc: Document, figure_src: dict[str, str]) -> str:
    """Blocks as HTML. `figure_src` maps a Figure's path to a data URI; unknown paths are noted."""
    out: list[str] = []
    for block in doc.blocks:
        if isinstance(block, Details):
            inner = to_html(Document(list(block.blocks)), figure_src)
            pre = f"<pre>{html.escape(block.pre, quote=False)}</pre>" if block.pre else ""
            out.append(f"<details><summary>{inline_html(block.summary)}</summary>{inner}{pre}</details>")
            continue
        if isinstance(block, Heading):
            level = min(block.level, 6)
            out.append(f'<h{level} id="{slug(block.text)}">{inline_html(block.text)}</h{level}>')
        elif isinstance(block, Para):
            out.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            tag = "ol" if block.ordered else "ul"
            items = "".join(f"<li>{inline_html(item)}</li>" for item in block.items)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>"
                           for row in block.rows)
            caption = f"<caption>{inline_html(block.caption)}</caption>" if block.caption else ""
            out.append(f'<div class="table-wrap"><table class="sortable">{caption}<thead><tr>{head}</tr></thead>'
                       f"<tbody>{body}</tbody></table></div>")
        elif isinstance(block, Pre):
            out.append(f"<pre>{html.escape(block.text, quote=False)}</pre>")
        elif isinstance(block, Callout):
            text = inline_html(block.text).replace("\n", "<br>")
            out.append(f'<div class="callout {block.kind}" role="note"><strong>{inline_html(block.title)}'
                       f"</strong> {text}</div>")
        elif isinstance(block, Figure):
            src = figure_src.get(block.path)
            if src is None:
                out.append('<p class="missing">Figure not available: '
                           f"<code>{html.escape(block.path)}</code></p>")
            else:
                out.append(f'<figure><img src="{src}" alt="{html.escape(block.caption)}">'
                           f"<figcaption>{inline_html(block.caption)}</figcaption></figure>")
        elif isinstance(block, Rule):
            out.append("<hr>")
    return "\n".join(out)
