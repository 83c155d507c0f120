"""Merge operators: pure functions over task vectors and state dicts.

A task vector is tau_i = theta_i - theta_0 (Ilharco et al. 2023, "Editing models with task
arithmetic"). Every merge returns theta_0 + lambda * tau_merged, computed per tensor:

- ``task_arithmetic``: tau_merged = sum_i tau_i (Ilharco et al., eq. 1).
- ``linear``: tau_merged = sum_i w_i tau_i / sum_i w_i (weights default to 1: plain averaging of
  the models, theta = mean_i theta_i when lambda = 1).
- ``ties`` (Yadav et al. 2023, "TIES-Merging", Alg. 1): trim each tau_i to its top-``density``
  entries by magnitude (k = 20% in the paper), elect a sign per entry as sign(sum_i trimmed tau_i)
  (the "mass" rule; exact zeros get the majority sign, as in the reference code), then average
  per entry only the trimmed values whose sign agrees with the elected one (disjoint mean).
- DARE (Yu et al. 2024, "Language Models are Super Mario", eq. 2): drop each delta entry with
  probability p and rescale the survivors by 1/(1-p). Seeded per (seed, tensor name, model
  index) so a merge is reproducible and streaming equals in-memory. With ``ties`` it replaces the
  magnitude trim (as mergekit's ``dare_ties``); with ``task_arithmetic``/``linear`` it is applied
  to each tau_i before the sum/mean.

Deviation from the TIES reference code: it trims over the whole flattened model per task; we trim
per tensor (as mergekit does) so a merge can stream tensor by tensor. The reference keeps
int(d*k)+1 entries (an off-by-one of its ``kthvalue``); we keep ceil(d*k) (ties at the threshold
are all kept).

The kernels take ``get(i)`` callables returning tau_i for one tensor, and visit the models in a
fixed order, so in-memory and streaming merges run the same float operations (bit-identical).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch

from ..errors import ConfigError

MergeMethod = Literal["task_arithmetic", "linear", "ties"]
TauFn = Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class MergeConfig:
    """How to merge k models that share a base (the ``merge:`` section)."""

    method: MergeMethod = field(default="ties", metadata={"help": "'ties' (SPUNGE's choice), 'task_arithmetic' or 'linear'."})
    density: float = field(default=0.2, metadata={"help": "TIES: fraction of each task vector's entries kept by magnitude (paper: 0.2)."})
    lam: float = field(default=1.0, metadata={"help": "lambda: scale of the merged task vector, theta_0 + lambda * tau."})
    dare_p: float | None = field(default=None, metadata={"help": "DARE drop probability p (None: no DARE); survivors scaled by 1/(1-p)."})
    weights: tuple[float, ...] = field(default=(), metadata={"help": "linear: per-model weights (empty: equal)."})
    seed: int = field(default=0, metadata={"help": "Seed of DARE's random drop."})

    def __post_init__(self):
        if not 0 < self.density <= 1:
            raise ConfigError(f"'merge.density' must be in (0, 1], got {self.density}.")
        if self.dare_p is not None and not 0 <= self.dare_p < 1:
            raise ConfigError(f"'merge.dare_p' must be in [0, 1) or null, got {self.dare_p}.")
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) == 0):
            raise ConfigError(f"'merge.weights' must be >= 0 with a positive sum, got {list(self.weights)}.")
        if self.weights and self.method != "linear":
            raise ConfigError(f"'merge.weights' applies to method 'linear' only (method is '{self.method}').")


def trim_topk(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ceil(density * numel) largest-magnitude entries of ``tau`` (ties kept), zero the rest."""
    n = tau.numel()
    keep = min(n, math.ceil(density * n))
    if keep >= n or n == 0:
        return tau.clone()
    mag = tau.abs().reshape(-1)
    threshold = torch.kthvalue(mag, n - keep + 1).values  # the keep-th largest magnitude
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def dare(tau: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each entry with probability ``p``, rescale the rest by 1/(1-p) (DARE, eq. 2)."""
    if p == 0:
        return tau.clone()
    keep = torch.rand(tau.shape, generator=generator) >= p
    return torch.where(keep, tau / (1 - p), torch.zeros_like(tau))


def dare_generator(seed: int, name: str, i: int) -> torch.Generator:
    """A generator seeded by (seed, tensor name, model index): the same drop in every merge path."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()) * 131 + i) % (2**63))
    return g


def _sparsify(tau: torch.Tensor, cfg: MergeConfig, name: str, i: int, trim: bool) -> torch.Tensor:
    if cfg.dare_p is not None:
        return dare(tau, cfg.dare_p, dare_generator(cfg.seed, name, i))
    return trim_topk(tau, cfg.density) if trim else tau


def elect_sign(total: torch.Tensor) -> torch.Tensor:
    """sign(sum_i tau_i), with exact zeros replaced by the majority sign (TIES reference rule)."""
    sign = torch.sign(total)
    majority = torch.sign(sign.sum())
    return torch.where(sign == 0, majority if majority != 0 else torch.ones_like(majority), sign)


def ties_tau(get: TauFn, k: int, cfg: MergeConfig, name: str = "") -> torch.Tensor:
    """TIES (or DARE-TIES) merged task vector for one tensor, in two passes over the k models."""
    trimmed = lambda i: _sparsify(get(i), cfg, name, i, trim=True)  # noqa: E731
    total = trimmed(0)
    for i in range(1, k):
        total = total + trimmed(i)
    sign = elect_sign(total)
    agree_sum = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for i in range(k):
        t = trimmed(i)
        agree = ((sign > 0) & (t > 0)) | ((sign < 0) & (t < 0))
        agree_sum = agree_sum + torch.where(agree, t, torch.zeros_like(t))
        count = count + agree.to(t.dtype)
    return agree_sum / count.clamp_min(1)


def sum_tau(get: TauFn, k: int, cfg: MergeConfig, name: str = "", weights: Sequence[float] | None = None) -> torch.Tensor:
    """sum_i w_i tau_i (after DARE if set), in model order."""
    total = None
    for i in range(k):
        t = _sparsify(get(i), cfg, name, i, trim=False)
        if weights is not None:
            t = t * weights[i]
        total = t if total is None else total + t
    assert total is not None, "k >= 1"
    return total


def merge_tensor(base: torch.Tensor, get: TauFn, k: int, cfg: MergeConfig, name: str = "") -> torch.Tensor:
    """theta_0 + lambda * tau_merged for one tensor (float32 math, cast back to base's dtype).

    ``get(i)`` returns tau_i = theta_i - theta_0 for this tensor. Non-float tensors (integer
    buffers) are returned unchanged.
    """
    if not base.is_floating_point():
        return base.clone()
    if cfg.method == "ties":
        tau = ties_tau(get, k, cfg, name)
    elif cfg.method == "task_arithmetic":
        tau = sum_tau(get, k, cfg, name)
    else:
        w = list(cfg.weights) or [1.0] * k
        if len(w) != k:
            raise ConfigError(f"'merge.weights' has {len(w)} values but {k} models are merged.")
        tau = sum_tau(get, k, cfg, name, [x / sum(w) for x in w])
    return (base.float() + cfg.lam * tau).to(base.dtype)


def task_vector(theta: torch.Tensor, theta0: torch.Tensor) -> torch.Tensor:
    return theta.float() - theta0.float()


def merge_state_dicts(base: dict[str, torch.Tensor], models: Sequence[dict[str, torch.Tensor]],
                      cfg: MergeConfig | None = None) -> dict[str, torch.Tensor]:
    """Merge in memory: ``models`` are full state dicts with the same keys and shapes as ``base``."""
    cfg = cfg or MergeConfig()
    if not models:
        raise ConfigError("merge: give at least one model to merge.")
    out = {}
    for name, b in base.items():
        for j, m in enumerate(models):
            if name not in m:
                raise ConfigError(f"merge: model {j} has no tensor '{name}' (the base has it).")
            if m[name].shape != b.shape:
                raise ConfigError(f"merge: tensor '{name}' has shape {tuple(m[name].shape)} in model {j} "
                                  f"but {tuple(b.shape)} in the base.")
        out[name] = merge_tensor(b, lambda i, n=name, b=b: task_vector(models[i][n], b), len(models), cfg, name)
    return out
