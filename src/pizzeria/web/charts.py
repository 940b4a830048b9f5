"""Small charts drawn as inline SVG on the server: bars for a count per period, lines for a rate
or a duration. Each has a title and a text summary for screen readers; colours come from CSS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 14, 30


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str  # the class that colours it


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    top = step
    while top < value:
        top += step
    return top


def _frame(labels: Sequence[str], top: float, fmt: Callable[[float], str], title: str, summary: str) -> list[str]:
    inner_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{_id(title)}-t {_id(title)}-d"'
        ' focusable="false">',
        f'<title id="{_id(title)}-t">{escape(title)}</title>',
        f'<desc id="{_id(title)}-d">{escape(summary)}</desc>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + inner_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(top * fraction))}</text>'
        )
    if labels:
        parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">{escape(labels[0])}</text>')
        if len(labels) > 1:
            parts.append(
                f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">{escape(labels[-1])}</text>'
            )
    return parts


def _id(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())


def bars(title: str, labels: Sequence[str], values: Sequence[float | None], fmt: Callable[[float], str]) -> Markup:
    """One bar per period."""
    known = [v for v in values if v is not None]
    if not known:
        return Markup(f'<p class="empty">{escape(title)}: no orders in this period yet.</p>')
    top = _nice_max(max(known))
    summary = (
        f"{len(values)} periods, from {labels[0]} to {labels[-1]}; highest {fmt(max(known))}, latest {fmt(known[-1])}."
    )
    parts = _frame(labels, top, fmt, title, summary)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        h = inner_h * value / top
        x = LEFT + i * slot + slot * 0.15
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + inner_h - h:.1f}" width="{max(1.0, slot * 0.7):.1f}" '
            f'height="{h:.1f}"><title>{escape(labels[i])}: {escape(fmt(value))}</title></rect>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(
    title: str, labels: Sequence[str], series: Sequence[Series], fmt: Callable[[float], str], top: float | None = None
) -> Markup:
    """One line per series over the periods; a period without a value leaves a gap."""
    known = [v for s in series for v in s.values if v is not None]
    if not known:
        return Markup(f'<p class="empty">{escape(title)}: nothing measured in this period yet.</p>')
    top = top or _nice_max(max(known))
    latest = "; ".join(
        f"{s.name} latest {fmt(last)}"
        for s in series
        if (last := next((v for v in reversed(s.values) if v is not None), None)) is not None
    )
    summary = f"{len(labels)} periods, from {labels[0]} to {labels[-1]}; {latest}."
    parts = _frame(labels, top, fmt, title, summary)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / max(1, len(labels))
    for s in series:
        run: list[str] = []
        runs: list[list[str]] = []
        for i, value in enumerate(s.values):
            if value is None:
                if run:
                    runs.append(run)
                run = []
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + inner_h * (1 - min(value, top) / top)
            run.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot {s.css}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                f"<title>{escape(s.name)}, {escape(labels[i])}: {escape(fmt(value))}</title></circle>"
            )
        if run:
            runs.append(run)
        for points in runs:
            if len(points) > 1:
                parts.append(f'<polyline class="line {s.css}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
