"""Quantisation round-trip attack: RTN-quantise the Linear weights, de-quantise, re-evaluate.

Zhang et al. 2024, "Catastrophic Failure of LLM Unlearning via Quantization" (arXiv 2410.16454)
show that unlearning by small weight changes can be undone by low-bit quantisation: the
unlearned and original weights often round to the same grid points. Their main results use
GPTQ/AWQ; here we use plain round-to-nearest (RTN), torch-only, so it runs on CPU and needs no
calibration data (a deliberate simplification: RTN is the weakest quantiser, so recovery
measured here is a lower bound of what calibrated 4-bit quantisers show).

Grid (per group g of ``group_size`` consecutive input columns of one output row; ``group_size``
None = the whole row, i.e. per-output-channel):

* symmetric:  s = max|w_g| / (2^(b-1) - 1),  q = clamp(round(w/s), -2^(b-1), 2^(b-1) - 1),  w^ = s q
* asymmetric: s = (max w_g - min w_g) / (2^b - 1),  z = round(-min w_g / s),
  q = clamp(round(w/s) + z, 0, 2^b - 1),  w^ = s (q - z)

In both cases |w - w^| <= s/2 elementwise (the range endpoints land on the grid up to the
rounding of z). A row whose length is not a multiple of ``group_size`` gets a shorter last
group. The presets are int8 per-channel symmetric and int4 group-wise (group 64) asymmetric.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class QuantConfig:
    """One RTN quantisation scheme."""

    bits: int = field(default=8, metadata={"help": "Bits per weight (2..8)."})
    group_size: int | None = field(default=None, metadata={"help": "Input columns per scale (None: one scale per output channel)."})
    symmetric: bool = field(default=True, metadata={"help": "Symmetric grid around 0 (True) or min/max grid with a zero-point (False)."})
    skip: tuple[str, ...] = field(default=("lm_head",), metadata={"help": "Regexes of Linear module names left in full precision (the LM head, tied to the embeddings in SmolLM2, by default)."})

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"'quant.bits' must be in 2..8, got {self.bits}.")
        if self.group_size is not None and self.group_size < 2:
            raise ConfigError(f"'quant.group_size' must be >= 2 or null, got {self.group_size}.")

    @property
    def name(self) -> str:
        g = "channel" if self.group_size is None else f"g{self.group_size}"
        return f"int{self.bits}-{g}-{'sym' if self.symmetric else 'asym'}"


INT8 = QuantConfig(bits=8, group_size=None, symmetric=True)
INT4 = QuantConfig(bits=4, group_size=64, symmetric=False)


def _groups(w: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """[rows, cols] -> [rows, n_groups, group] (the last group padded by repeating its last column)."""
    rows, cols = w.shape
    g = cols if group_size is None else min(group_size, cols)
    pad = (-cols) % g
    if pad:
        w = torch.cat([w, w[:, -1:].expand(rows, pad)], dim=1)
    return w.reshape(rows, -1, g), pad


def quantize_rtn(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-trip ``w`` [rows, cols] through a ``bits``-bit RTN grid: (w^ like ``w``, scales [rows, n_groups]).

    Computed in float32; ``w^`` is returned in ``w``'s dtype.
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_rtn expects a 2-D weight, got shape {tuple(w.shape)}")
    x, pad = _groups(w.float(), group_size)
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (x.abs().amax(-1, keepdim=True) / qmax).clamp_min(tiny)
        deq = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
    else:
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(tiny)
        zero = torch.round(-lo / scale)
        deq = (torch.clamp(torch.round(x / scale) + zero, 0, 2 ** bits - 1) - zero) * scale
    deq = deq.reshape(w.shape[0], -1)
    if pad:
        deq = deq[:, :-pad]
    return deq.to(w.dtype), scale.squeeze(-1)


@torch.no_grad()
def quantize_model(model: torch.nn.Module, cfg: QuantConfig) -> tuple[torch.nn.Module, int]:
    """A copy of ``model`` whose ``nn.Linear`` weights (bar ``cfg.skip``) are RTN round-tripped.

    Returns (the copy, number of Linear modules quantised). Biases stay in full precision.
    """
    skips = [re.compile(s) for s in cfg.skip]
    q = copy.deepcopy(model)
    n = 0
    for name, mod in q.named_modules():
        if isinstance(mod, torch.nn.Linear) and not any(s.search(name) for s in skips):
            mod.weight.data = quantize_rtn(mod.weight.data, cfg.bits, cfg.group_size, cfg.symmetric)[0]
            n += 1
    return q, n


def quant_attack(model, tokenizer, original, forget, cfg: QuantConfig = INT8, encode=None):
    """Forget Q_A_Prob of the round-tripped unlearned model (and, in ``details``, of the round-tripped original)."""
    from .common import AttackResult, forget_metric

    before = forget_metric(model, tokenizer, forget, encode)
    orig = forget_metric(original, tokenizer, forget, encode)
    q, n = quantize_model(model, cfg)
    after = forget_metric(q, tokenizer, forget, encode)
    del q
    qo, _ = quantize_model(original, cfg)
    orig_q = forget_metric(qo, tokenizer, forget, encode)
    return AttackResult(attack=f"quant:{cfg.name}", metric="Q_A_Prob (forget)", before=before, after=after, original=orig,
                        details={"linear_modules": n, "original_quantised": orig_q, "skip": list(cfg.skip)})
