"""Rendering the report as one self-contained HTML page (inline CSS, images as data URIs, no JS).

Everything user-provided (run names, metric names, configs, attack fields) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from .runs import Run
from .table import Row, fmt

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3;text-align:center}td.name,th.name{text-align:left}
.best{background:#c8efc8}.worst{background:#f6c9c9}td.best{font-weight:600}
.dir{color:#777;font-size:.85em}
img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
.legend span{padding:.1em .5em;margin-right:.6em}
"""


def _th(cells: list[str]) -> str:
    return "<tr>" + "".join(f'<th class="name">{escape(c)}</th>' if i == 0 else f"<th>{escape(c)}</th>"
                            for i, c in enumerate(cells)) + "</tr>"


def _direction(row: Row) -> str:
    if row.target is not None:
        return f"&#8596; closest to {row.target:g} is best"
    return {True: "&uarr; higher is better", False: "&darr; lower is better"}.get(row.higher_is_better, "")


def _target_note(row: Row) -> str:
    """Tooltip text saying why a target row is coloured by distance."""
    if row.target is None:
        return ""
    if row.target == 0.5:
        return ("Coloured by distance from 0.5: at 0.5 the attack cannot tell forgotten data from never-seen "
                "data; below 0.5 the model has over-unlearned (also detectable), above it still leaks.")
    return f"Coloured by distance from {row.target:g}, the ideal value (the other side means over-unlearning)."


def runs_section(runs: list[Run]) -> str:
    rows = "".join(
        f'<tr><td class="name">{escape(r.name)}</td><td class="name">{escape(r.method or "-")}</td>'
        f'<td>{len(r.log)}</td><td>{len(r.metrics)}</td><td class="name">{escape(str(r.path))}</td></tr>'
        for r in runs
    )
    return f"<h2>Runs</h2><table>{_th(['run', 'method', 'log lines', 'metrics', 'directory'])}{rows}</table>"


def tradeoff_section(uri: str | None, points: list[Any]) -> str:
    if uri is None:
        return ("<h2>Forget vs utility</h2><p class=\"meta\">No run names both a forget and a utility metric "
                "(summary.json's forget_metric/utility_metric, or pass --forget-metric/--utility-metric).</p>")
    rows = "".join(
        f'<tr><td class="name">{escape(run)}</td><td class="name">{escape(fn)}</td><td>{fmt(f.value)}</td>'
        f'<td class="name">{escape(un)}</td><td>{fmt(u.value)}</td></tr>'
        for run, (fn, f), (un, u) in points
    )
    return (f'<h2>Forget vs utility</h2><img alt="forget vs utility trade-off" src="{uri}">'
            f"<table>{_th(['run', 'forget metric', 'value', 'utility metric', 'value'])}{rows}</table>")


def metrics_section(runs: list[Run], rows: list[Row]) -> str:
    if not rows:
        return '<h2>Metrics</h2><p class="meta">No eval/*.json results in these runs.</p>'
    body = []
    for row in rows:
        text = " ".join(t for t in (row.description, _target_note(row)) if t)
        tip = f' title="{escape(text)}"' if text else ""
        cells = "".join(f'<td class="{m}">{fmt(v)}</td>' if m else f"<td>{fmt(v)}</td>"
                        for v, m in zip(row.values, row.marks))
        body.append(f'<tr><td class="name"{tip}>{escape(row.key)} <span class="dir">{_direction(row)}</span></td>{cells}</tr>')
    legend = ('<p class="legend"><span class="best">best run</span><span class="worst">worst run</span> per metric, '
              "by its direction; membership-inference AUCs by distance from 0.5 (no leak; lower means "
              "over-unlearning) and privleak by distance from 0.</p>")
    return f"<h2>Metrics</h2>{legend}<table>{_th(['metric'] + [r.name for r in runs])}{''.join(body)}</table>"


def curves_section(uri: str | None) -> str:
    if uri is None:
        return ""
    return f'<h2>Training curves</h2><img alt="training curves" src="{uri}">'


def spunge_section(runs: list[Run], images: dict[str, str]) -> str:
    parts = []
    for r in runs:
        if not r.spunge:
            continue
        metrics: list[str] = []
        for row in r.spunge.values():
            metrics += [m for m in row if m not in metrics]
        body = "".join(f'<tr><td class="name">{escape(a)}</td>' + "".join(f"<td>{fmt(vals.get(m))}</td>" for m in metrics) + "</tr>"
                       for a, vals in r.spunge.items())
        img = f'<img alt="per-attribute results of {escape(r.name)}" src="{images[r.name]}">' if r.name in images else ""
        parts.append(f"<h3>{escape(r.name)}</h3>{img}<table>{_th(['attribute'] + metrics)}{body}</table>")
    return "<h2>SPUNGE: per-attribute results</h2>" + "".join(parts) if parts else ""


def _cell(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"<td>{fmt(float(v))}</td>"
    return f'<td class="name">{escape(str(v))}</td>'


def attacks_section(runs: list[Run]) -> str:
    parts = []
    for r in runs:
        if not r.attacks:
            continue
        cols: list[str] = []
        for row in r.attacks:
            cols += [c for c in row if c not in cols]
        body = "".join("<tr>" + "".join(_cell(row.get(c, "-")) for c in cols) + "</tr>" for row in r.attacks)
        parts.append(f"<h3>{escape(r.name)}</h3><table>{_th(cols)}{body}</table>")
    return "<h2>Attacks (knowledge recovery)</h2>" + "".join(parts) if parts else ""


def configs_section(runs: list[Run]) -> str:
    parts = [f"<details open><summary>{escape(r.name)}</summary><pre>{escape(r.config_text)}</pre></details>"
             for r in runs if r.config_text]
    return "<h2>Configs</h2>" + "".join(parts) if parts else ""


def render(title: str, generated: str, runs: list[Run], rows: list[Row], figures: dict[str, Any], points: list[Any]) -> str:
    body = "".join([
        runs_section(runs),
        tradeoff_section(figures.get("tradeoff"), points),
        metrics_section(runs, rows),
        curves_section(figures.get("curves")),
        spunge_section(runs, figures.get("attributes", {})),
        attacks_section(runs),
        configs_section(runs),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
            f'<p class="meta">Generated by obliviate report, {escape(generated)}; {len(runs)} run(s).</p>'
            f"{body}</body></html>\n")
