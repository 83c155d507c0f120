"""Relearning attack: fine-tune the unlearned model briefly on part of the forget set.

Following the relearning attacks of Lynch et al. 2024 ("Eight methods to evaluate robust
unlearning in LLMs", arXiv 2402.16835) and Hu et al. 2024 ("Jogging the memory of unlearned
LLMs through targeted relearning attacks", arXiv 2406.13356): the forget set is split with a
seeded shuffle into a *relearn* slice (``fraction`` of it) and a *held-out* rest; a copy of
the unlearned model is fine-tuned for ``steps`` optimizer steps on the slice (answer-token NLL,
through ``obliviate.api.finetune``, i.e. the same engine as unlearning) and the forget metric
is measured on the held-out rest only. Knowledge that comes back on facts never shown during
relearning was hidden, not removed.

Caveat (documented, not corrected): relearning also repairs damage that unlearning did to the
model's fluency in general, which raises answer probabilities on any QA data; compare with the
retain metrics, or rerun the attack on a model that never saw the facts as a control.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from ..data.encode import EncodeConfig
from ..errors import ConfigError
from .common import AttackResult, forget_metric


@dataclass(frozen=True)
class RelearnConfig:
    """Budget and split of the relearning attack."""

    fraction: float = field(default=0.5, metadata={"help": "Share of the forget set used for relearning; the rest is evaluated."})
    steps: int = field(default=10, metadata={"help": "Optimizer steps of fine-tuning."})
    lr: float = field(default=1e-4, metadata={"help": "Learning rate (AdamW, constant after 1 warmup step)."})
    batch_size: int = field(default=4, metadata={"help": "Relearning examples per step."})
    group_by: str | None = field(default=None, metadata={"help": "Record field to split by (e.g. 'person': relearn on some people, evaluate on others); None: split records."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and of the fine-tuning run."})

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ConfigError(f"'relearn.fraction' must be in (0, 1), got {self.fraction}.")
        for k in ("steps", "batch_size"):
            if getattr(self, k) < 1:
                raise ConfigError(f"'relearn.{k}' must be >= 1, got {getattr(self, k)}.")
        if not self.lr > 0:
            raise ConfigError(f"'relearn.lr' must be > 0, got {self.lr}.")


def split_forget(records: list[dict[str, Any]], cfg: RelearnConfig) -> tuple[list[dict], list[dict]]:
    """Seeded split into (relearn slice, held-out rest); both non-empty."""
    if len(records) < 2:
        raise ConfigError(f"The relearning attack needs at least 2 forget records (one to relearn, one to test); got {len(records)}.")
    if cfg.group_by is None:
        keys = list(range(len(records)))
    else:
        missing = [i for i, r in enumerate(records) if cfg.group_by not in r]
        if missing:
            raise ConfigError(f"'relearn.group_by' is '{cfg.group_by}' but record {missing[0]} has no such field.")
        keys = list(dict.fromkeys(str(r[cfg.group_by]) for r in records))
        if len(keys) < 2:
            raise ConfigError(f"'relearn.group_by' = '{cfg.group_by}' gives a single group; split by records (null) instead.")
    random.Random(cfg.seed).shuffle(keys)
    k = min(len(keys) - 1, max(1, round(cfg.fraction * len(keys))))
    chosen = set(keys[:k])
    key_of = (lambda i, r: i) if cfg.group_by is None else (lambda i, r: str(r[cfg.group_by]))
    train = [r for i, r in enumerate(records) if key_of(i, r) in chosen]
    held = [r for i, r in enumerate(records) if key_of(i, r) not in chosen]
    return train, held


def relearn_attack(model, tokenizer, original, forget: list[dict[str, Any]], cfg: RelearnConfig = RelearnConfig(),
                   encode: EncodeConfig | None = None) -> AttackResult:
    """Fine-tune a copy of ``model`` on a slice of ``forget``; Q_A_Prob on the held-out rest."""
    from ..api import finetune

    train, held = split_forget(forget, cfg)
    before = forget_metric(model, tokenizer, held, encode)
    orig = forget_metric(original, tokenizer, held, encode)
    attacked = copy.deepcopy(model)
    enc = {} if encode is None else {"max_length": encode.max_length, "template": encode.template, "system_prompt": encode.system_prompt}
    result = finetune(attacked, tokenizer, train, save=False, max_steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                      warmup_steps=1, scheduler="constant", seed=cfg.seed, max_grad_norm=1.0, progress=False, **enc)
    after = forget_metric(result.model, tokenizer, held, encode)
    relearned = forget_metric(result.model, tokenizer, train, encode)
    return AttackResult(
        attack="relearn", metric="Q_A_Prob (held-out forget)", before=before, after=after, original=orig,
        details={"n_relearn": len(train), "n_heldout": len(held), "steps": cfg.steps, "lr": cfg.lr,
                 "relearn_slice_after": relearned, "change": after - before},
    )
