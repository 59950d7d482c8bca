"""Small SVG charts drawn on the server (no script, no library): bars over time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

__all__ = ["bar_chart"]

WIDTH = 760
HEIGHT = 220
AXIS = 40  # room below the bars for the labels


def bar_chart(
    points: Sequence[tuple[str, float]], *, title: str, label: Callable[[float], str]
) -> Markup:
    """One bar per point, labelled below (every few when many) and valued in its tooltip."""
    if not points:
        return Markup("")
    top = max(value for _, value in points) or 1.0
    step = WIDTH / len(points)
    every = max(1, len(points) // 10)
    parts = [
        Markup(
            '<svg class="bars" viewBox="0 0 {w} {h}" role="img" aria-labelledby="bars-title">'
            '<title id="bars-title">{t}</title>'
        ).format(w=WIDTH, h=HEIGHT, t=title),
        Markup('<text x="0" y="12" class="tick">{top}</text>').format(top=label(top)),
    ]
    room = HEIGHT - AXIS - 18
    for index, (name, value) in enumerate(points):
        height = max(0.0, value / top * room)
        x = index * step + step * 0.15
        parts.append(
            Markup(
                '<g class="bar"><title>{name}: {value}</title>'
                '<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"></rect></g>'
            ).format(
                name=escape(name),
                value=label(value),
                x=x,
                y=HEIGHT - AXIS - height,
                w=step * 0.7,
                h=height,
            )
        )
        if index % every == 0:
            parts.append(
                Markup('<text x="{x:.1f}" y="{y}" class="tick">{name}</text>').format(
                    x=x, y=HEIGHT - AXIS + 14, name=escape(name[5:] if len(name) == 10 else name)
                )
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
