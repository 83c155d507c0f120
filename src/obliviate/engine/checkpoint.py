"""Resumable checkpoints: trainable weights (safetensors), optimizer, scheduler and RNG state.

Only trainable parameters are saved: the frozen ones equal the starting model, which a resume
loads again. A checkpoint directory is written atomically, so a crash mid-save leaves the
previous checkpoint as the newest complete one. A sharded (FSDP2) run writes whole tensors too
(``engine.sharding``), with the optimizer state keyed by parameter name (``optimizer_format``
"by_name" in ``state.json``); such a checkpoint resumes a sharded run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path

NAME = re.compile(r"^step-(\d+)$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, keep: int,
                    trainable: dict[str, torch.Tensor] | None = None, optimizer_state: dict | None = None) -> Path:
    """Write ``root/step-<step>``; ``trainable``/``optimizer_state``: whole-tensor state gathered from a
    sharded model (default: read from ``model`` and ``optimizer``)."""
    target = root / f"step-{step}"
    by_name = optimizer_state is not None
    with atomic_path(target, is_dir=True) as tmp:
        tmp.mkdir(parents=True)
        save_file(trainable if trainable is not None else trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer_state if by_name else optimizer.state_dict(), tmp / "optimizer.pt")
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        meta = {"step": step, "scheduler": scheduler.state_dict(), "optimizer_format": "by_name" if by_name else "by_index"}
        (tmp / "state.json").write_text(json.dumps(meta, default=str))
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := NAME.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, model, optimizer, scheduler, sharded: bool = False) -> int:
    """Restore a checkpoint in place; returns the number of completed steps. ``sharded``: the model
    is FSDP2-sharded (every process calls this and keeps its shards of the whole tensors)."""
    state = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint {path} has parameters the model lacks: {missing[:3]}")
    meta = json.loads((path / "state.json").read_text())
    by_name = meta.get("optimizer_format") == "by_name"
    if by_name != sharded:
        from ..errors import ConfigError

        raise ConfigError(f"Checkpoint {path} was written by a {'sharded (FSDP)' if by_name else 'non-sharded'} run; "
                          f"resume it the same way, or start a new run from its weights.")
    optim_state = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    if sharded:
        from .sharding import load_full_model_state, load_full_optimizer_state

        load_full_model_state(model, state)
        load_full_optimizer_state(model, optimizer, optim_state)
    else:
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        optimizer.load_state_dict(optim_state)
    sched = meta["scheduler"]
    scheduler.load_state_dict({k: v for k, v in sched.items() if k != "lr_lambdas"} | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(meta["step"])
