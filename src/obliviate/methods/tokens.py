"""Token means and their denominators, so that a run's update does not depend on how its global
batch is split over processes and gradient-accumulation micro-steps.

Every token-averaged loss of obliviate is ``token_mean(values, mask)`` = sum(values * mask) / D:

* by default D is the local count of ``mask``: a plain mean;
* inside the engine's ``step_tokens(...)`` (each training micro-step) and a method's
  ``token_scope(part)`` (which batch part, "forget", "retain" or "alternate", the loss reads), D is the count of
  the same kind of mask over the *whole optimizer step* (every micro-batch of every process)
  divided by W x A (processes x accumulation steps). Processes average their gradients (/W) and
  the engine divides by A, so the step's gradient is exactly that of sum_all / N_step, whatever
  W and A are: 1 process x 4 micro-steps, 4 processes x 1 and 2 x 2 take the same step;
* inside ``step_tokens`` but without a scope, or for a mask that is none of the part's canonical
  masks (answer targets, answer positions, real tokens): the count over all processes of this
  micro-batch (one all-reduce of a scalar) / W: exact across processes, per micro-step under
  accumulation. Every process must then compute the same sequence of token means (they do: the
  same method code runs on every rank).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

IGNORE = -100
PARTS = ("forget", "retain", "alternate")  # alternate: a second answer per forget prompt (Needs.alternate)


def answer_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, T-1] bool: the loss-bearing target tokens (``labels[:, 1:] != -100``)."""
    return batch["labels"][:, 1:] != IGNORE


def answer_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: the positions whose next token is a loss-bearing target (as many as the targets)."""
    real = batch["attention_mask"].bool()
    nxt = torch.zeros_like(real)
    nxt[:, :-1] = answer_targets(batch)
    return nxt & real


@dataclass(frozen=True)
class StepTokens:
    """What ``token_mean`` needs during one micro-step: per batch part, its canonical masks
    (answer targets, answer positions, real tokens) paired with the step-level denominator
    N_step / (W * A) of their kind (answer tokens for the first two, real tokens for the last)."""

    masks: dict[str, tuple[tuple[torch.Tensor, float], ...]]
    distributed: bool = False

    @staticmethod
    def totals(micro_batches: Sequence[dict[str, dict[str, torch.Tensor] | None]]) -> torch.Tensor:
        """[answer, real] token counts per part, summed over this process's micro-batches: a float64
        vector of length 2 * len(PARTS), on the batches' device (all-reduce it over processes for
        the step's totals)."""
        out = torch.zeros(len(PARTS), 2, dtype=torch.float64, device=micro_batches[0]["forget"]["labels"].device)
        for parts in micro_batches:
            for i, name in enumerate(PARTS):
                b = parts.get(name)
                if b is not None:  # added on the device: no host sync per micro-batch
                    out[i, 0] += answer_targets(b).sum()
                    out[i, 1] += b["attention_mask"].sum()
        return out.flatten()

    @classmethod
    def for_micro_batch(cls, parts: dict[str, dict[str, torch.Tensor] | None], totals: torch.Tensor, world: int,
                        accum: int) -> "StepTokens":
        per = (totals.clamp_min(1) / (world * accum)).tolist()
        masks = {}
        for i, name in enumerate(PARTS):
            b = parts.get(name)
            if b is not None:
                answer, real = per[2 * i], per[2 * i + 1]
                masks[name] = ((answer_targets(b), answer), (b["attention_mask"].bool(), real),
                               (answer_positions(b), answer))
        return cls(masks=masks, distributed=world > 1)

    def denominator(self, part: str | None, mask: torch.Tensor) -> float | None:
        """The step-level denominator if ``mask`` is one of ``part``'s canonical masks, else None."""
        m = mask.bool()
        for canonical, d in self.masks.get(part, ()) if part is not None else ():
            if m.shape == canonical.shape and torch.equal(m, canonical.to(m.device)):
                return d
        return None


_STEP: ContextVar[StepTokens | None] = ContextVar("obliviate_step_tokens", default=None)
_PART: ContextVar[str | None] = ContextVar("obliviate_token_part", default=None)


@contextmanager
def step_tokens(step: StepTokens | None) -> Iterator[None]:
    """Engine: the token denominators of the current micro-step (None: plain local means)."""
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


@contextmanager
def token_scope(part: str) -> Iterator[None]:
    """Method: the token means inside read batch part ``part`` ("forget", "retain" or "alternate")."""
    assert part in PARTS, part
    token = _PART.set(part)
    try:
        yield
    finally:
        _PART.reset(token)


def _denominator(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    count = mask.to(dtype).sum()
    step = _STEP.get()
    if step is None:
        return count.clamp_min(1)
    d = step.denominator(_PART.get(), mask)
    if d is not None:
        return torch.tensor(d, dtype=dtype, device=count.device)
    if step.distributed:
        import torch.distributed as dist

        count = count.detach().clone()
        dist.all_reduce(count)
        return count.clamp_min(1) / dist.get_world_size()
    return count.clamp_min(1)


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is set (0 if none): sum(values * mask) / D,
    with D as in the module docstring (the local count outside a training step)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / _denominator(mask, values.dtype)
