"""Run a suite of knowledge-recovery attacks and build the robustness table.

    from obliviate.attacks import AttackSuiteConfig, run_attacks, write_table
    rows = run_attacks(unlearned, tok, original, forget, AttackSuiteConfig(suite=("relearn", "quant")))
    write_table(rows, "runs/npo")   # runs/npo/attacks.json and runs/npo/attacks.md

Rows: one per attack (variant); columns: the metric, the original model's value, the unlearned
model's value before the attack, after it, and recovery % = 100 (after - before) / (original -
before) (see ``common.recovery``; blank when unlearning moved the metric by 0.02 or less, and for the probe row, whose before/after are different measurements).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.encode import EncodeConfig
from ..errors import ConfigError
from ..io import write_json, write_text
from .common import AttackResult
from .probe import ProbeConfig, probe_attacks
from .prompts import PromptConfig, prompt_attacks
from .quantize import INT4, INT8, QuantConfig, quant_attack
from .relearn import RelearnConfig, relearn_attack

SUITES = ("relearn", "quant", "probe", "prompt")


@dataclass(frozen=True)
class AttackSuiteConfig:
    """Which attacks to run and how; every attack is seeded."""

    suite: tuple[str, ...] = field(default=SUITES, metadata={"help": f"Attacks to run, from {', '.join(SUITES)}."})
    relearn: RelearnConfig = field(default_factory=RelearnConfig, metadata={"help": "Relearning attack settings."})
    quant: tuple[QuantConfig, ...] = field(default=(INT8, INT4), metadata={"help": "Quantisation schemes (default: int8 per-channel symmetric, int4 group-64 asymmetric)."})
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata={"help": "Logit lens / linear probe settings."})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "Prompt-attack templates."})
    seed: int = field(default=0, metadata={"help": "Global torch seed set before each attack."})

    def __post_init__(self):
        bad = [s for s in self.suite if s not in SUITES]
        if bad or not self.suite:
            raise ConfigError(f"'attack.suite' has unknown or no attacks {bad}; choose from {', '.join(SUITES)}.")


def run_attacks(model, tokenizer, original, forget: list[dict[str, Any]], cfg: AttackSuiteConfig = AttackSuiteConfig(),
                encode: EncodeConfig | None = None) -> list[AttackResult]:
    """Run every attack of ``cfg.suite`` against ``model`` (the unlearned one; never modified)."""
    rows: list[AttackResult] = []
    for name in cfg.suite:
        torch.manual_seed(cfg.seed)
        t0 = time.time()
        if name == "relearn":
            new = [relearn_attack(model, tokenizer, original, forget, cfg.relearn, encode)]
        elif name == "quant":
            new = [quant_attack(model, tokenizer, original, forget, q, encode) for q in cfg.quant]
        elif name == "probe":
            new = probe_attacks(model, tokenizer, original, forget, cfg.probe, encode)
        else:
            new = prompt_attacks(model, tokenizer, original, forget, cfg.prompt, encode)
        for r in new:
            r.details["seconds"] = round(time.time() - t0, 2)
        rows.extend(new)
    return rows


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:.3f}"


def markdown_table(rows: list[AttackResult], title: str | None = None) -> str:
    """The robustness table as Markdown."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| attack | metric | original | unlearned | after attack | recovery |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.attack} | {r.metric} | {_fmt(r.original)} | {_fmt(r.before)} | {_fmt(r.after)} | {_fmt(r.recovery, True)} |")
    return "\n".join(lines) + "\n"


def write_table(rows: list[AttackResult], run_dir: str | Path, meta: dict[str, Any] | None = None,
                title: str | None = None) -> Path:
    """Write ``<run_dir>/attacks.json`` (rows with details) and ``<run_dir>/attacks.md``; return the JSON path."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "attacks.json", {"meta": meta or {}, "rows": [r.to_dict() for r in rows]})
    write_text(out / "attacks.md", markdown_table(rows, title))
    return out / "attacks.json"
