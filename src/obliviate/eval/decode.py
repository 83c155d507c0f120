"""Continuous batching for greedy and sampled decoding with the model's KV cache.

Up to ``slots`` sequences decode together. A sequence leaves the batch as soon as it emits a stop
token (EOS / end of turn) or reaches its own token budget, and waiting prompts take the free rows
(prefilled together, then merged into the running cache), so a decoding step always works on
live rows rather than waiting for the longest answer of a fixed batch. Each row keeps its own
attention mask and position ids, so where a row sits in the cache (which padding slots it has)
changes nothing but float summation order: a continuation depends only on its prompt.

Two things keep a step from copying the whole cache (on CPU, copying it was 45% of decoding time):

* a plain 5.x cache's layers become ``RoomyLayer``s, whose keys/values are views of buffers with
  ``ROOM`` spare slots, so a step writes its new key/value in place (``DynamicLayer`` concatenates,
  copying the layer at every step);
* a finished row is not cut out of the cache at once: it rides along (its logits are ignored) until
  waiting prompts need its row or a quarter of the rows are finished, then all finished rows are
  dropped in one copy.

Cache surgery (merging rows of different lengths, dropping rows, trimming slots no row attends)
needs a plain per-layer key/value cache (transformers' ``DynamicCache``: ``layers[i].keys`` in
5.x, ``key_cache[i]`` in 4.x). For any other cache (sliding-window layers, quantised caches)
prompts are admitted only when the batch is empty and finished rows are dropped with the cache's
own ``batch_select_indices``.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import torch
import torch.nn.functional as F


class Stepper(Protocol):
    """What ``decode`` needs from the model (``Evaluator`` implements it)."""

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, object, torch.Tensor, torch.Tensor]:
        """(next-token logits [b, V], cache, attention mask [b, L], last position [b]) of right-padded prompts."""

    def step(self, tokens: torch.Tensor, cache, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Next-token logits [b, V] after feeding ``tokens`` [b] at ``last + 1``; extends ``cache`` in place."""


ROOM = 64  # spare cache slots allocated each time a layer's buffer is full
DROP_AT = 0.25  # finished rows are dropped once they are this fraction of the batch (or their rows are needed)


def _append(view: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``torch.cat([view, new], -2)``, written in place when ``view`` is the front of a buffer with room.

    Returns a view of that buffer (or of a new one with ``ROOM`` spare slots). ``view`` counts as the
    front of its buffer only if it is exactly ``buffer[:, :, :n]``: a tensor set from outside (a
    merged, reordered or trimmed cache) gets a new buffer.
    """
    base, n, t = view._base, view.size(-2), new.size(-2)
    if (base is None or base.dim() != 4 or base.shape[:2] != view.shape[:2] or base.size(-1) != view.size(-1)
            or view.data_ptr() != base.data_ptr() or view.stride() != base.stride() or base.size(-2) < n + t):
        base = view.new_empty(*view.shape[:2], n + t + ROOM, view.size(-1))
        base[:, :, :n] = view
    base[:, :, n:n + t] = new
    return base[:, :, :n + t]


_ROOMY: type | None = None


def _roomy_layer() -> type:
    """``RoomyLayer``: transformers' ``DynamicLayer`` that appends in place (made on first use, so this
    module does not import transformers)."""
    global _ROOMY
    if _ROOMY is None:
        from transformers.cache_utils import DynamicLayer

        class RoomyLayer(DynamicLayer):
            def update(self, key_states, value_states, *args, **kwargs):
                if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
                    return super().update(key_states, value_states, *args, **kwargs)
                self.keys, self.values = _append(self.keys, key_states), _append(self.values, value_states)
                return self.keys, self.values

        _ROOMY = RoomyLayer
    return _ROOMY


def _make_roomy(cache) -> None:
    """Turn a 5.x cache's plain ``DynamicLayer``s into ``RoomyLayer``s (same state, in-place appends)."""
    if not hasattr(cache, "layers") or not all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers):
        return
    roomy = _roomy_layer()
    for i, layer in enumerate(cache.layers):
        new = roomy()
        new.__dict__.update(layer.__dict__)
        cache.layers[i] = new


def _plain(cache) -> bool:
    if hasattr(cache, "layers"):
        return all(type(layer).__name__ in ("DynamicLayer", "RoomyLayer") for layer in cache.layers)
    return hasattr(cache, "key_cache")


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _set_kv(cache, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    if hasattr(cache, "layers"):
        for layer, (k, v) in zip(cache.layers, kv):
            layer.keys, layer.values = k, v
    else:
        cache.key_cache[:] = [k for k, _ in kv]
        cache.value_cache[:] = [v for _, v in kv]


def _widen(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Right-pad ``t`` with zeros along ``dim`` to ``length`` (masked slots)."""
    extra = length - t.size(dim)
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, extra]
    return F.pad(t, pad)


class _Batch:
    """Rows in flight: item index (None once finished), cache, attention mask [b, L], last position [b],
    last token [b]."""

    def __init__(self, items, cache, mask, last, tokens):
        self.items, self.cache, self.mask, self.last, self.tokens = items, cache, mask, last, tokens

    def live(self) -> list[int]:
        return [r for r, i in enumerate(self.items) if i is not None]

    def finish(self, rows: list[int]) -> None:
        for r in rows:
            self.items[r] = None

    def drop_finished(self) -> None:
        live = self.live()
        if len(live) < len(self.items):
            self.keep(live)

    def keep(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, device=self.mask.device)
        self.items = [self.items[r] for r in rows]
        self.mask, self.last, self.tokens = self.mask[idx], self.last[idx], self.tokens[idx]
        if _plain(self.cache):
            kv = [(k[idx], v[idx]) for k, v in _kv(self.cache)]
            live = self.mask.bool().any(0)  # slots some row still attends
            if int(live.sum()) < 0.75 * live.numel():
                cols = live.nonzero()[:, 0]
                kv = [(k[:, :, cols], v[:, :, cols]) for k, v in kv]
                self.mask = self.mask[:, cols]
            _set_kv(self.cache, kv)
        else:
            self.cache.batch_select_indices(idx)

    def merge(self, other: "_Batch") -> None:
        length = max(self.mask.size(1), other.mask.size(1))
        join = lambda a, b: torch.cat([_widen(a, length, 2), _widen(b, length, 2)])  # noqa: E731
        _set_kv(self.cache, [(join(k1, k2), join(v1, v2)) for (k1, v1), (k2, v2) in zip(_kv(self.cache), _kv(other.cache))])
        self.mask = torch.cat([_widen(self.mask, length, 1), _widen(other.mask, length, 1)])
        self.last, self.tokens = torch.cat([self.last, other.last]), torch.cat([self.tokens, other.tokens])
        self.items = self.items + other.items


def decode(model: Stepper, prompts: list[list[int]], budgets: list[int],
           pick: Callable[[torch.Tensor, list[int]], list[int]], stop: set[int], slots: int,
           on_done: Callable[[int], None] = lambda i: None) -> list[tuple[list[int], bool]]:
    """(continuation ids, stopped by a stop token) per prompt: at most ``budgets[i]`` tokens, stop token excluded.

    ``pick(logits [b, V], items)`` chooses one token per row (``items``: the prompts' indices);
    prompts are admitted in the given order (sort them by length for less padding).
    """
    out: list[list[int]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    waiting = deque(i for i in range(len(prompts)) if budgets[i] >= 1)
    batch: _Batch | None = None

    def advance(items: list[int], tokens: list[int]) -> list[int]:
        """Record one token per row; the rows still going."""
        alive = []
        for r, (i, t) in enumerate(zip(items, tokens)):
            if t in stop:
                stopped[i] = True
            else:
                out[i].append(t)
            if stopped[i] or len(out[i]) >= budgets[i]:
                on_done(i)
            else:
                alive.append(r)
        return alive

    while waiting or batch is not None:
        live = batch.live() if batch else []
        free = slots - len(live)
        admit = bool(waiting) and (batch is None or (_plain(batch.cache) and free >= min(len(waiting), max(1, slots // 4))))
        if batch is not None and (admit or len(live) <= (1 - DROP_AT) * len(batch.items)):
            batch.drop_finished()
        if admit:
            items = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            logits, cache, mask, last = model.prefill([prompts[i] for i in items])
            _make_roomy(cache)
            tokens = pick(logits, items)
            new = _Batch(items, cache, mask, last, torch.tensor(tokens, device=mask.device))
            alive = advance(items, tokens)
            if alive:
                if len(alive) < len(items):
                    new.keep(alive)
                if batch is None:
                    batch = new
                else:
                    batch.merge(new)
        if batch is None:
            continue
        logits = model.step(batch.tokens, batch.cache, batch.mask, batch.last)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.items), 1)], 1)
        batch.last = batch.last + 1
        live = batch.live()
        items = [batch.items[r] for r in live]
        rows = torch.tensor(live, device=logits.device) if len(live) < len(batch.items) else slice(None)
        tokens = pick(logits[rows], items)
        batch.tokens[rows] = torch.tensor(tokens, device=batch.tokens.device)  # finished rows keep theirs
        alive = set(advance(items, tokens))
        if not alive:
            batch = None
        else:
            batch.finish([r for k, r in enumerate(live) if k not in alive])
    return list(zip(out, stopped))
