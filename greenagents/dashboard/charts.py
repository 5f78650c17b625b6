"""Charts as plain geometry the templates draw as inline SVG: no JavaScript library, no CDN.

Only numbers are computed here; every label (a model name is user text) goes through the
template's autoescaping, never into markup built by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Chart", "histogram", "over_time"]

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 560, 200, 56, 22, 10
BUCKETS = 60
PALETTE = ("#2f7d4f", "#3867b5", "#c0742a", "#8e44ad", "#b03a48", "#5d6d7e")


@dataclass
class Chart:
    """One chart: polylines and/or bars in a WIDTH × HEIGHT box, with tick labels."""

    title: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # name, colour, "x,y x,y ..."
    bars: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x y w h tip
    xticks: list[tuple[float, str]] = field(default_factory=list)
    yticks: list[tuple[float, str]] = field(default_factory=list)
    legend: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM
    top: int = TOP

    @property
    def empty(self) -> bool:
        return not self.lines and not self.bars


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2g}"


def _y(chart: Chart, value: float, peak: float) -> float:
    return chart.bottom - (chart.bottom - chart.top) * (value / peak if peak else 0.0)


def _yticks(chart: Chart, peak: float, fmt: Callable[[float], str]) -> None:
    chart.yticks = [(_y(chart, peak * n / 4, peak), fmt(peak * n / 4)) for n in range(5)]


def over_time(title: str, series: Mapping[str, Mapping[int, float]], start: float, end: float,
              *, rate: bool = False, cumulative: bool = False,
              fmt: Callable[[float], str] = _number, colours: tuple[str, ...] = PALETTE,
              legend: bool = True) -> Chart:
    """Per-second ``series`` (name → second → value) summed into buckets between start and end.

    ``rate`` divides each bucket by its width (per second); ``cumulative`` draws running totals.
    """
    chart = Chart(title, legend=legend)
    first, last = int(start), int(end)
    width = max(1, -(-(last - first + 1) // BUCKETS))
    count = -(-(last - first + 1) // width)
    summed: dict[str, list[float]] = {}
    for name, values in series.items():
        buckets = [0.0] * count
        for second, value in values.items():
            slot = (second - first) // width
            if 0 <= slot < count:
                buckets[slot] += value
        if rate:
            buckets = [value / width for value in buckets]
        if cumulative:
            total = 0.0
            for n, value in enumerate(buckets):
                total += value
                buckets[n] = total
        summed[name] = buckets
    peak = max((max(values) for values in summed.values() if values), default=0.0)
    span = chart.width - chart.left - 8
    for n, (name, sums) in enumerate(summed.items()):
        step = span / max(len(sums) - 1, 1)
        points = " ".join(f"{chart.left + i * step:.1f},{_y(chart, v, peak):.1f}"
                          for i, v in enumerate(sums))
        chart.lines.append((name, colours[n % len(colours)], points))
    _yticks(chart, peak, fmt)
    for n in range(4):
        at = first + (last - first) * n / 3
        chart.xticks.append((chart.left + span * n / 3, time.strftime("%H:%M:%S", time.localtime(at))))
    return chart


def histogram(title: str, bins: list[tuple[float, float, int]]) -> Chart:
    """Bars of ``(low, high, count)``; the x axis in seconds."""
    chart = Chart(title)
    if not bins:
        return chart
    peak = max(count for _, _, count in bins)
    span = chart.width - chart.left - 8
    width = span / len(bins)
    for n, (low, high, count) in enumerate(bins):
        y = _y(chart, count, peak)
        chart.bars.append((chart.left + n * width + 0.5, y, max(width - 1, 1), chart.bottom - y,
                           f"{low:.2f}–{high:.2f} s: {count:,} calls"))
    _yticks(chart, peak, _number)
    top = bins[-1][1]
    chart.xticks = [(chart.left + span * n / 4, f"{top * n / 4:.2f}s") for n in range(5)]
    return chart
