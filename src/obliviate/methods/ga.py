"""Gradient ascent (GA): maximise the forget set's NLL.

The oldest unlearning baseline (Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy
Risks in LMs"; TOFU's ``grad_ascent``): loss = -NLL(forget), token-averaged over answer tokens.
Unbounded below, so it eventually collapses the model; use few steps and a small lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import ga_loss
from .tokens import token_scope


@dataclass(frozen=True)
class GAConfig:
    """Gradient ascent has no hyper-parameters of its own (lr and steps live in ``train``)."""


class GA:
    name: ClassVar[str] = "ga"

    def __init__(self, config: GAConfig | None = None):
        self.config = config or GAConfig()
        self.needs = Needs()

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        logits = forward(model, batch.forget).logits
        with token_scope("forget"):
            loss = ga_loss(logits, batch.forget["labels"])
        return LossOutput(loss=loss, metrics={"forget_nll": -loss.item()})
