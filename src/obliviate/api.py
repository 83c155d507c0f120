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
import time
from pathlib import Path
from typing import Any

from .config import dump_yaml, from_dict
from .data.encode import EncodeConfig, encode_records
from .data.records import load_records
from .engine import TrainConfig, TrainResult, train
from .errors import ConfigError, did_you_mean
from .io import is_main_process, update_summary, write_text
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


def prepare_run_dir(run_dir: str | os.PathLike | None, overwrite: bool = False, resume: bool = False) -> Path | None:
    """Refuse to write into a non-empty directory unless ``overwrite`` (or ``resume``)."""
    if run_dir is None:
        return None
    p = Path(run_dir)
    if p.exists() and any(p.iterdir()) and not (overwrite or resume):
        raise ConfigError(f"Run directory '{p}' is not empty. Choose another, pass --overwrite, or --resume to continue it.")
    if p.exists() and overwrite and not resume:
        import shutil

        for child in p.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    p.mkdir(parents=True, exist_ok=True)
    return p


def _run(model, tokenizer, method_name: str, spec, primary, retain, options: dict[str, Any], run_dir, overwrite,
         resume, reference_model, save: bool, callbacks, merge_adapter: bool = True) -> TrainResult:
    mcfg, tcfg, ecfg = split_options(spec.config, options)
    method = build(method_name, mcfg)
    train_cfg = from_dict(TrainConfig, tcfg, where="train")
    enc_cfg = from_dict(EncodeConfig, ecfg, where="data")
    forget_records = _records(primary, "forget")
    if not forget_records:
        raise ConfigError("The forget set is empty: give at least one record.")
    retain_records = _records(retain, "retain") if method.needs.retain else []
    main = is_main_process()  # under accelerate launch, only rank 0 writes the run directory
    out = prepare_run_dir(run_dir, overwrite, resume) if main else (Path(run_dir) if run_dir is not None else None)
    started = time.time()
    if out is not None and main:
        write_text(out / "config.yaml", dump_yaml({"method": method_name, method_name: method.config,
                                                   "train": train_cfg, "data": enc_cfg}))
    result = train(
        model, tokenizer, method,
        encode_records(tokenizer, forget_records, enc_cfg),
        encode_records(tokenizer, retain_records, enc_cfg) if retain_records else None,
        train_cfg, out, reference_model=reference_model, resume=resume, callbacks=callbacks,
    )
    if not main:
        return result
    if out is not None and save:
        from .models import save_model

        save_model(result.model, tokenizer, out / "model", merge_adapter=merge_adapter)
    if out is not None:
        last = result.log[-1] if result.log else {}
        update_summary(out, method=method_name, steps=result.steps, train_time_s=round(time.time() - started, 2),
                       final={k: v for k, v in last.items() if isinstance(v, (int, float))},
                       model=str(out / "model") if save else None)
    return result


def unlearn(model, tokenizer, forget, retain=None, method: str = "npo", *, run_dir=None, overwrite: bool = False,
            resume: bool = False, reference_model=None, save: bool = True, callbacks=(), merge_adapter: bool = True,
            **options: Any) -> TrainResult:
    """Unlearn ``forget`` from ``model`` (in place) with a registered method.

    Args:
        forget, retain: records (list of dicts), a file path, or a ``datasets`` split.
        method: a name from ``obliviate.methods.names()``.
        run_dir: optional run directory (config.yaml, train_log.jsonl, checkpoints/, model/).
        merge_adapter: with LoRA (``lora={...}``), write model/ as the merged model (default) or, if
            False, the adapter alone (``load_model`` reads either; the adapter needs its base model).
            With LoRA, use ``result.model`` (the peft model) afterwards.
        reference_model: a frozen reference other than the starting model (default: a copy of it,
            made only if the method needs one).
        **options: method options (e.g. ``beta``), train options (``lr``, ``max_steps``, ...) and data
            options (``max_length``, ``template``).
    """
    return _run(model, tokenizer, method, METHODS.get(method), forget, retain, options, run_dir, overwrite, resume,
                reference_model, save, callbacks, merge_adapter)


def finetune(model, tokenizer, data, *, run_dir=None, overwrite: bool = False, resume: bool = False, save: bool = True,
             callbacks=(), merge_adapter: bool = True, **options: Any) -> TrainResult:
    """Plain fine-tuning (answer-token NLL) through the same engine; e.g. to plant facts before unlearning."""
    return _run(model, tokenizer, "sft", FINETUNE, data, None, options, run_dir, overwrite, resume, None, save, callbacks,
                merge_adapter)
