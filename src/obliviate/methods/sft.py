"""Plain supervised fine-tuning (NLL on the primary data): ``obliviate finetune``.

Used to plant knowledge before unlearning it (e.g. TOFU ``full``), and as the baseline step in
``benchmarks/step_cost.py``. Through the same engine as every unlearning method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import nll
from .tokens import token_scope


@dataclass(frozen=True)
class SFTConfig:
    """Fine-tuning has no hyper-parameters of its own (lr and steps live in ``train``)."""


class SFT:
    name: ClassVar[str] = "sft"

    def __init__(self, config: SFTConfig | None = None):
        self.config = config or SFTConfig()
        self.needs = Needs()

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        logits = forward(model, batch.forget).logits
        with token_scope("forget"):
            loss = nll(logits, batch.forget["labels"])
        return LossOutput(loss=loss, metrics={"nll": loss.item()})
