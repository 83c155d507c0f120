"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, "The WMDP Benchmark", arXiv 2403.03218, Sec. 5).

    L = mean_{t in x_f} |h^l_theta(t) - c u|^2 / d  +  alpha * mean_{t in x_r} |h^l_theta(t) - h^l_frozen(t)|^2 / d

h^l is the output of decoder block l (HF ``hidden_states[l + 1]``; the WMDP code hooks
``model.model.layers[l]``), u a fixed random unit vector (Uniform[0,1)^d, normalised, seeded),
and the squared norms are averaged over the d features as ``F.mse_loss`` does in the reference.
Defaults are the WMDP reference's for Zephyr-7B: l = 7, trainable ``mlp.down_proj`` of blocks
l-2..l, c = 6.5, alpha = 1200 (use ``lr`` 5e-5 in ``train``).

Scaling c: the forget term pushes forget activations to norm c, so c only means something
relative to the model's hidden-state norm at layer l. RMU works when c is several times that norm
(Zephyr-7B's layer-7 activations are small, so 6.5 suffices; models with larger residual streams
need larger c; Dang et al. 2024, "Adaptive RMU", use c = beta * |h^l_frozen(x_f)| with beta ~ 5).
``c_scale`` does this: c = c_scale x the median token norm of the frozen model's layer-l activations
on the first forget batch, fixed for the rest of the run (logged as ``rmu_c``). The median, not
the mean: a few "attention sink" tokens carry norms ~10x the rest (SmolLM2 layer 7: first tokens
~900, median ~130) and would dominate a mean.

Speed: only blocks 0..l run (truncated forward) for the trained and the frozen model, and the
frozen activations are cached per example (``frozen_cache``), so each frozen forward happens once.

Deviations from the reference code: padding tokens are excluded from both means (the reference
averages over padded positions too); the frozen model is a read-only copy (or the peft base with
adapters disabled) whose activations are cached; the objective is returned through the engine's
combiner path (one objective, plain sum) so that multi-process gradients are synchronised
explicitly, because the truncated forward bypasses DDP's forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from ..engine.combine import WeightedSum
from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs
from .representation import (FrozenActivations, TokenScope, check_layer, default_update_layers, forget_mask,
                             gather_rows, layer_activations, masked_mse, random_unit_vector, trainable_patterns)
from .tokens import token_scope


@dataclass(frozen=True)
class RMUConfig:
    layer: int = field(default=7, metadata={"help": "Decoder block l whose output is steered (HF hidden_states[l+1])."})
    update_layers: tuple[int, ...] = field(default=(), metadata={"help": "Blocks whose `update_module` is trained (empty: l-2..l)."})
    update_module: str = field(default="mlp.down_proj", metadata={"help": "Sub-module trained in each update layer."})
    c: float = field(default=6.5, metadata={"help": "Steering coefficient: norm of the forget target c*u."})
    c_scale: float | None = field(default=None, metadata={"help": "If set, c = c_scale * median frozen layer-l token norm on the first forget batch (overrides c)."})
    alpha: float = field(default=1200.0, metadata={"help": "Weight of the retain MSE."})
    tokens: TokenScope = field(default="all", metadata={"help": "Forget tokens steered: 'all' (reference) or 'answer' (positions predicting answer tokens)."})
    u_seed: int = field(default=0, metadata={"help": "Seed of the random direction u."})
    frozen_cache: Literal["cpu", "device", "off"] = field(default="cpu", metadata={"help": "Where to cache frozen activations ('off': recompute)."})

    def __post_init__(self):
        if self.layer < 0:
            raise ConfigError(f"'rmu.layer' must be >= 0, got {self.layer}.")
        if any(i < 0 or i > self.layer for i in self.update_layers):
            raise ConfigError(f"'rmu.update_layers' must lie in 0..layer={self.layer} (later blocks get no gradient), "
                              f"got {list(self.update_layers)}.")
        if not self.c > 0:
            raise ConfigError(f"'rmu.c' must be > 0, got {self.c}.")
        if self.c_scale is not None and not self.c_scale > 0:
            raise ConfigError(f"'rmu.c_scale' must be > 0 or null, got {self.c_scale}.")
        if self.alpha < 0:
            raise ConfigError(f"'rmu.alpha' must be >= 0, got {self.alpha}.")


class RMU:
    name: ClassVar[str] = "rmu"
    retain_hint: ClassVar[str] = " Or set rmu.alpha: 0 to train without the retain term."

    def __init__(self, config: RMUConfig | None = None):
        self.config = c = config or RMUConfig()
        layers = c.update_layers or default_update_layers(c.layer)
        self.needs = Needs(retain=c.alpha > 0, reference=c.alpha > 0 or c.c_scale is not None, trainable=trainable_patterns(layers, c.update_module))
        self.combiner = WeightedSum()
        self.frozen = FrozenActivations(c.layer, c.frozen_cache)
        self.coefficient: float | None = None if c.c_scale is not None else c.c
        self._u: torch.Tensor | None = None

    def prepare(self, model, forget, retain, pad_id: int) -> None:
        """Check ``layer`` against the model before the engine picks the trainable blocks around it
        (otherwise an out-of-range layer shows up as 'no parameter matches the trainable patterns')."""
        check_layer(model, self.config.layer, "rmu.layer")

    def control_vector(self, d: int, device, reference=None, forget=None) -> torch.Tensor:
        """c * u [d]; with ``c_scale``, c is measured once on the frozen activations of ``forget``."""
        if self._u is None:
            self._u = random_unit_vector(d, self.config.u_seed)
        if self.coefficient is None:
            h0 = self.frozen.get(reference, "forget", forget)
            norms = h0.float().norm(dim=-1)[forget["attention_mask"].bool()]
            norms = gather_rows(norms[:, None]).flatten()  # every process: the median of the global batch
            self.coefficient = float(self.config.c_scale * norms.median())
        return self.coefficient * self._u.to(device)

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c = self.config
        check_layer(model, c.layer, "rmu.layer")
        h_f = layer_activations(model, batch.forget, c.layer)
        target = self.control_vector(h_f.shape[-1], h_f.device, aux.reference, batch.forget)
        with token_scope("forget"):
            forget = masked_mse(h_f, target, forget_mask(batch.forget, c.tokens))
        metrics = {"rmu_forget": forget.item(), "rmu_c": float(self.coefficient)}
        loss = forget
        if c.alpha > 0:
            h_r = layer_activations(model, batch.retain, c.layer)
            h_r0 = self.frozen.get(aux.reference, "retain", batch.retain)
            with token_scope("retain"):
                retain = masked_mse(h_r, h_r0, batch.retain["attention_mask"])
            loss = loss + c.alpha * retain
            metrics["rmu_retain"] = retain.item()
        return LossOutput(loss=loss, objectives={"rmu": loss}, metrics=metrics)
