"""Geometry of a queue's small bar chart (deliveries and failures over the last minutes), drawn as SVG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from local_runner.console.stats import Bucket

WIDTH = 240
HEIGHT = 44
_GAP = 1


@dataclass(frozen=True)
class Bar:
    """One rectangle of the chart, in SVG user units (y grows downwards)."""

    x: float
    y: float
    width: float
    height: float
    #: ``delivered`` or ``failed`` (the CSS class).
    kind: str
    #: The tooltip.
    title: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: the bars and the scale."""

    width: int
    height: int
    bars: list[Bar]
    #: The largest bar's total, the chart's full height.
    peak: int
    label: str


def bar_chart(buckets: Sequence[Bucket], seconds_per_bar: int) -> Chart:
    """Stacked bars, failures on top of deliveries, scaled to the busiest bar; oldest on the left."""
    peak = max((b.delivered + b.failed for b in buckets), default=0)
    step = WIDTH / max(1, len(buckets))
    bars: list[Bar] = []
    for index, bucket in enumerate(buckets):
        ago = (len(buckets) - 1 - index) * seconds_per_bar
        title = f"{bucket.delivered} delivered, {bucket.failed} failed, {ago}-{ago + seconds_per_bar}s ago"
        x = index * step
        base = float(HEIGHT)
        for count, kind in ((bucket.delivered, "delivered"), (bucket.failed, "failed")):
            if count and peak:
                height = max(1.0, HEIGHT * count / peak)
                base -= height
                bars.append(
                    Bar(round(x, 2), round(base, 2), round(step - _GAP, 2), round(height, 2), kind, title)
                )
    total = sum(b.delivered for b in buckets), sum(b.failed for b in buckets)
    span = len(buckets) * seconds_per_bar // 60
    label = f"last {span} min: {total[0]} delivered, {total[1]} failed"
    return Chart(WIDTH, HEIGHT, bars, peak, label)
