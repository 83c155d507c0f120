"""Gradient combiners (engine/combine.py): hand-made gradients, worked by hand in the comments."""

import torch

from obliviate.engine.combine import FalconProjection, PCGrad, WeightedSum, project_out


def test_falcon_conflicting_pair_hand_value_and_properties():
    g_f, g_r = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # dot = -1 < 0: conflict
    # projected forget part: g_f - (-1/2) g_r = [0.5, 0.5]; 0.8*[0.5,0.5] + 1.2*[-1,1] = [-0.8, 1.6]
    g = FalconProjection().combine({"forget": g_f, "retain": g_r})
    assert torch.allclose(g, torch.tensor([-0.8, 1.6]))
    forget_part = g - 1.2 * g_r
    assert abs(float(forget_part @ g_r)) < 1e-6  # orthogonal to the retain gradient
    assert float(g @ g_r) >= 0


def test_falcon_random_conflicts_on_matrices():
    gen = torch.Generator().manual_seed(0)
    comb = FalconProjection(conflict_weights=(0.5, 1.0), align_weights=(0.3, 0.7))
    seen = {True: 0, False: 0}
    for _ in range(50):
        g_f, g_r = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
        g = comb.combine({"forget": g_f, "retain": g_r})
        conflict = float((g_f * g_r).sum()) < 0
        seen[conflict] += 1
        if conflict:
            forget_part = (g - 1.0 * g_r) / 0.5
            assert abs(float((forget_part * g_r).sum())) < 1e-4
            assert float((g * g_r).sum()) >= 0
            assert torch.allclose(forget_part + (float((g_f * g_r).sum()) / float((g_r * g_r).sum())) * g_r, g_f, atol=1e-5)
        else:
            assert torch.allclose(g, 0.3 * g_f + 0.7 * g_r)
    assert seen[True] > 5 and seen[False] > 5


def test_falcon_non_conflicting_is_weighted_sum_and_zero_retain_is_safe():
    g_f, g_r = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])
    assert torch.allclose(FalconProjection().combine({"forget": g_f, "retain": g_r}), 0.1 * g_f + 1.9 * g_r)
    z = torch.zeros(2)
    out = FalconProjection().combine({"forget": g_f, "retain": z})
    assert torch.allclose(out, 0.1 * g_f) and torch.isfinite(out).all()
    assert torch.equal(project_out(g_f, z), g_f)


def test_pcgrad_hand_value():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1' = g1 - (-1/2) g2 = [0.5, 0.5]; g2' = g2 - (-1/1) g1 = [0, 1]; sum [0.5, 1.5]
    assert torch.allclose(PCGrad().combine({"a": g1, "b": g2}), torch.tensor([0.5, 1.5]))
    g3 = torch.tensor([1.0, 1.0])
    assert torch.allclose(PCGrad({"a": 2.0}).combine({"a": g1, "b": g3}), 2 * g1 + g3)  # no conflict: weighted sum


def test_weighted_sum():
    g = WeightedSum({"retain": 3.0}).combine({"forget": torch.ones(2), "retain": torch.ones(2)})
    assert torch.equal(g, torch.full((2,), 4.0))


def test_combiner_methods_refuse_sharded_backends():
    """DeepSpeed/FSDP cannot combine per-objective gradients exactly: refuse with a clear message."""
    from types import SimpleNamespace

    import pytest

    from obliviate.engine.combine import FalconProjection
    from obliviate.engine.loop import _check_combiner_backend
    from obliviate.errors import ConfigError

    for kind in ("DistributedType.DEEPSPEED", "DistributedType.FSDP"):
        with pytest.raises(ConfigError, match="falcon.*DDP"):
            _check_combiner_backend(FalconProjection(), SimpleNamespace(distributed_type=kind), "falcon")
    _check_combiner_backend(FalconProjection(), SimpleNamespace(distributed_type="DistributedType.MULTI_GPU"), "falcon")
    _check_combiner_backend(None, SimpleNamespace(distributed_type="DistributedType.DEEPSPEED"), "npo")
