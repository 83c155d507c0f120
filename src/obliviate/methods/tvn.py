"""Task-vector negation (TVN; Ilharco et al. 2023, "Editing models with task arithmetic", Sec. 3).

Fine-tune on the forget data (plain answer-token NLL) to get theta_ft, then return
theta = theta_0 - lambda * (theta_ft - theta_0): the forget task vector is subtracted. SPUNGE
(Kadhe et al. 2024) uses TVN as one of its two base methods.

The training phase is ordinary SFT run by the engine; the negation is ``finalize``, which the
engine calls once at the end of ``train()`` with the starting values of the trainable parameters
(captured before any step or resumed checkpoint). With LoRA the negation is applied in delta
space: B <- -lambda * B_ft and A kept (so B A = -lambda * B_ft A_ft; negating A and B separately
would not negate their product).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import nll
from .tokens import token_scope


@dataclass(frozen=True)
class TVNConfig:
    lam: float = field(default=1.0, metadata={"help": "lambda in theta_0 - lambda * (theta_ft - theta_0)."})

    def __post_init__(self):
        if not self.lam > 0:
            raise ConfigError(f"tvn.lam must be > 0, got {self.lam}.")


class TVN:
    name: ClassVar[str] = "tvn"

    def __init__(self, config: TVNConfig | None = None):
        self.config = config or TVNConfig()
        self.needs = Needs()

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        logits = forward(model, batch.forget).logits
        with token_scope("forget"):
            loss = nll(logits, batch.forget["labels"])
        return LossOutput(loss=loss, metrics={"forget_nll": loss.item()})

    @torch.no_grad()
    def finalize(self, model: torch.nn.Module, initial: dict[str, torch.Tensor]) -> None:
        """Replace each trainable parameter theta_ft by theta_0 - lambda * (theta_ft - theta_0), in place."""
        lam = self.config.lam
        for name, p in model.named_parameters():
            if name not in initial:
                continue
            if ".lora_A." in name:
                continue  # keep A_ft; B carries the negation
            theta0 = initial[name].to(p.device, torch.float32)
            p.copy_((theta0 - lam * (p.float() - theta0)).to(p.dtype))
