"""The console's activity chart: attempt outcomes per hour as a stacked bar chart in inline SVG.

Static markup only: no script, and no ``style`` attribute or element (the console's
Content-Security-Policy forbids inline styles). Colours are ``fill`` presentation attributes,
next to a ``chart-<outcome>`` class that the stylesheet may override.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from certctl_notify.store.activity import HourBucket, OutcomeCounts

#: Each stack from the bottom up: (OutcomeCounts field, word in labels, CSS class, fill colour).
SERIES = (
    ("sent", "sent", "chart-sent", "#2e7d32"),
    ("retry", "retried", "chart-retry", "#f59e0b"),
    ("dead", "dead", "chart-dead", "#c62828"),
)
#: Room around the plot for the legend (top), tick labels (left) and hour labels (bottom), in px.
TOP, RIGHT, BOTTOM, LEFT = 24, 8, 20, 40
#: At most this many hour labels under the bars (every 3 hours for a day).
MAX_HOUR_LABELS = 8
#: Share of each hour's slot that its bar fills; the rest is the gap between bars.
BAR_FILL = 0.8


def channels_with_activity(buckets: Sequence[HourBucket]) -> list[str]:
    """The channels with at least one attempt in ``buckets``, by name (one small chart each)."""
    return sorted({channel for b in buckets for channel, counts in b.by_channel.items() if counts.total})


def activity_svg(
    buckets: Sequence[HourBucket], *, channel: str | None = None, width: int = 720, height: int = 180
) -> Markup:
    """One bar per hour, stacked sent / retried / dead, as an ``<svg role="img">`` element.

    Parameters:
        buckets: from `store.hourly_outcomes`, oldest first.
        channel: draw only this channel's attempts; None sums all channels.
        width, height: the drawing's size in px (it scales with its viewBox).

    Returns:
        The SVG markup, every text in it escaped.
    """
    per_hour = [b.counts(channel) for b in buckets]
    total = sum(per_hour, OutcomeCounts())
    ticks = _ticks(max((c.total for c in per_hour), default=0))
    plot_width, plot_bottom = width - LEFT - RIGHT, height - BOTTOM
    scale = (plot_bottom - TOP) / ticks[-1]  # px per attempt
    hours = len(buckets)
    label = f"Last {hours} hour{'s' * (hours != 1)}, {channel or 'all channels'}: {_summary(total)}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="activity-chart" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" role="img"'
        f' aria-label="{escape(label)}">',
        *_legend(width),
        '<g class="chart-axis" fill="currentColor">',
    ]
    for tick in ticks:
        y = _px(plot_bottom - tick * scale)
        parts.append(f'<line class="chart-grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y}" y2="{y}"'
                     f' stroke="#d0d7de" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y}" dy="3" text-anchor="end">{escape(f"{tick:,}")}</text>')
    slot = plot_width / max(hours, 1)
    every = max(1, math.ceil(hours / MAX_HOUR_LABELS))
    for i, bucket in enumerate(buckets):
        if i % every == 0:
            parts.append(f'<text x="{_px(LEFT + (i + 0.5) * slot)}" y="{height - 6}" text-anchor="middle">'
                         f'{escape(f"{bucket.start:%H}:00")}</text>')
    parts.append('</g><g class="chart-bars">')
    for i, (bucket, counts) in enumerate(zip(buckets, per_hour, strict=True)):
        title = f"<title>{escape(_hour_title(bucket.start, counts))}</title>"
        x, below = _px(LEFT + (i + (1 - BAR_FILL) / 2) * slot), 0
        for field, _word, css, fill in SERIES:
            n = getattr(counts, field)
            if n:
                parts.append(
                    f'<rect class="{css}" fill="{fill}" x="{x}" y="{_px(plot_bottom - (below + n) * scale)}"'
                    f' width="{_px(slot * BAR_FILL)}" height="{_px(n * scale)}">{title}</rect>'
                )
            below += n
    parts.append("</g></svg>")
    return Markup("".join(parts))


def _legend(width: int) -> list[str]:
    """A swatch and word per series along the top left, and the time zone at the top right."""
    parts = ['<g class="chart-legend" fill="currentColor">']
    for i, (_field, word, css, fill) in enumerate(SERIES):
        x = LEFT + i * 72
        parts.append(f'<rect class="{css}" fill="{fill}" x="{x}" y="6" width="10" height="10"/>')
        parts.append(f'<text x="{x + 14}" y="15">{escape(word)}</text>')
    parts.append(f'<text x="{width - RIGHT}" y="15" text-anchor="end">hours in UTC</text></g>')
    return parts


def _ticks(peak: int) -> list[int]:
    """2 to 4 round y-axis values from 0 up to at least ``peak``, in steps of 1, 2 or 5 × 10^k."""
    steps = (mantissa * 10**exponent for exponent in itertools.count() for mantissa in (1, 2, 5))
    step = next(s for s in steps if peak <= 3 * s)
    return list(range(0, step * max(1, math.ceil(peak / step)) + 1, step))


def _summary(counts: OutcomeCounts) -> str:
    return ", ".join(f"{getattr(counts, field):,} {word}" for field, word, _css, _fill in SERIES)


def _hour_title(start: datetime, counts: OutcomeCounts) -> str:
    return f"{start:%H}:00–{start + timedelta(hours=1):%H}:00 UTC: {_summary(counts)}"


def _px(value: float) -> str:
    """A coordinate to two decimals, without trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
