"""Resumable checkpoints: trainable weights (safetensors), optimizer, scheduler and RNG state.

Only trainable parameters are saved: the frozen ones equal the starting model, which a resume
loads again. A checkpoint directory is written atomically, so a crash mid-save leaves the
previous checkpoint as the newest complete one. A sharded (FSDP2) run writes whole tensors too
(``engine.sharding``), with the optimizer state keyed by parameter name (``optimizer_format``
"by_name" in ``state.json``); such a checkpoint resumes a sharded run. ``state.json`` also records
the run's settings (``config``: method, train and data fingerprint) so that a resume with other
settings is refused by name (``check_resume_config``).

Reading goes through one validation path (``read_checkpoint``): every file is read and checked
before anything is applied to the model, so ``newest_checkpoint`` can skip a corrupt newest
checkpoint (truncated weights, a torn ``optimizer.pt``, unsafe pickles) with a warning and fall
back to the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError, StorageError
from ..io import atomic_path, is_main_process, safetensors_problem

NAME = re.compile(r"^step-(\d+)$")
logger = logging.getLogger(__name__)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """The RNG state a resume restores (CPU, and every CUDA device if present)."""
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, keep: int,
                    trainable: dict[str, torch.Tensor] | None = None, optimizer_state: dict | None = None, *,
                    rng: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                    with_optimizer: bool = True) -> Path:
    """Write ``root/step-<step>``; ``trainable``/``optimizer_state``: whole-tensor state gathered from a
    sharded model (default: read from ``model`` and ``optimizer``); ``rng``: the RNG state to record
    (default: now); ``meta``: extra ``state.json`` entries; ``with_optimizer=False``: weights only
    (a final checkpoint that only guards the model save)."""
    target = root / f"step-{step}"
    by_name = optimizer_state is not None
    try:
        with atomic_path(target, is_dir=True) as tmp:
            tmp.mkdir(parents=True)
            save_file(trainable if trainable is not None else trainable_state(model), str(tmp / "trainable.safetensors"))
            if with_optimizer:
                torch.save(optimizer_state if by_name else optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(rng if rng is not None else rng_state(), tmp / "rng.pt")
            state = {"step": step, "scheduler": scheduler.state_dict(),
                     "optimizer_format": ("by_name" if by_name else "by_index") if with_optimizer else "none",
                     **(meta or {})}
            (tmp / "state.json").write_text(json.dumps(state, default=str))
    except StorageError as e:
        earlier = [p.name for p in list_checkpoints(root)]
        e.add_note(f"Earlier checkpoints ({', '.join(earlier)}) are intact; continue from the newest with --resume."
                   if earlier else "No earlier checkpoint exists.")
        raise
    if with_optimizer:  # a weights-only final checkpoint does not displace the periodic ones
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if root is None or not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := NAME.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


@dataclass
class Checkpoint:
    """A checkpoint read completely into memory (nothing applied yet)."""

    path: Path
    step: int
    meta: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: dict[str, Any]


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise CheckpointError(f"'{path.name}' holds pickled Python objects that safe loading (weights_only) "
                              f"refuses; obliviate never writes such files") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"'{path.name}' is truncated or corrupt ({str(e).strip().splitlines()[0][:120]})") from None


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and check every file of checkpoint ``path``; ``CheckpointError`` says what is wrong."""
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        step = int(meta["step"])
        meta["scheduler"]["last_epoch"]  # noqa: B018 (present and a mapping)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"'state.json' is unreadable or incomplete ({type(e).__name__}: {e})") from None
    weights = path / "trainable.safetensors"
    problem = safetensors_problem(weights)
    if problem:
        raise CheckpointError(f"'{weights.name}' {problem}")
    try:
        trainable = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error type for a corrupt header
        raise CheckpointError(f"'{weights.name}' cannot be read ({e})") from None
    optim = None
    if meta.get("optimizer_format") != "none":
        if not (path / "optimizer.pt").is_file():
            raise CheckpointError("'optimizer.pt' is missing")
        optim = _torch_load(path / "optimizer.pt")
    rng = _torch_load(path / "rng.pt")
    if not isinstance(rng, dict) or not isinstance(rng.get("cpu"), torch.Tensor):
        raise CheckpointError("'rng.pt' does not hold an RNG state")
    return Checkpoint(path, step, meta, trainable, optim, rng)


def newest_checkpoint(root: Path | None) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that reads completely, or None if there is none.

    A corrupt newer one is renamed ``step-N.corrupt`` (kept, never deleted) with a warning; if every
    checkpoint is corrupt, ``CheckpointError`` lists them all."""
    bad: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(root) if root is not None else []):
        try:
            ck = read_checkpoint(path)
        except CheckpointError as e:
            bad.append((path, str(e)))
            continue
        for p, why in bad:
            logger.warning("Checkpoint %s is corrupt (%s); resuming from the previous one, %s. The corrupt one is "
                           "kept as %s.corrupt.", p, why, path.name, p.name)
            if is_main_process():
                os.replace(p, p.with_name(p.name + ".corrupt"))
        return ck
    if bad:
        raise CheckpointError(f"No checkpoint in '{root}' can be read: "
                              + "; ".join(f"{p.name}: {why}" for p, why in bad)
                              + ". Start a new run (--overwrite), or restore the files.")
    return None


def check_resume_config(ck: Checkpoint, current: dict[str, Any], allow: bool = False) -> None:
    """Refuse to resume ``ck`` with settings other than those it recorded (``allow``: warn instead).

    ``current`` maps dotted keys (``method``, ``npo.beta``, ``train.lr``, ``data.forget``, ...) to
    JSON-able values. A checkpoint written before settings were recorded is not checked."""
    recorded = ck.meta.get("config")
    if not isinstance(recorded, dict):
        return
    norm = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    keys = sorted(set(recorded) | set(current), key=lambda k: (k != "method", k))
    diff = [k for k in keys if norm(recorded.get(k)) != norm(current.get(k))]
    if not diff:
        return
    shown = ", ".join(f"{k} ({_short(recorded.get(k))} -> {_short(current.get(k))})" for k in diff[:8])
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    if allow:
        logger.warning("Resuming %s with changed settings: %s%s.", ck.path, shown, more)
        return
    raise ConfigError(f"Cannot resume from {ck.path}: these settings differ from the ones it was trained with: "
                      f"{shown}{more}. Use the same settings, start a new run (another output_dir, or --overwrite), "
                      f"or pass --allow-config-change (Python: allow_config_change=True) to resume anyway.")


def _short(v: Any) -> str:
    s = "unset" if v is None else json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def apply_checkpoint(ck: Checkpoint, model, optimizer, scheduler, sharded: bool = False) -> int:
    """Restore ``ck`` in place; returns the number of completed steps. ``sharded``: the model is
    FSDP2-sharded (every process calls this and keeps its shards of the whole tensors)."""
    path, state, meta = ck.path, ck.trainable, ck.meta
    params = dict(model.named_parameters())
    unknown = [n for n in state if n not in params]
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in state)
    if unknown or missing:
        what = []
        if unknown:
            what.append(f"holds {len(unknown)} parameter(s) this model lacks (e.g. '{unknown[0]}')")
        if missing:
            what.append(f"lacks {len(missing)} of this run's trainable parameter(s) (e.g. '{missing[0]}')")
        raise ConfigError(f"Checkpoint {path} does not fit this run: it {' and '.join(what)}. It was written with another "
                          f"model or another trainable set (full weights vs train.lora, train.trainable, the method's "
                          f"layers); resume with the same settings, or start a new run.")
    fmt = meta.get("optimizer_format")
    by_name = fmt == "by_name"
    if fmt != "none" and by_name != sharded:
        raise ConfigError(f"Checkpoint {path} was written by a {'sharded (FSDP)' if by_name else 'non-sharded'} run; "
                          f"resume it the same way, or start a new run from its weights.")
    if sharded:
        from .sharding import load_full_model_state, load_full_optimizer_state

        load_full_model_state(model, state)
        if ck.optimizer is not None:
            load_full_optimizer_state(model, optimizer, ck.optimizer)
    else:
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        if ck.optimizer is not None:
            optimizer.load_state_dict(ck.optimizer)
    sched = meta["scheduler"]
    scheduler.load_state_dict({k: v for k, v in sched.items() if k != "lr_lambdas"} | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    torch.set_rng_state(ck.rng["cpu"])
    if "cuda" in ck.rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck.rng["cuda"])
    return ck.step
