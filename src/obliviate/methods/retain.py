"""The retain term shared by GradDiff, NPO and SimNPO: NLL on retain data, or KL to the reference."""

from __future__ import annotations

from typing import Literal

import torch

from .base import Aux, forward
from .losses import kl_to_reference, nll
from .tokens import token_scope

RetainLoss = Literal["nll", "kl"]


def retain_loss(model: torch.nn.Module, retain: dict[str, torch.Tensor], kind: RetainLoss, aux: Aux) -> torch.Tensor:
    """NLL of the retain answers, or mean token KL(p_ref || p_theta) on them (needs ``aux.reference``)."""
    logits = forward(model, retain).logits
    with token_scope("retain"):
        if kind == "nll":
            return nll(logits, retain["labels"])
        assert aux.reference is not None, "retain_loss='kl' declares Needs(reference=True)"
        ref_logits = aux.reference(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits
        return kl_to_reference(logits, ref_logits, retain["labels"])


def with_retain(forget_loss: torch.Tensor, gamma: float, alpha: float, kind: RetainLoss, model, batch, aux: Aux,
                metrics: dict[str, float]) -> torch.Tensor:
    """gamma * forget + alpha * retain term (skipped when alpha is 0); logs the retain term in ``metrics``."""
    loss = gamma * forget_loss
    if alpha > 0:
        r = retain_loss(model, batch.retain, kind, aux)
        metrics[f"retain_{kind}"] = r.item()
        loss = loss + alpha * r
    return loss
