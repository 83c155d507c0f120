"""SPUNGE end to end (Kadhe et al. 2024, Alg. 1): split -> unlearn each subset -> merge -> evaluate.

    from obliviate.spunge import run_spunge, parse_spunge_config
    run_spunge(parse_spunge_config(yaml.safe_load(open("configs/spunge_tofu_forget10.yaml"))))

Run directory layout::

    base/                 the starting model (every subset starts from it; the merge base)
    split.json            subset -> record count
    subsets/<value>/      one ordinary unlearning run per subset (+ done.json when finished)
    unsplit/              the base method on the whole forget set, same total step budget
    merged/               the SPUNGE model;  merge.json: the merge settings used (auto-chosen or given)
    report.md, report.json  SPUNGE vs. base (and the original model), per attribute value
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any

from ..api import split_options
from ..config import dump_yaml, from_dict, to_dict
from ..engine.config import TrainConfig
from ..engine.loop import total_steps
from ..io import run_directory, write_json, write_text
from ..merge import MergeConfig, merge_files
from ..methods import METHODS
from .config import SpungeConfig
from .evaluate import evaluate_model, table_markdown
from .runner import SubsetJob, run_jobs
from .split import split_records


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"


def subset_dir(run: Path, value: str) -> Path:
    """The run directory of subset ``value`` (its model is ``<dir>/model``)."""
    return Path(run) / "subsets" / _safe(value)


def _options(cfg: SpungeConfig, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flat options for ``obliviate.api.unlearn``: method options, then train/data, then overrides."""
    opts = {k: v for k, v in cfg.method.items() if k != "name"}
    opts.update(to_dict(cfg.train))
    opts.update(to_dict(cfg.data))
    opts.update(override or {})
    opts["progress"] = False
    for k in ("adam_betas", "trainable"):
        opts[k] = tuple(opts[k])
    return opts


def _steps(cfg: SpungeConfig, opts: dict[str, Any], n: int) -> int:
    _, tcfg, _ = split_options(METHODS.get(cfg.method["name"]).config, opts)
    return total_steps(from_dict(TrainConfig, tcfg, where="train"), n, 1)


def _base_dir(cfg: SpungeConfig, run: Path) -> Path:
    """Save the starting model once into the run dir, so every file shares its tensor names."""
    from ..models import load_model, save_model

    target = run / "base"
    if not (target / "config.json").is_file():
        model, tok = load_model(cfg.model, dtype=cfg.dtype)
        save_model(model, tok, target)
    return target


def build_jobs(cfg: SpungeConfig, run: Path, base: Path, subsets: dict[str, list], retain) -> list[SubsetJob]:
    """One job per subset, plus the unsplit base-method run with the summed step budget."""
    name = cfg.method["name"]
    unknown = set(cfg.overrides) - set(subsets)
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"'overrides' names subsets {sorted(unknown)} that the split does not produce; "
                          f"subsets are {list(subsets)}.")
    jobs, budget = [], 0
    for value, records in subsets.items():
        opts = _options(cfg, cfg.overrides.get(value))
        budget += _steps(cfg, opts, len(records))
        jobs.append(SubsetJob(value, str(base), name, opts, records, retain, str(subset_dir(run, value)), cfg.dtype))
    if cfg.run_base:
        opts = _options(cfg, {"max_steps": budget})
        everything = [r for records in subsets.values() for r in records]
        jobs.append(SubsetJob("unsplit", str(base), name, opts, everything, retain, str(run / "unsplit"), cfg.dtype))
    return jobs


def run_spunge(cfg: SpungeConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run the whole pipeline; returns the report dict (also written to the run dir). With ``overwrite``
    the old run directory is replaced only once the new run has finished (``io.run_directory``)."""
    with run_directory(cfg.output_dir, overwrite=overwrite, resume=resume) as run:
        return _pipeline(cfg, run)


def _pipeline(cfg: SpungeConfig, run: Path) -> dict[str, Any]:
    write_text(run / "spunge.yaml", dump_yaml(cfg))
    forget = cfg.forget.load()
    subsets = split_records(forget, cfg.split)
    write_json(run / "split.json", {k: len(v) for k, v in subsets.items()})
    retain = cfg.retain.load() if cfg.retain else None
    base = _base_dir(cfg, run)
    models = run_jobs(build_jobs(cfg, run, base, subsets, retain), cfg.backend)
    subset_models = [models[v] for v in subsets]
    merge_cfg = cfg.merge
    if cfg.auto_merge is not None:
        from .auto import choose_merge

        merge_cfg, candidates = choose_merge(cfg, base, subset_models, forget, retain, run)
        write_json(run / "auto_merge.json", candidates)
    write_json(run / "merge.json", to_dict(merge_cfg))
    merge_files(base, subset_models, run / "merged", merge_cfg)
    report = evaluate_runs(cfg, run, base, models, forget, retain)
    report["merge"] = to_dict(merge_cfg)
    write_json(run / "report.json", report)
    write_text(run / "report.md", _markdown(cfg, report, merge_cfg))
    _write_report_inputs(cfg, run, report)
    return report


def _write_report_inputs(cfg: SpungeConfig, run: Path, report: dict[str, Any]) -> None:
    """What ``obliviate report`` reads: eval/spunge.json (each eval set's overall score per model),
    spunge_table.json (forget score per attribute value per model), summary.json; then report.html.

    Direction: lower is better on the forget set (its score is answer probability / mean token
    log-likelihood of data to forget), higher on every other set (retain and extra eval sets)."""
    from ..eval.results import MetricResult, SuiteResult
    from ..io import update_summary
    from ..report import build_report

    results = report["results"]
    summary = {}
    for label, sets in results.items():
        for set_name, groups in sets.items():
            key = f"{set_name}_{label}"
            summary[key] = MetricResult(key, groups["all"], set_name != "forget",
                                        f"{report['metrics'].get(set_name, '')} on the {set_name} set, {label} model")
    SuiteResult(suite="spunge", model=str(run / "merged"), summary=summary, items={}, meta={}).save(run)
    table = {g: {label: results[label]["forget"][g] for label in results} for g in results["spunge"]["forget"] if g != "all"}
    write_json(run / "spunge_table.json", table)
    update_summary(run, method=f"spunge:{cfg.method.get('name')}", model=str(run / "merged"),
                   forget_metric="spunge/forget_spunge",
                   utility_metric="spunge/retain_spunge" if "retain" in results["spunge"] else None)
    build_report([run], run / "report.html", title=f"SPUNGE ({cfg.method.get('name')}) run {run}",
                 markdown=run / "report_summary.md")


def evaluate_runs(cfg: SpungeConfig, run: Path, base: Path, models: dict[str, str], forget, retain) -> dict[str, Any]:
    """Score the original, the unsplit base-method model and the SPUNGE model on every eval set."""
    import torch

    from ..models import load_model

    sets: dict[str, tuple[list, str | None]] = {"forget": (forget, cfg.split.by if cfg.split.by else None)}
    if cfg.split.by is None:  # function / kmeans: score by the subset each record went to
        sets["forget"] = ([dict(r, _subset=v) for v, rs in split_records(forget, cfg.split).items() for r in rs], "_subset")
    if retain:
        sets["retain"] = (random.Random(0).sample(retain, min(cfg.eval_retain_n, len(retain))), None)
    for es in cfg.eval_sets:
        sets[es.name] = (es.source.load(), es.by)
    kinds = {k: ("answer_prob" if "question" in recs[0] else "mean_token_logprob") for k, (recs, _) in sets.items()}
    paths = {"original": base, **({"base": Path(models["unsplit"])} if "unsplit" in models else {}),
             "spunge": run / "merged"}
    results = {}
    for label, path in paths.items():
        model, tok = load_model(path, dtype=cfg.dtype)
        if torch.cuda.is_available():
            model.cuda()
        results[label] = evaluate_model(model, tok, sets, cfg.data)
        del model
    return {"results": results, "metrics": kinds}


def _markdown(cfg: SpungeConfig, report: dict[str, Any], merge_cfg: MergeConfig) -> str:
    fields = ", ".join(f"{f.name}={getattr(merge_cfg, f.name)}" for f in dataclasses.fields(merge_cfg))
    return (f"# SPUNGE vs. base: {cfg.method['name']} on {cfg.model}\n\n"
            f"Split: {to_dict(cfg.split)}\n\nMerge: {fields}\n\n"
            "Forget rows: lower = more forgotten. Retain/neutral rows: closer to 'original' = better kept.\n"
            "'base' = the same method on the unsplit forget set with the same total number of steps.\n\n"
            + table_markdown(report["results"], report["metrics"]))
