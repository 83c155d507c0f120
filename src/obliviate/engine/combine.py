"""Multi-objective gradient combiners (an engine feature any method can use).

A method that returns several objectives in ``LossOutput.objectives`` and sets ``combiner``
gets, for every trainable parameter tensor, the gradient of each objective separately
(synchronised across processes first), and the combiner returns the gradient to apply.

Every inner product goes through the ``dot`` argument of ``combine``: ``local_dot`` for whole
tensors, or, when each process holds only a shard of the tensor (FSDP), a dot product of the local
shards summed over processes (``engine.loop``), so the decision and the projection are those of the
whole tensor and every shard of the result equals the matching slice of the 1-process result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

Dot = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NOISE_FLOOR = 1e-6
"""A gradient whose norm is at most this fraction of the other's counts as zero in a conflict test.

At the first step of a representation method the trained model equals the frozen one, so the
retain loss sits at its minimum and its gradient is 0 in exact arithmetic; in floating point it is
rounding noise (~1e-8 of the forget gradient) with a random direction. Testing its sign and
projecting onto it would remove a random component from the forget gradient (and make two runs
that differ only in summation order, e.g. 1 vs 2 processes, take different steps). Below the floor
the result is the exact-arithmetic one: no conflict."""


class GradientCombiner(Protocol):
    def combine(self, grads: dict[str, torch.Tensor], dot: Dot = ...) -> torch.Tensor:
        """Per-parameter-tensor gradients, one per objective -> the gradient to apply."""
        ...


def local_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> of two whole tensors, accumulated in float64."""
    return (a.double() * b.double()).sum()


def _negligible(norm2: torch.Tensor, other_norm2: torch.Tensor) -> bool:
    return bool(norm2 <= (NOISE_FLOOR ** 2) * other_norm2)


def conflicts(g: torch.Tensor, other: torch.Tensor, dot: Dot = local_dot) -> bool:
    """<g, other> < 0, unless either gradient is negligible next to the other (see ``NOISE_FLOOR``)."""
    gg, oo = dot(g, g), dot(other, other)
    if _negligible(oo, gg) or _negligible(gg, oo):
        return False
    return bool(dot(g, other) < 0)


def project_out(g: torch.Tensor, onto: torch.Tensor, dot: Dot = local_dot) -> torch.Tensor:
    """g minus its component along ``onto``: g - (g.onto / |onto|^2) onto (unchanged if onto is 0)."""
    norm2 = dot(onto, onto)
    if norm2 == 0:
        return g
    return g - (dot(g, onto) / norm2).to(g.dtype) * onto


@dataclass(frozen=True)
class WeightedSum:
    """sum_k w_k g_k (weights default to 1): what plain ``loss.backward()`` on the sum gives."""

    weights: dict[str, float] = field(default_factory=dict)

    def combine(self, grads: dict[str, torch.Tensor], dot: Dot = local_dot) -> torch.Tensor:
        return sum(self.weights.get(k, 1.0) * g for k, g in grads.items())


@dataclass(frozen=True)
class FalconProjection:
    """FALCON's gradient conflict resolution (Hu et al. 2025, Sec. 3.4; reference
    ``resolve_gradient_conflict``), per parameter tensor, with g_F = grads[forget], g_R = grads[retain]:

        cos(g_F, g_R) < 0:  g = w_c[0] * (g_F - (g_F.g_R / |g_R|^2) g_R) + w_c[1] * g_R
        otherwise:          g = w_a[0] * g_F + w_a[1] * g_R

    Defaults are the reference code's (0.8, 1.2) and (0.1, 1.9). In the conflicting case the forget
    part is orthogonal to g_R, so g.g_R = w_c[1] |g_R|^2 >= 0: the step never works against retain.

    Deviation: a g_R (or g_F) below ``NOISE_FLOOR`` times the other's norm counts as 0, i.e. no
    conflict; the reference tests the sign of float noise there (every first step, see NOISE_FLOOR).
    """

    forget: str = "forget"
    retain: str = "retain"
    conflict_weights: tuple[float, float] = (0.8, 1.2)
    align_weights: tuple[float, float] = (0.1, 1.9)

    def combine(self, grads: dict[str, torch.Tensor], dot: Dot = local_dot) -> torch.Tensor:
        g_f, g_r = grads[self.forget], grads[self.retain]
        if conflicts(g_f, g_r, dot):  # cos < 0 (same sign as the dot product)
            a, b = self.conflict_weights
            return a * project_out(g_f, g_r, dot) + b * g_r
        a, b = self.align_weights
        return a * g_f + b * g_r


@dataclass(frozen=True)
class PCGrad:
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Alg. 1), per tensor.

    Each objective's gradient is projected onto the normal plane of every *other original*
    gradient it conflicts with (negative dot product), in the given order (the paper shuffles it;
    a fixed order keeps runs and processes deterministic); the projected gradients are summed
    with ``weights`` (default 1). Conflicts with a negligible gradient are ignored (``NOISE_FLOOR``).
    """

    weights: dict[str, float] = field(default_factory=dict)

    def combine(self, grads: dict[str, torch.Tensor], dot: Dot = local_dot) -> torch.Tensor:
        out = None
        for k, g in grads.items():
            gk = g
            for j, other in grads.items():
                if j != k and conflicts(gk, other, dot):
                    gk = project_out(gk, other, dot)
            term = self.weights.get(k, 1.0) * gk
            out = term if out is None else out + term
        assert out is not None, "no objectives to combine"
        return out
