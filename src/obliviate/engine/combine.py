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
