"""FALCON (Hu et al., "FALCON: Fine-grained Activation manipuLation by Contrastive Orthogonal uNalignment
for LLMs", arXiv 2502.01472, NeurIPS 2025; reference code ``CharlesJW222/FALCON``).

1. Layer l (output of decoder block l = HF ``hidden_states[l + 1]``): given, or chosen before training
   by mutual information (``obliviate.analysis.select_layer``; Sec. 3.1) on the first ``mi_samples``
   forget and retain examples. The trained parameters are ``update_module`` of blocks l-2..l.
2. Per forget batch, a principal offset vector (POV) from the SVD of the frozen model's
   layer-l activations on the batch (``representation.principal_offset_vector``; Sec. 3.2).
3. Forget loss: per-token InfoNCE at temperature ``tau`` (0.7) with anchor h_theta(x_f), positive the
   POV, negative h_frozen(x_f) at the same token (Sec. 3.3); ``extra_negatives`` K > 0 adds K other
   tokens' frozen activations from the batch as negatives.
4. Retain loss: alpha * (1 - mean cos(h_theta(x_r), h_frozen(x_r))) in fp32 (alpha = 100), or MSE.
5. Gradients of the two losses are combined per parameter tensor by ``FalconProjection`` (conflict:
   project the forget gradient off the retain gradient; weights 0.8/1.2, aligned 0.1/1.9; Sec. 3.4),
   after cross-process synchronisation (the engine's combiner path). ``combine: pcgrad|sum`` swaps it.
6. Optimiser: use ``train.optimizer: sign_momentum`` for the reference's SophiaG-without-Hessian.

Paper vs. reference code, and what obliviate does:
- Contrastive mechanism: the paper describes contrasting against a set of negative representations;
  the code uses exactly one negative (the frozen activation at the same token). Default: the code
  (``extra_negatives: 0``); K > 0 approximates the paper's richer set.
- POVs: the code draws each step's POV from a *random* forget batch before training (with the
  not-yet-updated model, i.e. the frozen model); here it is built from the current forget batch's
  frozen activations (cached), which keeps the POV tied to the tokens being steered. Padding is
  excluded from the SVD and from every mean (the code includes it).
- ``steering_coeff`` (20) in the code multiplies a vector that InfoNCE then normalises: no effect,
  omitted. Retain loss in fp32 (in bf16 it rounds to 0 in most reference steps).
- MI selection: the code analyses every 12th layer by default; here all blocks (or ``mi_layers``).
- The code needs exactly two forget topics, alternating; here any forget/retain data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from ..engine.combine import PCGrad, FalconProjection, WeightedSum
from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs
from .representation import (FrozenActivations, TokenScope, check_layer, default_update_layers, forget_mask, info_nce,
                             layer_activations, masked_cosine_distance, masked_mse, gather_rows, principal_offset_vector,
                             trainable_patterns)
from .tokens import token_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FALCONConfig:
    layer: int | None = field(default=None, metadata={"help": "Decoder block l to steer (None: lowest mutual information, chosen before training)."})
    update_layers: tuple[int, ...] = field(default=(), metadata={"help": "Blocks whose `update_module` is trained (empty: l-2..l)."})
    update_module: str = field(default="mlp.down_proj", metadata={"help": "Sub-module trained in each update layer."})
    tau: float = field(default=0.7, metadata={"help": "InfoNCE temperature."})
    extra_negatives: int = field(default=0, metadata={"help": "Other tokens' frozen activations added as negatives per token (0: reference code)."})
    tokens: TokenScope = field(default="all", metadata={"help": "Forget tokens steered: 'all' (reference) or 'answer' (positions predicting answer tokens)."})
    alpha: float = field(default=100.0, metadata={"help": "Weight of the retain loss."})
    retain_loss: Literal["cosine", "mse"] = field(default="cosine", metadata={"help": "'cosine' (1 - cos, reference) or 'mse' to the frozen activations."})
    combine: Literal["falcon", "pcgrad", "sum"] = field(default="falcon", metadata={"help": "Gradient combiner of the forget and retain objectives."})
    conflict_weights: tuple[float, float] = field(default=(0.8, 1.2), metadata={"help": "(forget, retain) weights when the gradients conflict."})
    align_weights: tuple[float, float] = field(default=(0.1, 1.9), metadata={"help": "(forget, retain) weights when they do not."})
    mi_samples: int = field(default=30, metadata={"help": "Forget and retain examples used for the MI layer selection."})
    mi_layers: tuple[int, ...] = field(default=(), metadata={"help": "Candidate blocks for MI selection (empty: all)."})
    mi_estimator: Literal["reference", "ksg"] = field(default="ksg", metadata={"help": "MI estimator: 'ksg' (default: k-NN on whitened principal components, comparable across layers; analysis/mi.py) or 'reference' (PCA 95% + Gaussian KDE, the paper's code). Deviation from the reference code: on SmolLM2's 30-layer sweep (benchmarks/falcon_layers.py) KSG picks layer 1, 4th best of 30 (best: 9), the reference estimator layer 0, 28th of 30."})
    mi_components: int = field(default=4, metadata={"help": "Principal components of forget and of retain activations used by the 'ksg' estimator."})
    pov_seed: int = field(default=0, metadata={"help": "Seed of the POV noise and the extra-negative sampling."})
    frozen_cache: Literal["cpu", "device", "off"] = field(default="cpu", metadata={"help": "Where to cache frozen activations ('off': recompute)."})

    def __post_init__(self):
        if self.layer is not None and self.layer < 0:
            raise ConfigError(f"'falcon.layer' must be >= 0 or null, got {self.layer}.")
        if self.layer is not None and any(i < 0 or i > self.layer for i in self.update_layers):
            raise ConfigError(f"'falcon.update_layers' must lie in 0..layer={self.layer}, got {list(self.update_layers)}.")
        if not self.tau > 0:
            raise ConfigError(f"'falcon.tau' must be > 0, got {self.tau}.")
        if self.extra_negatives < 0 or self.alpha < 0:
            raise ConfigError(f"'falcon.extra_negatives' and 'falcon.alpha' must be >= 0, got {self.extra_negatives}, {self.alpha}.")
        if len(self.conflict_weights) != 2 or len(self.align_weights) != 2:
            raise ConfigError("'falcon.conflict_weights' and 'falcon.align_weights' must each be two numbers (forget, retain).")
        if self.mi_samples < 3:
            raise ConfigError(f"'falcon.mi_samples' must be >= 3, got {self.mi_samples}.")
        if self.mi_components < 1:
            raise ConfigError(f"'falcon.mi_components' must be >= 1, got {self.mi_components}.")


class FALCON:
    name: ClassVar[str] = "falcon"

    def __init__(self, config: FALCONConfig | None = None):
        self.config = c = config or FALCONConfig()
        self.selection = None
        self.combiner = {"falcon": FalconProjection(conflict_weights=tuple(c.conflict_weights), align_weights=tuple(c.align_weights)),
                         "pcgrad": PCGrad(), "sum": WeightedSum()}[c.combine]
        self.generator = torch.Generator().manual_seed(c.pov_seed)
        self._set_layer(c.layer)

    def _set_layer(self, layer: int | None) -> None:
        c = self.config
        self.layer = layer
        layers = c.update_layers or (default_update_layers(layer) if layer is not None else ())
        self.needs = Needs(retain=True, reference=True, trainable=trainable_patterns(layers, c.update_module) if layers else ())
        self.frozen = FrozenActivations(layer if layer is not None else -1, c.frozen_cache)

    def prepare(self, model, forget, retain, pad_id: int) -> None:
        """Engine hook, before trainable parameters are chosen: pick the layer by MI if none is given."""
        if self.layer is not None:
            check_layer(model, self.layer, "falcon.layer")
            return
        from ..analysis import select_layer

        c = self.config
        self.selection = select_layer(model, forget, retain or [], pad_id, c.mi_samples, c.mi_layers or None,
                                      estimator=c.mi_estimator, components=c.mi_components)
        log.warning("falcon: mutual information per layer %s; steering layer %d",
                    {k: round(v, 3) for k, v in self.selection.mi.items()}, self.selection.layer)
        if c.update_layers and any(i > self.selection.layer for i in c.update_layers):
            raise ConfigError(f"'falcon.update_layers' {list(c.update_layers)} go past the selected layer "
                              f"{self.selection.layer}; set falcon.layer or leave update_layers empty.")
        self._set_layer(self.selection.layer)

    def negatives(self, h0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, 1+K, d]: the same token's frozen activation, then K other real tokens' (drawn at random)."""
        K = self.config.extra_negatives
        if K == 0:
            return h0.unsqueeze(-2)
        flat = h0[mask]  # [N, d]
        N = flat.shape[0]
        idx = torch.randint(0, max(1, N - 1), (N, K), generator=self.generator)
        idx = idx + (idx >= torch.arange(N)[:, None]).long()  # skip the token itself
        extra = torch.zeros(*h0.shape[:2], K, h0.shape[-1], dtype=h0.dtype, device=h0.device)
        extra[mask] = flat[idx.clamp_max(N - 1).to(h0.device)]
        return torch.cat([h0.unsqueeze(-2), extra], dim=-2)

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        if self.layer is None:
            raise ConfigError("falcon.layer is unset and no layer was selected: run through obliviate's engine "
                              "(which calls FALCON.prepare) or set falcon.layer.")
        fmask, rmask = forget_mask(batch.forget, c.tokens), batch.retain["attention_mask"].bool()
        h_f = layer_activations(model, batch.forget, self.layer)
        h_f0 = self.frozen.get(aux.reference, "forget", batch.forget)
        # the POV is a statistic of the global batch: gather the forget tokens of every process
        pov = principal_offset_vector(gather_rows(h_f0[fmask].to(h_f.device)), self.generator)
        with token_scope("forget"):
            forget = info_nce(h_f, pov, self.negatives(h_f0, fmask), c.tau, fmask)
        h_r = layer_activations(model, batch.retain, self.layer)
        h_r0 = self.frozen.get(aux.reference, "retain", batch.retain)
        retain_fn = masked_cosine_distance if c.retain_loss == "cosine" else masked_mse
        with token_scope("retain"):
            retain = c.alpha * retain_fn(h_r, h_r0, rmask)
        with torch.no_grad():
            cos_pov = torch.nn.functional.cosine_similarity(h_f.float(), pov.float(), dim=-1)[fmask].mean().item()
        metrics = {"falcon_forget": forget.item(), "falcon_retain": retain.item(), "cos_to_pov": cos_pov,
                   "layer": float(self.layer)}
        return LossOutput(loss=forget + retain, objectives={"forget": forget, "retain": retain}, metrics=metrics)
