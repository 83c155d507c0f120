"""Membership-inference scores and AUCs, as pure functions over per-token statistics.

Every score is a *membership* score: higher means "more likely seen in training". AUC is
P(score(forget item) > score(holdout item)) (``sklearn.metrics.roc_auc_score`` with forget = 1):
about 0.5 for a model that never saw the forget set, near 1 for one that memorised it.

* LOSS (Yeom et al. 2018): -mean token NLL.
* zlib (Carlini et al. 2021): -mean NLL / zlib entropy, where the entropy is the length in bytes
  of ``zlib.compress(text)`` (MUSE / MIMIR code).
* Min-K% (Shi et al. 2024): mean of the k% lowest token log-probs (k = 0.4 default here, as MUSE).
* Min-K%++ (Zhang et al. 2024): per token (log p(x_t) - mu_t) / sigma_t with mu_t, sigma_t the mean and
  std of log p(z) under z ~ p(.|x_<t); then the mean of the k% lowest.
* Reference (Carlini et al. 2021 / Mireshghallah et al. 2022): -(NLL_target - NLL_reference).
* Gradient norm (white-box; evaluated on LLMs in MIMIR, Duan et al. 2024, arXiv 2402.17012):
  -|grad_theta mean NLL(x)|_2 per item, over every parameter; training made the loss of its
  members flat, so their gradients are small. ``grad_norm_scores`` (``gradnorm.py``) runs the model,
  unlike the functions above.
* privleak (MUSE, Shi et al. 2024, Sec. 3): (AUC_unlearn - AUC_retain) / AUC_retain * 100; 0 is ideal,
  > 0 under-unlearning, < 0 over-unlearning.

open-unlearning's definitions (``definitions="open-unlearning"``; its ``src/evals/metrics/mia/*.py``,
``privacy.py``): its scores are non-membership scores (-Min-K% mean, mean NLL, ...) ranked with
holdout = 1, so its AUCs equal these for the same token statistics. Min-K%, Min-K%++ and grad-norm
use ``tokenwise_logprobs``, which drops the last scored token (the appended EOS), while LOSS, zlib
and reference use every scored token; zlib compresses the scored tokens decoded without special
tokens (for a chat turn: the answer and a newline). Grad-norm is the mean over parameter tensors of
each tensor's gradient 2-norm (``grad_norm_scores(..., per_tensor_mean=True)``). privleak is
computed on 1 - AUC (``privleak(..., on_complement=True)``), against the retain model's AUC or,
without one, a reference AUC of 0.5, so its sign is the opposite of MUSE's.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from .gradnorm import grad_norm_scores  # noqa: F401  (the white-box attack lives with its machinery)


def loss_score(token_logprobs: torch.Tensor) -> float:
    """LOSS attack: mean token log-prob (= -mean NLL) of one item, tokens [n]."""
    return float(token_logprobs.double().mean())


def zlib_score(token_logprobs: torch.Tensor, text: str) -> float:
    """zlib attack: -mean NLL / len(zlib.compress(text)) for one item."""
    return float(token_logprobs.double().mean()) / len(zlib.compress(text.encode("utf-8")))


def _lowest_k_mean(x: torch.Tensor, k: float) -> float:
    n = max(1, int(math.floor(k * x.numel()))) if x.numel() else 0
    if n == 0:
        return float("nan")
    return float(torch.topk(x.double(), n, largest=False).values.mean())


def min_k_score(token_logprobs: torch.Tensor, k: float = 0.4) -> float:
    """Min-K%: mean of the floor(k * n) (at least 1) lowest token log-probs."""
    return _lowest_k_mean(token_logprobs, k)


def min_k_plus_plus_score(token_logprobs: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, k: float = 0.4) -> float:
    """Min-K%++: mean of the k% lowest (log p(x_t) - mu_t) / sigma_t."""
    z = (token_logprobs.double() - mu.double()) / sigma.double().clamp_min(1e-12)
    return _lowest_k_mean(z, k)


def reference_score(token_logprobs: torch.Tensor, ref_token_logprobs: torch.Tensor) -> float:
    """Reference attack: mean log p_target - mean log p_reference (= NLL_ref - NLL_target)."""
    return float(token_logprobs.double().mean() - ref_token_logprobs.double().mean())


def auc(forget_scores, holdout_scores) -> float:
    """ROC AUC of separating forget (positive) from holdout (negative) by membership score."""
    from sklearn.metrics import roc_auc_score  # imported here: sklearn is slow to import

    f, h = np.asarray(forget_scores, dtype=float), np.asarray(holdout_scores, dtype=float)
    y = np.r_[np.ones(len(f)), np.zeros(len(h))]
    return float(roc_auc_score(y, np.r_[f, h]))


def privleak(auc_unlearn: float, auc_retain: float, on_complement: bool = False) -> float:
    """MUSE privleak in percent: (AUC_unlearn - AUC_retain) / AUC_retain * 100 (NaN if AUC_retain is 0).

    ``on_complement``: open-unlearning's ``privleak``, the same on 1 - AUC with 1e-10 added to the
    denominator: ((1 - a) - (1 - r)) / (1 - r + 1e-10) * 100. E.g. a = 0.4675, r = 0.5: -6.5 here,
    +6.5 with ``on_complement``.
    """
    if on_complement:
        return ((1 - auc_unlearn) - (1 - auc_retain)) / (1 - auc_retain + 1e-10) * 100.0
    if auc_retain == 0:
        return float("nan")
    return (auc_unlearn - auc_retain) / auc_retain * 100.0


ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def attack_scores(stats: list[dict], texts: list[str], k: float = 0.4,
                  min_k_stats: list[dict] | None = None) -> dict[str, list[float]]:
    """Every reference-free attack's score per item, from the runner's per-item token stats;
    ``min_k_stats`` (default ``stats``) feed Min-K% and Min-K%++ (open-unlearning: without the last token)."""
    low = stats if min_k_stats is None else min_k_stats
    return {
        "loss": [loss_score(s["logprobs"]) for s in stats],
        "zlib": [zlib_score(s["logprobs"], t) for s, t in zip(stats, texts)],
        "min_k": [min_k_score(s["logprobs"], k) for s in low],
        "min_k_plus_plus": [min_k_plus_plus_score(s["logprobs"], s["mu"], s["sigma"], k) for s in low],
    }
