"""Ghost gradient norms (``eval/gradnorm.py``) against one plain autograd backward per item."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.eval import gradnorm
from obliviate.methods.losses import token_logprobs

ITEMS = [  # different lengths (batched with right padding), prompts of pad-id tokens for "not_pad"
    {"input_ids": [2, 10, 11, 12, 13, 1], "labels": [-100, -100, 11, 12, 13, 1]},
    {"input_ids": [2, 20, 1, 21, 22, 23, 24, 25, 1], "labels": [-100, -100, -100, -100, 22, 23, 24, 25, 1]},
    {"input_ids": [2, 30, 31, 32], "labels": [-100, 30, 31, 32]},
    {"input_ids": [2, 40, 41, 1, 42, 43, 44, 45, 46, 47, 48, 1], "labels": [-100] * 5 + [43, 44, 45, 46, 47, 48, 1]},
]


def _by_hand(model, ex, pad_id, rule, per_tensor_mean):
    """-|grad|_2 (or -mean of per-tensor 2-norms) from torch.autograd.grad on the item alone."""
    ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
    mask = (ids != pad_id).long() if rule == "not_pad" else torch.ones_like(ids)
    model.eval()
    lp, m = token_logprobs(model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.size(1))[None]).logits,
                           labels)
    lp = lp[m.bool()]
    if per_tensor_mean:
        lp = lp[:-1]
    params = list(model.parameters())
    grads = torch.autograd.grad(-lp.mean(), params, allow_unused=True)
    sq = [float(g.double().pow(2).sum()) if g is not None else 0.0 for g in grads]
    return -sum(map(math.sqrt, sq)) / len(sq) if per_tensor_mean else -math.sqrt(sum(sq))


def _llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                                        pad_token_id=1, eos_token_id=1, bos_token_id=2))


def _qwen2():  # q/k/v biases
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                        pad_token_id=1, eos_token_id=1, bos_token_id=2))


def _gpt2():  # Conv1D (re-run per item), LayerNorm with bias, a position embedding, tied head
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=256, n_embd=16, n_layer=2, n_head=4, n_positions=32,
                                      pad_token_id=1, eos_token_id=1, bos_token_id=2))


MODELS = {"llama": lambda: _llama(False), "llama-tied": lambda: _llama(True), "qwen2": _qwen2, "gpt2": _gpt2}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rule,per_tensor_mean", [("tokens", False), ("not_pad", True), ("tokens", True)])
def test_ghost_norms_equal_a_backward_per_item(name, rule, per_tensor_mean):
    model = MODELS[name]()
    with torch.no_grad():  # scale the weights up so the gradients are far from zero and differ by item
        for p in model.parameters():
            p.mul_(3.0)
    expect = [_by_hand(model, ex, 1, rule, per_tensor_mean) for ex in ITEMS]
    model.train()
    got = gradnorm.grad_norm_scores(model, ITEMS, 1, rule, per_tensor_mean)
    exact = gradnorm.grad_norm_scores(model, ITEMS, 1, rule, per_tensor_mean, exact=True)
    assert got == pytest.approx(expect, rel=2e-5)
    assert exact == pytest.approx(expect, rel=2e-5)
    assert len(set(round(x, 4) for x in got)) == len(ITEMS)  # the items really differ
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_the_attack_runs_under_no_grad():
    """Evaluation code holds ``torch.no_grad``; the attack's backward must still run (both paths)."""
    model = _llama(True)
    expect = [_by_hand(model, ex, 1, "tokens", False) for ex in ITEMS]
    with torch.no_grad():
        for exact in (False, True):
            assert gradnorm.grad_norm_scores(model, ITEMS, 1, exact=exact) == pytest.approx(expect, rel=2e-5)


def test_one_item_per_batch_gives_the_same_norms():
    model = _llama(True)
    whole = gradnorm.ghost_grad_norms(model.requires_grad_(False), ITEMS, 1)
    alone = gradnorm.ghost_grad_norms(model, ITEMS, 1, max_tokens=1)  # every item its own batch
    assert whole == pytest.approx(alone, rel=1e-5)


def test_an_embedding_the_ghost_norms_cannot_follow_falls_back_to_a_backward_per_item():
    model = _llama(False)
    model.model.embed_tokens.scale_grad_by_freq = True  # its gradient is no longer sum of one-hot rows
    expect = [_by_hand(model, ex, 1, "tokens", False) for ex in ITEMS]
    assert gradnorm.grad_norm_scores(model, ITEMS, 1) == pytest.approx(expect, rel=2e-5)
    with pytest.raises(gradnorm._Unsupported):
        gradnorm.ghost_grad_norms(model.requires_grad_(False), ITEMS, 1)


@pytest.mark.parametrize("steps", [2, 40])  # short items: Gram matrices; long ones: materialised gradients
def test_sq_norms_of_summed_uses_by_both_routes(steps):
    """|sum of dense, one-hot and full uses' gradients|^2 against the gradient built by hand."""
    g = torch.Generator().manual_seed(0)
    B, out, d = 3, 7, 5
    dense = gradnorm._Use(u=torch.randn(B, steps, out, generator=g), v=torch.randn(B, steps, d, generator=g))
    ids = torch.randint(0, out, (B, steps), generator=g)
    ids[0, 0] = -1  # no gradient
    onehot = gradnorm._Use(ids=ids, v=torch.randn(B, steps, d, generator=g))
    full = gradnorm._Use(full=torch.randn(B, out, d, generator=g))
    for uses in ([dense, onehot], [onehot, onehot], [dense], [dense, full]):
        want = []
        for b in range(B):
            w = torch.zeros(out, d, dtype=torch.float64)
            for u in uses:
                if u.full is not None:
                    w += u.full[b].double()
                elif u.u is not None:
                    w += u.u[b].double().T @ u.v[b].double()
                else:
                    for t in range(steps):
                        if u.ids[b, t] >= 0:
                            w[u.ids[b, t]] += u.v[b, t].double()
            want.append(float(w.pow(2).sum()))
        assert gradnorm._sq_norms(uses, torch.Size([out, d]), B).tolist() == pytest.approx(want, rel=1e-5)
