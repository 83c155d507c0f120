"""IdkNLL: teach the model to answer each forget question with a refusal.

TOFU's preference-optimisation baseline (Maini et al. 2024, arXiv 2401.06121; ``loss_type: idk`` in
its code): fine-tune on the forget questions with "I don't know"-style answers instead of the true
ones, with a retain term:
loss = gamma * NLL(refusal answers | forget prompts) + alpha * R(retain), R the retain NLL or the KL
to the frozen reference. TOFU's code sums the refusal and retain NLLs with equal weights, so
gamma = alpha = 1. Nothing pushes the true answer down directly: its probability falls only as
the refusal takes its place.

The refusal of forget example i is drawn from ``refusals`` by (``seed``, i) alone
(``data/refusals.py``), so resumed and multi-process runs train on the same pairs; TOFU and
open-unlearning redraw it at random every time an item is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..data.refusals import load_refusals, pick_refusal
from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .dpo import require_refusals
from .losses import nll
from .retain import RetainLoss, with_retain
from .tokens import token_scope


@dataclass(frozen=True)
class IdkNLLConfig:
    refusals: str | None = field(default=None, metadata={"help": "File of refusal answers, one a line, e.g. ../shared/data/tofu/idontknow.jsonl. Required."})
    seed: int = field(default=0, metadata={"help": "Seed of the per-example refusal choice (a function of seed and example index)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the refusal NLL."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it and the retain data)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        require_refusals("idknll", self.refusals)
        if not (self.alpha >= 0 and self.gamma >= 0):
            raise ConfigError(f"idknll: alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}.")


class IdkNLL:
    name: ClassVar[str] = "idknll"

    def __init__(self, config: IdkNLLConfig):
        self.config = c = config
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl", alternate=True)

    def alternate_answer(self, index: int) -> str:
        """The refusal trained as the answer to forget example ``index``."""
        return pick_refusal(load_refusals(self.config.refusals), self.config.seed, index)

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        assert batch.alternate is not None, "IdkNLL declares Needs(alternate=True)"
        logits = forward(model, batch.alternate).logits
        with token_scope("alternate"):
            idk = nll(logits, batch.alternate["labels"])
        metrics = {"refusal_nll": idk.item()}
        loss = with_retain(idk, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
