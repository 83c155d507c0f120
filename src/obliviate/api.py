"""The Python API: ``unlearn`` and ``finetune`` over records, and run directories.

    import obliviate
    model, tok = obliviate.load_model("smollm2-135m")
    forget = obliviate.load_records("forget.jsonl")
    retain = obliviate.load_records("retain.jsonl")
    result = obliviate.unlearn(model, tok, forget, retain, method="npo", beta=0.1, lr=1e-5, max_steps=20)
    result.model  # trained in place; result.log holds the per-step losses

Options are routed by name to the method's config (e.g. ``beta``) or the ``TrainConfig``
(e.g. ``lr``); an unknown name is an error with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .config import dump_yaml, from_dict
from .data.encode import EncodeConfig, encode_records
from .data.records import load_records
from .engine import TrainConfig, TrainResult, train
from .engine.loop import check_retain
from .errors import ConfigError, StorageError, did_you_mean
from .io import check_output_dir, is_main_process, run_directory, update_summary, write_text
from .methods import FINETUNE, METHODS, build


def _records(data, where: str) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)) or not isinstance(data, list) or (data and not isinstance(data[0], dict)):
        return load_records(data)
    return load_records(list(data)) if data else data


def split_options(method_config_cls: type, options: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Route flat keyword options to (method config, TrainConfig, EncodeConfig) by field name."""
    groups = ({f.name for f in dataclasses.fields(method_config_cls)},
              {f.name for f in dataclasses.fields(TrainConfig)},
              {f.name for f in dataclasses.fields(EncodeConfig)})
    out: tuple[dict, dict, dict] = ({}, {}, {})
    for k, v in options.items():
        for names, bucket in zip(groups, out):
            if k in names:
                bucket[k] = v
                break
        else:
            known = sorted(set().union(*groups))
            raise ConfigError(f"Unknown option '{k}'.{did_you_mean(k, known)} Known options: {', '.join(known)}.")
    return out


def check_input_outside(model, out: Path) -> None:
    """Refuse an output directory that holds the input model: the input is never modified."""
    src = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not src or not Path(str(src)).exists():
        return
    src_path, out_path = Path(str(src)).resolve(), out.resolve()
    if src_path == out_path or out_path in src_path.parents:
        raise ConfigError(f"The input model '{src}' lies inside the output directory '{out}', which a run writes "
                          f"(and --overwrite replaces); the input model is never modified. Choose an output_dir "
                          f"outside it.")


def _check_resumable(out: Path, resume: bool) -> None:
    """``--resume`` of a finished run without a checkpoint would redo it and replace its model."""
    if resume and (out / "model").is_dir() and not any((out / "checkpoints").glob("step-*/state.json")):
        raise ConfigError(f"--resume: '{out}' holds a finished run (model/) and no checkpoint to continue from. "
                          f"Pass --overwrite instead of --resume to redo it, or choose another output_dir.")


def _run(model, tokenizer, method_name: str, spec, primary, retain, options: dict[str, Any], run_dir, overwrite,
         resume, reference_model, save: bool, callbacks, merge_adapter: bool = True,
         allow_config_change: bool = False) -> TrainResult:
    # everything that can be checked is checked before the run directory is touched
    mcfg, tcfg, ecfg = split_options(spec.config, options)
    method = build(method_name, mcfg)
    train_cfg = from_dict(TrainConfig, tcfg, where="train")
    enc_cfg = from_dict(EncodeConfig, ecfg, where="data")
    forget_records = _records(primary, "forget")
    if not forget_records:
        raise ConfigError("The forget set is empty: give at least one record.")
    retain_records = _records(retain, "retain") if method.needs.retain else []
    check_retain(method, retain_records)
    forget_ex = encode_records(tokenizer, forget_records, enc_cfg, where="forget")
    retain_ex = encode_records(tokenizer, retain_records, enc_cfg, where="retain") if retain_records else None
    main = is_main_process()  # under accelerate launch, only rank 0 writes the run directory
    out = check_output_dir(run_dir) if run_dir is not None else None
    if out is not None:
        check_input_outside(model, out)
        _check_resumable(out, resume)
    config_text = dump_yaml({"method": method_name, method_name: method.config, "train": train_cfg, "data": enc_cfg})
    started = time.time()
    claim = run_directory(out, overwrite=overwrite, resume=resume) if out is not None and main else nullcontext(out)
    with claim:
        if out is not None and main and not resume:  # a resume keeps the recorded config until it is accepted
            write_text(out / "config.yaml", config_text)
        result = train(model, tokenizer, method, forget_ex, retain_ex, train_cfg, out, reference_model=reference_model,
                       resume=resume, callbacks=callbacks, allow_config_change=allow_config_change, encode=enc_cfg)
        if not main:
            return result
        if out is not None and resume:
            write_text(out / "config.yaml", config_text)
        if out is not None and save:
            _save_model(result, tokenizer, out, merge_adapter)
        if out is not None:
            _drop_final_checkpoint(out, result.steps)
            last = result.log[-1] if result.log else {}
            update_summary(out, method=method_name, steps=result.steps, train_time_s=round(time.time() - started, 2),
                           final={k: v for k, v in last.items() if isinstance(v, (int, float))},
                           model=str(out / "model") if save else None)
    return result


def _save_model(result: TrainResult, tokenizer, out: Path, merge_adapter: bool) -> None:
    """Write ``out/model``; the final checkpoint guards the trained state until it is complete."""
    from .models import save_model

    final = out / "checkpoints" / f"step-{result.steps}"
    try:
        save_model(result.model, tokenizer, out / "model", merge_adapter=merge_adapter)
    except StorageError as e:
        e.add_note(f"The trained state is kept in '{final}'; free space and run the same command with --resume to "
                   f"write the model from it." if (final / "state.json").is_file() else
                   "The trained state could not be kept on disk either.")
        raise


def _drop_final_checkpoint(out: Path, steps: int) -> None:
    """Remove the weights-only final checkpoint once the run is complete (it only guarded the model save;
    without ``save`` the caller holds the model)."""
    final = out / "checkpoints" / f"step-{steps}"
    if final.is_dir() and not (final / "optimizer.pt").is_file():
        shutil.rmtree(final, ignore_errors=True)
        if not any((out / "checkpoints").iterdir()):
            (out / "checkpoints").rmdir()


def unlearn(model, tokenizer, forget, retain=None, method: str = "npo", *, run_dir=None, overwrite: bool = False,
            resume: bool = False, reference_model=None, save: bool = True, callbacks=(), merge_adapter: bool = True,
            allow_config_change: bool = False, **options: Any) -> TrainResult:
    """Unlearn ``forget`` from ``model`` (in place) with a registered method.

    Args:
        forget, retain: records (list of dicts), a file path, or a ``datasets`` split.
        method: a name from ``obliviate.methods.names()``.
        run_dir: optional run directory (config.yaml, train_log.jsonl, checkpoints/, model/). A non-empty one
            is refused unless ``overwrite`` (the old run is replaced only once the new one has finished) or
            ``resume`` (continue from its newest checkpoint; other settings than the checkpoint's are refused
            unless ``allow_config_change``).
        merge_adapter: with LoRA (``lora={...}``), write model/ as the merged model (default) or, if
            False, the adapter alone (``load_model`` reads either; the adapter needs its base model).
            With LoRA, use ``result.model`` (the peft model) afterwards.
        reference_model: a frozen reference other than the starting model (default: a copy of it,
            made only if the method needs one).
        **options: method options (e.g. ``beta``), train options (``lr``, ``max_steps``, ...) and data
            options (``max_length``, ``template``).
    """
    return _run(model, tokenizer, method, METHODS.get(method), forget, retain, options, run_dir, overwrite, resume,
                reference_model, save, callbacks, merge_adapter, allow_config_change)


def finetune(model, tokenizer, data, *, run_dir=None, overwrite: bool = False, resume: bool = False, save: bool = True,
             callbacks=(), merge_adapter: bool = True, allow_config_change: bool = False, **options: Any) -> TrainResult:
    """Plain fine-tuning (answer-token NLL) through the same engine; e.g. to plant facts before unlearning."""
    return _run(model, tokenizer, "sft", FINETUNE, data, None, options, run_dir, overwrite, resume, None, save, callbacks,
                merge_adapter, allow_config_change)
