"""Pure loss functions over tensors (no models): the math of every method, testable by hand.

Shapes: ``logits`` [B, T, V]; ``labels`` [B, T] with -100 on positions that carry no loss
(prompt, padding). Position t's logits predict token t+1, so everything shifts by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokens import IGNORE, token_mean


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align predictions with targets: returns (logits [B,T-1,V], targets [B,T-1], mask [B,T-1] bool)."""
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    return logits, targets.clamp_min(0), mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_t | y_<t) for every target position: ([B, T-1] fp32, mask [B, T-1]).

    Uses ``cross_entropy`` (a fused log-softmax + gather) so no [B, T, V] log-prob tensor is kept.
    """
    lg, tg, mask = shift(logits, labels)
    nll = F.cross_entropy(lg.float().reshape(-1, lg.size(-1)), tg.reshape(-1), reduction="none").view(tg.shape)
    return -nll * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over answer tokens of log p: log pi(y|x) per sequence, [B]."""
    lp, _ = token_logprobs(logits, labels)
    return lp.sum(-1)


def answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    """|y|: number of loss-bearing target tokens per sequence, [B]."""
    return (labels[:, 1:] != IGNORE).sum(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all answer tokens of the batch (token-weighted, as HF's loss)."""
    lp, mask = token_logprobs(logits, labels)
    return -token_mean(lp, mask)


def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent (e.g. Jang et al. 2023; TOFU's GA baseline): minimise -NLL(forget)."""
    return -nll(logits, labels)


def npo_loss(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024, eq. 3): -(2/beta) E log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))).

    ``logp_*`` are sequence-summed log-probs [B]. When theta == ref this is (2/beta) log 2.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp_theta - logp_ref)).mean()


def simnpo_loss(logp_theta: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, eq. 4): -(2/beta) E log sigmoid(-(beta/|y|) log pi_theta(y|x) - beta*delta).

    Reference-free: the length-normalised log-likelihood replaces NPO's reference ratio. The
    margin enters as ``beta * delta``, as in the authors' and open-unlearning's code
    (``logsigmoid(beta * (avg_nll - delta))``); the paper writes it as a plain gamma outside the
    scaling. The two agree for the default delta = 0.
    """
    avg_nll = -logp_theta / lengths.clamp_min(1)
    return -(2.0 / beta) * F.logsigmoid(beta * (avg_nll - delta)).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of KL(p_ref || p_theta) (the retain-KL term of GradDiff/NPO variants)."""
    lg, _, mask = shift(logits, labels)
    rg = ref_logits[:, :-1, :]
    logp = F.log_softmax(lg.float(), -1)
    logq = F.log_softmax(rg.float(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return token_mean(kl, mask)


def di_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Deliberate Imagination / UNDIAL targets (Dong et al. 2024, arXiv 2402.10052, Sec. 3):
    q_t = softmax(z_t - gamma * onehot(x_{t+1})), the teacher's distribution with only the true
    next token's logit lowered by ``gamma`` (temperature 1). Returns (q [B, T-1, V] fp32, mask [B, T-1])."""
    lg, tg, mask = shift(teacher_logits, labels)
    adjusted = lg.float().scatter_add(-1, tg.unsqueeze(-1), torch.full_like(tg, -gamma, dtype=torch.float).unsqueeze(-1))
    return F.softmax(adjusted, -1), mask


def soft_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over ``mask``ed positions of w_t * sum_v -q_t,v log p_t,v.

    ``student_logits`` are the *unshifted* [B, T, V]; ``targets`` q and ``mask`` come shifted
    ([B, T-1, V], [B, T-1]) as from ``di_targets``. ``weights`` [B, T-1] (default 1) scale each
    position; the sum is divided by the number of positions, not by the sum of weights (as the
    reference code's ``(loss * reweight).mean()``).
    """
    logp = F.log_softmax(student_logits[:, :-1, :].float(), -1)
    ce = -(targets.float() * logp).sum(-1)
    if weights is not None:
        ce = ce * weights
    return token_mean(ce, mask)


def di_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, gamma: float,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """The DI/UNDIAL loss: soft-label cross-entropy from the student to ``di_targets`` on answer
    tokens (= KL(q || p_theta) + H(q), so its gradient is that of the KL).

    Worked example (V = 2, one answer position, true next token 0, gamma = ln 3): teacher logits
    (0, 0) -> adjusted (-ln 3, 0) -> q = (1/4, 3/4); a student with logits (0, 0) has p = (1/2, 1/2),
    so the loss is -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2.
    The reference code (``DITrainer.compute_loss``) averages over every position including
    padding; here prompt and padding positions (labels -100) carry no loss.
    """
    targets, mask = di_targets(teacher_logits.detach(), labels, gamma)
    return soft_cross_entropy(student_logits, targets, mask, weights)


def sparse_soft_cross_entropy(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                              mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``soft_cross_entropy`` for targets given as top-k probabilities ``values`` [B, T-1, k] at
    vocabulary ``indices`` [B, T-1, k] (zero elsewhere): no dense [B, T-1, V] target is built."""
    logp = F.log_softmax(student_logits[:, :-1, :].float(), -1)
    ce = -(values.float() * logp.gather(-1, indices.long())).sum(-1)
    if weights is not None:
        ce = ce * weights
    return token_mean(ce, mask)


def dpo_loss(chosen_logp: torch.Tensor, chosen_ref: torch.Tensor, rejected_logp: torch.Tensor,
             rejected_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7) as an unlearning loss (IdkDPO: chosen = a refusal, rejected =
    the forget answer): -(2/beta) E log sigmoid(beta [(log pi_theta(y_c|x) - log pi_ref(y_c|x)) -
    (log pi_theta(y_r|x) - log pi_ref(y_r|x))]), sequence-summed log-probs [B].

    The 2/beta factor is open-unlearning's (``compute_dpo_loss``); it makes the rejected-only limit
    exactly ``npo_loss``. The DPO paper has no factor, the NPO paper (Sec. 3) writes 1/beta: a constant
    scale, which matters only through gradient clipping. When theta == ref this is (2/beta) log 2.
    """
    margin = (chosen_logp - chosen_ref) - (rejected_logp - rejected_ref)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def weighted_ascent_loss(logits: torch.Tensor, labels: torch.Tensor, weight) -> torch.Tensor:
    """Token-weighted gradient ascent: token_mean of w_t * log p(y_t), with w_t = ``weight(p_t)`` computed
    on the detached probability p_t = p(y_t | y_<t) (so the weight scales the gradient, never gets one).
    Minimising it lowers log p(y_t) with per-token strength w_t; w = 1 is GA (``ga_loss``)."""
    lp, mask = token_logprobs(logits, labels)
    w = weight(lp.detach().exp())
    return token_mean(w * lp, mask)


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA (Wang et al. 2025, arXiv 2502.19301): ascent weighted by w_t = p_t^beta (detached), which
    spends the ascent on tokens the model still predicts and stops pushing on those already unlikely.

    Worked example (one answer token with p = 1/2, beta = 1): w = 1/2, loss = 1/2 * ln(1/2) = -ln(2)/2.
    beta = 0 gives w = 1: plain GA."""
    return weighted_ascent_loss(logits, labels, lambda p: p.pow(beta))


def satimp_loss(logits: torch.Tensor, labels: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp (Yang et al. 2025, arXiv 2505.11953): ascent weighted by w_t = p_t^beta1 (1 - p_t)^beta2
    (detached): the saturation weight p^beta1 times the importance weight (1 - p)^beta2.

    Worked example (one answer token with p = 1/2, beta1 = 5, beta2 = 1): w = 1/64, loss = -ln(2)/64."""
    return weighted_ascent_loss(logits, labels, lambda p: p.pow(beta1) * (1 - p).pow(beta2))


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first: int = 1) -> torch.Tensor:
    """CE-U (B. Yang 2025, "Cross Entropy Unlearning", arXiv 2503.01224): soft-label cross-entropy from the model's
    distribution p_t = softmax(z_t) to q_t = softmax(z_t with the true token's logit set to -inf),
    q computed from the detached logits. d loss / d z_t = p_t - q_t, so the true token's logit gets
    exactly +p(y_t) (only ever pushed down) and q puts zero mass on it; the other logits move
    towards the model's own renormalised alternatives, a bounded loss with no reference model.

    The first ``ignore_first`` answer tokens of each sequence carry no loss (the paper's footnote in
    Training Settings; open-unlearning's ``ignore_first_n_answer_tokens``, default 1). The sum over
    the kept tokens is divided by the number of *all* answer tokens (the canonical step-level count
    of ``methods/tokens.py``, so the step does not depend on how it is split over processes and
    micro-steps); open-unlearning divides by the kept tokens only, a factor (n - 1)/n for n-token
    answers.

    Worked example (V = 3, logits (0, 0, 0), true token 0, one kept token): q = (0, 1/2, 1/2),
    p = (1/3, 1/3, 1/3), loss = -(1/2 ln 1/3 + 1/2 ln 1/3) = ln 3.
    """
    lg, tg, mask = shift(logits, labels)
    keep = mask & (mask.long().cumsum(-1) > ignore_first)
    z = lg[keep].float()  # [N, V]: only the kept positions, no [B, T, V] fp32 copy
    logp = F.log_softmax(z, -1)
    q = F.softmax(z.detach().scatter(-1, tg[keep].unsqueeze(-1), float("-inf")), -1)
    ce = torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device)
    ce[keep] = -(q * logp).sum(-1)
    return token_mean(ce, mask)


def logit_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PDU's logit-margin flattening loss (Entesari et al. 2025, arXiv 2506.05314): token mean over
    answer positions of (max_v z_t,v - mean_v z_t,v)^2. Zero exactly when all logits are equal (the
    uniform distribution); softmax-free, so its gradient does not vanish as p flattens.

    The reference code (open-unlearning ``PDU.compute_loss``) averages over every position of the
    batch, prompt and padding included; here only the positions that predict an answer token count.

    Worked example (V = 3, logits (1, 2, 3) at the one answer position): (3 - 2)^2 = 1.
    """
    lg, _, mask = shift(logits, labels)
    z = lg[mask].float()  # [N, V]
    margin = torch.zeros(mask.shape, dtype=z.dtype, device=z.device)
    margin[mask] = (z.max(-1).values - z.mean(-1)).square()
    return token_mean(margin, mask)
