"""Weighted gradient ascent (WGA; Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", arXiv 2502.19301).

Per-token ascent on the forget answers weighted by the model's own detached token probability to
the power beta, ``losses.wga_loss``: w_t = p(y_t|y_<t)^beta, so tokens the model already finds
unlikely get little further ascent (GA weighs every token alike and keeps pushing those, which
is what drives it to collapse). beta = 0 is GA. Total loss gamma * forget + alpha * retain (NLL or KL
to the reference).

Matches open-unlearning's ``WGA`` (``trainer/utils.py: compute_wga_loss``) and its
``configs/trainer/WGA.yaml`` defaults: beta = 1, gamma = 1, alpha = 1, retain NLL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import nll, wga_loss
from .retain import RetainLoss, with_retain
from .tokens import token_scope


@dataclass(frozen=True)
class WGAConfig:
    beta: float = field(default=1.0, metadata={"help": "Exponent of the token-probability weight p^beta (0: plain GA)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the weighted-ascent forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it and the retain data)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        if not (self.beta >= 0 and self.alpha >= 0 and self.gamma >= 0):
            raise ConfigError(f"wga: beta, alpha and gamma must be >= 0, got beta={self.beta}, alpha={self.alpha}, "
                              f"gamma={self.gamma}.")


class WGA:
    name: ClassVar[str] = "wga"

    def __init__(self, config: WGAConfig | None = None):
        self.config = c = config or WGAConfig()
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl")

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c, f = self.config, batch.forget
        logits = forward(model, f).logits
        with token_scope("forget"):
            forget = wga_loss(logits, f["labels"], c.beta)
            metrics = {"wga": forget.item(), "forget_nll": nll(logits.detach(), f["labels"]).item()}
        loss = with_retain(forget, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
