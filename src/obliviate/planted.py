"""Planting knowledge to unlearn: fine-tune a model on records, cached by content.

``finetuned_model(base, records, options, kind)`` returns the path of a model directory fine-tuned
on ``records`` with ``obliviate.finetune`` ``options``, cached under ``$OBLIVIATE_CACHE/<kind>/<key>``
(keyed by the base model's fingerprint, the records and the options; written atomically; an
interrupted fine-tune resumes). ``planted_model(base, facts, ...)`` is the demo's and the tests'
short recipe on generated facts; the TOFU bench's target and retain models use the same cache.
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
    options = dict(max_steps=steps, lr=lr, batch_size=batch_size, warmup_steps=2, scheduler="constant", seed=seed,
                   max_grad_norm=1.0)
    return finetuned_model(base, facts, options, kind="planted", progress=progress)


def model_fingerprint(base: str) -> list:
    """What identifies ``base``: the name, plus for a directory its config and weight files' sizes and mtimes."""
    p = Path(base)
    if not p.is_dir():
        return [base]
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".json") and f.is_file())
    return [str(p.resolve())] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def finetuned_model(base: str, records: list[dict[str, Any]], options: dict[str, Any], kind: str = "finetuned",
                    progress: bool = True) -> Path:
    """Fine-tune ``base`` on ``records`` with ``obliviate.finetune`` ``options`` and cache the result.

    The cache key is (base fingerprint, records, options); the result lives under
    ``$OBLIVIATE_CACHE/<kind>/<key>`` and is written atomically. An interrupted fine-tune resumes
    from its newest checkpoint (``<key>.run/``) the next time it is asked for.
    """
    key = hashlib.sha256(json.dumps([model_fingerprint(base), records, options], sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = cache_dir() / kind / key
    if (target / "config.json").is_file():
        return target
    run = cache_dir() / kind / f"{key}.run"
    resume = any((run / "checkpoints").glob("*")) if (run / "checkpoints").is_dir() else False
    log.warning("Fine-tuning %s on %d records for the %s model (cached afterwards in %s%s)", base, len(records), kind,
                target, "; resuming" if resume else "")
    model, tok = load_model(base)
    finetune(model, tok, records, run_dir=run, overwrite=not resume, resume=resume, save=False, progress=progress,
             checkpoint_every=50, keep_checkpoints=1, **options)
    with atomic_path(target, is_dir=True) as tmp:
        save_model(model, tok, tmp)
        (tmp / "finetune.json").write_text(json.dumps({"base": base, "options": options}, indent=1))
        (tmp / "records.json").write_text(json.dumps(records, indent=1))
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    return target
