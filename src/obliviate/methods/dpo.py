"""DPO for unlearning, registered as ``dpo`` with the alias ``idkdpo``: prefer a refusal over the
forget answer.

Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) with the forget answer as
the rejected response and an "I don't know" answer as the chosen one: the DPO baseline of the NPO
paper (Zhang et al. 2024, arXiv 2404.05868, Sec. 3), built on TOFU's refusal answers
(Maini et al. 2024, arXiv 2401.06121). Loss ``losses.dpo_loss`` times ``gamma`` plus ``alpha`` times
a retain term (NLL, or KL to the reference) as in GradDiff; open-unlearning's ``DPO`` trainer
(``trainer/unlearn/dpo.py``) is the same GradDiff-style sum.

Where this differs from open-unlearning:

- the reference log-probs of both responses never change during a run, so they are computed once
  before the first step and cached (``Needs.reference_forget_logprob`` + ``alternate``), like NPO's;
  open-unlearning runs two reference forwards every step;
- the refusal of each forget example is drawn from ``refusals`` by (``seed``, example index) alone
  (``data/refusals.py``), so resumed and multi-process runs see the same pairs; open-unlearning
  redraws it with the global RNG every time an item is fetched.

Defaults: beta 0.1 (the issue's choice and the NPO paper's DPO setting; open-unlearning's
constructor default is 1.0), gamma = alpha = 1 (GradDiff's, as open-unlearning). ``refusals`` has
no default: give TOFU's ``idontknow.jsonl`` or any file with one refusal a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..data.refusals import load_refusals, pick_refusal
from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import dpo_loss, sequence_logprob
from .retain import RetainLoss, with_retain


def require_refusals(where: str, path: str | None) -> None:
    """Refusal-based methods need a refusal file; say which and where to find TOFU's."""
    if path is None or not str(path).strip():
        raise ConfigError(f"'{where}.refusals' is required: a file of refusal answers, one a line, e.g. TOFU's "
                          f"../shared/data/tofu/idontknow.jsonl (set method.refusals in the run config).")


@dataclass(frozen=True)
class DPOConfig:
    refusals: str | None = field(default=None, metadata={"help": "File of refusal answers (the preferred responses), one a line, e.g. ../shared/data/tofu/idontknow.jsonl. Required."})
    seed: int = field(default=0, metadata={"help": "Seed of the per-example refusal choice (a function of seed and example index)."})
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature beta of the DPO loss."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the DPO forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (0 disables it and the retain data)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "'nll' on retain answers, or 'kl' to the frozen reference."})

    def __post_init__(self):
        require_refusals("dpo", self.refusals)
        if not self.beta > 0:
            raise ConfigError(f"'dpo.beta' must be > 0, got {self.beta}.")
        if not (self.alpha >= 0 and self.gamma >= 0):
            raise ConfigError(f"dpo: alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}.")


class DPO:
    name: ClassVar[str] = "dpo"

    def __init__(self, config: DPOConfig):
        self.config = c = config
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 and c.retain_loss == "kl",
                           reference_forget_logprob=True, alternate=True)

    def alternate_answer(self, index: int) -> str:
        """The refusal paired with forget example ``index`` (the chosen response)."""
        return pick_refusal(load_refusals(self.config.refusals), self.config.seed, index)

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        assert batch.alternate is not None and aux.ref_alternate_logprob is not None, "DPO declares Needs.alternate"
        assert aux.ref_forget_logprob is not None, "DPO declares Needs.reference_forget_logprob"
        rejected = sequence_logprob(forward(model, batch.forget).logits, batch.forget["labels"])
        chosen = sequence_logprob(forward(model, batch.alternate).logits, batch.alternate["labels"])
        ref_r = aux.ref_forget_logprob.to(rejected.device)
        ref_c = aux.ref_alternate_logprob.to(chosen.device)
        forget = dpo_loss(chosen, ref_c, rejected, ref_r, c.beta)
        metrics = {"dpo": forget.item(), "forget_logratio": (rejected - ref_r).mean().item(),
                   "refusal_logratio": (chosen - ref_c).mean().item()}
        loss = with_retain(forget, c.gamma, c.alpha, c.retain_loss, model, batch, aux, metrics)
        return LossOutput(loss=loss, metrics=metrics)
