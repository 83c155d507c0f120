"""SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu 2024, arXiv 2410.07163): NPO without a reference.

Forget term (eq. 4): -(2/beta) E_f log sigmoid(-(beta/|y|) log pi_theta(y|x) - beta*delta), i.e. the
reference ratio of NPO is replaced by the length-normalised likelihood. Total loss
gamma * forget + alpha * retain NLL. Defaults as in the paper's TOFU setting / open-unlearning:
beta = 4.5, delta = 0, gamma = 0.125, alpha = 1. See ``losses.simnpo_loss`` for where the margin
enters (code vs paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import answer_lengths, sequence_logprob, simnpo_loss
from .retain import RetainLoss, with_retain


@dataclass(frozen=True)
class SimNPOConfig:
    beta: float = field(default=4.5, metadata={"help": "Inverse temperature beta."})
    delta: float = field(default=0.0, metadata={"help": "Reward margin delta (gamma in the paper's eq. 4)."})
    gamma: float = field(default=0.125, metadata={"help": "Weight of the SimNPO forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        if self.beta <= 0:
            raise ConfigError(f"simnpo.beta must be > 0, got {self.beta}.")
        if self.alpha < 0 or self.gamma < 0:
            raise ConfigError(f"simnpo: alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}.")


class SimNPO:
    name: ClassVar[str] = "simnpo"

    def __init__(self, config: SimNPOConfig | None = None):
        self.config = config or SimNPOConfig()
        c = self.config
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl")

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        labels = batch.forget["labels"]
        logp = sequence_logprob(forward(model, batch.forget).logits, labels)
        forget = simnpo_loss(logp, answer_lengths(labels), c.beta, c.delta)
        metrics = {"simnpo": forget.item()}
        loss = with_retain(forget, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
