"""The TIES kernel: one tensor's k trimmed task vectors folded into running sums, chunk by chunk.

Per entry it keeps the running sum of the trimmed tau_i (its sign is the election), the sums of
the kept positive and of the kept negative values, and their counts (summed weights with
mergekit's weights). The last pass also writes the output: the elected sign picks the
positive or the negative mean (``normalize``; else the sum), plus theta_0 when given. Each sum is
taken in model order and adding an exact 0 changes nothing, so the result equals the two-pass form
(sum, elect, then sum the agreeing values; obliviate 0.1 and the reference code) bit for bit.

Speed (CPU, one thread): memory traffic, not arithmetic, bounds this loop. The work runs in
chunks that stay in a core's L2 cache; a pass folds several task vectors (``group``: up to 4
when streaming, all k in memory) chunk by chunk, and the last pass finishes each chunk while its sums
are still in cache, so the five sums cross memory once per group rather than once per model (and
when one pass holds every model they never leave the cache: chunk-sized buffers). Only float
arithmetic is used in the loops (``hardshrink``, ``sign``, ``clamp``, fused ``addcmul``/``addcdiv``,
``dot``): boolean masks and ``torch.where`` cost several times more than the arithmetic they select. Kept values enter the signed sums as x * h and x * g
(h = 1 where x > 0, g = 1 where x < 0), exact products; trimmed values are never -0, so no sum is
-0 where the two-pass form has +0 (which would show in theta_0 = -0 entries).

The sign of a zero sum comes from the whole tensor's elected signs (``sign_tie: majority``), known
only after the last chunk: chunks are finished with + and the few that hold a zero sum with kept
values are redone if the majority turns out negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .buffers import Workspace
from .config import MergeConfig

_ZERO = torch.zeros(())
CHUNK = 31 << 10  # torch's parallel grain size is 32768: below it each op runs in the calling thread


def chunk_size() -> int:
    """Entries per chunk: with one torch thread 4 * ``CHUNK`` (fewer calls; 8 buffers of it fit in
    L2); with more, ``CHUNK``, so each op stays in the calling thread (no hand-offs on a busy machine)."""
    return CHUNK if torch.get_num_threads() > 1 else 4 * CHUNK


@dataclass
class TiesResult:
    """One tensor's merged task vector, plus what a model-scope sign election needs."""

    tau: torch.Tensor
    sign_sum: int  # (# entries with a positive sum) - (# with a negative sum)
    ambiguous: bool  # some entry has a zero sum but non-zero trimmed values (its result depends on sign_tie)
    finished: bool = False  # tau is already theta_0 + lambda * tau_merged (float32)


@dataclass
class Finish:
    """How the last model's pass writes the output (``TiesSums.add(..., finish=...)``).

    ``zero_sign``: the sign of zero sums when decided outside (model scope); None: by
    ``cfg.sign_tie`` over this tensor. ``base``: theta_0, to return theta_0 + lambda * tau.
    """

    cfg: MergeConfig
    out: torch.Tensor  # flat float32, n entries
    zero_sign: int | None = None
    base: torch.Tensor | None = None  # flat float32
    sign_sum: int = 0
    redo: list[tuple] = field(default_factory=list)  # (start, end, sums) of chunks with a zero sum and kept values

    @property
    def count_signs(self) -> bool:
        return self.cfg.sign_tie == "majority" or self.zero_sign is not None


class Part:
    """One task vector tau_i (flat float32) as TIES folds it: trimmed to ``|t| >= threshold`` or to
    ``mask`` (both None: kept whole), then scaled by ``w``."""

    def __init__(self, t: torch.Tensor, threshold: torch.Tensor | None, mask: torch.Tensor | None, w: float | None):
        self.t, self.threshold, self.mask, self.w = t, threshold, mask, w
        # fast path: keep |c| > cut, the float just below the threshold (|c| >= threshold <=> |c| > cut)
        self.fast = threshold is not None and mask is None and w is None and bool(threshold > 0)
        self.cut = float(torch.nextafter(threshold, _ZERO)) if self.fast else 0.0

    def trimmed(self, s: int, e: int, out: torch.Tensor) -> None:
        """Entries s:e, trimmed and scaled, into ``out`` (never -0)."""
        c = self.t[s:e]
        if self.fast:
            torch.hardshrink(c, self.cut, out=out)
            return
        if self.mask is not None:
            c = c * self.mask[s:e]
        elif self.threshold is not None:
            c = c * (c.abs() >= self.threshold)
        if self.w is not None:
            c = c * self.w
        torch.add(c, 0.0, out=out)  # a copy, with -0 (from x * 0) turned into +0


class TiesSums:
    """Running sums of one tensor's TIES merge (``total``, ``pos``, ``neg``, ``pos_n``, ``neg_n``:
    flat float32 buffers of the workspace), updated by ``add`` a few task vectors at a time.
    With ``one_pass`` (every model folded in one ``add``) they only need to hold one chunk."""

    def __init__(self, n: int, ws: Workspace, weighted: bool = False, one_pass: bool = False):
        self.n, self.weighted, self.chunk, self.one_pass = n, weighted, chunk_size(), one_pass
        size = min(n, self.chunk) if one_pass else n
        self.sums = tuple(ws.get(key, size) for key in ("total", "pos", "neg", "pos_n", "neg_n"))
        self.tmp = [ws.get(f"tmp{j}", min(n, self.chunk)) for j in range(3)]

    def add(self, parts: list[Part], first: bool, finish: Finish | None = None) -> TiesResult | None:
        """Fold in the task vectors of ``parts`` (in order), each chunk of all of them in turn (the
        sums stay in cache between them); ``first``: the buffers hold the previous tensor. With
        ``finish`` (the last models) also write the output and return the result."""
        for s in range(0, self.n, self.chunk):
            e = min(s + self.chunk, self.n)
            at = (0, e - s) if self.one_pass else (s, e)
            sums = tuple(x[at[0]:at[1]] for x in self.sums)
            for j, p in enumerate(parts):
                ct = sums[0] if first and j == 0 else self.tmp[2][:e - s]
                p.trimmed(s, e, ct)
                self._fold(sums, ct, p.w, first and j == 0)
            if finish is not None:
                self._finish(s, e, sums, finish, count=True,
                             zero_sign=1 if finish.zero_sign is None else finish.zero_sign)
        return None if finish is None else self._result(finish)

    def _fold(self, sums: tuple[torch.Tensor, ...], ct: torch.Tensor, w: float | None, first: bool) -> None:
        total, pos, neg, pos_n, neg_n = sums
        a, b, _ = (x[:ct.numel()] for x in self.tmp)
        code = torch.sign(ct, out=a)
        if first:
            torch.clamp(ct, min=0, out=pos)
            torch.clamp(ct, max=0, out=neg)
            h = torch.clamp(code, min=0, out=pos_n)
            torch.sub(h, code, out=neg_n)
            if w is not None:
                pos_n.mul_(w)
                neg_n.mul_(w)
            return
        total.add_(ct)
        h = torch.clamp(code, min=0, out=b)  # 1 where ct > 0
        pos.addcmul_(ct, h)
        pos_n.add_(h, alpha=1.0 if w is None else w)
        g = torch.sub(h, code, out=a)  # 1 where ct < 0
        neg.addcmul_(ct, g)
        neg_n.add_(g, alpha=1.0 if w is None else w)

    def _finish(self, s: int, e: int, sums: tuple[torch.Tensor, ...], f: Finish, count: bool, zero_sign: int) -> None:
        """Write ``f.out[s:e]`` from the chunk's ``sums`` with ``zero_sign`` for zero sums
        (``total`` becomes its sign).

        Elected + takes pos (pos_n), - takes neg (neg_n): with z = -1 where the sign is - (else
        0) and a = 1 + z, pos * a - neg * z selects exactly (p * 1 - q * 0 == p, p * 0 - q * -1 == q)."""
        total, pos, neg, pos_n, neg_n = sums
        u, z, cnt = (x[:e - s] for x in self.tmp)
        sg = total.sign_()
        if count and f.count_signs:
            f.sign_sum += int(sg.sum())
            # sum of (s^2 - 1) * pos < 0 <=> an entry with a zero sum keeps values (pos > 0 there:
            # a zero sum of kept values needs both signs); one pass keeps no sums: save the chunk's
            if float(torch.dot(torch.mul(sg, sg, out=u).sub_(1), pos)) != 0:
                f.redo.append((s, e, tuple(x.clone() for x in sums) if self.one_pass else sums))
        if zero_sign > 0:
            torch.clamp(sg, max=0, out=z)
        else:  # z = -1 where s <= 0
            torch.clamp(sg, min=0, out=z).sub_(1)
        a = torch.add(z, 1, out=u)
        o = torch.mul(pos, a, out=f.out[s:e]).addcmul_(neg, z, value=-1)
        cfg = f.cfg
        if cfg.normalize:  # divide by the count (summed weights), where that is 0 by 1
            torch.mul(pos_n, a, out=cnt).addcmul_(neg_n, z, value=-1)
            if self.weighted:
                cnt.add_(torch.sign(cnt).neg_().add_(1))  # c + (1 - sign(c))
            else:
                cnt.clamp_(min=1)
            if f.base is not None and cfg.lam == 1:  # theta_0 + 1 * (o / cnt): the same two roundings
                torch.addcdiv(f.base[s:e], o, cnt, out=o)
                return
            o.div_(cnt)
        if f.base is not None:
            if cfg.lam != 1:
                o.mul_(cfg.lam)
            o.add_(f.base[s:e])

    def _result(self, f: Finish) -> TiesResult:
        if f.zero_sign is None and f.cfg.sign_tie == "majority" and f.sign_sum < 0:
            for s, e, sums in f.redo:  # the tensor's majority is -: zero sums take - after all
                self._finish(s, e, sums, f, count=False, zero_sign=-1)
        return TiesResult(f.out, f.sign_sum, bool(f.redo), finished=f.base is not None)
