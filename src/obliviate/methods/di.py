"""Deliberate Imagination (DI), published as UNDIAL (Dong, Lin, Belkin, Huerta, Vulic;
arXiv 2402.10052; NAACL 2025). Registered as ``di`` with the alias ``undial``.

Self-distillation instead of gradient ascent: a frozen teacher gives logits z_t for each forget
sequence; the true next token's logit is lowered by gamma, z~_t = z_t - gamma * onehot(x_{t+1});
the student minimises the soft-label cross-entropy to q_t = softmax(z~_t) (temperature 1),
``losses.di_loss``. The loss is bounded (q keeps the teacher's alternatives), so the model learns
to "imagine" other continuations instead of collapsing as under GA.

Matches the reference code (``dong-river/LLM_unlearning``, ``utils/ft_utils.py``,
``DITrainer.compute_loss``) except where noted:

- padding and prompt tokens carry no loss (the reference averages over all positions,
  including EOS padding);
- teacher: the frozen starting model by default (``Needs(reference=True)``; with LoRA the base
  model with adapters disabled, so no second copy), or ``teacher: <path>``, loaded once with
  ``obliviate.load_model`` and owned by the method (the reference code's separate teacher);
- ``alpha > 0`` adds a retain term (NLL, or KL to the starting model); off by default, as in the paper;
- ``focus`` weights entity-like tokens by ``focus_coeff`` (FUnDIAL, c = 10) using a
  dependency-free approximation of spaCy's entities/noun chunks (``methods/focus.py``);
  needs the tokenizer, which the engine passes through ``attach_tokenizer``;
- ``cache: full | topk`` keeps the teacher's targets per forget example (``methods/di_cache.py``),
  so later epochs run no teacher forward.

gamma defaults to 3 (the reference README's commands; the argparse default is 5, the paper
sweeps 3, 10, 30).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import ConfigError
from .base import Aux, Batch, LossOutput, Needs, forward
from .di_cache import CacheMode, TeacherCache
from .focus import VocabTable, focus_weights
from .losses import di_targets, nll, soft_cross_entropy, sparse_soft_cross_entropy
from .retain import RetainLoss, retain_loss
from .tokens import answer_targets, token_scope


@dataclass(frozen=True)
class DIConfig:
    gamma: float = field(default=3.0, metadata={"help": "How far the true next token's teacher logit is lowered (paper: 3, 10, 30)."})
    teacher: str | None = field(default=None, metadata={"help": "Teacher model directory/alias (None: the frozen starting model)."})
    alpha: float = field(default=0.0, metadata={"help": "Weight of an optional retain term (0: none, as in the paper)."})
    retain_loss: RetainLoss = field(default="nll", metadata={"help": "Retain term: 'nll' on retain answers or 'kl' to the starting model."})
    focus: bool = field(default=False, metadata={"help": "Weight entity-like tokens (capitalised words, numbers) by focus_coeff (FUnDIAL)."})
    focus_coeff: float = field(default=10.0, metadata={"help": "Loss weight c of focus tokens (others 1)."})
    cache: CacheMode = field(default="none", metadata={"help": "Cache teacher targets per forget example: 'none', 'full' (fp16) or 'topk'."})
    cache_top_k: int = field(default=64, metadata={"help": "Tokens kept per position with cache: topk (the rest dropped, renormalised)."})

    def __post_init__(self):
        if not self.gamma >= 0:
            raise ConfigError(f"'di.gamma' must be >= 0, got {self.gamma}.")
        if not self.alpha >= 0:
            raise ConfigError(f"'di.alpha' must be >= 0, got {self.alpha}.")
        if not self.focus_coeff >= 1:
            raise ConfigError(f"'di.focus_coeff' must be >= 1, got {self.focus_coeff}.")
        if self.cache_top_k < 1:
            raise ConfigError(f"'di.cache_top_k' must be >= 1, got {self.cache_top_k}.")
        if self.teacher is not None and not str(self.teacher).strip():
            raise ConfigError("'di.teacher' is empty: give a model directory/alias, or null for the starting model.")


class DI:
    name: ClassVar[str] = "di"

    def __init__(self, config: DIConfig | None = None):
        self.config = c = config or DIConfig()
        kl_retain = c.alpha > 0 and c.retain_loss == "kl"
        self.needs = Needs(retain=c.alpha > 0, reference=c.teacher is None or kl_retain)
        self.cache = TeacherCache(c.cache, c.cache_top_k) if c.cache != "none" else None
        self._teacher: torch.nn.Module | None = None
        self._offload = False
        self._vocab: VocabTable | None = None

    def attach_tokenizer(self, tokenizer) -> None:
        """Called by the engine before training: builds the focus vocabulary table if needed."""
        if self.config.focus and self._vocab is None:
            self._vocab = VocabTable.from_tokenizer(tokenizer)

    def loss(self, model, batch: Batch, aux: Aux) -> LossOutput:
        c, f = self.config, batch.forget
        logits = forward(model, f).logits
        weights = self._focus(f) if c.focus else None
        with token_scope("forget"):
            if self.cache is None:
                targets, mask = di_targets(self._teacher_logits(f, aux, logits.shape[-1]), f["labels"], c.gamma)
                forget = soft_cross_entropy(logits, targets, mask, weights)
            else:
                forget = self._cached_loss(logits, f, aux, weights)
            metrics = {"di": forget.item(), "forget_nll": nll(logits.detach(), f["labels"]).item()}
        if self.cache is not None:
            metrics.update(self.cache.stats())
        loss = forget
        if c.alpha > 0:
            r = retain_loss(model, batch.retain, c.retain_loss, aux)
            loss = loss + c.alpha * r
            metrics[f"retain_{c.retain_loss}"] = r.item()
        return LossOutput(loss=loss, metrics=metrics)

    def _cached_loss(self, logits, f, aux: Aux, weights) -> torch.Tensor:
        assert self.cache is not None
        mask = answer_targets(f)
        hit = self.cache.lookup(f, mask)
        if hit is None:
            targets, mask = di_targets(self._teacher_logits(f, aux, logits.shape[-1]), f["labels"], self.config.gamma)
            self.cache.put(f, targets, mask)
            hit = self.cache.lookup(f, mask)  # train on the cached targets from the first epoch on
        if isinstance(hit, tuple):
            return sparse_soft_cross_entropy(logits, hit[0], hit[1], mask, weights)
        return soft_cross_entropy(logits, hit, mask, weights)

    @torch.no_grad()
    def _teacher_logits(self, f, aux: Aux, vocab: int) -> torch.Tensor:
        inputs = {"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]}
        if self.config.teacher is None:
            assert aux.reference is not None, "DI without a teacher path declares Needs(reference=True)"
            return aux.reference(**inputs).logits
        teacher = self._load_teacher(f["input_ids"].device)
        logits = teacher(**inputs).logits
        if logits.shape[-1] != vocab:
            raise ConfigError(
                f"'di.teacher' {self.config.teacher!r} has a vocabulary of {logits.shape[-1]} tokens, the trained "
                f"model {vocab}: the teacher must share the student's tokenizer."
            )
        return logits

    def set_frozen_offload(self, offload: bool) -> None:
        """Called by the engine with ``train.reference_offload``: the teacher from ``di.teacher`` then
        stays in host memory and visits the device one module at a time."""
        self._offload = offload

    def _load_teacher(self, device) -> torch.nn.Module:
        if self._teacher is None:
            from ..engine.placement import place_frozen
            from ..models import load_model

            teacher, _ = load_model(self.config.teacher)
            self._teacher = place_frozen(teacher, device, self._offload)
        return self._teacher if self._offload else self._teacher.to(device)

    def _focus(self, f) -> torch.Tensor:
        if self._vocab is None:
            raise ConfigError("'di.focus' needs the tokenizer: train through obliviate.unlearn/engine.train, "
                              "or call method.attach_tokenizer(tokenizer) first.")
        return focus_weights(f["input_ids"], f["labels"], self._vocab, self.config.focus_coeff)
