"""Gradient difference (GradDiff): ascend on forget, descend on retain.

Liu et al. 2022 ("Continual learning and private unlearning"); TOFU's ``grad_diff``:
loss = -gamma * NLL(forget) + alpha * R(retain), with R the retain NLL or the token KL to the
frozen reference (``retain_loss: kl``, which declares the reference model). Defaults
gamma = alpha = 1 as in open-unlearning's GradDiff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import nll
from .retain import RetainLoss, retain_loss
from .tokens import token_scope


@dataclass(frozen=True)
class GradDiffConfig:
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget (ascent) term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        if self.gamma < 0 or self.alpha < 0:
            raise ConfigError(f"graddiff: gamma and alpha must be >= 0, got gamma={self.gamma}, alpha={self.alpha}.")


class GradDiff:
    name: ClassVar[str] = "graddiff"

    def __init__(self, config: GradDiffConfig | None = None):
        self.config = config or GradDiffConfig()
        self.needs = Needs(retain=True, reference=self.config.retain_loss == "kl")

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        logits = forward(model, batch.forget).logits
        with token_scope("forget"):
            forget_nll = nll(logits, batch.forget["labels"])
        r = retain_loss(model, batch.retain, c.retain_loss, aux)
        loss = -c.gamma * forget_nll + c.alpha * r
        return LossOutput(loss=loss, metrics={"forget_nll": forget_nll.item(), f"retain_{c.retain_loss}": r.item()})
