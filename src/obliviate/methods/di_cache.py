"""A cache of Deliberate Imagination's teacher targets, for forget sets small enough to hold.

DI's extra cost per step is the frozen teacher's forward. The teacher never changes, so its
adjusted target q_t = softmax(z_t - gamma * onehot(x_{t+1})) for a forget example is the same
every epoch: ``TeacherCache`` keeps it, keyed by the example's ``index`` (``batch["index"]``,
its position in the forget set), for the answer positions only. From the second epoch on, a
step runs no teacher forward.

Two storage modes:

- ``"full"``: the whole distribution in float16 (|y| x V x 2 bytes per example: SmolLM2's
  49,152-token vocabulary and 15 answer tokens is 1.5 MB);
- ``"topk"``: the k most probable tokens, renormalised to sum to 1 (the rest dropped).

The approximation error is the total-variation distance between the cached and the exact
target, 0.5 * sum_v |q~_v - q_v|: for top-k it is exactly the dropped mass; for float16 it is
the rounding. ``stats()`` reports its mean and maximum over all cached positions (logged by DI
as ``cache_tv_mean``/``cache_tv_max``).

Each entry also keeps the example's token ids, so a reused method object (or a changed
forget set) never reads another example's targets: a mismatch is a miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

CacheMode = Literal["none", "full", "topk"]


@dataclass
class _Entry:
    ids: torch.Tensor      # [T_b] the example's input ids (unpadded)
    values: torch.Tensor   # [n_b, V] fp16 probabilities, or [n_b, k] top-k probabilities
    indices: torch.Tensor | None  # [n_b, k] vocabulary ids for top-k, None for full


class TeacherCache:
    """Per-example adjusted teacher targets on answer positions; see the module docstring."""

    def __init__(self, mode: Literal["full", "topk"], top_k: int = 64):
        self.mode = mode
        self.top_k = top_k
        self._store: dict[int, _Entry] = {}
        self._tv_sum = 0.0
        self._tv_max = 0.0
        self._positions = 0

    def __len__(self) -> int:
        return len(self._store)

    def lookup(self, batch: dict[str, torch.Tensor], mask: torch.Tensor):
        """Cached targets for every row of ``batch``, or None if any row is missing.

        Returns dense targets [B, T-1, V] (``"full"``) or (values, indices) [B, T-1, k]
        (``"topk"``), zero on positions outside ``mask``.
        """
        entries = []
        for b, i in enumerate(batch["index"].tolist()):
            e = self._store.get(i)
            ids = _row_ids(batch, b)
            if e is None or e.ids.shape != ids.shape or not torch.equal(e.ids, ids.to(e.ids.device)):
                return None
            entries.append(e)
        B, Tm1 = mask.shape
        width = entries[0].values.shape[-1]
        values = mask.new_zeros((B, Tm1, width), dtype=torch.float32)
        indices = mask.new_zeros((B, Tm1, width), dtype=torch.long) if self.mode == "topk" else None
        for b, e in enumerate(entries):
            rows = mask[b].nonzero().squeeze(-1)
            values[b, rows] = e.values.to(values.device, torch.float32)
            if indices is not None:
                indices[b, rows] = e.indices.to(indices.device, torch.long)
        return values if indices is None else (values, indices)

    @torch.no_grad()
    def put(self, batch: dict[str, torch.Tensor], targets: torch.Tensor, mask: torch.Tensor) -> None:
        """Store the exact targets [B, T-1, V] (fp32) of every row on its ``mask``ed positions."""
        for b, i in enumerate(batch["index"].tolist()):
            q = targets[b][mask[b]].float()  # [n_b, V]
            if self.mode == "topk":
                k = min(self.top_k, q.shape[-1])
                vals, idx = q.topk(k, dim=-1)
                kept = vals.sum(-1, keepdim=True)
                tv = 1.0 - kept.squeeze(-1)  # TV(renormalised top-k, q) = dropped mass
                entry = _Entry(_row_ids(batch, b), (vals / kept).half(), idx.to(torch.int32))
            else:
                half = q.half()
                tv = 0.5 * (half.float() - q).abs().sum(-1)
                entry = _Entry(_row_ids(batch, b), half, None)
            self._store[i] = entry
            if tv.numel():
                self._tv_sum += float(tv.sum())
                self._tv_max = max(self._tv_max, float(tv.max()))
                self._positions += tv.numel()

    def stats(self) -> dict[str, float]:
        """Mean/max total-variation distance of cached vs exact targets, and the cache size."""
        mean = self._tv_sum / self._positions if self._positions else 0.0
        return {"cache_tv_mean": mean, "cache_tv_max": self._tv_max, "cache_examples": float(len(self._store))}


def _row_ids(batch: dict[str, torch.Tensor], b: int) -> torch.Tensor:
    """The unpadded input ids of row ``b`` (right padding: the attention mask's ones)."""
    n = int(batch["attention_mask"][b].sum())
    return batch["input_ids"][b, :n].detach().clone()
