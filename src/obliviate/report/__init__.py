"""``obliviate report``: one self-contained HTML page (plus a Markdown summary) comparing runs.

    from obliviate.report import build_report
    build_report([Path("runs/ga"), Path("runs/npo")], Path("report.html"))

The page shows the forget-vs-utility trade-off scatter, training curves from ``train_log.jsonl``,
a metrics table from ``eval/*.json`` with the best/worst run per metric coloured by the metric's
``higher_is_better``, per-attribute bars for SPUNGE runs (``spunge_table.json``), the attack
robustness tables (``attacks.json``) and each run's ``config.yaml``. Sections whose inputs are
missing are left out. Plots are base64 PNG data URIs and styles are inline: the file needs no
network, no JavaScript and no other file. ``report.md`` (same tables, no plots) is written next
to it. Both writes are atomic.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..io import write_text
from .html import render
from .markdown import render_markdown
from .plots import plot_all
from .runs import Metric, Run, read_run, read_runs, unique_names
from .table import Row, metric_rows, tradeoff_points


@dataclass(frozen=True)
class Report:
    """What ``build_report`` wrote."""

    html: Path
    markdown: Path
    runs: list[Run]
    rows: list[Row]
    skipped: tuple[tuple[Path, str], ...] = ()
    """Directories left out, with the reason (unreadable, or not a run)."""


def build_report(
    run_dirs: list[Path],
    out: Path,
    *,
    title: str = "obliviate report",
    forget_metric: str | None = None,
    utility_metric: str | None = None,
    markdown: Path | None = None,
) -> Report:
    """Read ``run_dirs`` and write the HTML report to ``out`` and the Markdown to ``markdown``.

    ``forget_metric`` / ``utility_metric`` name the trade-off axes (``suite/metric`` or a bare
    metric name); by default each run's ``summary.json`` decides, then a guess from common names
    (``forget_quality``, ``model_utility``, ...). ``markdown`` defaults to ``report.md`` in
    ``out``'s folder.
    """
    if not run_dirs:
        raise DataError("No run directories given; pass at least one, e.g. `obliviate report runs/npo`.")
    out = Path(out)
    paths = [Path(p) for p in run_dirs]
    runs, skipped = read_runs(paths, unique_names(paths))
    if not runs:
        raise DataError("No run to report: " + "; ".join(f"'{p}': {why}" for p, why in skipped))
    rows = metric_rows(runs)
    points = tradeoff_points(runs, forget_metric, utility_metric)
    figures = plot_all(runs, points)
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    md = Path(markdown) if markdown is not None else out.with_name("report.md")
    write_text(out, render(title, generated, runs, rows, figures, points))
    write_text(md, render_markdown(title, runs, rows, points))
    return Report(out, md, runs, rows, tuple(skipped))


__all__ = ["build_report", "Report", "Run", "Metric", "read_run"]
