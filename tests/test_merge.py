"""Merge operators on hand-built tensors, and streaming == in-memory bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from obliviate.errors import ConfigError
from obliviate.merge import MergeConfig, dare, merge_files, merge_state_dicts, trim_topk
from obliviate.merge.ops import dare_generator

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
    out = merge_state_dicts({"w": BASE}, _models(), MergeConfig(method="ties", density=0.4, lam=0.5))
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
