"""Reading run directories for ``obliviate report``.

A run directory may hold (every piece optional; the report skips what is missing):

- ``config.yaml``: the resolved run config (shown verbatim);
- ``train_log.jsonl``: one JSON object per logged step (``step``, ``loss``, ...);
- ``eval/<suite>.json``: ``{"suite", "model", "summary": {metric: {"value", "higher_is_better",
  "description"}}, "items": ..., "meta": ...}`` (the format of ``obliviate.eval.results``);
- ``summary.json``: ``{"method", "forget_metric": {...}, "utility_metric": {...}, ...}`` naming the
  run's headline forget and utility metrics for the trade-off plot;
- ``spunge_table.json``: per-attribute results of a SPUNGE run;
- ``attacks.json``: knowledge-recovery attack results.

Readers are tolerant: a file that is absent yields an empty section; a file that exists but is
not valid JSON (or YAML), or holds the wrong kind of value, raises ``DataError`` naming it, since a
silently dropped result would mislead. ``read_runs`` reads many directories and sets aside, with
the reason, the ones that cannot be read or are not runs at all, so one bad directory neither
stops a multi-run report nor passes as a run with no results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import read_jsonl


@dataclass(frozen=True)
class Metric:
    """One scalar result: ``value`` and which direction is better."""

    value: float
    higher_is_better: bool | None = None
    description: str = ""


@dataclass
class Run:
    """Everything the report shows about one run directory."""

    name: str
    path: Path
    method: str | None = None
    config_text: str | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)  # "suite/metric" -> Metric
    forget: tuple[str, Metric] | None = None  # headline forget metric (name, value)
    utility: tuple[str, Metric] | None = None  # headline utility metric
    spunge: dict[str, dict[str, float]] = field(default_factory=dict)  # attribute -> metric -> value
    attacks: list[dict[str, Any]] = field(default_factory=list)  # rows of the robustness table


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"'{path}' is not valid JSON ({e}); re-run the step that wrote it.") from None


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def as_metric(x: Any) -> Metric | None:
    """A metric from ``{"value": v, "higher_is_better": b, ...}`` or a bare number; else None."""
    if isinstance(x, dict):
        if "value" in x and x["value"] is None:  # NaN/inf are stored as null (eval.results)
            x = {**x, "value": math.nan}
        v = _number(x.get("value"))
        hib = x.get("higher_is_better")
        return None if v is None else Metric(v, hib if isinstance(hib, bool) else None, str(x.get("description", "")))
    v = _number(x)
    return None if v is None else Metric(v)


def read_eval(run_dir: Path) -> dict[str, Metric]:
    """``eval/*.json`` summaries as ``{"suite/metric": Metric}`` (suites in file-name order)."""
    out: dict[str, Metric] = {}
    for f in sorted((run_dir / "eval").glob("*.json")):
        data = _read_json(f)
        if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
            raise DataError(f"'{f}' has no 'summary' mapping of metric -> {{value, higher_is_better}}.")
        suite = str(data.get("suite") or f.stem)
        for name, m in data["summary"].items():
            metric = as_metric(m)
            if metric is not None:
                out[f"{suite}/{name}"] = metric
    return out


def _headline(x: Any, metrics: dict[str, Metric], fallback: str) -> tuple[str, Metric] | None:
    """Resolve summary.json's forget/utility entry: a metric dict, a number, or a metric name."""
    if isinstance(x, str):
        found = find_metric(metrics, x)
        return (found, metrics[found]) if found else None
    m = as_metric(x)
    if m is None:
        return None
    name = x.get("name") if isinstance(x, dict) else None
    return (str(name or fallback), m)


def find_metric(metrics: dict[str, Metric], name: str) -> str | None:
    """The key matching ``name`` exactly, or as ``*/name`` (the first suite that has it)."""
    if name in metrics:
        return name
    for key in metrics:
        if key.split("/", 1)[-1] == name:
            return key
    return None


def _rows(data: Any, label: str = "attack") -> list[dict[str, Any]]:
    """Flatten an attacks result (list of rows, or nested mappings) into table rows."""
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if not isinstance(data, dict):
        return []
    for key in ("attacks", "rows", "results"):
        if key in data and isinstance(data[key], (list, dict)):
            return _rows(data[key], label)
    rows: list[dict[str, Any]] = []
    for name, v in data.items():
        if not isinstance(v, dict):
            continue
        scalars = {k: x for k, x in v.items() if not isinstance(x, (dict, list))}
        nested = {k: x for k, x in v.items() if isinstance(x, dict)}
        if scalars or not nested:
            rows.append({label: name, **scalars})
        for sub, d in nested.items():
            rows.append({label: name, "metric": sub, **{k: x for k, x in d.items() if not isinstance(x, (dict, list))}})
    return rows


def _spunge(data: Any) -> dict[str, dict[str, float]]:
    """Per-attribute table: ``{attr: {metric: v}}``, ``{"attributes": ...}`` or a list of rows."""
    if isinstance(data, dict):
        for key in ("attributes", "per_attribute", "table", "rows"):
            if key in data:
                return _spunge(data[key])
        out = {}
        for attr, row in data.items():
            if isinstance(row, dict):
                vals = {k: m.value for k, x in row.items() if (m := as_metric(x)) is not None}
                if vals:
                    out[str(attr)] = vals
        return out
    if isinstance(data, list):
        out = {}
        for row in data:
            if not isinstance(row, dict):
                continue
            attr = next((row[k] for k in ("attribute", "value", "subset", "group", "name") if k in row), None)
            vals = {k: m.value for k, x in row.items()
                    if k not in ("attribute", "value", "subset", "group", "name") and (m := as_metric(x)) is not None}
            if attr is not None and vals:
                out[str(attr)] = vals
        return out
    return {}


def read_run(path: str | Path, name: str | None = None) -> Run:
    """Load one run directory (missing pieces stay empty)."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"Run directory '{p}' does not exist; pass directories written by `obliviate unlearn`.")
    run = Run(name=name or p.name, path=p)
    if (p / "config.yaml").is_file():
        run.config_text = _read_config(p / "config.yaml")
    run.log = [r for r in read_jsonl(p / "train_log.jsonl") if isinstance(r, dict)]
    run.metrics = read_eval(p)
    summary = _read_json(p / "summary.json") if (p / "summary.json").is_file() else {}
    if not isinstance(summary, dict):
        raise DataError(f"'{p / 'summary.json'}' holds a {type(summary).__name__}, not a mapping of fields "
                        f"(method, forget_metric, ...).")
    if summary:
        run.method = summary.get("method") if isinstance(summary.get("method"), str) else None
        run.forget = _headline(summary.get("forget_metric"), run.metrics, "forget")
        run.utility = _headline(summary.get("utility_metric"), run.metrics, "utility")
    if run.method is None and run.config_text:
        run.method = _method_from_config(run.config_text)
    if (p / "spunge_table.json").is_file():
        run.spunge = _spunge(_read_json(p / "spunge_table.json"))
    if (p / "attacks.json").is_file():
        run.attacks = _rows(_read_json(p / "attacks.json"))
    return run


def _read_config(path: Path) -> str:
    """config.yaml's text, refusing one that is not a YAML mapping."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"'{path}' is not valid YAML ({str(e).splitlines()[0]}).") from None
    if data is not None and not isinstance(data, dict):
        raise DataError(f"'{path}' holds a {type(data).__name__}, not a run config mapping.")
    return text


def read_runs(paths: list[Path], names: list[str] | None = None) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Read every directory; returns the runs and ``(path, reason)`` for each one set aside: not a
    directory, unreadable files, or nothing a run writes (no config, log, eval results or summary)."""
    runs, skipped = [], []
    for p, name in zip(paths, names or [None] * len(paths)):
        try:
            run = read_run(p, name)
        except DataError as e:
            skipped.append((Path(p), str(e)))
            continue
        if not (run.config_text or run.log or run.metrics or run.method or run.spunge or run.attacks):
            skipped.append((Path(p), "not a run directory: no readable config.yaml, train_log.jsonl records, "
                                     "eval/*.json or summary.json"))
            continue
        runs.append(run)
    return runs, skipped


def _method_from_config(text: str) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    m = data.get("method") if isinstance(data, dict) else None
    name = m.get("name") if isinstance(m, dict) else m
    return name if isinstance(name, str) else None


def unique_names(paths: list[Path]) -> list[str]:
    """Short, distinct labels: the directory name, with parents added until they differ."""
    paths = [Path(p).resolve() for p in paths]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > max(len(p.parts) for p in paths):
            return names
        depth += 1


def is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
