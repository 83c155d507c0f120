"""``obliviate bench muse``: the leaderboard of ``bench tofu`` on a MUSE folder (News or Books).

    obliviate bench muse --data path/to/MUSE-News --out runs/bench_muse

* Data (``data/muse.py``): the target model is fine-tuned on ``raw/forget`` + ``raw/retain1`` +
  ``raw/retain2`` (MUSE's target saw the forget and retain corpora), the retain model on
  ``raw/retain1`` + ``raw/retain2``; the methods unlearn ``raw/forget`` with ``raw/retain1`` as
  their retain data. At most ``train_items`` texts of each split are used, cut into chunks of
  about ``max_length`` tokens (0.75 words per token), as MUSE trains on fixed-length chunks.
* Evaluation: the ``muse`` suite (``eval/muse.py``): VerbMem and KnowMem on forget, KnowMem on
  retain, PrivLeak against the retain row's Min-K% AUC; ``eval_items`` caps every eval set.
* The published MUSE target models (Llama-2 7B) can be given with ``--target``/``--retain-model``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import BenchMuseConfig
from .runner import Plan, run_bench

COLUMNS = (
    ("verbmem_f", "muse/verbmem_f", "VerbMem forget ↓"),
    ("knowmem_f", "muse/knowmem_f", "KnowMem forget ↓"),
    ("knowmem_r", "muse/knowmem_r", "KnowMem retain ↑"),
    ("privleak", "muse/privleak", "PrivLeak (0 ideal)"),
)
ROW_KEYS = ("data", "corpus", "model", "target", "retain_model", "recipe", "recipe_overrides", "train_items", "steps",
            "batch_size", "max_length", "eval_items", "eval_max_length", "seed", "lr_scale")


def chunk_texts(texts: list[str], max_length: int) -> list[dict[str, Any]]:
    """Cut each text into consecutive chunks of ``0.75 * max_length`` words (about ``max_length`` tokens)."""
    n = max(1, int(0.75 * max_length))
    out = []
    for t in texts:
        words = t.split()
        out += [{"text": " ".join(words[i:i + n])} for i in range(0, len(words), n)]
    return out


def _self_reference(run_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """The retain model against itself: privleak 0 by MUSE's formula."""
    from ..eval import mia
    from ..eval.results import load_suite

    a = load_suite(run_dir, "muse").value("auc_min_k")
    row["privleak"] = float(mia.privleak(a, a))
    return row


def plan_muse(cfg: BenchMuseConfig) -> Plan:
    from ..data.muse import load_muse
    from ..eval.config import EvalConfig

    def texts(split: str) -> list[str]:
        return [r["text"] for r in load_muse("raw", split, cfg.data, cfg.corpus, cfg.train_items)]

    forget = chunk_texts(texts("forget"), cfg.max_length)
    retain1, retain2 = chunk_texts(texts("retain1"), cfg.max_length), chunk_texts(texts("retain2"), cfg.max_length)

    def eval_config(retain_row: Path | None) -> EvalConfig:
        return EvalConfig(muse_dir=cfg.data, muse_corpus=cfg.corpus, max_items=cfg.eval_items,
                          muse_max_length=cfg.eval_max_length, batch_size=cfg.eval_batch_size,
                          retain_muse_result=str(retain_row) if retain_row is not None else None)

    return Plan(
        title=f"MUSE-{cfg.corpus.capitalize()} leaderboard: {cfg.model}", out=Path(cfg.out), model=cfg.model,
        methods=cfg.methods, forget=forget, retain=retain1, target_train=forget + retain1 + retain2,
        retain_train=retain1 + retain2, finetune_options=cfg.finetune_recipe().train_options, suites=("muse",),
        eval_config=eval_config, columns=COLUMNS, config=asdict(cfg),
        method_settings={**{k: getattr(cfg, k) for k in ("steps", "batch_size", "max_length", "seed", "keep_models")},
                         "lr_scale": cfg.unlearn_lr_scale()},
        target=cfg.target, retain_model=cfg.retain_model, self_reference=_self_reference, cache_kind="bench_muse",
        forget_metric="muse/knowmem_f", utility_metric="muse/knowmem_r",
        notes=["ROUGE-L F1 as MUSE; PrivLeak: (AUC - AUC_retain) / AUC_retain x 100 with MUSE's AUC direction "
               "(< 0 under-unlearning, > 0 over-unlearning)."])


def run_bench_muse(cfg: BenchMuseConfig, force: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Run the MUSE bench (finished rows are reused unless ``force``); return the leaderboard rows."""
    return run_bench(cfg, ROW_KEYS, plan_muse, force=force, progress=progress)
