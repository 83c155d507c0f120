"""Merge operators: pure functions over task vectors and state dicts.

A task vector is tau_i = theta_i - theta_0 (Ilharco et al. 2023, "Editing models with task
arithmetic"). Every merge returns theta_0 + lambda * tau_merged, computed per tensor:

- ``task_arithmetic``: tau_merged = sum_i tau_i (Ilharco et al., eq. 1).
- ``linear``: tau_merged = sum_i w_i tau_i / sum_i w_i (weights default to 1: plain averaging of
  the models, theta = mean_i theta_i when lambda = 1).
- ``ties`` (Yadav et al. 2023, "TIES-Merging", Alg. 1): trim each tau_i to its top-``density``
  entries by magnitude (``trim.py``; k = 20% in the paper), elect a sign per entry as
  sign(sum_i trimmed tau_i) (the "mass" rule; exact zeros by ``sign_tie``), then average per entry
  only the trimmed values whose sign agrees with the elected one (disjoint mean; with
  ``normalize: false`` their sum). Trim scope, trim count and the zero-sum sign are options with
  presets (``config.py``: ``paper``, ``mergekit``, ``legacy``).
- DARE (Yu et al. 2024, "Language Models are Super Mario", eq. 2): drop each delta entry with
  probability p and rescale the survivors by 1/(1-p). Seeded per (seed, tensor name, model
  index), so a merge is reproducible and streaming equals in-memory; this is not mergekit's
  random stream, so a DARE merge does not reproduce mergekit's bit for bit. With ``ties`` it
  replaces the magnitude trim (as mergekit's ``dare_ties``); with ``task_arithmetic``/``linear``
  it is applied to each tau_i before the sum/mean.

TIES runs in one pass over the k task vectors of a tensor (each read once; ``ties.py``): per entry
it keeps the running sum (for the sign election), the sums of the positive and of the negative
trimmed values and their counts, in chunks that stay in cache; the elected sign then picks the
positive or the negative mean. The sums are accumulated in model order, so the result is
bit-identical to the two-pass form (sum, elect, then sum the agreeing values). Model-scope trimming
adds two streaming passes that find each model's global threshold (``trim.StreamingKth``).

The kernels take ``get(i)`` callables returning tau_i (float32) for one tensor, and visit the
models in a fixed order, so in-memory and streaming merges run the same float operations.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch

from ..errors import ConfigError
from .config import MergeConfig, MergeMethod
from .buffers import Workspace
from .ties import Finish, Part, TiesResult, TiesSums
from .trim import StreamingKth, keep_count, trim_threshold, trim_topk

__all__ = ["MergeConfig", "MergeMethod", "dare", "elect_sign", "merge_model", "merge_state_dicts", "merge_tensor",
           "task_vector", "ties_tau", "trim_topk"]

TauFn = Callable[[int], torch.Tensor]


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


def elect_sign(total: torch.Tensor, zero: str = "majority") -> torch.Tensor:
    """sign(sum_i tau_i); exact zeros get the majority sign of ``total`` (+ if that is 0 too) or +."""
    sign = torch.sign(total)
    fill = torch.sign(sign.sum()) if zero == "majority" else torch.ones(())
    return torch.where(sign == 0, fill if fill != 0 else torch.ones_like(fill), sign)


def ties_tau(get: TauFn, k: int, cfg: MergeConfig, name: str = "", thresholds: Sequence[torch.Tensor | None] | None = None,
             zero_sign: int | None = None, weights: Sequence[float] | None = None,
             workspace: Workspace | None = None, out: torch.Tensor | None = None,
             base: torch.Tensor | None = None, group: int = 1) -> TiesResult:
    """TIES (or DARE-TIES) merged task vector of one tensor, reading each tau_i once.

    ``thresholds[i]``: model i's model-scope trim threshold (None: keep all); without
    ``thresholds`` each tau_i is trimmed by its own per-tensor threshold. ``zero_sign``: the sign
    given to zero-sum entries (model scope decides it outside); None: by ``cfg.sign_tie`` here.
    ``weights``: mergekit's per-model weights (tau_i scaled before the election).
    ``workspace`` holds the accumulators between calls; the result goes to ``out`` if given.
    With ``base`` the result is already theta_0 + lambda * tau (``finished``; saves a pass).
    ``group``: how many task vectors are folded per pass (``get(i)``'s tensor must stay valid
    through the next ``group - 1`` calls); any value gives the same result.
    """
    sums: TiesSums | None = None
    workspace = workspace or Workspace()
    parts: list[Part] = []
    for i in range(k):
        t = get(i)
        threshold = mask = None
        if cfg.dare_p is not None:
            t = dare(t, cfg.dare_p, dare_generator(cfg.seed, name, i))
        elif thresholds is not None:
            threshold = thresholds[i]
        else:
            threshold, mask = trim_threshold(t, cfg.density, cfg.trim_count, workspace)
        if sums is None:
            sums = TiesSums(t.numel(), workspace, weights is not None, one_pass=group >= k)
        parts.append(Part(t.reshape(-1), threshold, None if mask is None else mask.reshape(-1),
                          None if weights is None else weights[i]))
        if len(parts) < group and i < k - 1:
            continue
        finish = None
        if i == k - 1:  # the last pass writes the output
            flat_out = torch.empty(t.numel()) if out is None else out.reshape(-1)
            finish = Finish(cfg, flat_out, zero_sign, None if base is None else base.float().reshape(-1))
        res = sums.add(parts, first=i < len(parts), finish=finish)
        if res is not None:
            res.tau = res.tau.reshape(t.shape)
            return res
        parts = []
    raise ConfigError("merge: give at least one model to merge.")


def sum_tau(get: TauFn, k: int, cfg: MergeConfig, name: str = "", weights: Sequence[float] | None = None) -> torch.Tensor:
    """sum_i w_i tau_i (after DARE if set), in model order."""
    total = None
    for i in range(k):
        t = get(i)
        if cfg.dare_p is not None:
            t = dare(t, cfg.dare_p, dare_generator(cfg.seed, name, i))
        if weights is not None:
            t = t * weights[i]
        total = t.clone() if total is None else total + t
    assert total is not None, "k >= 1"
    return total


def _weights(cfg: MergeConfig, k: int) -> list[float] | None:
    if not cfg.weights:
        return [1.0 / k] * k if cfg.method == "linear" else None
    if len(cfg.weights) != k:
        raise ConfigError(f"'merge.weights' has {len(cfg.weights)} values but {k} models are merged.")
    w = list(cfg.weights)
    return [x / sum(w) for x in w] if cfg.method == "linear" else w


def merge_tensor(base: torch.Tensor, get: TauFn, k: int, cfg: MergeConfig, name: str = "",
                 thresholds: Sequence[torch.Tensor | None] | None = None, zero_sign: int | None = None) -> torch.Tensor:
    """theta_0 + lambda * tau_merged for one tensor (float32 math, cast back to base's dtype).

    ``get(i)`` returns tau_i = theta_i - theta_0 for this tensor. Non-float tensors (integer
    buffers) are returned unchanged. Model-scope TIES needs the ``thresholds``/``zero_sign`` that
    ``merge_model`` computes; alone, this function trims and elects per tensor.
    """
    if not base.is_floating_point():
        return base.clone()
    return _finish(base, _merged_tau(base, get, k, cfg, name, thresholds, zero_sign), cfg)


def _merged_tau(base, get, k, cfg, name, thresholds, zero_sign, workspace=None, out=None, group=1) -> TiesResult:
    weights = _weights(cfg, k)
    if cfg.method == "ties":
        return ties_tau(get, k, cfg, name, thresholds, zero_sign, weights, workspace, out, base, group)
    return TiesResult(sum_tau(get, k, cfg, name, weights), 0, False)


def _finish(base: torch.Tensor, res: TiesResult, cfg: MergeConfig) -> torch.Tensor:
    if res.finished:
        return res.tau.to(base.dtype)
    tau = res.tau.mul_(cfg.lam) if cfg.lam != 1 else res.tau
    return tau.add_(base.float()).to(base.dtype)


def model_thresholds(names: Sequence[str], base_of: Callable[[str], torch.Tensor],
                     tau_of: Callable[[int, str, torch.Tensor], torch.Tensor], k: int, cfg: MergeConfig) -> list[torch.Tensor | None]:
    """Each model's trim threshold over its whole flattened task vector (all float tensors), in
    two streaming passes (one tensor of one model in memory at a time)."""
    selectors = [StreamingKth() for _ in range(k)]
    floats: list[str] = []
    for name in names:
        b = base_of(name)
        if b.is_floating_point():
            floats.append(name)
            for i in range(k):
                selectors[i].add(tau_of(i, name, b))
    total = selectors[0].n if selectors else 0
    keep = keep_count(total, cfg.density, cfg.trim_count)
    if keep >= total:
        return [None] * k
    for s in selectors:
        s.next_pass(total - keep + 1)
    for name in floats:
        b = base_of(name)
        for i in range(k):
            selectors[i].add(tau_of(i, name, b))
    return [s.value() for s in selectors]


def merge_model(names: Sequence[str], base_of: Callable[[str], torch.Tensor],
                tau_of: Callable[[int, str, torch.Tensor], torch.Tensor], k: int, cfg: MergeConfig,
                write: Callable[[str, torch.Tensor], None], rewrite: Callable[[str, torch.Tensor], None],
                reuse_output: bool = False, group: int = 1) -> None:
    """Merge every tensor of ``names`` (in order) and ``write`` each; the one driver of both paths.

    ``base_of(name)`` reads theta_0's tensor, ``tau_of(i, name, base)`` model i's task vector
    (float32; it may be a buffer the source reuses on its next read). Model-scope TIES first finds
    each model's threshold (two passes), then merges with + for zero-sum entries while counting
    the elected signs over the whole model; if the majority is negative, the tensors whose result
    depends on it are merged again and ``rewrite`` replaces them. With ``reuse_output`` the
    tensor passed to ``write`` is one of two buffers used in turn (``write`` must be done with it
    by the time it returns from the call after next). ``group``: task vectors TIES folds per pass
    (``tau_of``'s tensor must stay valid through the next ``group - 1`` calls; see ``ties_tau``).
    """
    if k < 1:
        raise ConfigError("merge: give at least one model to merge.")
    ties = cfg.method == "ties"
    thresholds = None
    if ties and cfg.trim_scope == "model" and cfg.dare_p is None:
        thresholds = model_thresholds(names, base_of, tau_of, k, cfg)
    global_sign = ties and cfg.trim_scope == "model" and cfg.sign_tie == "majority"
    ws = Workspace()
    sign_sum, redo, done = 0, [], []
    for name in names:
        b = base_of(name)
        if not b.is_floating_point():
            write(name, b.clone())
            continue
        out = ws.get(f"out{len(done) % 2}", b.numel()) if reuse_output and ties else None  # 2 buffers: one may be in a write
        res = _merged_tau(b, lambda i, n=name, b=b: tau_of(i, n, b), k, cfg, name, thresholds,
                          1 if global_sign else None, ws, out, group)
        sign_sum += res.sign_sum
        if res.ambiguous:
            redo.append(name)
        write(name, _finish(b, res, cfg))
        done.append(name)
    if global_sign and sign_sum <= 0:  # balanced: the reference code's where(sign > 0, ...) picks the negatives
        for name in redo:
            b = base_of(name)
            res = _merged_tau(b, lambda i, n=name, b=b: tau_of(i, n, b), k, cfg, name, thresholds, -1, ws, group=group)
            rewrite(name, _finish(b, res, cfg))


def task_vector(theta: torch.Tensor, theta0: torch.Tensor) -> torch.Tensor:
    return theta.float() - theta0.float()


def merge_state_dicts(base: dict[str, torch.Tensor], models: Sequence[dict[str, torch.Tensor]],
                      cfg: MergeConfig | None = None) -> dict[str, torch.Tensor]:
    """Merge in memory: ``models`` are full state dicts with the same keys and shapes as ``base``."""
    cfg = cfg or MergeConfig()
    if not models:
        raise ConfigError("merge: give at least one model to merge.")
    for name, b in base.items():
        for j, m in enumerate(models):
            if name not in m:
                raise ConfigError(f"merge: model {j} has no tensor '{name}' (the base has it).")
            if m[name].shape != b.shape:
                raise ConfigError(f"merge: tensor '{name}' has shape {tuple(m[name].shape)} in model {j} "
                                  f"but {tuple(b.shape)} in the base.")
    out: dict[str, torch.Tensor] = {}
    merge_model(list(base), base.__getitem__, lambda i, n, b: task_vector(models[i][n], b), len(models), cfg,
                out.__setitem__, out.__setitem__, group=len(models))  # each task vector is a fresh tensor
    return out
