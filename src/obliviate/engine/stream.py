"""Deterministic, resumable, rank-aware batching.

Each data set is an endless stream: the concatenation of seeded permutations (epoch e uses
``seed + e``). Micro-batch j of the run takes stream items ``[j*G, (j+1)*G)`` where
``G = per_device_batch * world_size``, and rank r takes its slice of those. So the order depends
only on (seed, j): a resumed run sees exactly the batches it would have seen, a 2-process run
sees the same global batches as a 1-process run, and a forget set smaller than a batch just
wraps into the next permutation.
"""

from __future__ import annotations

import torch


class Stream:
    def __init__(self, n: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0, shuffle: bool = True):
        assert n > 0 and batch_size > 0
        self.n, self.b, self.seed, self.world, self.rank, self.shuffle = n, batch_size, seed, world_size, rank, shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + epoch)
                self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perms[epoch] = list(range(self.n))
            self._perms.pop(epoch - 2, None)
        return self._perms[epoch]

    def global_indices(self, j: int) -> list[int]:
        G = self.b * self.world
        return [self._perm(k // self.n)[k % self.n] for k in range(j * G, (j + 1) * G)]

    def indices(self, j: int) -> list[int]:
        """This rank's example indices for micro-batch ``j``."""
        g = self.global_indices(j)
        return g[self.rank * self.b:(self.rank + 1) * self.b]
