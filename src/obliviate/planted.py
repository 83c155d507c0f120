"""Planting knowledge to unlearn: fine-tune a model on generated facts, cached by content.

``planted_model(base, facts, ...)`` returns the path of a model directory that has memorised
``facts`` (QA records). The result is cached under ``$OBLIVIATE_CACHE/planted/<key>``, keyed by
the base model, the facts and the training settings, and written atomically, so the demo and
the tests pay for planting once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from .api import finetune
from .io import atomic_path
from .models import cache_dir, load_model, save_model

log = logging.getLogger(__name__)


def planted_model(base: str, facts: list[dict[str, Any]], steps: int = 24, lr: float = 2e-4, batch_size: int = 8,
                  seed: int = 0, progress: bool = True) -> Path:
    """Fine-tune ``base`` on ``facts`` (answer-token NLL) and cache the result; return its directory."""
    key = hashlib.sha256(json.dumps([base, facts, steps, lr, batch_size, seed], sort_keys=True).encode()).hexdigest()[:16]
    target = cache_dir() / "planted" / key
    if (target / "config.json").is_file():
        return target
    log.warning("Planting %d facts into %s (%d steps, cached afterwards in %s)", len(facts), base, steps, target)
    model, tok = load_model(base)
    finetune(model, tok, facts, max_steps=steps, lr=lr, batch_size=batch_size, warmup_steps=2, scheduler="constant",
             seed=seed, max_grad_norm=1.0, progress=progress)
    with atomic_path(target, is_dir=True) as tmp:
        save_model(model, tok, tmp)
        (tmp / "facts.json").write_text(json.dumps(facts, indent=1))
    return target
