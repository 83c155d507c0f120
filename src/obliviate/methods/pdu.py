"""Primal-dual unlearning (PDU; Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab 2025, "Constrained
Entropic Unlearning: A Primal-Dual Framework for Large Language Models", arXiv 2506.05314).

Unlearning as a constrained problem: minimise the forget loss subject to R(retain) <= epsilon, via
the Lagrangian gamma * L_F + lambda * (R - epsilon) with lambda >= 0:

- primal: each step descends on the Lagrangian with the current lambda (the loss below);
- dual: after each optimizer step (past ``dual_warmup_steps``), lambda <- max(0, lambda +
  dual_step_size * (mean R over the last ``dual_every`` steps - epsilon)): it grows while the
  retain loss exceeds its bound and shrinks (to 0 at most) while the bound holds.

L_F is the logit-margin flattening loss ``losses.logit_margin_loss``, (max_v z - mean_v z)^2 on the
forget answer positions, which drives the output distribution to uniform; R is the retain NLL (or
KL to the reference).

Follows open-unlearning's ``PDU`` (``trainer/unlearn/pdu.py``) and its defaults (the GradDiff
weights gamma = 1 and lambda_0 = ``alpha`` = 1, ``dual_step_size`` 1, no warm-up), except:

- ``epsilon`` is required: the reference defaults it to 0 (and its dual update to off), and a bound
  no model reaches only makes lambda grow; its README: choose epsilon somewhat above the starting
  model's retain loss and, as the forget loss is large, an initial lambda of 50-100;
- the dual update is always on (``dual_step_size: 0`` keeps lambda fixed: GradDiff-like weights);
- warm-up and update interval are counted in optimizer steps (the reference: ``dual_warmup_epochs``,
  ``dual_update_upon: step | epoch``); an epoch-wise update is ``dual_every`` = steps per epoch,
  with R the mean of the retain losses measured during those steps (the reference re-evaluates the
  retain loss over the training data at the epoch's end);
- R in the dual update is the step's retain loss averaged over micro-steps and processes (the
  engine's logged value, ``on_step_end``), so every process holds the same lambda;
- lambda (and the pending losses of a partial interval) is method state, saved in every
  checkpoint and restored on resume (``state_dict``/``load_state_dict``);
- L_F averages over the answer positions, not over every position including prompt and padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .losses import logit_margin_loss
from .retain import RetainLoss, retain_loss
from .tokens import token_scope


@dataclass(frozen=True)
class PDUConfig:
    epsilon: float | None = field(default=None, metadata={"help": "Retain-loss bound of the constraint R <= epsilon. Required: a little above the starting model's retain loss."})
    alpha: float = field(default=1.0, metadata={"help": "Initial value of the dual variable lambda (the retain term's weight)."})
    dual_step_size: float = field(default=1.0, metadata={"help": "Dual ascent step: lambda += dual_step_size * (R - epsilon), clipped at 0."})
    dual_warmup_steps: int = field(default=0, metadata={"help": "Optimizer steps before lambda starts to move."})
    dual_every: int = field(default=1, metadata={"help": "Update lambda every this many steps, with the mean retain loss of those steps (steps per epoch: the reference's epoch-wise update)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the logit-margin forget loss."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "Constrained retain loss: 'nll' on retain answers or 'kl' to the frozen reference."})

    def __post_init__(self):
        if self.epsilon is None:
            raise ConfigError("'pdu.epsilon' (the retain-loss bound R <= epsilon) is required: set it a little above the "
                              "starting model's retain loss (e.g. method.epsilon=1.2 when the retain NLL starts at 1.0).")
        if not (self.epsilon >= 0 and self.alpha >= 0 and self.dual_step_size >= 0 and self.gamma >= 0):
            raise ConfigError(f"pdu: epsilon, alpha, dual_step_size and gamma must be >= 0, got {self}.")
        if self.dual_warmup_steps < 0 or self.dual_every < 1:
            raise ConfigError(f"pdu: dual_warmup_steps must be >= 0 and dual_every >= 1, got "
                              f"{self.dual_warmup_steps} and {self.dual_every}.")


class PDU:
    name: ClassVar[str] = "pdu"

    def __init__(self, config: PDUConfig):
        self.config = c = config
        self.needs = Needs(retain=True, reference=c.retain_loss == "kl")
        self.dual = float(c.alpha)
        self._pending: list[float] = []  # retain losses of the current dual interval

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c, f = self.config, batch.forget
        logits = forward(model, f).logits
        with token_scope("forget"):
            forget = logit_margin_loss(logits, f["labels"])
        r = retain_loss(model, batch.retain, c.retain_loss, aux)
        loss = c.gamma * forget + self.dual * (r - c.epsilon)
        return LossOutput(loss=loss, metrics={"logit_margin": forget.item(), f"retain_{c.retain_loss}": r.item(),
                                              "dual": self.dual})

    def on_step_end(self, step: int, logged: dict[str, float]) -> None:
        """Dual ascent after optimizer step ``step`` (1-based) from the step's logged retain loss."""
        c = self.config
        if step <= c.dual_warmup_steps:
            return
        self._pending.append(logged[f"retain_{c.retain_loss}"])
        if len(self._pending) == c.dual_every:
            violation = sum(self._pending) / len(self._pending) - c.epsilon
            self.dual = max(0.0, self.dual + c.dual_step_size * violation)
            self._pending = []

    def state_dict(self) -> dict[str, Any]:
        return {"dual": self.dual, "pending": list(self._pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dual = float(state["dual"])
        self._pending = [float(v) for v in state.get("pending", [])]
