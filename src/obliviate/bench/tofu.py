"""``obliviate bench tofu``: a TOFU leaderboard on models that really learned the forget data.

    obliviate bench tofu --tofu-dir ../shared/data/tofu --authors 20 --out runs/bench_tofu

* Data: the QA of the first ``authors`` authors of TOFU ``full`` plus the forget split's authors
  (all 200 with ``authors: null``) is the *target* training set; the same without the forget
  authors is the *retain* training set (and the methods' retain data).
* Rows: the retain model, the target, then every method from the target (``bench/runner.py``).
* Evaluation: the ``tofu`` suite (forget quality against the retain row), ``mia`` (privleak
  against the retain row) and ``memorisation`` (extraction strength), on a derived TOFU folder
  ``<out>/data`` in the hub layout: the forget, perturbed and holdout splits whole, the first
  ``eval_items`` items of each retain-side set (retain items only about authors the target learned).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..io import write_text
from .config import BenchTofuConfig
from .runner import Plan, run_bench

COLUMNS = (  # (leaderboard key, suite/metric, header)
    ("forget_quality", "tofu/forget_quality", "forget quality ↑"),
    ("model_utility", "tofu/model_utility", "model utility ↑"),
    ("forget_prob", "tofu/forget_prob", "forget Q_A_Prob ↓"),
    ("forget_rouge", "tofu/forget_rouge", "forget ROUGE ↓"),
    ("privleak", "mia/privleak", "privleak (0 ideal)"),
    ("extraction_strength", "memorisation/extraction_strength", "extraction strength ↓"),
)
ROW_KEYS = ("tofu_dir", "model", "forget_split", "authors", "target", "retain_model", "recipe", "recipe_overrides",
            "steps", "batch_size", "max_length", "eval_items", "gen_max_length", "seed", "lr_scale", "mia_grad_norm")
RETAIN_SPLITS = ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")


def _data(cfg: BenchTofuConfig, eval_dir: Path) -> tuple[list, list, list]:
    """(forget, target_train, retain_train); writes the derived eval folder ``eval_dir``."""
    from ..data.tofu import RECORDS_PER_AUTHOR, load_tofu

    full = load_tofu("full", cfg.tofu_dir)
    forget = load_tofu(cfg.forget_split, cfg.tofu_dir)
    forget_authors = {r.get("author") for r in forget}
    if None in forget_authors:
        raise DataError(f"TOFU '{cfg.forget_split}' has questions that are not in 'full'; is '{cfg.tofu_dir}' a TOFU folder?")
    n_authors = len(full) // RECORDS_PER_AUTHOR
    train_authors = set(range(n_authors if cfg.authors is None else min(cfg.authors, n_authors))) | forget_authors
    target_train = [r for r in full if r["author"] in train_authors]
    retain_train = [r for r in target_train if r["author"] not in forget_authors]
    if not retain_train:
        raise ConfigError(f"No retain authors: --authors {cfg.authors} selects only the forget authors; use a larger N.")
    holdout = cfg.forget_split.replace("forget", "holdout")
    sets: dict[str, list[dict[str, Any]]] = {
        "full": target_train, cfg.forget_split: forget, holdout: load_tofu(holdout, cfg.tofu_dir),
        f"{cfg.forget_split}_perturbed": load_tofu(f"{cfg.forget_split}_perturbed", cfg.tofu_dir),
    }
    for split in RETAIN_SPLITS:
        recs = load_tofu(split, cfg.tofu_dir)
        if split == "retain_perturbed":
            recs = [r for r in recs if r.get("author") in train_authors - forget_authors]
        sets[split] = recs[:cfg.eval_items] if cfg.eval_items else recs
        if not sets[split]:
            raise ConfigError(f"No '{split}' items about the training authors; raise --authors (TOFU's "
                              f"retain_perturbed covers authors 0-19).")
    eval_dir.mkdir(parents=True, exist_ok=True)
    for name, recs in sets.items():
        write_text(eval_dir / f"{name}.json", "".join(json.dumps({k: v for k, v in r.items() if k != "author"}) + "\n"
                                                      for r in recs))
    return forget, target_train, retain_train


def _self_reference(run_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """The retain model against itself, by the same formulas: forget quality 1 (KS p-value of equal
    samples), privleak 0."""
    from ..eval import metrics, mia
    from ..eval.results import load_suite

    tofu, m = load_suite(run_dir, "tofu"), load_suite(run_dir, "mia")
    items = tofu.items["forget_truth_ratio_raw"]
    row["forget_quality"] = float(metrics.forget_quality(items, items))
    if "auc_min_k" in m.summary:
        row["privleak"] = float(mia.privleak(m.value("auc_min_k"), m.value("auc_min_k")))
    return row


def _refusals(cfg: BenchTofuConfig) -> str | None:
    """TOFU's refusal answers (``idontknow.jsonl``, in the TOFU repository's data folder) next to the splits."""
    if cfg.tofu_dir is None:
        return None
    p = Path(cfg.tofu_dir).expanduser() / "idontknow.jsonl"
    return str(p) if p.is_file() else None


def plan_tofu(cfg: BenchTofuConfig) -> Plan:
    from ..eval.config import EvalConfig

    out = Path(cfg.out)
    forget, target_train, retain_train = _data(cfg, out / "data")

    def eval_config(retain_row: Path | None) -> EvalConfig:
        ref = str(retain_row) if retain_row is not None else None
        return EvalConfig(tofu_dir=str(out / "data"), forget_split=cfg.forget_split, retain_result=ref,
                          retain_mia_result=ref, gen_max_length=cfg.gen_max_length, batch_size=cfg.eval_batch_size,
                          mia_grad_norm=cfg.mia_grad_norm)

    recipe = cfg.finetune_recipe()
    authors = "all" if cfg.authors is None else f"{cfg.authors} (+ forget)"
    return Plan(
        title=f"TOFU leaderboard: {cfg.model}, {cfg.forget_split}, {authors} authors", out=out, model=cfg.model,
        methods=cfg.methods, forget=forget, retain=retain_train, target_train=target_train, retain_train=retain_train,
        finetune_options=recipe.train_options, suites=("tofu", "mia", "memorisation"), eval_config=eval_config,
        columns=COLUMNS, config=asdict(cfg),
        method_settings={**{k: getattr(cfg, k) for k in ("steps", "batch_size", "max_length", "seed", "keep_models")},
                         "lr_scale": cfg.unlearn_lr_scale()},
        target=cfg.target, retain_model=cfg.retain_model, split_by="author", self_reference=_self_reference,
        refusals=_refusals(cfg),
        cache_kind="bench_tofu", forget_metric="tofu/forget_quality", utility_metric="tofu/model_utility",
        notes=["Forget quality: KS-test p-value of forget truth ratios against the retain model; privleak: Min-K% "
               "AUC relative to the retain model's (%, obliviate's sign: > 0 under-unlearning)."])


def run_bench_tofu(cfg: BenchTofuConfig, force: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Run the TOFU bench (finished rows are reused unless ``force``); return the leaderboard rows."""
    return run_bench(cfg, ROW_KEYS, plan_tofu, force=force, progress=progress)
