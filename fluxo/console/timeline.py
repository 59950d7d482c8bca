"""A job's timeline as an SVG Gantt chart: one row per step execution, its retries marked.

Drawn on the server (no script): each bar spans the step's start to its end (to now while it
runs), coloured by its phase through CSS classes (the page's Content-Security-Policy allows no
style attribute). A step that ran more than once carries its attempt count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

from fluxo_core.engine import StepState

__all__ = ["render_timeline"]

ROW = 24
LABEL = 170
WIDTH = 760
MAX_ROWS = 200  # a fan-out of thousands draws its first rows; the table lists them all


def render_timeline(
    steps: Sequence[StepState],
    start: datetime,
    end: datetime | None,
    now: datetime,
    *,
    title: str = "Step timeline",
) -> Markup:
    shown = [s for s in steps if s.started_at is not None][:MAX_ROWS]
    if not shown:
        return Markup("")
    t0 = min([start, *(s.started_at for s in shown if s.started_at)])
    t1 = max(
        [end or now, *(s.finished_at or now for s in shown)],
    )
    span = max((t1 - t0).total_seconds(), 0.001)
    scale = (WIDTH - LABEL - 60) / span
    height = ROW * len(shown) + 28
    parts = [
        Markup(
            '<svg class="timeline" viewBox="0 0 {w} {h}" role="img" aria-labelledby="timeline-title">'
            '<title id="timeline-title">{title}</title>'
        ).format(w=WIDTH, h=height, title=title)
    ]
    for index, step in enumerate(shown):
        assert step.started_at is not None
        y = 8 + index * ROW
        x = LABEL + (step.started_at - t0).total_seconds() * scale
        finish = step.finished_at or now
        width = max(2.0, (finish - step.started_at).total_seconds() * scale)
        seconds = (finish - step.started_at).total_seconds()
        retries = step.attempt - 1
        label = step.key + (f" \u00d7{step.attempt}" if retries > 0 else "")  # multiplication sign
        parts.append(
            Markup(
                '<g class="bar phase-{phase}"><title>{key}: {phase}, {secs:.3f} s, attempt {attempt}'
                "</title>"
                '<text x="4" y="{ty}" class="label">{label}</text>'
                '<rect x="{x:.1f}" y="{y}" width="{wd:.1f}" height="{hh}" rx="3"></rect>'
                '<text x="{tx:.1f}" y="{ty}" class="secs">{secs:.2f} s</text></g>'
            ).format(
                phase=escape(step.phase),
                key=escape(step.key),
                label=escape(label[:28]),
                attempt=step.attempt,
                secs=seconds,
                x=x,
                y=y,
                wd=width,
                hh=ROW - 8,
                ty=y + ROW - 11,
                tx=min(x + width + 4, WIDTH - 56),
            )
        )
        if retries > 0:
            # Tick marks on the bar: each earlier attempt that failed before this one.
            for n in range(1, retries + 1):
                tick = x + width * n / (retries + 1)
                parts.append(
                    Markup(
                        '<line class="retry" x1="{x:.1f}" x2="{x:.1f}" y1="{a}" y2="{b}"></line>'
                    ).format(x=tick, a=y, b=y + ROW - 8)
                )
    axis_y = height - 12
    parts.append(
        Markup(
            '<line class="axis" x1="{l}" x2="{r}" y1="{y}" y2="{y}"></line>'
            '<text x="{l}" y="{ty}" class="tick">0 s</text>'
            '<text x="{r}" y="{ty}" class="tick end">{span:.2f} s</text>'
        ).format(l=LABEL, r=WIDTH - 60, y=axis_y, ty=axis_y + 11, span=span)
    )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
