"""General-ability suites: ``mcq`` (MMLU / WMDP accuracy), ``ppl`` (WikiText-2 perplexity and
generation fluency) and ``toxicity`` (ToxiGen log-likelihood by target group)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from . import general, mcq, toxicity
from .config import EvalConfig
from .results import SuiteResult


def suite_mcq(ev, cfg: EvalConfig, model_name: str = "") -> SuiteResult:
    items, dev = [], {}
    if cfg.mmlu_dir:
        items, dev = mcq.load_mmlu(cfg.mmlu_dir, list(cfg.mmlu_subjects) or None, cfg.max_items)
    for f in cfg.mcq_files:
        items += mcq.load_mcq(f, limit=cfg.max_items)
    if not items:
        raise ConfigError("suite 'mcq' needs 'mmlu_dir' or 'mcq_files' (e.g. --mmlu-dir ../shared/data/mmlu).")
    res = SuiteResult("mcq", model_name, meta={"shots": cfg.mcq_shots, "format": "lm-eval mmlu", "n": len(items)})
    by_n: dict[int, list[int]] = {}
    for i, it in enumerate(items):  # items with the same number of choices are scored together
        by_n.setdefault(len(it["choices"]), []).append(i)
    correct = np.zeros(len(items))
    for idx in by_n.values():
        sub = [items[i] for i in idx]
        correct[idx] = mcq.accuracy(mcq.choice_logliks(ev, sub, dev, cfg.mcq_shots), [it["answer"] for it in sub])
    res.add("acc", correct.mean(), True, f"{cfg.mcq_shots}-shot accuracy by answer log-likelihood (all items)", correct)
    subjects = sorted({it["subject"] for it in items})
    for s in subjects:
        mask = np.array([it["subject"] == s for it in items])
        res.add(f"acc_{s}", correct[mask].mean(), True, f"accuracy on {s} ({int(mask.sum())} items)")
    return res


def suite_ppl(ev, cfg: EvalConfig, model_name: str = "", fluency=None) -> SuiteResult:
    """``fluency`` is an ``Evaluator`` of the model that judges generation perplexity (optional)."""
    if cfg.wikitext is None:
        raise ConfigError("suite 'ppl' needs 'wikitext' (e.g. --wikitext ../shared/data/wikitext2/test.txt).")
    text = general.read_wikitext(cfg.wikitext)
    ppl, windows = general.wikitext_perplexity(ev, text, cfg.ppl_max_length, cfg.ppl_stride, cfg.ppl_max_tokens)
    res = SuiteResult("ppl", model_name, meta={"max_length": cfg.ppl_max_length, "stride": cfg.ppl_stride,
                                               "max_tokens": cfg.ppl_max_tokens})
    res.add("wikitext_ppl", ppl, False, f"WikiText-2 perplexity (window {cfg.ppl_max_length}, stride {cfg.ppl_stride})",
            windows)
    prompts = general.fluency_prompts(text, cfg.fluency_prompts)
    if prompts:
        tok = ev.tokenizer
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        gens = [tok.decode(g, skip_special_tokens=True) for g in ev.generate(ids, cfg.fluency_new_tokens)]
        for k, v in general.fluency_stats(gens).items():
            res.add(k, v, k.startswith("distinct"), f"{k} of greedy continuations of {len(prompts)} WikiText prompts")
        res.meta["fluency_generations"] = gens
        if fluency is not None:
            res.add("fluency_ppl", general.text_perplexity(fluency, prompts, gens), False,
                    "perplexity of the generations under the reference (original) model")
    return res


def suite_toxicity(ev, cfg: EvalConfig, model_name: str = "") -> SuiteResult:
    if cfg.toxigen is None:
        raise ConfigError("suite 'toxicity' needs 'toxigen' (e.g. --toxigen ../shared/data/toxigen).")
    records = toxicity.load_toxigen(cfg.toxigen, cfg.toxigen_per_group or cfg.max_items)
    stats = ev.score_records(records)
    loglik = np.array([float(s["logprobs"].double().mean()) for s in stats])
    groups = toxicity.group_loglik(records, loglik)
    res = SuiteResult("toxicity", model_name, meta={"groups": sorted(groups), "n": len(records)})
    hate = np.array([r["label"] == "hate" for r in records])
    res.add("hate_loglik", loglik[hate].mean(), False, "mean per-token log-likelihood of hateful statements", loglik)
    res.add("neutral_loglik", loglik[~hate].mean(), True, "mean per-token log-likelihood of neutral statements")
    diffs = [g["diff"] for g in groups.values() if np.isfinite(g["diff"])]
    res.add("toxic_preference", float(np.mean(diffs)), False, "mean over groups of hate - neutral log-likelihood")
    for g, d in groups.items():
        res.add(f"hate_loglik_{g}", d["hate"], False, f"hateful statements about {g}")
        res.add(f"neutral_loglik_{g}", d["neutral"], True, f"neutral statements about {g}")
        res.add(f"toxic_preference_{g}", d["diff"], False, f"hate - neutral log-likelihood for {g}")
    return res
