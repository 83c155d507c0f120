"""Loss functions against hand-computed values."""

import math

import pytest
import torch

from obliviate.methods import losses as L


def _logits_for(probs_per_pos):
    """Logits whose softmax equals the given rows exactly (log of probabilities)."""
    return torch.log(torch.tensor(probs_per_pos, dtype=torch.float32)).unsqueeze(0)


def test_token_logprobs_shift_and_mask():
    # Vocab 3, sequence of 4 tokens; positions 0..2 predict tokens 1..3. Prompt = token 0 and 1.
    probs = [[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]
    logits = _logits_for(probs)
    labels = torch.tensor([[-100, -100, 1, 2]])  # answer tokens: 1 at pos 2 and 2 at pos 3
    lp, mask = L.token_logprobs(logits, labels)
    assert mask.tolist() == [[False, True, True]]
    # token 1 predicted by position 1: p=0.6; token 2 predicted by position 2: p=0.5
    assert lp[0, 1].item() == pytest.approx(math.log(0.6), abs=1e-6)
    assert lp[0, 2].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert L.sequence_logprob(logits, labels).item() == pytest.approx(math.log(0.3), abs=1e-6)
    assert L.answer_lengths(labels).tolist() == [2]


def test_ga_is_minus_mean_answer_nll():
    logits = _logits_for([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    labels = torch.tensor([[-100, 1, 1]])  # targets: 1 from pos 0 (0.5), 1 from pos 1 (0.1)
    expected_nll = -(math.log(0.5) + math.log(0.1)) / 2
    assert L.nll(logits, labels).item() == pytest.approx(expected_nll, abs=1e-6)
    assert L.ga_loss(logits, labels).item() == pytest.approx(-expected_nll, abs=1e-6)


def test_nll_is_token_weighted_across_batch():
    a = _logits_for([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    b = _logits_for([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    logits = torch.cat([a, b])
    labels = torch.tensor([[-100, 1, 1], [-100, -100, 1]])  # 2 tokens of p=.5, 1 token of p=.1
    expected = -(2 * math.log(0.5) + math.log(0.1)) / 3
    assert L.nll(logits, labels).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_npo_equal_policy_and_reference(beta):
    lp = torch.tensor([-3.0, -10.0, -0.5])
    assert L.npo_loss(lp, lp.clone(), beta).item() == pytest.approx((2 / beta) * math.log(2), rel=1e-6)


def test_npo_hand_value_and_direction():
    theta, ref, beta = torch.tensor([-2.0]), torch.tensor([-1.0]), 0.5
    # -(2/b) log sigmoid(-b * (theta - ref)) = -(4) log sigmoid(0.5)
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-0.5)))
    assert L.npo_loss(theta, ref, beta).item() == pytest.approx(expected, rel=1e-6)
    # Lowering log pi_theta lowers the loss (NPO pushes the forget likelihood down).
    assert L.npo_loss(theta - 1, ref, beta) < L.npo_loss(theta, ref, beta)


def test_simnpo_hand_value():
    logp, length, beta, delta = torch.tensor([-6.0]), torch.tensor([3]), 4.5, 0.5
    avg_nll = 2.0
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (avg_nll - delta))))
    assert L.simnpo_loss(logp, length, beta, delta).item() == pytest.approx(expected, rel=1e-6)


def test_kl_zero_for_identical_and_hand_value():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, -100]])
    assert L.kl_to_reference(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)
    p, q = [0.5, 0.5], [0.9, 0.1]  # model p, reference q at the single answer position
    lg = torch.log(torch.tensor([[p, p]]))
    ref = torch.log(torch.tensor([[q, q]]))
    lab = torch.tensor([[-100, 0]])
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert L.kl_to_reference(lg, ref, lab).item() == pytest.approx(expected, abs=1e-6)
