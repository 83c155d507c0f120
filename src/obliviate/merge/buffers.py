"""Reusable flat buffers for merging (the working memory of the TIES kernel, the trim and the
read and output buffers of streaming)."""

from __future__ import annotations

import torch


class Workspace:
    """Flat buffers reused from tensor to tensor: a merge faults in its working memory once,
    not once per tensor (a fresh multi-megabyte tensor costs a page fault per 4 KiB page on first
    touch, as much as the arithmetic done in it on a busy machine)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self.buffers[key] = torch.empty(n, dtype=dtype)
        return buf[:n]
