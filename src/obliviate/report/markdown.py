"""The Markdown summary written next to the HTML report, for pasting into papers and issues.

Tables only (no images): the trade-off pairs, every metric with the best run in **bold** (and the
worst in _italics_), per-attribute SPUNGE tables, and the attack tables.
"""

from __future__ import annotations

from typing import Any

from .runs import Run
from .table import Row, fmt


def _esc(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _styled(v: float | None, m: str) -> str:
    s = fmt(v)
    return f"**{s}**" if m == "best" else f"_{s}_" if m == "worst" else s


def render_markdown(title: str, runs: list[Run], rows: list[Row], points: list[Any]) -> str:
    out = [f"# {title}", ""]
    out += [_table(["run", "method", "directory"], [[_esc(r.name), _esc(r.method or "-"), _esc(str(r.path))] for r in runs]), ""]
    if points:
        out += ["## Forget vs utility", "",
                _table(["run", "forget metric", "value", "utility metric", "value"],
                       [[_esc(run), _esc(fn), fmt(f.value), _esc(un), fmt(u.value)] for run, (fn, f), (un, u) in points]), ""]
    if rows:
        arrow = {True: " ↑", False: " ↓", None: ""}
        out += ["## Metrics", "", "Best run per metric in **bold**, worst in _italics_ (↑ higher is better, ↓ lower is better, "
                "↔ x: closest to x is best, e.g. membership-inference AUC at 0.5).", "",
                _table(["metric"] + [r.name for r in runs],
                       [[_esc(row.key) + (f" ↔ {row.target:g}" if row.target is not None else arrow[row.higher_is_better])]
                        + [_styled(v, m) for v, m in zip(row.values, row.marks)] for row in rows]), ""]
    for r in runs:
        if r.spunge:
            metrics: list[str] = []
            for vals in r.spunge.values():
                metrics += [m for m in vals if m not in metrics]
            out += [f"## SPUNGE per-attribute: {r.name}", "",
                    _table(["attribute"] + metrics, [[_esc(a)] + [fmt(vals.get(m)) for m in metrics] for a, vals in r.spunge.items()]), ""]
    for r in runs:
        if r.attacks:
            cols: list[str] = []
            for row in r.attacks:
                cols += [c for c in row if c not in cols]
            cell = lambda v: fmt(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else _esc(str(v))  # noqa: E731
            out += [f"## Attacks: {r.name}", "", _table(cols, [[cell(row.get(c, "-")) for c in cols] for row in r.attacks]), ""]
    return "\n".join(out).rstrip() + "\n"
