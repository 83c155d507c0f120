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


def test_token_mean_divides_by_the_step_count_inside_a_scope():
    """Two micro-batches of one step: 3 and 1 answer tokens, 4 and 4 real tokens, accumulation 2.
    Inside the step and the 'forget' scope a token mean divides by N_step / A = 4 / 2 = 2 (answer
    tokens) or 8 / 2 = 4 (real tokens); elsewhere it is a plain mean."""
    from obliviate.methods.tokens import StepTokens, answer_positions, answer_targets, step_tokens, token_mean, token_scope

    ones = torch.ones(1, 4, dtype=torch.long)
    b1 = {"input_ids": ones, "attention_mask": ones, "labels": torch.tensor([[-100, 5, 6, 7]])}
    b2 = {"input_ids": ones, "attention_mask": ones, "labels": torch.tensor([[-100, -100, -100, 7]])}
    totals = StepTokens.totals([{"forget": b1, "retain": None}, {"forget": b2, "retain": None}])
    assert totals.tolist() == [4.0, 8.0, 0.0, 0.0, 0.0, 0.0]  # [answer, real] for forget, retain, alternate
    v3, v4 = torch.ones(1, 3), torch.ones(1, 4)
    step = StepTokens.for_micro_batch({"forget": b1, "retain": None}, totals, world=1, accum=2)
    with step_tokens(step):
        with token_scope("forget"):
            assert token_mean(v3, answer_targets(b1)).item() == pytest.approx(3 / 2)
            assert token_mean(v4, answer_positions(b1)).item() == pytest.approx(3 / 2)
            assert token_mean(v4, b1["attention_mask"]).item() == pytest.approx(4 / 4)
            assert token_mean(v4, torch.tensor([[1, 0, 0, 0]])).item() == 1.0  # not a canonical mask: local
        with token_scope("retain"):  # no retain part in this step: local
            assert token_mean(v3, answer_targets(b1)).item() == 1.0
        assert token_mean(v3, answer_targets(b1)).item() == 1.0  # no scope: local
    assert token_mean(v3, answer_targets(b1)).item() == 1.0  # outside a step
