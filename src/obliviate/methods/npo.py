"""Negative Preference Optimization (NPO; Zhang, Lin, Bai, Mei 2024, arXiv 2404.05868).

Forget term (eq. 3): -(2/beta) E_f log sigmoid(-beta [log pi_theta(y|x) - log pi_ref(y|x)]) with
sequence-summed answer log-probs and beta = 0.1; plus ``alpha`` times a retain term (NLL, or KL
to the reference), as in the paper's NPO+RT and open-unlearning's NPO (gamma = alpha = 1).
The bounded loss makes the ascent slow down as pi_theta(y|x) falls, unlike GA.

log pi_ref(y|x) never changes during a run, so NPO declares ``reference_forget_logprob`` and the
engine computes it once for every forget example before the first step: no reference model is
kept in memory and no reference forward runs per step (open-unlearning runs one every step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import npo_loss, sequence_logprob
from .retain import RetainLoss, with_retain


@dataclass(frozen=True)
class NPOConfig:
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature beta of the NPO loss."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the NPO forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it and the retain data)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        if self.beta <= 0:
            raise ConfigError(f"npo.beta must be > 0, got {self.beta}.")
        if self.alpha < 0 or self.gamma < 0:
            raise ConfigError(f"npo: alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}.")


class NPO:
    name: ClassVar[str] = "npo"

    def __init__(self, config: NPOConfig | None = None):
        self.config = config or NPOConfig()
        c = self.config
        self.needs = Needs(
            retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl", reference_forget_logprob=True
        )

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        assert aux.ref_forget_logprob is not None, "NPO declares reference_forget_logprob"
        logp = sequence_logprob(forward(model, batch.forget).logits, batch.forget["labels"])
        forget = npo_loss(logp, aux.ref_forget_logprob.to(logp.device), c.beta)
        metrics = {"npo": forget.item(), "forget_logratio": (logp - aux.ref_forget_logprob.to(logp.device)).mean().item()}
        loss = with_retain(forget, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
