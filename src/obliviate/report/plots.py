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
import statistics
from typing import Any

from .runs import Metric, Run, is_finite
from .table import target

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
    if target(name) is not None:
        return f"{name} (closest to {target(name):g} is best)"
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
    for t, line in ((target(fname), ax.axvline), (target(uname), ax.axhline)):
        if t is not None:  # an ideal inside the range (MIA AUC 0.5): mark it
            line(t, color="0.5", linestyle="--", linewidth=1, zorder=1)
    if target(fname) is not None or target(uname) is not None:
        corner = "on the dashed line" + ("" if target(uname) is not None else f", {'top' if um.higher_is_better else 'bottom'}")
    else:
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
    """The training-curve figure (``curves_figure``) as a data URI, or None without logs."""
    fig = curves_figure(runs)
    return to_data_uri(fig) if fig is not None else None


def curves_figure(runs: list[Run]):
    """Small multiples against ``step``: ``loss`` gets one panel per run (each method's loss is on
    its own scale, e.g. RMU's in the hundreds next to NPO's below 1, and is not comparable across
    methods), every other logged quantity one panel with a line per run, on a log scale when the
    runs' magnitudes differ by more than 10x (``_scale``). None when no run logged anything."""
    keys = curve_keys(runs)
    if not keys:
        return None
    loss_runs = [(i, r) for i, r in enumerate(runs) if "loss" in keys and _series(r, "loss")]
    shared = [k for k in keys if k != "loss"]
    lcols = min(4, len(loss_runs)) or 1
    lrows = math.ceil(len(loss_runs) / lcols)
    scols = min(2, len(shared)) or 1
    srows = math.ceil(len(shared) / scols)
    heights = [2.4 * lrows, 3.2 * srows]
    fig = _figure(10.4, sum(heights))
    top, bottom = fig.subfigures(2, 1, height_ratios=heights) if lrows and srows else (fig, fig)
    if loss_runs:
        axes = top.subplots(lrows, lcols, squeeze=False).ravel()
        for ax, (i, r) in zip(axes, loss_runs):
            _plot(ax, i, r, "loss")
            ax.set_title(f"loss: {r.name}", fontsize=9, color=_colour(i))
        for ax in axes[len(loss_runs):]:
            ax.set_visible(False)
        top.suptitle("loss, one axis per run", fontsize=10)
    if shared:
        axes = bottom.subplots(srows, scols, squeeze=False).ravel()
        for ax, key in zip(axes, shared):
            series = [_series(r, key) for r in runs]
            for i, r in enumerate(runs):
                _plot(ax, i, r, key)
            scale = _scale(ax, [[y for _, y in s] for s in series if s])
            ax.set_title(key + ("" if scale == "linear" else f" ({scale} scale)"), fontsize=10)
        for ax in axes[len(shared):]:
            ax.set_visible(False)
        axes[0].legend(fontsize=8)
    return fig


def _series(run: Run, key: str) -> list[tuple[float, float]]:
    return [(row.get("step", j), row[key]) for j, row in enumerate(run.log) if is_finite(row.get(key))]


def _plot(ax, i: int, run: Run, key: str) -> None:
    pts = _series(run, key)
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, color=_colour(i), marker=MARKERS[i % len(MARKERS)], markersize=3,
                markevery=max(1, len(xs) // 10), label=run.name)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)


def _scale(ax, series: list[list[float]]) -> str:
    """Put ``ax`` on a log y scale when the series' typical magnitudes (medians of |y|) differ by more
    than 10x, so a large-valued run does not flatten the others; symlog when a value is <= 0."""
    mags = sorted(statistics.median(abs(y) for y in ys) for ys in series if any(y != 0 for y in ys))
    if len(mags) < 2 or mags[0] == 0 or mags[-1] / mags[0] <= 10:
        return "linear"
    if all(y > 0 for ys in series for y in ys):
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks, plain numbers
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        return "log"
    ax.set_yscale("symlog", linthresh=mags[0])
    return "symlog"


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
