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

TIES runs in one pass over the k task vectors of a tensor (each read once): per entry it keeps
the running sum (for the sign election), the sums of the positive and of the negative trimmed
values and their counts, in chunks that stay in cache; the elected sign then picks the positive
or the negative mean. The sums are accumulated in model order, so the result is bit-identical to
the two-pass form (sum, elect, then sum the agreeing values). Model-scope trimming adds two
streaming passes that find each model's global threshold (``trim.StreamingKth``).

The kernels take ``get(i)`` callables returning tau_i (float32) for one tensor, and visit the
models in a fixed order, so in-memory and streaming merges run the same float operations.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import MergeConfig, MergeMethod
from .trim import StreamingKth, keep_count, trim_threshold, trim_topk

__all__ = ["MergeConfig", "MergeMethod", "dare", "elect_sign", "merge_model", "merge_state_dicts", "merge_tensor",
           "task_vector", "ties_tau", "trim_topk"]

TauFn = Callable[[int], torch.Tensor]
_ZERO = torch.zeros(())
CHUNK = 31 << 10  # entries per accumulation chunk: the working set stays in cache, and below torch's
# parallel grain size each op runs in this thread (no thread hand-offs on a busy machine)


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


@dataclass
class TiesResult:
    """One tensor's merged task vector, plus what a model-scope sign election needs."""

    tau: torch.Tensor
    sign_sum: int  # (# entries with a positive sum) - (# with a negative sum)
    ambiguous: bool  # some entry has a zero sum but non-zero trimmed values (its result depends on sign_tie)
    finished: bool = False  # tau is already theta_0 + lambda * tau_merged (float32)


def ties_tau(get: TauFn, k: int, cfg: MergeConfig, name: str = "", thresholds: Sequence[torch.Tensor | None] | None = None,
             zero_sign: int | None = None, weights: Sequence[float] | None = None,
             workspace: Workspace | None = None, out: torch.Tensor | None = None,
             base: torch.Tensor | None = None) -> TiesResult:
    """TIES (or DARE-TIES) merged task vector of one tensor, reading each tau_i once.

    ``thresholds[i]``: model i's model-scope trim threshold (None: keep all); without
    ``thresholds`` each tau_i is trimmed by its own per-tensor threshold. ``zero_sign``: the sign
    given to zero-sum entries (model scope decides it outside); None: by ``cfg.sign_tie`` here.
    ``weights``: mergekit's per-model weights (tau_i scaled before the election).
    ``workspace`` holds the accumulators between calls; the result goes to ``out`` if given.
    With ``base`` the result is already theta_0 + lambda * tau (``finished``; saves a pass).
    """
    acc: _Acc | None = None
    shape = torch.Size()
    workspace = workspace or Workspace()
    for i in range(k):
        t = get(i)
        shape = t.shape
        threshold = mask = None
        if cfg.dare_p is not None:
            t = dare(t, cfg.dare_p, dare_generator(cfg.seed, name, i))
        elif thresholds is not None:
            threshold = thresholds[i]
        else:
            threshold, mask = trim_threshold(t, cfg.density, cfg.trim_count, workspace)
        if acc is None:
            acc = _Acc(t.numel(), workspace, weights is not None)
        acc.add(t.reshape(-1), threshold, None if mask is None else mask.reshape(-1),
                None if weights is None else weights[i], first=i == 0)
        del t, mask
    assert acc is not None, "k >= 1"
    return acc.result(shape, cfg, zero_sign, out, base)


class Workspace:
    """Flat buffers reused from tensor to tensor: a merge faults in its working memory once,
    not once per tensor (fresh allocations of large tensors cost as much as the arithmetic)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self.buffers[key] = torch.empty(n, dtype=dtype)
        return buf[:n]


class _Acc:
    """Per-entry running sums of one tensor's TIES merge, updated in cache-sized chunks.

    total: sum_i of trimmed tau_i (its sign is the election); pos: sum of the kept positive
    values; neg: of the kept negative ones; pos_n/neg_n: their counts (or summed weights). Each
    sum is taken in model order and adding an exact +0 changes nothing, so each equals the
    two-pass form's sum of the values that agree with the elected sign, bit for bit.

    Only float arithmetic is used in the loops (``F.threshold``, ``sign``, add/sub/mul): on CPU
    boolean masks and ``torch.where`` cost several times more than the arithmetic they select.
    """

    def __init__(self, n: int, ws: Workspace, weighted: bool = False):
        self.weighted = weighted
        self.total, self.pos, self.neg = ws.get("total", n), ws.get("pos", n), ws.get("neg", n)
        self.pos_n, self.neg_n = ws.get("pos_n", n), ws.get("neg_n", n)

    def add(self, t: torch.Tensor, threshold: torch.Tensor | None, mask: torch.Tensor | None, w: float | None,
            first: bool) -> None:
        # keep c where c > cut (positives) and where -c > cut (negatives): cut is the float just below
        # the trim threshold (|c| >= threshold <=> |c| > cut), or 0 once c is trimmed/weighted already
        fast = threshold is not None and mask is None and w is None and bool(threshold > 0)
        cut = float(torch.nextafter(threshold, torch.zeros(()))) if fast else 0.0
        for s in range(0, t.numel(), CHUNK):
            e = s + CHUNK
            c = t[s:e]
            if not fast:
                if mask is not None:
                    c = c * mask[s:e]
                elif threshold is not None:
                    c = c * (c.abs() >= threshold)
                if w is not None:
                    c = c * w
            up = F.threshold(c, cut, 0.0)  # kept positives, else +0
            down = F.threshold(torch.neg(c), cut, 0.0)  # |kept negatives|, else +0
            if first:  # the buffers hold the previous tensor: assign
                self.pos[s:e] = up
                torch.sub(_ZERO, down, out=self.neg[s:e])
                torch.sub(up, down, out=self.total[s:e])
                torch.sign(up, out=self.pos_n[s:e])
                torch.sign(down, out=self.neg_n[s:e])
                if w is not None:
                    self.pos_n[s:e] *= w
                    self.neg_n[s:e] *= w
                continue
            self.total[s:e].add_(up).sub_(down)  # one of them is +0 at each entry
            self.pos[s:e].add_(up)
            self.neg[s:e].sub_(down)
            if w is None:
                self.pos_n[s:e].add_(torch.sign(up))
                self.neg_n[s:e].add_(torch.sign(down))
            else:
                self.pos_n[s:e].add_(torch.sign(up).mul_(w))
                self.neg_n[s:e].add_(torch.sign(down).mul_(w))

    def result(self, shape: torch.Size, cfg: MergeConfig, zero_sign: int | None, out: torch.Tensor | None,
               base: torch.Tensor | None = None) -> TiesResult:
        """The merged task vector, or with ``base`` already theta_0 + lambda * tau (float32)."""
        total, pos, neg, pos_n, neg_n = self.total, self.pos, self.neg, self.pos_n, self.neg_n
        sign_sum, ambiguous = 0, False
        if cfg.sign_tie == "majority" or zero_sign is not None:
            acc = torch.zeros((), dtype=torch.int64)
            for s in range(0, total.numel(), CHUNK):
                acc += torch.sign(total[s:s + CHUNK]).sum(dtype=torch.int64)
            sign_sum = int(acc)
            if zero_sign is None:
                zero_sign = -1 if sign_sum < 0 else 1
            else:  # model scope: report what the global election needs
                ambiguous = bool(((total == 0) & ((pos_n > 0) | (neg_n > 0))).any())
        negative_ties = zero_sign is not None and zero_sign < 0
        out = torch.empty_like(total) if out is None else out.reshape(-1)
        base_f = None if base is None else base.float().reshape(-1)
        for s in range(0, total.numel(), CHUNK):
            e = s + CHUNK
            sign = torch.sign(total[s:e])
            # a = 1 where the elected sign is +, 0 where it is - (zero sums: zero_sign)
            a = sign.clamp_(min=0) if negative_ties else sign.add_(1).clamp_(max=1)
            p, q = pos[s:e], neg[s:e]
            if cfg.normalize:  # divide by the count (summed weights), where that is 0 by 1
                p = p / _nonzero(pos_n[s:e], self.weighted)
                q = q / _nonzero(neg_n[s:e], self.weighted)
            # p * 1 + q * 0 == p and p * 0 + q * 1 == q exactly (p >= 0 >= q, both finite)
            o = torch.add(p * a, q.mul(a.neg_().add_(1)), out=out[s:e])
            if base_f is not None:
                if cfg.lam != 1:
                    o.mul_(cfg.lam)
                o.add_(base_f[s:e])
        return TiesResult(out.reshape(shape), sign_sum, ambiguous, finished=base is not None)


def _nonzero(count: torch.Tensor, weighted: bool) -> torch.Tensor:
    """``count`` with 0 replaced by 1 (counts are whole numbers unless weighted)."""
    return torch.sign(count).neg_().add_(1).add_(count) if weighted else count.clamp(min=1)  # c + (1 - sign(c))


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


def _merged_tau(base, get, k, cfg, name, thresholds, zero_sign, workspace=None, out=None) -> TiesResult:
    weights = _weights(cfg, k)
    if cfg.method == "ties":
        return ties_tau(get, k, cfg, name, thresholds, zero_sign, weights, workspace, out, base)
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
                reuse_output: bool = False) -> None:
    """Merge every tensor of ``names`` (in order) and ``write`` each; the one driver of both paths.

    ``base_of(name)`` reads theta_0's tensor, ``tau_of(i, name, base)`` model i's task vector
    (float32; it may be a buffer the source reuses on its next read). Model-scope TIES first finds
    each model's threshold (two passes), then merges with + for zero-sum entries while counting
    the elected signs over the whole model; if the majority is negative, the tensors whose result
    depends on it are merged again and ``rewrite`` replaces them. With ``reuse_output`` the
    tensor passed to ``write`` is one of two buffers used in turn (``write`` must be done with it
    by the time it returns from the call after next).
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
                          1 if global_sign else None, ws, out)
        sign_sum += res.sign_sum
        if res.ambiguous:
            redo.append(name)
        write(name, _finish(b, res, cfg))
        done.append(name)
    if global_sign and sign_sum <= 0:  # balanced: the reference code's where(sign > 0, ...) picks the negatives
        for name in redo:
            b = base_of(name)
            res = _merged_tau(b, lambda i, n=name, b=b: tau_of(i, n, b), k, cfg, name, thresholds, -1, ws)
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
                out.__setitem__, out.__setitem__)
    return out
