"""FSDP2 support of the engine: recognising sharded models, global dot products, and turning a
sharded model back into whole tensors for checkpoints and the saved model.

A model is sharded when accelerate's FSDP2 prepared it (``configs/accelerate/fsdp.yaml``) or when
the caller applied ``torch.distributed.fsdp.fully_shard`` before ``train`` (``torchrun``); either
way its parameters are DTensors of which each process holds a shard. Whole-tensor state is
gathered with ``torch.distributed.checkpoint.state_dict`` (a collective: every process calls it),
so checkpoints have the same format as single-process ones: a sharded run can resume on one
process and vice versa.
"""

from __future__ import annotations

import torch


def is_sharded(t: torch.Tensor) -> bool:
    """True for an FSDP2 parameter or gradient: a DTensor of which this process holds a shard."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(t, DTensor)


def is_fsdp(module: torch.nn.Module) -> bool:
    """True for a module wrapped by FSDP2's ``fully_shard``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, FSDPModule)


def reshard(model: torch.nn.Module) -> None:
    """Put every FSDP2 module back in its sharded state. After a forward without backward (under
    ``no_grad``) the root keeps its parameters gathered and registered as plain tensors; an
    optimizer built then would hold tensors that training no longer uses."""
    for m in model.modules():
        if is_fsdp(m):
            m.reshard()


def shard_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> of two tensors sharded alike, from the local shards: local dot, summed over processes."""
    from .combine import local_dot

    d = local_dot(a, b)
    torch.distributed.all_reduce(d)
    return d


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU of process 0 (collective; other processes get ``{}``)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    if trainable_only:
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {n: t for n, t in state.items() if n in keep}
    return state


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every process passes the same whole tensors (a subset of the parameters is fine) and keeps its shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(strict=False))


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer state with whole tensors, keyed by parameter name (collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _raw(optimizer), options=_options(cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, _raw(optimizer), state, options=_options())


def _raw(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer


def unsharded_copy(model: torch.nn.Module) -> torch.nn.Module | None:
    """A plain (unsharded) copy of a sharded Hugging Face model on process 0's CPU; None elsewhere.

    Collective. The copy is what process 0 saves and evaluates after training: an FSDP module's
    forward is itself collective, so it cannot be run by one process alone."""
    state = full_model_state(model)
    if torch.distributed.get_rank() != 0:
        return None
    from transformers import AutoModelForCausalLM

    dtype = next(iter(state.values())).dtype
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    if unexpected or any(not _tied(plain, n) for n in missing):
        raise RuntimeError(f"rebuilding the unsharded model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    return plain.eval()


def _tied(model: torch.nn.Module, name: str) -> bool:
    return name == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))
