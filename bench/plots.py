"""The figures' PNGs (matplotlib, Agg backend): lines over concurrency, and bars.

Every plot uses the same colour per contender (greenagents always green and drawn last, on top),
so the figures read together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.harness import Samples

_PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#d62728", "#aec7e8", "#ffbb78"]
# one colour per contender in every figure; greenagents in greens
_COLOURS = {"ga_batch": "#2ca02c", "ga_each_openai": "#98df8a", "ga_each_urllib3": "#55a868",
            "ga_batch_tracked": "#1b5e20", "ga_batch_no_cooldown": "#b5e7a0", "ga_stream": "#2ca02c",
            "ga_batch_gc": "#66bb6a",
            "green_urllib3": "#1f77b4", "asyncio_aiohttp": "#ff7f0e", "asyncio_openai": "#9467bd",
            "threads_requests": "#8c564b", "threads_openai": "#e377c2", "threads_tenacity": "#d62728",
            "langchain": "#7f7f7f", "litellm": "#bcbd22", "sequential": "#17becf",
            "threads_map": "#8c564b", "gunicorn_gthread": "#8c564b"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour(key: str, index: int) -> str:
    return _COLOURS.get(key, _PALETTE[index % len(_PALETTE)])


def lines(path: Path, title: str, xlabel: str, ylabel: str,
          series: Mapping[str, tuple[str, Mapping[int, Samples]]], *, logy: bool = False,
          hline: float | None = None) -> Path:
    """One line per contender (label, {x: samples}): median, with a min–max band; log x."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ordered = sorted(series.items(), key=lambda kv: kv[0].startswith("ga_"))
    for index, (key, (label, points)) in enumerate(ordered):
        xs = sorted(x for x, s in points.items() if s.ok)
        if not xs:
            continue
        medians = [points[x].median for x in xs]
        green = key.startswith("ga_")
        ax.plot(xs, medians, marker="o", label=label, color=colour(key, index),
                linewidth=2.6 if key == "ga_batch" else 1.6, zorder=3 if green else 2)
        ax.fill_between(xs, [points[x].low for x in xs], [points[x].high for x in xs],
                        color=colour(key, index), alpha=0.15)
    if hline is not None:
        ax.axhline(hline, color="black", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ticks = sorted({x for _, points in series.values() for x in points})
    ax.set_xticks(ticks, [f"{x:,}" for x in ticks])
    ax.minorticks_off()
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bars(path: Path, title: str, ylabel: str, groups: Sequence[str],
         series: Mapping[str, tuple[str, Sequence[Samples]]], *, goal: float | None = None,
         goal_label: str = "") -> Path:
    """Grouped bars (one group per ``groups`` entry, one bar per contender) with min–max whiskers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    width = 0.8 / max(1, len(series))
    for index, (key, (label, samples)) in enumerate(series.items()):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        medians = [s.median if s.ok else 0.0 for s in samples]
        errors = [[max(0.0, s.median - s.low) if s.ok else 0 for s in samples],
                  [max(0.0, s.high - s.median) if s.ok else 0 for s in samples]]
        drawn = ax.bar(xs, medians, width, yerr=errors, capsize=3, label=label,
                       color=colour(key, index))
        ax.bar_label(drawn, labels=[f"{m:.3g}" if m else "" for m in medians], fontsize=7,
                     padding=2)
    if goal is not None:
        ax.axhline(goal, color="black", linestyle=":", linewidth=1, label=goal_label or None)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.12)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
