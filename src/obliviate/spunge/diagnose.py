"""Why a SPUNGE merge does or does not amplify its base method: statistics of the subset task vectors.

    from obliviate.spunge.diagnose import task_vector_stats
    stats = task_vector_stats("runs/x/base", ["runs/x/subsets/a/model", "runs/x/subsets/b/model"], MergeConfig())

For k subset models with task vectors tau_i = theta_i - theta_0 (theta_0: the model every subset
started from, SPUNGE's merge base), over all float tensors of the model:

- ``norm[i]``: |tau_i| (L2 over the whole model).
- ``cosine[i][j]``: cosine similarity of tau_i and tau_j.
- ``sign_agreement[i][j]``: among entries where tau_i and tau_j are both non-zero, the fraction
  with the same sign. TIES's sign election (Yadav et al. 2023, Alg. 1 step 2) discards the
  minority sign per entry: near 0.5 the subsets pull in unrelated directions.
- ``topk_overlap[i][j]``: |T_i & T_j| / min(|T_i|, |T_j|), where T_i is the set of entries TIES's
  trim keeps of tau_i (the merge config's density, count rule and scope; model scope finds each
  model's threshold with ``merge.ops.model_thresholds``, as the merge does).
- ``kept_trim[i]``: fraction of |tau_i|^2 that survives the trim; ``kept_ties[i]``: that survives
  the trim *and* the sign election (entries whose sign equals sign(sum_j trimmed tau_j)). Entries
  whose trimmed sum is exactly 0 count as dropped here (the merge gives them a tie-break sign; for
  float task vectors they are the entries no model kept, or exact cancellations).

DARE merges (``dare_p``) are not covered: their trim is random, so ``kept_*`` would describe one draw.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ..errors import ConfigError
from ..merge import MergeConfig

CHUNK = 1 << 22  # entries per tensor_sums call


def tensor_sums(taus: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """The additive statistics of one tensor's k task vectors (float64 sums, on CPU).

    ``masks[i]``: boolean, True where the trim keeps tau_i (None: keeps everything). Returns
    ``sq``, ``sq_trim``, ``sq_kept``, ``kept_n`` of shape [k] and ``dot``, ``both_nonzero``,
    ``agree``, ``overlap`` of shape [k, k] (see the module docstring; ``summarise`` turns sums into ratios).
    """
    k = len(taus)
    flat = [t.reshape(-1).float() for t in taus]
    keep = [torch.ones_like(f, dtype=torch.bool) if m is None else m.reshape(-1) for f, m in zip(flat, masks)]
    trimmed = [torch.where(m, f, torch.zeros((), dtype=f.dtype)) for f, m in zip(flat, keep)]
    elected = torch.sign(torch.stack(trimmed).sum(0))
    out = {n: torch.zeros(k, dtype=torch.float64) for n in ("sq", "sq_trim", "sq_kept", "kept_n")}
    out.update({n: torch.zeros(k, k, dtype=torch.float64) for n in ("dot", "both_nonzero", "agree", "overlap")})
    signs = [torch.sign(f) for f in flat]
    for i in range(k):
        agrees = (torch.sign(trimmed[i]) == elected) & (elected != 0)
        out["sq"][i] = flat[i].double().square().sum()
        out["sq_trim"][i] = trimmed[i].double().square().sum()
        out["sq_kept"][i] = trimmed[i].double().square().mul(agrees).sum()
        out["kept_n"][i] = keep[i].sum()
        for j in range(k):
            prod = signs[i] * signs[j]
            out["dot"][i, j] = (flat[i].double() * flat[j].double()).sum()
            out["both_nonzero"][i, j] = (prod != 0).sum()
            out["agree"][i, j] = (prod > 0).sum()
            out["overlap"][i, j] = (keep[i] & keep[j]).sum()
    return out


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp_min(1e-300), torch.full_like(a, float("nan")))


def summarise(sums: dict[str, torch.Tensor]) -> dict[str, list]:
    """Ratios from summed ``tensor_sums`` (NaN where undefined, e.g. no shared non-zero entry)."""
    sq = sums["sq"]
    norm = sq.sqrt()
    smaller = torch.minimum(sums["kept_n"][:, None], sums["kept_n"][None, :])
    return {"norm": norm.tolist(),
            "cosine": _ratio(sums["dot"], norm[:, None] * norm[None, :]).tolist(),
            "sign_agreement": _ratio(sums["agree"], sums["both_nonzero"]).tolist(),
            "topk_overlap": _ratio(sums["overlap"], smaller).tolist(),
            "kept_trim": _ratio(sums["sq_trim"], sq).tolist(),
            "kept_ties": _ratio(sums["sq_kept"], sq).tolist()}


def task_vector_stats(base: str | os.PathLike, models: Sequence[str | os.PathLike], cfg: MergeConfig) -> dict[str, list]:
    """``summarise`` over every float tensor of ``models`` against ``base`` (model directories), with
    the trim of ``cfg`` (a TIES config). Reads one tensor of each model at a time."""
    from ..merge.ops import model_thresholds, task_vector
    from ..merge.stio import ModelFiles
    from ..merge.trim import trim_threshold

    if cfg.method != "ties" or cfg.dare_p is not None:
        raise ConfigError(f"task_vector_stats describes a TIES magnitude trim; got method={cfg.method!r}, dare_p={cfg.dare_p}.")
    if len(models) < 2:
        raise ConfigError("task_vector_stats needs at least two subset models.")
    base_files = ModelFiles(base)
    files = [ModelFiles(m) for m in models]
    names = base_files.names()
    k = len(files)

    def tau_of(i: int, name: str, b: torch.Tensor) -> torch.Tensor:
        return task_vector(files[i].read(name), b)

    thresholds = model_thresholds(names, base_files.read, tau_of, k, cfg) if cfg.trim_scope == "model" else None
    total: dict[str, torch.Tensor] = {}
    for name in names:
        b = base_files.read(name)
        if not b.is_floating_point():
            continue
        taus = [tau_of(i, name, b) for i in range(k)]
        masks = []
        for i, t in enumerate(taus):
            if thresholds is not None:
                masks.append(None if thresholds[i] is None else t.abs() >= thresholds[i])
            else:
                threshold, mask = trim_threshold(t, cfg.density, cfg.trim_count)
                masks.append(mask if threshold is None else t.abs() >= threshold)
        for s in range(0, b.numel(), CHUNK):  # every statistic is per entry: chunks bound the temporaries
            part = tensor_sums([t.reshape(-1)[s:s + CHUNK] for t in taus],
                               [None if m is None else m.reshape(-1)[s:s + CHUNK] for m in masks])
            for key, v in part.items():
                total[key] = total[key] + v if key in total else v
    for f in (base_files, *files):
        f.close()
    return summarise(total)
