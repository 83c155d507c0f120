"""Merge operators on hand-built tensors, and streaming == in-memory bit for bit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from obliviate.errors import ConfigError
from obliviate.merge import MergeConfig, dare, merge_files, merge_state_dicts, trim_topk
from obliviate.merge import ties
from obliviate.merge.ops import dare_generator, merge_model, task_vector

BASE = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
TAUS = [
    torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1]),
    torch.tensor([-0.5, -1.0, 2.0, -4.0, 0.2]),
    torch.tensor([0.3, 1.5, -0.2, 1.2, 0.0]),
]


def _models():
    return [{"w": BASE + t} for t in TAUS]


def test_trim_topk_keeps_largest_magnitudes():
    assert torch.equal(trim_topk(TAUS[0], 0.4), torch.tensor([0.0, -2.0, 0.0, 3.0, 0.0]))
    assert torch.equal(trim_topk(TAUS[1], 0.2), torch.tensor([0.0, 0.0, 0.0, -4.0, 0.0]))
    assert torch.equal(trim_topk(TAUS[2], 1.0), TAUS[2])


def test_ties_hand_computed():
    # trimmed (density 0.4: 2 of 5): [0,-2,0,3,0], [0,0,2,-4,0], [0,1.5,0,1.2,0]
    # summed [0,-0.5,2,0.2,0] -> signs [0,-,+,+,0]; zeros take the majority sign (+)
    # disjoint means: [0, -2, 2, (3+1.2)/2, 0]
    out = merge_state_dicts({"w": BASE}, _models(), MergeConfig(method="ties", density=0.4, lam=0.5, preset="legacy"))
    torch.testing.assert_close(out["w"], BASE + 0.5 * torch.tensor([0.0, -2.0, 2.0, 2.1, 0.0]))


def test_task_arithmetic_and_linear_hand_computed():
    ta = merge_state_dicts({"w": BASE}, _models(), MergeConfig(method="task_arithmetic", lam=0.5))
    torch.testing.assert_close(ta["w"], BASE + 0.5 * torch.tensor([0.8, -1.5, 2.3, 0.2, 0.1]))
    lin = merge_state_dicts({"w": BASE}, _models(), MergeConfig(method="linear"))
    torch.testing.assert_close(lin["w"], torch.stack([m["w"] for m in _models()]).mean(0))
    weighted = merge_state_dicts({"w": BASE}, _models()[:2], MergeConfig(method="linear", weights=(3.0, 1.0)))
    torch.testing.assert_close(weighted["w"], BASE + 0.75 * TAUS[0] + 0.25 * TAUS[1])


def test_dare_drops_and_rescales_deterministically():
    tau = torch.randn(10_000)
    out = dare(tau, 0.7, dare_generator(3, "w", 0))
    kept = out != 0
    torch.testing.assert_close(out[kept], tau[kept] / 0.3)
    assert abs(kept.float().mean().item() - 0.3) < 0.02
    assert torch.equal(out, dare(tau, 0.7, dare_generator(3, "w", 0)))
    assert not torch.equal(out, dare(tau, 0.7, dare_generator(3, "w", 1)))


def test_dare_ties_uses_dare_instead_of_trim():
    cfg = MergeConfig(method="ties", dare_p=0.5, seed=1)
    out = merge_state_dicts({"w": BASE}, _models(), cfg)["w"] - BASE
    dropped = [dare(t, 0.5, dare_generator(1, "w", i)) for i, t in enumerate(TAUS)]
    total = sum(dropped)
    sign = torch.where(torch.sign(total) == 0, torch.ones(5), torch.sign(total))
    agree = [torch.where(torch.sign(d) == sign, d, torch.zeros(5)) for d in dropped]
    expect = sum(agree) / torch.stack([a != 0 for a in agree]).sum(0).clamp_min(1)
    torch.testing.assert_close(out, expect)


@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "linear"])
def test_identical_models_and_single_model(method):
    base = {"a": torch.randn(6, 4), "b": torch.randn(3)}
    model = {k: v + torch.randn_like(v) for k, v in base.items()}
    one = merge_state_dicts(base, [model], MergeConfig(method=method, density=1.0, lam=1.0))
    for k in base:
        torch.testing.assert_close(one[k], model[k])
    # k identical copies: TIES / linear return the model; task arithmetic with lam = 1/k does.
    lam = 1 / 4 if method == "task_arithmetic" else 1.0
    many = merge_state_dicts(base, [model] * 4, MergeConfig(method=method, density=1.0, lam=lam))
    for k in base:
        torch.testing.assert_close(many[k], model[k])


def test_merge_errors():
    with pytest.raises(ConfigError, match="density"):
        MergeConfig(density=0)
    with pytest.raises(ConfigError, match="has no tensor 'w'"):
        merge_state_dicts({"w": BASE}, [{"v": BASE}])
    with pytest.raises(ConfigError, match="shape"):
        merge_state_dicts({"w": BASE}, [{"w": torch.zeros(2)}])


@pytest.mark.parametrize("cfg", [MergeConfig(), MergeConfig(method="task_arithmetic", lam=0.3, dare_p=0.2),
                                 MergeConfig(method="linear")])
def test_streaming_equals_in_memory(tmp_path, cfg):
    g = torch.Generator().manual_seed(0)
    base = {"x": torch.randn(33, 17, generator=g), "y": torch.randn(5, generator=g).to(torch.bfloat16),
            "n": torch.arange(4)}
    models = [{k: (v + torch.randn(v.shape, generator=g).to(v.dtype)) if v.is_floating_point() else v
               for k, v in base.items()} for _ in range(3)]
    save_file(base, str(tmp_path / "base.safetensors"))
    for i, m in enumerate(models):
        save_file(m, str(tmp_path / f"m{i}.safetensors"))
    merge_files(tmp_path / "base.safetensors", [tmp_path / f"m{i}.safetensors" for i in range(3)],
                tmp_path / "out.safetensors", cfg)
    streamed = load_file(str(tmp_path / "out.safetensors"))
    in_memory = merge_state_dicts(base, models, cfg)
    assert streamed.keys() == in_memory.keys()
    for k in base:
        assert streamed[k].dtype == base[k].dtype
        assert torch.equal(streamed[k], in_memory[k]), k


def test_lora_adapter_merged_in_delta_space(tmp_path):
    base = {"model.layers.0.q_proj.weight": torch.randn(4, 6), "model.norm.weight": torch.ones(4)}
    save_file(base, str(tmp_path / "base.safetensors"))
    a, b = torch.randn(2, 6), torch.randn(4, 2)
    ad = tmp_path / "adapter"
    ad.mkdir()
    save_file({"base_model.model.model.layers.0.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.q_proj.lora_B.weight": b}, str(ad / "adapter_model.safetensors"))
    (ad / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    merge_files(tmp_path / "base.safetensors", [ad], tmp_path / "out.safetensors",
                MergeConfig(method="task_arithmetic", lam=1.0))
    out = load_file(str(tmp_path / "out.safetensors"))
    torch.testing.assert_close(out["model.layers.0.q_proj.weight"], base["model.layers.0.q_proj.weight"] + 2.0 * b @ a)
    assert torch.equal(out["model.norm.weight"], base["model.norm.weight"])


# ---- TIES rules and presets (issue 18) ----

from obliviate.merge import PRESETS  # noqa: E402
from obliviate.merge.trim import StreamingKth, kth_smallest, trim_mask  # noqa: E402


def test_presets_fill_unset_options_and_explicit_ones_win():
    assert MergeConfig().preset == "paper"
    p = MergeConfig()
    assert (p.trim_scope, p.trim_count, p.sign_tie, p.normalize) == ("model", "int_plus_one_ties", "majority", True)
    m = MergeConfig(preset="mergekit", normalize=False)
    assert (m.trim_scope, m.trim_count, m.sign_tie, m.normalize) == ("tensor", "int_exact", "positive", False)
    assert {k: getattr(MergeConfig(preset="legacy"), k) for k in PRESETS["legacy"]} == PRESETS["legacy"]
    with pytest.raises(ConfigError, match="Did you mean 'mergekit'"):
        MergeConfig(preset="mergkit")
    with pytest.raises(ConfigError, match="int_exact"):
        MergeConfig(trim_scope="model", trim_count="int_exact")


def test_trim_count_rules_hand_computed():
    # n = 8, density 0.25: d*n = 2 -> ceil 2, int+1 = 3, exact 2
    x = torch.tensor([5.0, -4.0, 3.0, -3.0, 1.0, 0.5, -0.25, 0.1])
    assert torch.equal(trim_topk(x, 0.25, "ceil_ties"), torch.tensor([5.0, -4, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(trim_topk(x, 0.25, "int_plus_one_ties"), torch.tensor([5.0, -4, 3, -3, 0, 0, 0, 0]))  # tie kept
    assert torch.equal(trim_topk(x, 0.25, "int_exact"), torch.tensor([5.0, -4, 0, 0, 0, 0, 0, 0]))
    # a tie straddling the cut: ceil keeps both 4s, int_exact exactly one, the one torch.argsort puts first
    y = torch.tensor([5.0, 4.0, -4.0, 1.0, 0.5, 0.2, 0.1, 0.05])
    assert torch.equal(trim_topk(y, 0.25, "ceil_ties"), torch.tensor([5.0, 4, -4, 0, 0, 0, 0, 0]))
    exact = trim_topk(y, 0.25, "int_exact")
    second = int(torch.argsort(y.abs(), descending=True)[1])
    assert int((exact != 0).sum()) == 2 and exact[0] == 5 and exact[second] == y[second]
    # tiny tensors: mergekit keeps max(1, int(d*n)) = 1 where int(d*n) = 0; the paper int(d*n)+1 = 1
    z = torch.tensor([1.0, -3.0, 2.0])
    assert torch.equal(trim_topk(z, 0.2, "int_exact"), torch.tensor([0.0, -3.0, 0.0]))
    assert torch.equal(trim_topk(z, 0.2, "int_plus_one_ties"), torch.tensor([0.0, -3.0, 0.0]))
    assert torch.equal(trim_topk(z, 0.2, "ceil_ties"), torch.tensor([0.0, -3.0, 0.0]))


def test_trim_scope_model_vs_tensor_hand_computed():
    base = {"a": torch.zeros(4), "b": torch.zeros(4)}
    model = {"a": torch.tensor([4.0, -3.0, 2.0, 1.0]), "b": torch.tensor([0.4, -0.3, 0.2, 0.1])}
    per_tensor = merge_state_dicts(base, [model], MergeConfig(density=0.5, preset="legacy"))
    assert torch.equal(per_tensor["a"], torch.tensor([4.0, -3.0, 0.0, 0.0]))
    assert torch.equal(per_tensor["b"], torch.tensor([0.4, -0.3, 0.0, 0.0]))
    # over the whole model (8 entries, keep 4): all of 'a' survives, none of 'b'
    whole = merge_state_dicts(base, [model], MergeConfig(density=0.5, preset="legacy", trim_scope="model"))
    assert torch.equal(whole["a"], model["a"]) and torch.equal(whole["b"], torch.zeros(4))
    # paper: int(0.5*8)+1 = 5 kept -> 'b''s largest (0.4) too
    paper = merge_state_dicts(base, [model], MergeConfig(density=0.5))
    assert torch.equal(paper["a"], model["a"]) and torch.equal(paper["b"], torch.tensor([0.4, 0.0, 0.0, 0.0]))


def _sign_case():
    # entry 0 sums to exactly 0 (3 + -3); the other entries' signs are mostly negative
    base = {"w": torch.zeros(5)}
    models = [{"w": torch.tensor([3.0, -1.0, -1.0, -1.0, 1.0])}, {"w": torch.tensor([-3.0, -1.0, -1.0, -1.0, 1.0])}]
    return base, models


def test_sign_tie_and_normalize_hand_computed():
    base, models = _sign_case()
    out = lambda **kw: merge_state_dicts(base, models, MergeConfig(density=1.0, **kw))["w"]  # noqa: E731
    # majority of the elected signs is - (3 vs 1): the zero sum elects -, whose mean is -3
    assert torch.equal(out(preset="legacy"), torch.tensor([-3.0, -1.0, -1.0, -1.0, 1.0]))
    assert torch.equal(out(preset="mergekit"), torch.tensor([3.0, -1.0, -1.0, -1.0, 1.0]))  # zero sum -> +
    assert torch.equal(out(preset="mergekit", normalize=False), torch.tensor([3.0, -2.0, -2.0, -2.0, 2.0]))  # disjoint sum


def test_model_scope_majority_overrides_a_tensors_own(tmp_path):
    # tensor 'a' alone elects + for its zero-sum entry (2 positive sums); the model as a whole
    # has 5 negative sums, so model-scope majority gives - there; streaming (with its rewrite) agrees
    base = {"a": torch.zeros(3), "b": torch.zeros(5)}
    models = [{"a": torch.tensor([3.0, 1.0, 1.0]), "b": -torch.ones(5)},
              {"a": torch.tensor([-3.0, 1.0, 1.0]), "b": -torch.ones(5)}]
    tensor_scope = merge_state_dicts(base, models, MergeConfig(density=1.0, preset="legacy"))
    assert torch.equal(tensor_scope["a"], torch.tensor([3.0, 1.0, 1.0]))
    cfg = MergeConfig(density=1.0)  # paper: model scope
    whole = merge_state_dicts(base, models, cfg)
    assert torch.equal(whole["a"], torch.tensor([-3.0, 1.0, 1.0])) and torch.equal(whole["b"], -torch.ones(5))
    save_file(base, str(tmp_path / "base.safetensors"))
    for i, m in enumerate(models):
        save_file(m, str(tmp_path / f"m{i}.safetensors"))
    merge_files(tmp_path / "base.safetensors", [tmp_path / "m0.safetensors", tmp_path / "m1.safetensors"],
                tmp_path / "out.safetensors", cfg)
    streamed = load_file(str(tmp_path / "out.safetensors"))
    assert all(torch.equal(streamed[k], whole[k]) for k in base)


def _mergekit_reference(base, models, density, weights=None, normalize=True):
    """mergekit's `ties` as its docs/code define it, written independently: per tensor, keep the
    first max(1, int(d*n)) entries of torch.argsort(|delta|, descending=True); sign = (sum of
    weighted deltas >= 0); mean (or sum) over the entries whose sign matches, weighted."""
    weights = weights or [1.0] * len(models)
    out = {}
    for name, b in base.items():
        deltas = []
        for m in models:
            d = m[name] - b
            if density < 1:
                mask = torch.zeros(d.numel())
                mask[torch.argsort(d.abs().reshape(-1), descending=True)[:max(1, int(density * d.numel()))]] = 1
                d = d * mask.reshape(d.shape)
            deltas.append(d)
        stacked = torch.stack(deltas)
        w = torch.tensor(weights).reshape(-1, *[1] * b.dim())
        weighted = stacked * w
        majority = (weighted.sum(0) >= 0).float() * 2 - 1
        agree = weighted.sign() == majority
        mixed = (weighted * agree).sum(0)
        divisor = (w * agree).sum(0)
        divisor[divisor == 0] = 1
        out[name] = b + (mixed / divisor if normalize else mixed)
    return out


@pytest.mark.parametrize("k,weights,normalize", [(2, None, True), (3, None, True), (5, None, True), (3, None, False),
                                                 (3, [0.5, 1.0, 2.0], True)])
def test_mergekit_preset_equals_mergekit_rules(k, weights, normalize):
    g = torch.Generator().manual_seed(k)
    base = {"big": torch.randn(300, 70, generator=g), "small": torch.randn(7, generator=g), "one": torch.randn(1, generator=g)}
    models = []
    for i in range(k):
        # deltas on a coarse grid: many exact threshold ties and exact zero sums between models
        models.append({n: b + torch.randint(-6, 7, b.shape, generator=g).float() * 0.125 for n, b in base.items()})
    models[1]["big"][:5] = base["big"][:5] - (models[0]["big"][:5] - base["big"][:5])  # rows whose deltas cancel
    for density in (0.2, 0.5, 1.0):
        ref = _mergekit_reference(base, models, density, weights, normalize)
        cfg = MergeConfig(density=density, preset="mergekit", normalize=normalize, weights=tuple(weights or ()))
        out = merge_state_dicts(base, models, cfg)
        for n in base:
            assert torch.equal(out[n], ref[n]), (density, n, (out[n] != ref[n]).sum())


def _paper_reference(base, models, density):
    """The TIES reference code's rules (merge_utils.py), written independently: flatten each task
    vector over the whole model, keep |x| >= its (n - int(d*n))-th smallest magnitude, elect
    sign(sum), zero sums take the majority of the elected signs, disjoint mean."""
    names = sorted(base)
    flat = torch.stack([torch.cat([(m[n] - base[n]).reshape(-1) for n in names]) for m in models])
    n = flat.shape[1]
    kth = torch.kthvalue(flat.abs(), n - int(n * density), dim=1, keepdim=True).values
    trimmed = flat * (flat.abs() >= kth)
    sign = torch.sign(trimmed.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    sel = trimmed * keep
    merged = sel.sum(0) / (sel != 0).sum(0).clamp(min=1)
    out, at = {}, 0
    for name in names:
        out[name] = base[name] + merged[at:at + base[name].numel()].reshape(base[name].shape)
        at += base[name].numel()
    return out


def test_paper_preset_matches_the_reference_code_rules():
    g = torch.Generator().manual_seed(7)
    base = {"a": torch.randn(40, 30, generator=g), "b": torch.randn(50, generator=g) * 0.1, "c": torch.randn(9, 9, generator=g)}
    models = [{n: b + torch.randint(-4, 5, b.shape, generator=g).float() * 0.1 for n, b in base.items()} for _ in range(3)]
    for density in (0.2, 0.5):
        ref = _paper_reference(base, models, density)
        out = merge_state_dicts(base, models, MergeConfig(density=density))
        for n in base:
            torch.testing.assert_close(out[n], ref[n], rtol=0, atol=1e-6)


def test_exact_order_statistics_with_ties_and_zeros():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-50, 51, (200_000,), generator=g).float() * 1e-3  # many ties, exact zeros
    x[:1000] = torch.randn(1000, generator=g)
    for r in (1, 17, 100_000, 180_001, 200_000):
        value, below = kth_smallest(x, r)
        assert value == torch.kthvalue(x.abs(), r).values and below == int((x.abs() < value).sum())
    pieces = list(x.split(30_001))
    sel = StreamingKth()
    for p in pieces:
        sel.add(p)
    sel.next_pass(123_456)
    for p in pieces:
        sel.add(p)
    assert sel.value() == torch.kthvalue(x.abs(), 123_456).values
    assert torch.equal(trim_mask(x, 0.2, "ceil_ties"), x.abs() >= torch.kthvalue(x.abs(), 200_000 - 40_000 + 1).values)


@pytest.mark.parametrize("preset", ["paper", "mergekit", "legacy"])
def test_every_preset_streams_bit_identically(tmp_path, preset):
    g = torch.Generator().manual_seed(1)
    base = {"x": torch.randn(130, 170, generator=g), "y": torch.randn(5, generator=g).to(torch.bfloat16), "n": torch.arange(4)}
    models = [{k: (v + (torch.randint(-3, 4, v.shape, generator=g) * 0.01).to(v.dtype)) if v.is_floating_point() else v
               for k, v in base.items()} for _ in range(3)]
    save_file(base, str(tmp_path / "base.safetensors"))
    for i, m in enumerate(models):
        save_file(m, str(tmp_path / f"m{i}.safetensors"))
    cfg = MergeConfig(preset=preset, density=0.3)
    merge_files(tmp_path / "base.safetensors", [tmp_path / f"m{i}.safetensors" for i in range(3)], tmp_path / "o.safetensors", cfg)
    streamed, in_memory = load_file(str(tmp_path / "o.safetensors")), merge_state_dicts(base, models, cfg)
    assert all(torch.equal(streamed[k], in_memory[k]) for k in base)


def _legacy_reference(base, models, density, lam):
    """obliviate 0.1's TIES (the baseline of benchmarks/merge_speed.py), written out: per tensor
    keep |tau| >= its (n - ceil(d*n) + 1)-th smallest magnitude, elect sign(sum) with zero sums
    taking the tensor's majority (+ on a tie), then the mean of the agreeing values (two passes)."""
    out = {}
    for name, b in base.items():
        trimmed = []
        for m in models:
            tau = m[name].float() - b.float()
            n, keep = tau.numel(), min(tau.numel(), math.ceil(density * tau.numel()))
            if keep < n:
                kth = torch.kthvalue(tau.abs().reshape(-1), n - keep + 1).values
                tau = torch.where(tau.abs() >= kth, tau, torch.zeros_like(tau))
            trimmed.append(tau)
        total = trimmed[0]
        for t in trimmed[1:]:
            total = total + t
        sign = torch.sign(total)
        majority = torch.sign(sign.sum())
        sign = torch.where(sign == 0, majority if majority != 0 else torch.ones_like(majority), sign)
        agree_sum, count = torch.zeros_like(total), torch.zeros_like(total)
        for t in trimmed:
            agree = ((sign > 0) & (t > 0)) | ((sign < 0) & (t < 0))
            agree_sum = agree_sum + torch.where(agree, t, torch.zeros_like(t))
            count = count + agree.to(t.dtype)
        out[name] = (b.float() + lam * (agree_sum / count.clamp_min(1))).to(b.dtype)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_legacy_preset_is_bit_identical_to_obliviate_0_1(monkeypatch, k):
    # small chunks: sums, zero-sum redos and the one-pass path cross many chunk boundaries
    monkeypatch.setattr(ties, "chunk_size", lambda: 64)
    g = torch.Generator().manual_seed(k)
    base = {"a": torch.randn(37, 29, generator=g), "b": torch.randn(300, generator=g), "c": torch.randn(5, generator=g)}
    base["a"][0, :7] = -0.0  # theta_0 = -0: a merged -0 vs +0 would show in the bytes
    base["b"][:150] = -0.0
    models = []
    for i in range(k):
        m = {n: b + torch.randint(-4, 5, b.shape, generator=g).float() * 0.25 for n, b in base.items()}
        m["b"][150:] = base["b"][150:] + (1 if i % 2 else -1) * 0.5  # cancelling pairs: zero sums with kept values
        m["b"][:150] = base["b"][:150] - (torch.arange(150) % 3 + 1).float() * 0.25  # negative majority
        models.append(m)
    for density, lam in ((0.2, 1.0), (0.5, 0.7), (1.0, 1.0)):
        ref = _legacy_reference(base, models, density, lam)
        cfg = MergeConfig(density=density, lam=lam, preset="legacy")
        for group in sorted({1, 2, k}):
            out = {}
            merge_model(list(base), base.__getitem__, lambda i, n, b: task_vector(models[i][n], b), k, cfg,
                        out.__setitem__, out.__setitem__, group=group)
            for n in base:
                assert torch.equal(out[n].view(torch.int32), ref[n].view(torch.int32)), (density, group, n)
