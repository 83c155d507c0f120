"""RMU and FALCON: the pure pieces (InfoNCE, POV, truncated forward, frozen cache), training on a tiny
random Llama, and (slow) unlearning planted facts in SmolLM2."""

import math

import pytest
import torch

import obliviate
from obliviate import methods
from obliviate.data.encode import collate, encode_records
from obliviate.engine import TrainConfig, train
from obliviate.engine.combine import FalconProjection
from obliviate.errors import ConfigError
from obliviate.methods.base import Reference
from obliviate.methods.representation import (FrozenActivations, forget_mask, info_nce, layer_activations,
                                              masked_mse, principal_offset_vector, random_unit_vector,
                                              trainable_patterns)

FORGET = [{"text": f"XQZ {i * 7919 % 1000} VKW {i * 31} JJX #{i}!"} for i in range(6)]
RETAIN = [{"text": f"the cat sat on the mat number {w}"} for w in ("one", "two", "three", "four", "five", "six")]


def test_info_nce_hand_value():
    # anchor . positive = 0, anchor . negative = 1 (after normalising), tau = 0.5:
    # -log(e^0 / (e^0 + e^2)) = log(1 + e^2) = 2.1269
    a = torch.tensor([[[3.0, 0.0]]])
    p = torch.tensor([0.0, 2.0])
    n = torch.tensor([[[5.0, 0.0]]])
    assert math.isclose(info_nce(a, p, n, 0.5).item(), math.log(1 + math.e**2), rel_tol=1e-6)
    # two negatives (cos 1 and cos 0): log(1 + e^2 + 1); masked-out tokens do not count
    n2 = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert math.isclose(info_nce(a, p, n2, 0.5).item(), math.log(2 + math.e**2), rel_tol=1e-6)
    a2, n3 = torch.cat([a, -a], 1), torch.cat([n, n], 1)
    assert math.isclose(info_nce(a2, p, n3, 0.5, mask=torch.tensor([[1, 0]])).item(), math.log(1 + math.e**2), rel_tol=1e-6)


def test_random_vector_and_pov():
    u = random_unit_vector(16, seed=3)
    assert math.isclose(u.norm().item(), 1.0, rel_tol=1e-6) and (u >= 0).all()
    assert torch.equal(u, random_unit_vector(16, seed=3)) and not torch.equal(u, random_unit_vector(16, seed=4))
    acts = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    v1 = principal_offset_vector(acts, torch.Generator().manual_seed(0))
    v2 = principal_offset_vector(acts, torch.Generator().manual_seed(0))
    assert torch.equal(v1, v2) and abs(v1.norm().item() - 1) < 1e-4 and torch.isfinite(v1).all()
    assert not torch.allclose(v1, principal_offset_vector(acts * torch.linspace(0.1, 3, 16), torch.Generator().manual_seed(0)))


def test_truncated_forward_equals_full_forward(tiny):
    model, tok = tiny
    b = collate(encode_records(tok, FORGET[:3]), tok.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states
        for l in range(3):  # the last block's hidden state is HF's post-norm output, so stop before it
            assert torch.equal(layer_activations(model, b, l), full[l + 1])


def test_frozen_cache_computes_each_example_once(tiny):
    model, tok = tiny
    calls = []
    model.model.embed_tokens.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    cache = FrozenActivations(layer=1, where="cpu")
    enc = encode_records(tok, FORGET)
    b1, b2 = collate(enc[:3], tok.pad_token_id), collate(enc[2:5], tok.pad_token_id)
    ref = Reference(model)
    h1 = cache.get(ref, "forget", b1)
    h2 = cache.get(ref, "forget", b2)
    assert calls == [3, 2] and len(cache) == 5  # example 2 came from the cache
    with torch.no_grad():
        direct = layer_activations(model, b2, 1)
    m = b2["attention_mask"].bool()
    assert torch.allclose(h2[m], direct[m], atol=1e-6) and (h2[~m] == 0).all()
    assert torch.equal(h1[0], cache.get(ref, "forget", b1)[0])


def test_patterns_and_config_errors(tiny):
    import re

    model, _ = tiny
    pats = trainable_patterns((1, 2), "mlp.down_proj")
    hits = [n for n, _ in model.named_parameters() if any(re.search(p, n) for p in pats)]
    assert hits == ["model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]
    with pytest.raises(ConfigError, match="update_layers"):
        methods.build("rmu", {"layer": 2, "update_layers": [3]})
    with pytest.raises(ConfigError, match="tau"):
        methods.build("falcon", {"tau": 0})
    with pytest.raises(ConfigError, match="falcon.layer"):
        methods.build("falcon", {"layer": 9}).prepare(model, [], [], 0)


def _train(tiny, name, opts, steps=20):
    model, tok = tiny
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = methods.build(name, opts)
    ef, er = encode_records(tok, FORGET), encode_records(tok, RETAIN)
    res = train(model, tok, m, ef, er, TrainConfig(lr=1e-2, max_steps=steps, batch_size=6, scheduler="constant", progress=False))
    return model, tok, m, frozen, res


def _acts(model, tok, records, layer):
    b = collate(encode_records(tok, records), tok.pad_token_id)
    with torch.no_grad():
        return layer_activations(model, b, layer), b


def _untouched_identical(model, frozen, trained_layers):
    for n, p in model.named_parameters():
        trained = any(f"layers.{i}.mlp.down_proj." in n for i in trained_layers)
        assert torch.equal(p, frozen[n]) != trained, n


def test_rmu_tiny_moves_forget_to_target_keeps_retain(tiny):
    base = tiny[0].__class__(tiny[0].config)
    base.load_state_dict(tiny[0].state_dict())
    model, tok, m, frozen, res = _train(tiny, "rmu", {"layer": 2, "c_scale": 4.0, "alpha": 10.0})
    assert all(math.isfinite(r["loss"]) for r in res.log) and len(m.frozen) == 12
    target = m.coefficient * random_unit_vector(32, 0)
    h0, b = _acts(base, tok, FORGET, 2)
    h1, _ = _acts(model, tok, FORGET, 2)
    mask = b["attention_mask"]
    d0, d1 = masked_mse(h0, target, mask).item(), masked_mse(h1, target, mask).item()
    assert d1 < 0.3 * d0, (d0, d1)
    r0, rb = _acts(base, tok, RETAIN, 2)
    r1, _ = _acts(model, tok, RETAIN, 2)
    assert masked_mse(r1, r0, rb["attention_mask"]).item() < 0.05 * masked_mse(r0, 0 * r0, rb["attention_mask"]).item()
    _untouched_identical(model, frozen, (0, 1, 2))


def test_falcon_tiny_moves_forget_to_pov_keeps_retain(tiny):
    base = tiny[0].__class__(tiny[0].config)
    base.load_state_dict(tiny[0].state_dict())
    model, tok, m, frozen, res = _train(tiny, "falcon", {"layer": 2, "alpha": 10.0, "extra_negatives": 2})
    assert isinstance(m.combiner, FalconProjection) and all(math.isfinite(r["loss"]) for r in res.log)
    h0, b = _acts(base, tok, FORGET, 2)
    h1, _ = _acts(model, tok, FORGET, 2)
    mask = forget_mask(b, "all")
    pov = principal_offset_vector(h0[mask], torch.Generator().manual_seed(0))
    cos = lambda h: torch.nn.functional.cosine_similarity(h[mask], pov, dim=-1).mean().item()  # noqa: E731
    assert cos(h1) > cos(h0) + 0.4, (cos(h0), cos(h1))
    r0, rb = _acts(base, tok, RETAIN, 2)
    r1, _ = _acts(model, tok, RETAIN, 2)
    rm = rb["attention_mask"].bool()
    assert torch.nn.functional.cosine_similarity(r1[rm], r0[rm], dim=-1).mean() > 0.97
    _untouched_identical(model, frozen, (0, 1, 2))


def test_falcon_selects_layer_by_mi_and_trains_only_there(tiny):
    model, tok, m, frozen, res = _train(tiny, "falcon", {"alpha": 10.0, "mi_samples": 6}, steps=2)
    assert m.selection is not None and m.layer == m.selection.layer and set(m.selection.mi) == {0, 1, 2, 3}
    _untouched_identical(model, frozen, range(max(0, m.layer - 2), m.layer + 1))


def test_sign_momentum_optimizer_steps_by_lr_times_sign(tiny):
    from obliviate.engine.sign_momentum import SignMomentum

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = SignMomentum([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([0.5, -1e-6, 0.0])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.9, 3.0]))


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", [
    ("rmu", {"lr": 5e-3, "layer": 7, "c_scale": 5.0, "alpha": 100.0, "tokens": "answer"}),
    ("falcon", {"lr": 5e-3, "layer": 7, "alpha": 100.0, "tokens": "answer"}),
])
def test_smollm2_planted_facts(planted, name, opts):
    from obliviate.eval import answer_prob

    path, facts = planted
    forget = [f for f in facts if f["person"] in {r["person"] for r in facts[:9]}]  # people 0-2
    kept = [f for f in facts if f not in forget]  # people 3-5
    model, tok = obliviate.load_model(path)
    p_f0, p_k0 = answer_prob(model, tok, forget).mean().item(), answer_prob(model, tok, kept).mean().item()
    obliviate.unlearn(model, tok, forget, kept, method=name, max_steps=16, batch_size=3, scheduler="constant",
                      progress=False, save=False, **opts)
    p_f1, p_k1 = answer_prob(model, tok, forget).mean().item(), answer_prob(model, tok, kept).mean().item()
    print(f"{name}: forget {p_f0:.3f} -> {p_f1:.3f}; kept {p_k0:.3f} -> {p_k1:.3f}")
    assert p_f0 > 0.9 and p_k0 > 0.9
    assert p_f1 < 0.8 * p_f0, (p_f0, p_f1)
    assert p_k1 > p_k0 - 0.05, (p_k0, p_k1)
