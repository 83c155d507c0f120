"""The evaluation suites. Each takes a shared ``Evaluator`` (memoised scores and generations) and
an ``EvalConfig`` and returns a ``SuiteResult``; ``obliviate.evaluate`` (``eval/api.py``) runs
and saves them.

* ``tofu``: Prob, ROUGE-L recall and truth ratio on forget / retain / real_authors / world_facts,
  model utility, and forget quality when the retain model's TOFU result is given.
* ``mia``: AUC of LOSS, zlib, Min-K%, Min-K%++, gradient-norm (and reference) attacks, forget vs holdout; privleak
  when the retain model's MIA result is given.
* ``memorisation``: exact memorisation / MA, extraction strength, EL_3/5/10.

With ``definitions="open-unlearning"`` (the ``open-unlearning`` preset) the metrics follow that
framework's code where it differs (``metrics.py`` lists each): ``ou_token_stats`` drops the last
scored token for exact memorisation, extraction strength, Min-K% and Min-K%++.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_records
from ..data.tofu import load_tofu
from ..errors import ConfigError
from . import memorisation as mem
from . import metrics, mia
from .config import EvalConfig
from .results import SuiteResult, load_suite


def _need(value, key: str, suite: str):
    if value is None:
        raise ConfigError(f"suite '{suite}' needs '{key}' (e.g. --{key.replace('_', '-')} PATH).")
    return value


def _tofu(cfg: EvalConfig, split: str) -> list[dict[str, Any]]:
    recs = load_tofu(split, _need(cfg.tofu_dir, "tofu_dir", "tofu"))
    return recs[:cfg.max_items] if cfg.max_items else recs


def _records(path: str | None, cfg: EvalConfig, default_split: str, suite: str) -> list[dict[str, Any]]:
    if path is not None:
        return load_records(path, limit=cfg.max_items)
    if cfg.tofu_dir is None:
        raise ConfigError(f"suite '{suite}' needs its data: a path option or 'tofu_dir' for the TOFU default.")
    return _tofu(cfg, default_split)


def _retain_result(path: str, suite: str) -> SuiteResult:
    p = Path(path)
    return load_suite(p if p.suffix == ".json" else p / "eval" / f"{suite}.json")


TOFU_SETS = (  # (name, split suffix, truth-ratio base answer field), as TOFU's eval config
    ("forget", "_perturbed", "paraphrased_answer"),
    ("retain", None, "paraphrased_answer"),
    ("real_authors", None, "answer"),
    ("world_facts", None, "answer"),
)


def _tofu_set(ev, res: SuiteResult, name: str, recs: list[dict[str, Any]], base: str, gens: list[str]) -> list[float]:
    """Prob, ROUGE (of ``gens``, the greedy answers to ``recs``) and truth ratio of one TOFU set."""
    nll_true = ev.mean_nll(recs, "answer")
    nll_pert = ev.options_nll(recs, "perturbed_answer")
    forget = name == "forget"
    if name in ("forget", "retain"):
        prob = metrics.answer_prob(-nll_true, 1)
    else:
        prob = metrics.normalised_prob(nll_true, nll_pert)
        res.add_items(f"{name}_prob_raw", metrics.answer_prob(-nll_true, 1))  # open-unlearning's un-normalised Q_A_Prob
    ratio = metrics.truth_ratio(ev.mean_nll(recs, base), nll_pert)
    rouge = metrics.rouge_l_recall(gens, [r["answer"] for r in recs])
    tr_items = np.minimum(ratio, 1 / ratio) if forget else np.maximum(0, 1 - ratio)
    side = "lower is better on forget" if forget else "higher is better"
    res.add(f"{name}_prob", prob.mean(), not forget, f"TOFU Prob on {name} ({side})", prob)
    res.add(f"{name}_rouge", rouge.mean(), not forget, f"ROUGE-L recall of greedy answers on {name} ({side})", rouge)
    desc = "mean min(R, 1/R) (TOFU code)" if forget else "mean max(0, 1 - R)"
    res.add(f"{name}_truth_ratio", metrics.truth_ratio_stat(ratio, forget), True, f"truth ratio on {name}: {desc}", tr_items)
    res.add_items(f"{name}_truth_ratio_raw", ratio)
    res.meta.setdefault("generations", {})[name] = gens
    return [float(prob.mean()), float(rouge.mean()), metrics.truth_ratio_stat(ratio, forget)]


def suite_tofu(ev, cfg: EvalConfig, model_name: str = "") -> SuiteResult:
    res = SuiteResult("tofu", model_name, meta={"forget_split": cfg.forget_split, "max_items": cfg.max_items,
                                                "gen_max_length": cfg.gen_max_length})
    utility = []
    sets = [(name, _tofu(cfg, cfg.forget_split + suffix if name == "forget" else f"{name}_perturbed"), base)
            for name, suffix, base in TOFU_SETS]
    # One decoding pass over the four sets' prompts: a set of 40 prompts alone leaves most of the
    # decoder's rows empty, and on CPU a step of 128 rows costs only ~1.5x one of 64 (``runner.DECODE_SLOTS``).
    gens = iter(ev.generate_text([r for _, recs, _ in sets for r in recs], cfg.gen_max_length, cfg.gen_max_new_tokens))
    for name, recs, base in sets:
        values = _tofu_set(ev, res, name, recs, base, [next(gens) for _ in recs])
        if name != "forget":
            utility += values
    res.add("model_utility", metrics.model_utility(utility), True,
            "harmonic mean of Prob, ROUGE and truth ratio on retain, real_authors, world_facts")
    if cfg.retain_result:
        ret = _retain_result(cfg.retain_result, "tofu")
        if "forget_truth_ratio_raw" not in ret.items:
            raise ConfigError(f"'retain_result' {cfg.retain_result}: no per-item 'forget_truth_ratio_raw'; re-run its tofu eval.")
        fq = metrics.forget_quality(res.items["forget_truth_ratio_raw"], ret.items["forget_truth_ratio_raw"])
        res.add("forget_quality", fq, True, "KS-test p-value of forget truth ratios vs the retain model")
        res.meta["retain_result"] = str(cfg.retain_result)
    return res


def _texts(records: list[dict[str, Any]]) -> list[str]:
    return [r["answer"] if "answer" in r else r["text"] for r in records]


def ou_token_stats(stats: list[dict]) -> list[dict]:
    """Per-item token stats without the last scored token, as open-unlearning's
    ``tokenwise_logprobs`` / ``tokenwise_vocab_logprobs`` (its "-1 to ignore eos prediction")."""
    return [{k: v[:-1] for k, v in s.items()} for s in stats]


def _attack_scores(ev, cfg: EvalConfig, records: list[dict[str, Any]], stats: list[dict]) -> dict[str, list[float]]:
    if not cfg.ou:
        return mia.attack_scores(stats, _texts(records), cfg.mia_k)
    # open-unlearning's zlib text: the scored tokens decoded without special tokens
    texts = [ev.tokenizer.decode([t for t in ex["labels"] if t != -100], skip_special_tokens=True)
             for ex in ev.encode(records)]
    return mia.attack_scores(stats, texts, cfg.mia_k, min_k_stats=ou_token_stats(stats))


def suite_mia(ev, cfg: EvalConfig, model_name: str = "", reference=None) -> SuiteResult:
    """MIA AUCs; ``reference`` is an ``Evaluator`` of the reference model (optional)."""
    forget = _records(cfg.mia_forget, cfg, cfg.forget_split, "mia")
    holdout = _records(cfg.mia_holdout, cfg, cfg.holdout_split, "mia")
    res = SuiteResult("mia", model_name, meta={"k": cfg.mia_k, "n_forget": len(forget), "n_holdout": len(holdout),
                                               "definitions": cfg.definitions or "obliviate"})
    sf, sh = ev.score_records(forget), ev.score_records(holdout)
    af, ah = _attack_scores(ev, cfg, forget, sf), _attack_scores(ev, cfg, holdout, sh)
    if reference is not None:
        rf, rh = reference.score_records(forget), reference.score_records(holdout)
        af["reference"] = [mia.reference_score(a["logprobs"], b["logprobs"]) for a, b in zip(sf, rf)]
        ah["reference"] = [mia.reference_score(a["logprobs"], b["logprobs"]) for a, b in zip(sh, rh)]
    if cfg.mia_grad_norm:  # white-box: a backward per batch (gradnorm.py)
        gn = {"attention_rule": cfg.attention_rule or "tokens", "per_tensor_mean": cfg.ou}
        af["grad_norm"] = mia.grad_norm_scores(ev.model, ev.encode(forget), ev.pad_id, **gn)
        ah["grad_norm"] = mia.grad_norm_scores(ev.model, ev.encode(holdout), ev.pad_id, **gn)
    ret = _retain_result(cfg.retain_mia_result, "mia") if cfg.retain_mia_result else None
    for attack in af:
        a = mia.auc(af[attack], ah[attack])
        res.add(f"auc_{attack}", a, False, f"AUC of the {attack} attack, forget vs holdout (0.5: no leak)")
        res.add_items(f"forget_{attack}", af[attack])
        res.add_items(f"holdout_{attack}", ah[attack])
        if ret is not None and f"auc_{attack}" in ret.summary:
            ref, against = ret.value(f"auc_{attack}"), "the retain model"
        elif cfg.ou:  # open-unlearning's default reference AUC (privleak ref_value)
            ref, against = 0.5, "a reference AUC of 0.5"
        else:
            continue
        desc = ("open-unlearning privleak (%) on 1 - AUC, > 0 over-unlearning" if cfg.ou
                else "MUSE privleak (%), < 0 over-unlearning")
        res.add(f"privleak_{attack}", mia.privleak(a, ref, on_complement=cfg.ou), False,
                f"{desc}, of the {attack} attack vs {against} (0 ideal)")
    if "privleak_min_k" in res.summary:  # MUSE's headline privleak uses Min-K%
        m = res.summary["privleak_min_k"]
        res.add("privleak", m.value, False, m.description)
    return res


def _el_cuts(ev, cfg: EvalConfig, records: list[dict[str, Any]]) -> list[list[tuple[list[int], list[int]]]]:
    """(prompt ids, true continuation ids) per cut, per record."""
    eos = ev.tokenizer.eos_token_id
    out = []
    for rec, ex in zip(records, ev.encode(records)):
        ids, labels = ex["input_ids"], ex["labels"]
        if "question" in rec:  # QA: one cut at the prompt/answer boundary
            cuts = [next(i for i, lab in enumerate(labels) if lab != -100)]
        else:
            cuts = list(range(cfg.el_stride, len(ids), cfg.el_stride))
        out.append([(ids[:c], [t for t in ids[c:c + cfg.el_max_new_tokens] if t != eos]) for c in cuts])
    return out


def suite_memorisation(ev, cfg: EvalConfig, model_name: str = "") -> SuiteResult:
    records = _records(cfg.memorisation_data, cfg, cfg.forget_split, "memorisation")
    res = SuiteResult("memorisation", model_name, meta={"n": len(records), "el_stride": cfg.el_stride})
    stats = ev.score_records(records)
    if cfg.ou:
        stats = ou_token_stats(stats)
    em = [mem.exact_memorisation(s["match"]) for s in stats]
    es = [mem.extraction_strength(s["match"], stop_before_last=cfg.ou) for s in stats]
    res.add("exact_memorisation", np.mean(em), False, "teacher-forced argmax accuracy on target tokens (MA)", em)
    res.add("extraction_strength", np.mean(es), False, "1 - k/|y|, k = shortest prefix from which greedy decoding reproduces y", es)
    cuts = _el_cuts(ev, cfg, records)
    flat = [c for cs in cuts for c in cs]
    gens = ev.generate([p for p, _ in flat], [max(1, len(t)) for _, t in flat])
    k = 0
    per_item = {n: [] for n in (3, 5, 10)}
    for cs in cuts:
        g, refs = gens[k:k + len(cs)], [t for _, t in cs]
        k += len(cs)
        for n in per_item:
            per_item[n].append(mem.extraction_likelihood(g, refs, n))
    for n, vals in per_item.items():
        res.add(f"el_{n}", np.nanmean(vals) if vals else float("nan"), False, f"extraction likelihood EL_{n}", vals)
    return res
