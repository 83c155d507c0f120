"""Report figures, rendered with matplotlib's Agg backend to base64 PNG ``data:`` URIs.

Figures are built with the object API (``matplotlib.figure.Figure``, which renders PNG through
Agg without touching pyplot's global backend), so a user's interactive session is left alone.
Each function returns a ``data:image/png;base64,...`` string (so the HTML needs no external file)
or None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from .runs import Metric, Run, is_finite

# Points per run: a distinct colour + marker so runs stay tellable apart in greyscale too.
MARKERS = "osD^vP*Xhp<>"
# Log keys that are bookkeeping, not curves worth plotting.
SKIP_KEYS = {"step", "epoch", "time", "elapsed", "elapsed_s", "wall_s", "tokens", "samples"}
MAX_CURVES = 6


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colour(i: int) -> str:
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def _axis_label(name: str, m: Metric) -> str:
    if m.higher_is_better is None:
        return name
    return f"{name} ({'higher' if m.higher_is_better else 'lower'} is better)"


def tradeoff(points: list[tuple[str, tuple[str, Metric], tuple[str, Metric]]]) -> str | None:
    """Forget-vs-utility scatter: x = forget metric, y = utility metric, one labelled point per run.

    ``points`` holds ``(run name, (forget name, metric), (utility name, metric))``. The ideal corner
    (best forgetting and best utility, given each metric's direction) is shaded in the legend text.
    """
    pts = [p for p in points if is_finite(p[1][1].value) and is_finite(p[2][1].value)]
    if pts:  # runs whose headline metrics differ from the first run's cannot share these axes
        axes = (_bare(pts[0][1][0]), _bare(pts[0][2][0]))
        pts = [p for p in pts if (_bare(p[1][0]), _bare(p[2][0])) == axes]
    if not pts:
        return None
    fig = _figure(7.0, 5.0)
    ax = fig.add_subplot()
    for i, (run, (_, f), (_, u)) in enumerate(pts):
        ax.scatter([f.value], [u.value], s=80, color=_colour(i), marker=MARKERS[i % len(MARKERS)], label=run, zorder=3)
        ax.annotate(run, (f.value, u.value), textcoords="offset points", xytext=(6, 6), fontsize=9)
    fname, fm = pts[0][1]
    uname, um = pts[0][2]
    ax.set_xlabel(_axis_label(fname, fm))
    ax.set_ylabel(_axis_label(uname, um))
    corner = _ideal_corner(fm.higher_is_better, um.higher_is_better)
    ax.set_title("Forget vs utility trade-off" + (f" (ideal: {corner})" if corner else ""))
    ax.margins(0.15)  # room for the point labels at the edges
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return to_data_uri(fig)


def _bare(name: str) -> str:
    return name.split("/", 1)[-1]


def _ideal_corner(f_hib: bool | None, u_hib: bool | None) -> str:
    if f_hib is None or u_hib is None:
        return ""
    return f"{'top' if u_hib else 'bottom'} {'right' if f_hib else 'left'}"


def curve_keys(runs: list[Run]) -> list[str]:
    """Numeric log keys to plot, ``loss`` first, then by how many runs log them."""
    counts: dict[str, int] = {}
    for r in runs:
        seen = {k for row in r.log for k, v in row.items() if k not in SKIP_KEYS and is_finite(v)}
        for k in seen:
            counts[k] = counts.get(k, 0) + 1
    keys = sorted(counts, key=lambda k: (k != "loss", -counts[k], k))
    return keys[:MAX_CURVES]


def training_curves(runs: list[Run]) -> str | None:
    """Small multiples: one panel per logged quantity, one line per run, against ``step``."""
    keys = curve_keys(runs)
    if not keys:
        return None
    cols = min(2, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure(5.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        for i, r in enumerate(runs):
            pts = [(row.get("step", j), row[key]) for j, row in enumerate(r.log) if is_finite(row.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=_colour(i), marker=MARKERS[i % len(MARKERS)], markersize=3,
                        markevery=max(1, len(xs) // 10), label=r.name)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    return to_data_uri(fig)


def attribute_bars(run: Run) -> str | None:
    """Grouped bars for a SPUNGE run: x = attribute value, one bar per metric."""
    table = run.spunge
    if not table:
        return None
    attrs = list(table)
    metrics: list[str] = []
    for row in table.values():
        metrics += [m for m in row if m not in metrics]
    fig = _figure(max(6.0, 0.6 * len(attrs) * max(1, len(metrics)) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(attrs))]
        ys = [table[a].get(m, float("nan")) for a in attrs]
        ax.bar(xs, ys, width=width, color=_colour(j), label=m)
    ax.set_xticks(range(len(attrs)), attrs, rotation=30 if len(attrs) > 6 else 0, ha="right" if len(attrs) > 6 else "center")
    ax.set_title(f"{run.name}: per-attribute results")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def plot_all(runs: list[Run], points: list[Any]) -> dict[str, Any]:
    """Every figure of the report: ``tradeoff``, ``curves`` and ``attributes`` (run name -> URI)."""
    return {
        "tradeoff": tradeoff(points),
        "curves": training_curves(runs),
        "attributes": {r.name: uri for r in runs if (uri := attribute_bars(r))},
    }
