"""The on-disk format of evaluation results (read by reports, written by ``obliviate.evaluate``).

A suite result is ``<run_dir>/eval/<suite>.json``::

    {"suite": str, "model": str,
     "summary": {metric_name: {"value": float, "higher_is_better": bool, "description": str}},
     "items": {metric_name: [per-item floats]},
     "meta": {...}}

``MetricResult`` is one summary entry with its name. ``SuiteResult`` gathers them; ``save`` writes
atomically (``obliviate.io.write_json``) and ``load_suite`` reads and validates a file.
NaN/inf values are written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import write_json


@dataclass(frozen=True)
class MetricResult:
    """One summary number and which direction is better (reports colour by it)."""

    name: str
    value: float
    higher_is_better: bool
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _num(self.value), "higher_is_better": self.higher_is_better,
                "description": self.description}


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class SuiteResult:
    """A suite's summary metrics, per-item values and free-form metadata."""

    suite: str
    model: str
    summary: dict[str, MetricResult] = field(default_factory=dict)
    items: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, higher_is_better: bool, description: str = "",
            items: Any = None) -> MetricResult:
        """Record a summary metric (and optionally its per-item values)."""
        m = MetricResult(name, float(value), higher_is_better, description)
        self.summary[name] = m
        if items is not None:
            self.add_items(name, items)
        return m

    def add_items(self, name: str, values: Any) -> None:
        if hasattr(values, "tolist"):
            values = values.tolist()
        self.items[name] = [_num(v) for v in values]

    def value(self, name: str) -> float:
        return self.summary[name].value

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "model": self.model,
            "summary": {k: {"value": _num(m.value), "higher_is_better": m.higher_is_better, "description": m.description}
                        for k, m in self.summary.items()},
            "items": self.items,
            "meta": self.meta,
        }

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``<run_dir>/eval/<suite>.json`` atomically; returns the path."""
        path = suite_path(run_dir, self.suite)
        write_json(path, self.to_dict())
        return path


def suite_path(run_dir: str | os.PathLike, suite: str) -> Path:
    return Path(run_dir) / "eval" / f"{suite}.json"


def from_dict(d: dict[str, Any], where: str = "result") -> SuiteResult:
    for key in ("suite", "summary"):
        if key not in d:
            raise DataError(f"{where}: not an eval result (no '{key}' field); expected the format of obliviate.eval.results.")
    summary = {}
    for k, v in d["summary"].items():
        val = v.get("value")
        summary[k] = MetricResult(k, float("nan") if val is None else float(val), bool(v.get("higher_is_better", True)),
                                  v.get("description", ""))
    items = {k: [float("nan") if x is None else float(x) for x in vals] for k, vals in d.get("items", {}).items()}
    return SuiteResult(d["suite"], d.get("model", ""), summary, items, dict(d.get("meta", {})))


def load_suite(path_or_run_dir: str | os.PathLike, suite: str | None = None) -> SuiteResult:
    """Read a suite JSON, given its path or (``run_dir``, ``suite``)."""
    p = suite_path(path_or_run_dir, suite) if suite is not None else Path(path_or_run_dir)
    if not p.is_file():
        raise DataError(f"Eval result '{p}' does not exist; run `obliviate eval` for that model first.")
    # a run's own result (run_dir, suite) is reused unless forced: say how to replace a broken one
    fix = " Re-run the suite to replace it: `obliviate eval ... --force` (Python: force=True)." if suite is not None else ""
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise DataError(f"{p}: holds a {type(d).__name__}, not an eval result.")
        return from_dict(d, str(p))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({getattr(e, 'msg', None) or e.reason}).{fix}") from None
    except DataError as e:
        raise DataError(f"{e}{fix}") from None
    except (AttributeError, TypeError, ValueError) as e:  # a field of the wrong type
        raise DataError(f"{p}: not an eval result ({e}).{fix}") from None
