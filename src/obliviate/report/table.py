"""The comparison table: metrics x runs, with each row's best and worst run marked.

A row's direction comes from the metric's ``higher_is_better`` (the first run that states it);
rows without a direction, or with fewer than two distinct finite values, are not coloured.
Ties share the mark (two runs at the best value are both "best").

Some metrics are best at a value inside their range (``target``): a membership-inference AUC at
0.5 (members look like non-members; below 0.5 the model has over-unlearned, which is itself a
detectable signal) and MUSE's privleak at 0. Those rows are marked by distance from the target,
whatever ``higher_is_better`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .runs import Metric, Run, find_metric, is_finite

# When summary.json names no headline metrics, the first match in each list is used.
FORGET_GUESSES = ("forget_quality", "forget_prob", "forget_q_a_prob", "forget_rouge", "forget")
UTILITY_GUESSES = ("model_utility", "utility", "retain_prob", "retain", "mmlu", "accuracy")


# (pattern on the metric's bare name, ideal value): MIA AUCs (auc_loss, mia_auc, ...) and privleak.
TARGETS = ((re.compile(r"(^|_)auc($|_)"), 0.5), (re.compile(r"(^|_)privleak($|_)"), 0.0))


def target(key: str) -> float | None:
    """The ideal value of metric ``key`` when it lies inside the range (MIA AUC: 0.5, privleak: 0)."""
    bare = key.split("/", 1)[-1].lower()
    return next((t for pattern, t in TARGETS if pattern.search(bare)), None)


@dataclass(frozen=True)
class Row:
    """One metric across runs: values (None where a run lacks it) and marks ('best'/'worst'/'')."""

    key: str
    higher_is_better: bool | None
    description: str
    values: list[float | None]
    marks: list[str]
    target: float | None = None  # marked by distance from this value (see ``target``)


def mark(values: list[float | None], higher_is_better: bool | None, target: float | None = None) -> list[str]:
    """'best' / 'worst' / '' per value, by direction, or by distance from ``target`` when given
    (closest is best); ties share a mark."""
    finite = [v for v in values if is_finite(v)]
    if target is not None:
        dist = [abs(v - target) if is_finite(v) else None for v in values]
        return mark(dist, False)
    if higher_is_better is None or len(set(finite)) < 2:
        return [""] * len(values)
    best = max(finite) if higher_is_better else min(finite)
    worst = min(finite) if higher_is_better else max(finite)
    return ["best" if v == best else "worst" if v == worst else "" for v in values]


def metric_rows(runs: list[Run]) -> list[Row]:
    """Every metric any run has, in first-seen order (suite by suite)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.metrics if k not in keys]
    rows = []
    for k in keys:
        ms = [r.metrics.get(k) for r in runs]
        hib = next((m.higher_is_better for m in ms if m is not None and m.higher_is_better is not None), None)
        desc = next((m.description for m in ms if m is not None and m.description), "")
        values = [m.value if m is not None else None for m in ms]
        t = target(k)
        rows.append(Row(k, hib, desc, values, mark(values, hib, t), t))
    return rows


def _guess(metrics: dict[str, Metric], guesses: tuple[str, ...]) -> str | None:
    for g in guesses:
        if (k := find_metric(metrics, g)) is not None:
            return k
    for g in guesses:
        for k in metrics:
            if g in k.split("/", 1)[-1].lower():
                return k
    return None


def headline(run: Run, which: str, name: str | None) -> tuple[str, Metric] | None:
    """The run's forget (``which='forget'``) or utility metric: an explicit name, summary.json, a guess."""
    if name:
        k = find_metric(run.metrics, name)
        return (k, run.metrics[k]) if k else None
    own = run.forget if which == "forget" else run.utility
    if own is not None:
        return own
    k = _guess(run.metrics, FORGET_GUESSES if which == "forget" else UTILITY_GUESSES)
    return (k, run.metrics[k]) if k else None


def tradeoff_points(runs: list[Run], forget: str | None = None, utility: str | None = None):
    """``(run, (forget name, Metric), (utility name, Metric))`` for runs that have both."""
    pts = []
    for r in runs:
        f, u = headline(r, "forget", forget), headline(r, "utility", utility)
        if f is not None and u is not None:
            pts.append((r.name, f, u))
    return pts


def fmt(v: float | None) -> str:
    """Compact number formatting: 4 significant digits, scientific for tiny/huge values."""
    if v is None:
        return "-"
    if not is_finite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3e}"
    return f"{v:.4g}"
