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


def test_backend_checks_refuse_deepspeed_combiners_and_fsdp1_but_not_fsdp2():
    """DeepSpeed only exposes the summed gradient: combiner methods are refused there with a clear
    message; FSDP1's flat shards are refused for every method; FSDP2 (DTensor parameters) is fine."""
    from types import SimpleNamespace

    import pytest

    from obliviate.engine.loop import _check_backend
    from obliviate.errors import ConfigError

    ns = lambda kind: SimpleNamespace(distributed_type=f"DistributedType.{kind}")  # noqa: E731
    with pytest.raises(ConfigError, match="falcon.*DeepSpeed.*FSDP2.*DDP"):
        _check_backend(FalconProjection(), ns("DEEPSPEED"), "falcon", sharded=False)
    for combiner in (FalconProjection(), None):
        with pytest.raises(ConfigError, match="FSDP version 1.*fsdp_version: 2"):
            _check_backend(combiner, ns("FSDP"), "npo", sharded=False)
    _check_backend(FalconProjection(), ns("FSDP"), "falcon", sharded=True)
    _check_backend(FalconProjection(), ns("MULTI_GPU"), "falcon", sharded=False)
    _check_backend(None, ns("DEEPSPEED"), "npo", sharded=False)


def test_float_noise_retain_gradient_is_not_a_conflict():
    """At step 1 the retain gradient is rounding noise: its sign must not decide the branch."""
    g_f = torch.tensor([1.0, 2.0, -0.5])
    noise = torch.tensor([-3e-9, 1e-9, 2e-9])  # dot with g_f < 0, but |noise| ~ 4e-9 |g_f|
    out = FalconProjection().combine({"forget": g_f, "retain": noise})
    assert torch.allclose(out, 0.1 * g_f + 1.9 * noise)  # exact arithmetic (g_R = 0): the aligned branch
    assert torch.equal(PCGrad().combine({"a": g_f, "b": noise}), g_f + noise)
    small = torch.tensor([-1e-4, 0.0, 0.0])  # well above the floor: a real conflict
    assert not torch.allclose(FalconProjection().combine({"forget": g_f, "retain": small}), 0.1 * g_f + 1.9 * small)


def _combine_sharded(comb, grads: dict, cut: list) -> torch.Tensor:
    """Each "process" (a thread) combines its shard; ``dot`` sums the local dots of all shards, as
    the engine's all-reduce does under FSDP2. Returns the shards' results concatenated."""
    import threading

    from obliviate.engine.combine import local_dot

    n = len(cut)
    barrier, slots, results = threading.Barrier(n), [None] * n, [None] * n

    def worker(r):
        def dot(a, b):
            slots[r] = local_dot(a, b)
            barrier.wait()
            total = sum(slots)
            barrier.wait()  # nobody overwrites a slot before everyone has read the sum
            return total

        results[r] = comb.combine({k: g[cut[r]] for k, g in grads.items()}, dot=dot)

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return torch.cat(results)


def test_combiners_on_shards_with_a_summed_dot_match_the_whole_tensor():
    """What FSDP2 does: each process combines its shard of every gradient with dot products summed
    over all shards. Concatenated, the shards' results must equal the whole-tensor result; with
    local dots (what a naive FSDP port would do) they do not."""
    gen = torch.Generator().manual_seed(1)
    cut = [slice(0, 2), slice(2, 6)]  # uneven shards along dim 0, like FSDP2's Shard(0)
    for comb in (FalconProjection(), PCGrad()):
        local_differs = 0
        for _ in range(20):
            grads = {"forget": torch.randn(6, 5, generator=gen), "retain": torch.randn(6, 5, generator=gen)}
            whole = comb.combine(grads)
            assert torch.allclose(_combine_sharded(comb, grads, cut), whole, atol=1e-6)
            naive = torch.cat([comb.combine({k: g[c] for k, g in grads.items()}) for c in cut])
            local_differs += not torch.allclose(naive, whole, atol=1e-6)
        assert local_differs >= 5, local_differs
