"""The demo's evaluation of one model: forget/kept answer probability (TOFU Q_A_Prob)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .eval import answer_prob


def evaluate_demo(model, tok, forget, kept, holdout, original, run_dir: Path) -> dict[str, Any]:
    return {
        "forget_prob": answer_prob(model, tok, forget).mean().item(),
        "kept_prob": answer_prob(model, tok, kept).mean().item(),
    }
