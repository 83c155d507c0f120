"""Multi-objective gradient combiners (an engine feature any method can use).

A method that returns several objectives in ``LossOutput.objectives`` and sets ``combiner``
gets, for every trainable parameter tensor, the gradient of each objective separately
(synchronised across processes first), and the combiner returns the gradient to apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


class GradientCombiner(Protocol):
    def combine(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-parameter-tensor gradients, one per objective -> the gradient to apply."""
        ...


@dataclass(frozen=True)
class WeightedSum:
    """sum_k w_k g_k (weights default to 1): what plain ``loss.backward()`` on the sum gives."""

    weights: dict[str, float] = field(default_factory=dict)

    def combine(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights.get(k, 1.0) * g for k, g in grads.items())


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() * b.double()).sum()


def project_out(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """g minus its component along ``onto``: g - (g.onto / |onto|^2) onto (unchanged if onto = 0)."""
    norm2 = _dot(onto, onto)
    if norm2 == 0:
        return g
    return g - (_dot(g, onto) / norm2).to(g.dtype) * onto


@dataclass(frozen=True)
class FalconProjection:
    """FALCON's gradient conflict resolution (Hu et al. 2025, Sec. 3.4; reference
    ``resolve_gradient_conflict``), per parameter tensor, with g_F = grads[forget], g_R = grads[retain]:

        cos(g_F, g_R) < 0:  g = w_c[0] * (g_F - (g_F.g_R / |g_R|^2) g_R) + w_c[1] * g_R
        otherwise:          g = w_a[0] * g_F + w_a[1] * g_R

    Defaults are the reference code's (0.8, 1.2) and (0.1, 1.9). In the conflicting case the forget
    part is orthogonal to g_R, so g.g_R = w_c[1] |g_R|^2 >= 0: the step never works against retain.
    """

    forget: str = "forget"
    retain: str = "retain"
    conflict_weights: tuple[float, float] = (0.8, 1.2)
    align_weights: tuple[float, float] = (0.1, 1.9)

    def combine(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        g_f, g_r = grads[self.forget], grads[self.retain]
        if _dot(g_f, g_r) < 0:  # cos < 0 (same sign as the dot product)
            a, b = self.conflict_weights
            return a * project_out(g_f, g_r) + b * g_r
        a, b = self.align_weights
        return a * g_f + b * g_r


@dataclass(frozen=True)
class PCGrad:
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Alg. 1), per tensor.

    Each objective's gradient is projected onto the normal plane of every *other original*
    gradient it conflicts with (negative dot product), in the given order (the paper shuffles it;
    a fixed order keeps runs and processes deterministic); the projected gradients are summed
    with ``weights`` (default 1).
    """

    weights: dict[str, float] = field(default_factory=dict)

    def combine(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        out = None
        for k, g in grads.items():
            gk = g
            for j, other in grads.items():
                if j != k and _dot(gk, other) < 0:
                    gk = project_out(gk, other)
            term = self.weights.get(k, 1.0) * gk
            out = term if out is None else out + term
        assert out is not None, "no objectives to combine"
        return out
