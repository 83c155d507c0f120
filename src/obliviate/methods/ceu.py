"""CE-U: cross-entropy unlearning (B. Yang 2025, "CE-U: Cross Entropy Unlearning", arXiv 2503.01224).

For each forget answer token, the target is the model's own (detached) next-token distribution
with the true token's logit set to -inf, and the loss is the cross-entropy to it,
``losses.ceu_loss``. Its gradient on the true token's logit is p(y_t) (pushed down only, and
gently once it is unlikely: no exploding ascent), and on every other logit p - q, towards the
model's renormalised alternatives. No reference model and no refusal data.

Matches open-unlearning's ``CEU`` (``trainer/unlearn/ceu.py``) except where noted in
``losses.ceu_loss`` (the token mean's denominator counts all answer tokens). Defaults: the first
answer token is ignored (``ignore_first: 1``, the paper's footnote in Training Settings and the
reference default); no retain term (``alpha: 0``, as the paper and the reference), though one can
be added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import ceu_loss, nll
from .retain import RetainLoss, with_retain
from .tokens import token_scope


@dataclass(frozen=True)
class CEUConfig:
    ignore_first: int = field(default=1, metadata={"help": "Leading answer tokens of each sequence that carry no loss."})
    alpha: float = field(default=0.0, metadata={"help": "Weight of an optional retain term (0: none, as the paper)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "Retain term: 'nll' on retain answers or 'kl' to the frozen reference."})

    def __post_init__(self):
        if self.ignore_first < 0:
            raise ConfigError(f"'ceu.ignore_first' must be >= 0, got {self.ignore_first}.")
        if not self.alpha >= 0:
            raise ConfigError(f"'ceu.alpha' must be >= 0, got {self.alpha}.")


class CEU:
    name: ClassVar[str] = "ceu"

    def __init__(self, config: CEUConfig | None = None):
        self.config = c = config or CEUConfig()
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl")

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c, f = self.config, batch.forget
        logits = forward(model, f).logits
        with token_scope("forget"):
            forget = ceu_loss(logits, f["labels"], c.ignore_first)
            metrics = {"ceu": forget.item(), "forget_nll": nll(logits.detach(), f["labels"]).item()}
        loss = with_retain(forget, 1.0, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
