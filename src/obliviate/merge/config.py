"""The ``merge:`` settings, with TIES presets that name whose rules a merge follows.

TIES-Merging (Yadav et al. 2023) leaves three details open that change results; implementations
differ on all of them, so each is an explicit option, and a ``preset`` fills the ones left unset:

=========================  ======================  ==================  ==============
option                     ``paper`` (default)     ``mergekit``        ``legacy``
=========================  ======================  ==================  ==============
``trim_scope``             ``model``               ``tensor``          ``tensor``
``trim_count``             ``int_plus_one_ties``   ``int_exact``       ``ceil_ties``
``sign_tie``               ``majority``            ``positive``        ``majority``
``normalize``              true                    true                true
=========================  ======================  ==================  ==============

- ``paper``: the TIES reference code (github.com/prateeky2806/ties-merging, ``merge_utils.py``):
  each task vector is flattened over the whole model and trimmed at its (n - int(d*n))-th smallest
  magnitude (so int(d*n)+1 entries survive, plus any tied with the threshold); an entry whose
  trimmed sum is exactly 0 takes the majority of the elected signs over the whole model (and,
  as there, the negative values when those signs balance exactly).
- ``mergekit``: mergekit's ``ties`` (``sparsify.magnitude`` + ``get_mask(method="sum")``) with
  ``normalize: true``: per tensor, exactly max(1, int(d*n)) entries survive, the first ones in
  ``torch.argsort(|tau|, descending=True)`` order (so threshold ties are broken as mergekit breaks
  them); a zero sum elects +. ``normalize: false`` gives its disjoint sum instead of the mean.
- ``legacy``: obliviate 0.1's rules: per tensor, the ceil(d*n) largest magnitudes plus ties, the
  tensor's majority sign for zero sums (+ when its signs balance exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError, did_you_mean

MergeMethod = Literal["task_arithmetic", "linear", "ties"]
Preset = Literal["paper", "mergekit", "legacy"]
TrimScope = Literal["tensor", "model"]
TrimCount = Literal["ceil_ties", "int_plus_one_ties", "int_exact"]
SignTie = Literal["majority", "positive"]

PRESETS: dict[str, dict[str, object]] = {
    "paper": {"trim_scope": "model", "trim_count": "int_plus_one_ties", "sign_tie": "majority", "normalize": True},
    "mergekit": {"trim_scope": "tensor", "trim_count": "int_exact", "sign_tie": "positive", "normalize": True},
    "legacy": {"trim_scope": "tensor", "trim_count": "ceil_ties", "sign_tie": "majority", "normalize": True},
}


@dataclass(frozen=True)
class MergeConfig:
    """How to merge k models that share a base (the ``merge:`` section).

    The TIES options left unset (None) take the ``preset``'s value; set ones win over it.
    """

    method: MergeMethod = field(default="ties", metadata={"help": "'ties' (SPUNGE's choice), 'task_arithmetic' or 'linear'."})
    density: float = field(default=0.2, metadata={"help": (
        "TIES: fraction of each task vector's entries kept by magnitude (paper: 0.2)."
    )})
    lam: float = field(default=1.0, metadata={"help": "lambda: scale of the merged task vector, theta_0 + lambda * tau."})
    dare_p: float | None = field(default=None, metadata={"help": (
        "DARE drop probability p (None: no DARE); survivors scaled by 1/(1-p). With ties it "
        "replaces the magnitude trim; masks are seeded per (seed, tensor name, model index)."
    )})
    weights: tuple[float, ...] = field(default=(), metadata={"help": (
        "linear: per-model weights (empty: equal); ties: mergekit's per-model weights (tau_i "
        "scaled by w_i before the sign election, the mean divides by the agreeing weights)."
    )})
    seed: int = field(default=0, metadata={"help": "Seed of DARE's random drop."})
    preset: Preset = field(default="paper", metadata={"help": (
        "TIES rules: 'paper' (reference code), 'mergekit' (its ties, normalize true) or 'legacy' "
        "(obliviate 0.1); fills the options below left unset."
    )})
    trim_scope: TrimScope | None = field(default=None, metadata={"help": (
        "TIES: trim each task vector over each 'tensor' or over the whole flattened 'model' (also "
        "the scope of sign_tie: majority)."
    )})
    trim_count: TrimCount | None = field(default=None, metadata={"help": (
        "TIES: entries kept of n: 'ceil_ties' (ceil(d*n) + ties at the threshold), "
        "'int_plus_one_ties' (int(d*n)+1 + ties; reference code) or 'int_exact' (exactly max(1, "
        "int(d*n)), ties in torch.argsort order; mergekit)."
    )})
    sign_tie: SignTie | None = field(default=None, metadata={"help": (
        "TIES: sign elected where the trimmed sum is exactly 0: the 'majority' of the elected "
        "signs in the trim scope, or 'positive' (mergekit)."
    )})
    normalize: bool | None = field(default=None, metadata={"help": (
        "TIES: true: mean of the agreeing entries (disjoint mean); false: their sum (mergekit's "
        "normalize: false)."
    )})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"'merge.preset' must be one of {', '.join(PRESETS)}, got '{self.preset}'."
                              f"{did_you_mean(str(self.preset), list(PRESETS))}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if not 0 < self.density <= 1:
            raise ConfigError(f"'merge.density' must be in (0, 1], got {self.density}.")
        if self.dare_p is not None and not 0 <= self.dare_p < 1:
            raise ConfigError(f"'merge.dare_p' must be in [0, 1) or null, got {self.dare_p}.")
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) == 0):
            raise ConfigError(f"'merge.weights' must be >= 0 with a positive sum, got {list(self.weights)}.")
        if self.weights and self.method == "task_arithmetic":
            raise ConfigError("'merge.weights' applies to methods 'linear' and 'ties' (method is 'task_arithmetic'; "
                              "scale the sum with 'merge.lam').")
        if self.trim_scope == "model" and self.trim_count == "int_exact" and self.method == "ties" and self.dare_p is None:
            raise ConfigError("'merge.trim_count: int_exact' breaks threshold ties in torch.argsort order, which needs the "
                              "whole trim scope in memory: use it with 'trim_scope: tensor' (the mergekit preset), or "
                              "'int_plus_one_ties'/'ceil_ties' with 'trim_scope: model'.")
