"""`/patterns`: docs/patterns.md as a page, so that the fault lab and `pizzeria demo` can link
to the section that explains what a switch shows.

The document is read from the source tree it ships with; an installation without it (a wheel,
the container image) answers that the document is in the source. Only the Markdown the
document uses is understood: headings, paragraphs, bullet lists, `code`, **bold** and links.
Section ids are made as GitHub makes them, so `docs/patterns.md#outbox` and
`/patterns#outbox` name the same section.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from starlette.responses import Response

from pizzeria.web.site import Web

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "patterns.md"
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_ITEM = re.compile(r"^\s*[-*]\s+(.*)$")
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def inline(text: str) -> Markup:
    """One line's text with its `code`, **bold** and [links](href) as HTML, the rest escaped."""
    out: list[str] = []
    last = 0
    for found in _INLINE.finditer(text):
        out.append(escape(text[last : found.start()]))
        code, bold, label, href = found.groups()
        if code is not None:
            out.append(Markup("<code>{}</code>").format(code))
        elif bold is not None:
            out.append(Markup("<strong>{}</strong>").format(bold))
        else:
            out.append(Markup('<a href="{}">{}</a>').format(href, label))
        last = found.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def to_html(markdown: str) -> Markup:
    """The document's Markdown as HTML (its title is the page's h1: a heading is h2 at least)."""
    blocks: list[Markup] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Markup("<p>{}</p>").format(inline(" ".join(paragraph))))
            paragraph.clear()
        if items:
            blocks.append(
                Markup("<ul>{}</ul>").format(Markup("").join(Markup("<li>{}</li>").format(inline(i)) for i in items))
            )
            items.clear()

    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        item = _ITEM.match(line)
        if heading:
            flush()
            level = max(len(heading.group(1)), 2)
            text = heading.group(2)
            blocks.append(Markup('<h{0} id="{1}">{2}</h{0}>').format(level, slug(text), inline(text)))
        elif item:
            if paragraph:
                flush()
            items.append(item.group(1))
        elif not line.strip():
            flush()
        elif items and line.startswith("  "):
            items[-1] += " " + line.strip()  # an item's continuation line
        else:
            if items:
                flush()
            paragraph.append(line.strip())
    flush()
    return Markup("\n").join(blocks)


def router(web: Web) -> APIRouter:
    routes = APIRouter()

    @routes.get("/patterns")
    async def patterns(request: Request) -> Response:
        visit = await web.visit(request)
        if not DOCUMENT.exists():
            return web.error_page(
                request,
                visit,
                404,
                "Patterns",
                "The patterns document ships with the source: see docs/patterns.md in Pizzeria's repository.",
            )
        text = DOCUMENT.read_text(encoding="utf-8")
        title, _, body = text.partition("\n")
        return web.render.page(
            request, visit, "patterns.html", title=title.lstrip("# ").strip(), document=to_html(body)
        )

    return routes
