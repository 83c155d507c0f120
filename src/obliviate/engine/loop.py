"""The one training loop (on accelerate: CPU, one GPU, or ``accelerate launch`` multi-process).

``train(model, tokenizer, method, forget, retain, config, run_dir)`` pairs each forget batch
with a retain batch (only if the method declares ``Needs.retain``), builds only the auxiliary
inputs the method declares, and runs AdamW/SGD with warmup + linear/cosine decay, gradient
accumulation, clipping, autocast, NaN/inf detection, JSON-lines logging, periodic checkpoints
and resume. Unlearning methods and plain fine-tuning both run through it.

Multi-process (DDP, or FSDP2 via accelerate or a model already ``fully_shard``-ed under torchrun):
token means run over the whole step (``methods.tokens``: every process, every micro-step), logged values are
averaged over processes, gradient combiners see synchronised gradients (``engine.sharding`` for
sharded ones), and only process 0 writes; a sharded model is gathered into a plain copy at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data.encode import EncodeConfig, collate, with_alternates
from ..errors import ConfigError, TrainingDiverged
from ..io import append_jsonl, read_jsonl
from ..methods.base import Aux, Batch, Method, Reference, forward
from ..methods.losses import sequence_logprob
from ..methods.tokens import StepTokens, step_tokens
from .checkpoint import (apply_checkpoint, check_resume_config, list_checkpoints, newest_checkpoint, rng_state,
                         save_checkpoint)
from .config import TrainConfig
from .lora import apply_lora
from .placement import place_frozen
from .sharding import full_model_state, full_optimizer_state, is_fsdp, is_sharded, reshard, shard_dot, unsharded_copy
from .stream import Stream

Callback = Callable[[int, dict[str, Any]], None]
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: torch.nn.Module
    log: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    run_dir: Path | None = None


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup, then constant/linear/cosine to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def select_trainable(model: torch.nn.Module, patterns: Sequence[str]) -> int:
    """Freeze every parameter whose name matches none of ``patterns`` (all trainable if empty)."""
    if hasattr(model, "peft_config"):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)  # peft chose already
    if not patterns:
        for p in model.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in model.parameters())
    regs = [_regex(p) for p in patterns]
    n = 0
    for name, p in model.named_parameters():
        on = any(r.search(name) for r in regs)
        p.requires_grad_(on)
        n += p.numel() if on else 0
    if n == 0:
        raise ConfigError(f"No parameter name matches the trainable patterns {list(patterns)}; "
                          f"names look like '{next(iter(dict(model.named_parameters())))}'.")
    return n


def _regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"Trainable pattern {pattern!r} is not a valid regular expression ({e}).") from None


def check_retain(method: Method, retain) -> None:
    """Refuse a method that declared retain data when none was given (with the method's own hint)."""
    if method.needs.retain and not retain:
        raise ConfigError(f"Method '{method.name}' needs retain data (the data whose behaviour to keep); pass retain "
                          f"records (in a run config: a 'retain:' section).{getattr(method, 'retain_hint', '')}")


#: TrainConfig fields a resume may change: they do not change the result.
RESUME_FREE = frozenset({"progress", "tensorboard", "keep_checkpoints", "checkpoint_every", "log_every",
                         "gradient_checkpointing", "compile", "reference_offload"})


def run_settings(method: Method, cfg: TrainConfig, forget, retain) -> dict[str, Any]:
    """What a resume must keep, as dotted keys: the method and its options, the train settings that
    change the result, and a digest of the encoded forget/retain examples (data, template, length)."""
    from ..config import to_dict

    out: dict[str, Any] = {"method": method.name}
    mcfg = getattr(method, "config", None)
    if dataclasses.is_dataclass(mcfg):
        out.update({f"{method.name}.{k}": v for k, v in to_dict(mcfg).items()})
    out.update({f"train.{k}": v for k, v in to_dict(cfg).items() if k not in RESUME_FREE})
    out["data.forget"] = _digest(forget)
    out["data.retain"] = _digest(retain) if retain else None
    return json.loads(json.dumps(out, default=str))


def _digest(examples) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex, sort_keys=True, default=str).encode())
    return f"{len(examples)} examples, sha256 {h.hexdigest()[:16]}"


def total_steps(cfg: TrainConfig, n_forget: int, world: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * n_forget / (cfg.batch_size * world * cfg.grad_accum)))


COMPILE_BACKEND = "inductor"


def compile_blocks(model: torch.nn.Module, backend: str | None = None) -> int:
    """``torch.compile`` every decoder block in place (``nn.Module.compile``), returning how many.

    Regional compilation, as PyTorch recommends for transformers: the blocks share one compiled
    graph (same code, same shapes), compilation takes seconds instead of minutes, and the model
    keeps its type, parameter names and hooks, so DDP/FSDP wrapping, checkpoints, LoRA, the
    reference copy and RMU/FALCON's truncated forwards work unchanged. Shapes vary with the batch's
    padding, so blocks are compiled with ``dynamic=True``."""
    from ..methods.representation import decoder_blocks

    blocks = decoder_blocks(model)
    for block in blocks:
        block.compile(backend=backend or COMPILE_BACKEND, dynamic=True)
    return len(blocks)


def build_reference(model, method: Method, reference_model, device, offload: bool = False) -> Reference | None:
    """The frozen model a method declared: the peft base (adapters disabled: no copy), the given
    ``reference_model``, or a copy of the starting model. With ``offload`` the copy's weights stay
    in CPU memory and each module is moved to ``device`` only for its own forward (accelerate's
    ``cpu_offload`` hooks): the device never holds a second full model."""
    if not method.needs.reference:
        return None
    if hasattr(model, "peft_config") and reference_model is None:
        return Reference(model, disable_adapters=True)
    if reference_model is not None:
        ref = reference_model
    elif is_fsdp(model):
        raise ConfigError(
            f"Method '{method.name}' needs a frozen reference, and the model was sharded before training, so it "
            f"cannot be copied whole. Pass reference_model= (an unsharded copy of the starting model; with "
            f"train.reference_offload it stays in host memory), or let accelerate shard the model (fsdp.yaml).")
    elif offload:  # copy on the host, not next to the model on the device
        where = next(model.parameters()).device
        ref = copy.deepcopy(model.to("cpu"))
        model.to(where)
    else:
        ref = copy.deepcopy(model)
    return Reference(place_frozen(ref, device, offload))


@torch.no_grad()
def reference_logprobs(reference, model, examples, pad_id: int, device, batch_size: int = 8) -> torch.Tensor:
    """log pi_ref(y|x) for every example, computed once (with the starting model itself when no
    separate reference exists: before the first step it *is* the reference)."""
    out = torch.empty(len(examples))
    was_training = model.training
    model.eval()
    for i in range(0, len(examples), batch_size):
        b = {k: v.to(device) for k, v in collate(examples[i:i + batch_size], pad_id).items()}
        if reference is not None:
            logits = reference(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        else:
            logits = forward(model, b).logits
        out[i:i + batch_size] = sequence_logprob(logits, b["labels"]).float().cpu()
    model.train(was_training)
    return out


def _make_optimizer(params, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sign_momentum":
        from .sign_momentum import SignMomentum

        return SignMomentum(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)


def train(
    model: torch.nn.Module,
    tokenizer,
    method: Method,
    forget: list[dict[str, Any]],
    retain: list[dict[str, Any]] | None = None,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    reference_model: torch.nn.Module | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    allow_config_change: bool = False,
    encode: EncodeConfig | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``method`` on encoded ``forget`` (and ``retain``) examples.

    ``forget``/``retain`` are lists of encoded examples (``obliviate.data.encode_records``).
    With ``run_dir``, writes ``train_log.jsonl`` and ``checkpoints/``; ``resume=True`` continues
    from the newest checkpoint there that reads completely (a corrupt newer one is skipped with a
    warning), refusing one recorded with other settings unless ``allow_config_change``. ``encode``:
    how ``forget`` was encoded, used to encode the alternate answers a method declares
    (``Needs.alternate``; default ``EncodeConfig()``).

    Checkpoints hold only verified states: the state after step k is written during step k+1, once
    its weights, loss and gradients proved finite (before the optimizer changes it). So on
    divergence the newest checkpoint is the last good state. A final checkpoint (weights only) is
    written after the last step, so the trained state is on disk before the model is saved (the
    API removes it once ``model/`` is complete).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = config or TrainConfig()
    needs = method.needs
    if not forget:
        raise ConfigError("The forget (training) set is empty.")
    check_retain(method, retain)
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_root = run_dir / "checkpoints" if run_dir else None
    settings = run_settings(method, cfg, forget, retain)
    resumed = newest_checkpoint(ckpt_root) if resume else None  # read and checked before any work
    if resumed is not None:
        check_resume_config(resumed, settings, allow_config_change)
    elif resume and _is_main():
        logger.warning("--resume: no checkpoint found in %s; starting from step 0.", ckpt_root)
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not _has_accelerator())
    set_seed(cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    presharded = is_fsdp(model)  # fully_shard applied by the caller (torchrun); accelerate's FSDP shards in prepare
    if cfg.lora is not None:  # adapters only; the reference becomes the base with adapters disabled
        if presharded or _kind(acc) == "FSDP":
            raise ConfigError("LoRA under FSDP is not supported: the adapters and their optimizer state are small, "
                              "so sharding buys little. Launch LoRA runs with DDP (configs/accelerate/ddp.yaml) "
                              "or on one process.")
        model = apply_lora(model, cfg.lora)
    if hasattr(method, "attach_tokenizer"):  # optional hook: methods that read token texts (DI focus)
        method.attach_tokenizer(tokenizer)
    if hasattr(method, "set_frozen_offload"):  # optional hook: methods that load a frozen model of their own (DI teacher)
        method.set_frozen_offload(cfg.reference_offload)
    if hasattr(method, "prepare"):  # optional hook: methods that inspect model + data first (FALCON's MI layer choice)
        method.prepare(model.to(acc.device), forget, retain, pad_id)
        needs = method.needs
    select_trainable(model, cfg.trainable or needs.trainable)
    # optional hook: methods that transform the trained weights at the end (TVN's negation) get the
    # starting trainable values, captured here, before any step or resumed checkpoint
    initial = _trainable_snapshot(model, presharded) if hasattr(method, "finalize") else None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(acc.device)
    if (_kind(acc) == "FSDP" and needs.reference and reference_model is None and cfg.lora is None
            and not cfg.reference_offload and acc.is_main_process):
        logger.warning("FSDP shards the trained model, but the frozen reference of '%s' is a whole copy on every "
                     "device; if memory is tight, set train.reference_offload: true (kept in host memory).", method.name)
    reference = build_reference(model, method, reference_model, acc.device, cfg.reference_offload)
    if needs.alternate:  # a second answer per forget prompt (IdkDPO/IdkNLL's refusal), carried by each example
        forget = with_alternates(tokenizer, forget, method.alternate_answer, encode)
    ref_lp = reference_logprobs(reference, model, forget, pad_id, acc.device) if needs.reference_forget_logprob else None
    ref_alt = (reference_logprobs(reference, model, [f["alternate"] for f in forget], pad_id, acc.device)
               if needs.reference_forget_logprob and needs.alternate else None)
    if cfg.compile:  # after the reference copy: the reference runs about once per example (caches)
        compile_blocks(model)

    if presharded:  # forwards above (MI layer choice, reference log-probs) leave the root gathered
        reshard(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, cfg)
    steps = total_steps(cfg, len(forget), acc.num_processes)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, cfg.warmup_steps, cfg.scheduler)
    )
    # The scheduler is stepped by us, once per optimizer step (accelerate's wrapper would step
    # it num_processes times, making multi-process runs differ from single-process ones).
    if presharded:  # already sharded: accelerate must not wrap it in DDP
        optimizer = acc.prepare(optimizer)
    else:
        model, optimizer = acc.prepare(model, optimizer)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP2 replaces them with sharded DTensors
    sharded = any(is_sharded(p) for p in params)

    start = 0
    log_path = run_dir / "train_log.jsonl" if run_dir else None
    if resumed is not None:
        start = apply_checkpoint(resumed, acc.unwrap_model(model), optimizer, scheduler, sharded)
        if resumed.optimizer is None and start < steps and acc.is_main_process:
            logger.warning("Checkpoint %s holds weights only (a final checkpoint); the optimizer state starts afresh.",
                           resumed.path)
        if "method_state" in resumed.meta:  # e.g. PDU's dual variable
            method.load_state_dict(resumed.meta["method_state"])
        resumed = None  # free the loaded tensors
        if acc.is_main_process and log_path and log_path.exists():
            kept = [r for r in read_jsonl(log_path) if r.get("step", 0) <= start]
            log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    elif acc.is_main_process and log_path and log_path.exists():
        log_path.unlink()  # a fresh start (or --resume without a checkpoint): no duplicated steps
    meta = {"config": settings}
    # (step, RNG state, method state) of a checkpoint not yet verified
    pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None

    fs = Stream(len(forget), cfg.batch_size, cfg.seed, acc.num_processes, acc.process_index)
    rs = Stream(len(retain), cfg.retain_batch_size or cfg.batch_size, cfg.seed + 1_000_003, acc.num_processes,
                acc.process_index) if needs.retain else None
    combiner = getattr(method, "combiner", None)
    _check_backend(combiner, acc, method.name, sharded)
    log: list[dict[str, Any]] = []
    writer = _tensorboard(run_dir) if cfg.tensorboard and run_dir and acc.is_main_process else None
    bar = _progress(steps, start, method.name, enabled=cfg.progress and acc.is_main_process)
    t0 = time.time()

    for step in range(start, steps):
        sums: dict[str, float] = {}
        obj_grads: dict[str, list[torch.Tensor]] = {}
        micro = [_batch(forget, fs, retain, rs, step * cfg.grad_accum + m, pad_id, acc.device, needs.alternate)
                 for m in range(cfg.grad_accum)]
        totals = _step_token_totals(micro, acc)
        for m, batch in enumerate(micro):
            aux = Aux(step=step, reference=reference,
                      ref_forget_logprob=ref_lp[batch.forget["index"].cpu()] if ref_lp is not None else None,
                      ref_alternate_logprob=ref_alt[batch.forget["index"].cpu()] if ref_alt is not None else None)
            last = m == cfg.grad_accum - 1
            if combiner is None:  # DDP synchronises on the last micro-step's backward
                sync = _null() if last else acc.no_sync(model)
            else:  # DDP: we all-reduce each objective's gradients (RMU/FALCON's truncated forwards bypass
                # DDP's forward); FSDP2 reduce-scatters every objective's backward itself
                sync = _null() if sharded else acc.no_sync(model)
            # token means over the whole step: W processes x A micro-steps take the 1 x 1 step
            tokens = StepTokens.for_micro_batch(_parts(batch), totals,
                                                acc.num_processes, cfg.grad_accum)
            with sync, step_tokens(tokens):
                out = method.loss(model, batch, aux)
                _check_finite(out.loss, step, run_dir, model, optimizer, scheduler, cfg, acc, method.name, sharded)
                if combiner is not None:
                    _accumulate_objectives(out.objectives, params, cfg.grad_accum, obj_grads,
                                           backward=acc.backward if sharded else None)
                else:
                    acc.backward(out.loss / cfg.grad_accum)
            for k, v in {"loss": out.loss.item(), **out.metrics}.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        if acc.num_processes > 1:  # log the global batch's values (per-rank terms of a global token mean)
            sums = _mean_over_processes(sums, acc.device)
        if combiner is not None:
            _apply_combined(obj_grads, params, combiner, acc.num_processes, sharded)
        grad_norm = _clip(acc, params, cfg.max_grad_norm, sharded)
        if not math.isfinite(grad_norm):
            _diverged(f"gradient norm is {grad_norm}", step, run_dir, model, optimizer, scheduler, cfg, acc, sharded)
        if pending is not None:  # the state after step `pending` gave a finite loss and gradients: keep it
            if not _all_finite(params, acc):
                _diverged("the weights hold NaN/inf", step, run_dir, model, optimizer, scheduler, cfg, acc, sharded)
            _save(ckpt_root, pending[0], model, optimizer, scheduler, cfg, acc, sharded, rng=pending[1],
                  meta={**meta, **pending[2]})
            pending = None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        record = {"step": done, **sums, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                  "elapsed_s": round(time.time() - t0, 3)}
        log.append(record)
        if hasattr(method, "on_step_end"):  # e.g. PDU's dual update, from the step's process-averaged values
            method.on_step_end(done, sums)
        if acc.is_main_process:
            if log_path and (done % cfg.log_every == 0 or done == steps):
                log_path.parent.mkdir(parents=True, exist_ok=True)
                append_jsonl(log_path, record)
            if writer:
                for k, v in record.items():
                    writer.add_scalar(k, v, done)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in sums.items()})
        if ckpt_root and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps:
            pending = (done, rng_state(), _method_state(method))  # written during the next step, once verified
        for cb in callbacks:
            cb(done, record)
    if ckpt_root and steps > start:  # the trained state, on disk before model/ is written
        if not _all_finite(params, acc):
            _diverged("the weights after the last step hold NaN/inf", steps - 1, run_dir, model, optimizer, scheduler,
                      cfg, acc, sharded)
        _save(ckpt_root, steps, model, optimizer, scheduler, cfg, acc, sharded, meta={**meta, **_method_state(method)},
              with_optimizer=False)
    bar.close()
    if writer:
        writer.close()
    acc.wait_for_everyone()
    final = acc.unwrap_model(model)
    if sharded:  # process 0 gets a plain copy to save and evaluate; the others are done
        final = unsharded_copy(final)
        if final is None:
            return TrainResult(model=acc.unwrap_model(model), log=log, steps=steps, run_dir=run_dir)
    if initial is not None:
        method.finalize(final, initial)
    return TrainResult(model=final, log=log, steps=steps, run_dir=run_dir)


def _trainable_snapshot(model: torch.nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """Trainable parameters as whole CPU tensors (for a sharded model: on process 0, collectively)."""
    if sharded:
        return full_model_state(model, trainable_only=True)
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _batch(forget, fs: Stream, retain, rs: Stream | None, j: int, pad_id: int, device, alternate: bool = False) -> Batch:
    chosen = [forget[i] for i in fs.indices(j)]
    f = collate(chosen, pad_id)
    r = collate([retain[i] for i in rs.indices(j)], pad_id) if rs is not None else None
    a = collate([e["alternate"] for e in chosen], pad_id) if alternate else None
    to = lambda b: {k: v.to(device) for k, v in b.items()} if b is not None else None  # noqa: E731
    return Batch(forget=to(f), retain=to(r), alternate=to(a))


def _parts(b: Batch) -> dict[str, dict[str, torch.Tensor] | None]:
    """The batch parts whose token counts ``methods.tokens`` keeps per step."""
    return {"forget": b.forget, "retain": b.retain, "alternate": b.alternate}


def _method_state(method: Method) -> dict[str, Any]:
    """The method's own state for a checkpoint's ``state.json`` (e.g. PDU's dual variable), if it has any."""
    return {"method_state": method.state_dict()} if hasattr(method, "state_dict") else {}


def _step_token_totals(micro: list[Batch], acc) -> torch.Tensor:
    """Answer and real token counts per batch part over the step's micro-batches on every process."""
    totals = StepTokens.totals([_parts(b) for b in micro])
    if acc.num_processes > 1:
        torch.distributed.all_reduce(totals)
    return totals.cpu()


def _mean_over_processes(values: dict[str, float], device) -> dict[str, float]:
    """Average logged floats over processes (every process logs the same keys in the same order)."""
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(values, (t / torch.distributed.get_world_size()).tolist()))


def _accumulate_objectives(objectives, params, accum: int, into: dict[str, list[torch.Tensor]],
                           backward: Callable[..., None] | None = None) -> None:
    """Per-objective gradients (not summed), added into ``into[name]``: what a gradient combiner needs.

    Whole parameters: ``torch.autograd.grad`` per objective (un-synchronised; ``_apply_combined``
    all-reduces). Sharded parameters (FSDP2) only receive gradients through FSDP's backward hooks,
    which reduce-scatter them: so with ``backward`` given, each objective gets its own backward
    pass and its synchronised gradient shard is moved out of ``p.grad``.
    """
    assert objectives, "a method with a combiner returns LossOutput.objectives"
    names = list(objectives)
    for i, name in enumerate(names):
        keep = i < len(names) - 1
        if backward is None:
            gs = torch.autograd.grad(objectives[name] / accum, params, retain_graph=keep, allow_unused=True)
        else:
            for p in params:
                p.grad = None
            backward(objectives[name] / accum, retain_graph=keep)
            gs = [p.grad for p in params]
        acc = into.setdefault(name, [torch.zeros_like(p) for p in params])
        for a, g in zip(acc, gs):
            if g is not None:
                a.add_(g)
    if backward is not None:
        for p in params:
            p.grad = None


def _kind(acc) -> str:
    """accelerate's distributed type as a bare upper-case name: 'NO', 'MULTI_GPU', 'FSDP', 'DEEPSPEED', ..."""
    return str(getattr(acc, "distributed_type", "")).split(".")[-1].upper()


def _check_backend(combiner, acc, name: str, sharded: bool) -> None:
    """Refuse what would silently change the result.

    FSDP version 1 (accelerate's FSDP with parameters that are not DTensors) flattens parameters
    into shards that neither the combiners, the checkpoints nor the final save address: use FSDP2.
    DeepSpeed reduces and partitions gradients inside its engine (the per-objective gradients never
    exist as such), so methods with a gradient combiner are refused there. FSDP2 is supported:
    one backward per objective, dot products summed over shards (``engine.sharding``)."""
    kind = _kind(acc)
    if kind == "FSDP" and not sharded:
        raise ConfigError("FSDP version 1 is not supported; set fsdp_version: 2 in the accelerate config "
                          "(configs/accelerate/fsdp.yaml), or launch with DDP (configs/accelerate/ddp.yaml).")
    if combiner is not None and kind == "DEEPSPEED":
        raise ConfigError(
            f"Method '{name}' combines per-objective gradients ({type(combiner).__name__}), which DeepSpeed cannot do "
            f"without changing the result: it only exposes the sum of the objectives' gradients. Instead, launch it "
            f"with FSDP2 (configs/accelerate/fsdp.yaml), DDP (configs/accelerate/ddp.yaml) or as a single process.")


def _apply_combined(obj_grads, params, combiner, world: int, sharded: bool = False) -> None:
    """Synchronise each objective's gradients across processes first, then combine per tensor.

    Sharded (FSDP2): the gradients are already reduce-scattered; the combiner works on the local
    shards with global dot products, so each shard of the result is the 1-process result's slice."""
    if sharded:
        for i, p in enumerate(params):
            grads = {name: gs[i] for name, gs in obj_grads.items()}
            out = next(iter(grads.values()))
            local = combiner.combine({k: g.to_local() for k, g in grads.items()}, dot=shard_dot)
            out.to_local().copy_(local)
            p.grad = out
        return
    for name, gs in obj_grads.items():
        if world > 1:
            for g in gs:
                torch.distributed.all_reduce(g)
                g.div_(world)
    for i, p in enumerate(params):
        p.grad = combiner.combine({name: gs[i] for name, gs in obj_grads.items()})


def _clip(acc, params, max_norm: float | None, sharded: bool = False) -> float:
    """Clip to ``max_norm`` (if set); returns the global gradient norm before clipping."""
    if max_norm is not None:
        norm = acc.clip_grad_norm_(params, max_norm)
        return float(norm.full_tensor() if is_sharded(norm) else norm)
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    local = [g.to_local() if is_sharded(g) else g for g in grads]
    sq = torch.stack([g.double().pow(2).sum() for g in local]).sum()
    if sharded:
        torch.distributed.all_reduce(sq)
    return float(sq.sqrt())


def _check_finite(loss, step, run_dir, model, optimizer, scheduler, cfg, acc, name, sharded: bool = False) -> None:
    if not torch.isfinite(loss.detach()).all():
        _diverged(f"the {name} loss is {loss.item()}", step, run_dir, model, optimizer, scheduler, cfg, acc, sharded)


def _all_finite(params, acc) -> bool:
    """Every (local shard of every) trainable parameter is finite, on every process."""
    ok = all(bool(torch.isfinite(p.detach().to_local() if is_sharded(p) else p.detach()).all()) for p in params)
    if acc.num_processes > 1:
        flag = torch.tensor([float(ok)], device=acc.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = bool(flag.item())
    return ok


def _diverged(what: str, step: int, run_dir, model, optimizer, scheduler, cfg, acc, sharded: bool = False) -> None:
    """Stop with a clear message naming the last good state. Nothing is saved here: the state in
    memory is the one that failed (a NaN loss means the weights after ``step`` steps are already
    bad), while every checkpoint on disk was verified before it was written."""
    found = [p for p in list_checkpoints(run_dir / "checkpoints")] if run_dir is not None else []
    found = [p for p in found if int(p.name.split("-")[1]) <= step]
    if found:
        n = int(found[-1].name.split("-")[1])
        where = (f" The last good state is checkpoint {found[-1]} (after {n} steps: finite weights, and the next step's "
                 f"loss and gradients were finite). Rerun with a lower train.lr, or continue from it with --resume "
                 f"--allow-config-change --set train.lr=...")
    else:
        where = (" No checkpoint of a good state exists (set train.checkpoint_every to keep verified ones); the starting "
                 "model is unchanged. Rerun with a lower train.lr")
    raise TrainingDiverged(f"Training stopped at step {step + 1}: {what}.{where}; also keep train.max_grad_norm set, "
                           f"or use fewer steps.")


def _save(root: Path, step: int, model, optimizer, scheduler, cfg: TrainConfig, acc, sharded: bool = False, *,
          rng: dict[str, Any] | None = None, meta: dict[str, Any] | None = None, with_optimizer: bool = True) -> Path:
    path = root / f"step-{step}"
    unwrapped = acc.unwrap_model(model)
    # sharded: every process contributes its shards to whole tensors, which process 0 writes
    whole = (full_model_state(unwrapped, trainable_only=True),
             full_optimizer_state(unwrapped, optimizer) if with_optimizer else None) if sharded else (None, None)
    if acc.is_main_process:
        save_checkpoint(root, step, unwrapped, optimizer, scheduler, cfg.keep_checkpoints, *whole, rng=rng, meta=meta,
                        with_optimizer=with_optimizer)
    acc.wait_for_everyone()
    return path


def _is_main() -> bool:
    from ..io import is_main_process

    return is_main_process()


def _has_accelerator() -> bool:
    """True when a GPU-like device exists. Without one we ask accelerate for CPU explicitly, so
    ``accelerate launch --multi_gpu --num_processes N`` / ``torchrun`` on a CPU machine give a
    gloo MULTI_CPU run instead of N independent single-process runs."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available()) or (mps is not None and mps.is_available()))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard is on but the 'tensorboard' package is missing: pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tb"))
