"""SatImp: saturation- and importance-weighted gradient ascent (Yang et al. 2025, "Exploring Criteria
of Loss Reweighting to Enhance LLM Unlearning", arXiv 2505.11953).

Per-token ascent on the forget answers weighted by w_t = p_t^beta1 (1 - p_t)^beta2 of the model's
detached token probability p_t, ``losses.satimp_loss``: the saturation factor p^beta1 stops the
ascent on tokens already unlikely (as WGA), the importance factor (1 - p)^beta2 puts it on
tokens the model is not yet certain of. Total loss gamma * forget + alpha * retain.

Matches open-unlearning's ``SatImp`` (``trainer/utils.py: compute_satimp_loss``). Defaults from its
``configs/trainer/SatImp.yaml`` (what its runs use): beta1 = 5, beta2 = 1, gamma (forget weight)
0.1, alpha (retain weight) 1, retain NLL; the class's own constructor defaults have gamma and alpha
the other way round (1 and 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import nll, satimp_loss
from .retain import RetainLoss, with_retain
from .tokens import token_scope


@dataclass(frozen=True)
class SatImpConfig:
    beta1: float = field(default=5.0, metadata={"help": "Exponent of the saturation weight p^beta1."})
    beta2: float = field(default=1.0, metadata={"help": "Exponent of the importance weight (1 - p)^beta2."})
    gamma: float = field(default=0.1, metadata={"help": "Weight of the weighted-ascent forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it and the retain data)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        if not all(v >= 0 for v in (self.beta1, self.beta2, self.gamma, self.alpha)):
            raise ConfigError(f"satimp: beta1, beta2, gamma and alpha must be >= 0, got {self}.")


class SatImp:
    name: ClassVar[str] = "satimp"

    def __init__(self, config: SatImpConfig | None = None):
        self.config = c = config or SatImpConfig()
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl")

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c, f = self.config, batch.forget
        logits = forward(model, f).logits
        with token_scope("forget"):
            forget = satimp_loss(logits, f["labels"], c.beta1, c.beta2)
            metrics = {"satimp": forget.item(), "forget_nll": nll(logits.detach(), f["labels"]).item()}
        loss = with_retain(forget, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
