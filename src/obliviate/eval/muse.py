"""The ``muse`` suite: MUSE's four headline metrics (Shi et al. 2024, Sec. 3; settings of the MUSE
code, ``muse_bench``'s ``eval.py``/``constants.py`` and its ROUGE logger).

* ``verbmem_f`` (C1, no verbatim memorisation; lower is better): the ``verbmem/forget`` prefix
  (``prompt``, 32 Llama-2 tokens in the hub data) is encoded with the tokenizer's special tokens,
  continued greedily for at most 128 new tokens, and scored by ROUGE-L F1 against the true
  continuation ``gt`` cut to its first 128 tokens.
* ``knowmem_f`` / ``knowmem_r`` (C2 / C4; lower / higher is better): the in-context prompt of MUSE,
  ``"Question: {q}\\nAnswer: {a}\\n\\n"`` for each ``*_qa_icl`` example followed by
  ``"Question: {q}\\nAnswer: "``, greedy for at most 32 new tokens, the output cut before
  ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``, ROUGE-L F1 against the answer.
* ``privleak`` (C3; 0 is ideal): Min-K% (k = 0.4) AUC between ``privleak/forget`` and
  ``privleak/holdout``, relative to the retain model's: (AUC - AUC_retain) / AUC_retain x 100.

ROUGE is ``rouge_score``'s ``rougeL`` F-measure without stemming (MUSE's logger; TOFU's ROUGE in
``metrics.py`` is the recall with stemming). Values are fractions in [0, 1]; the MUSE paper
prints them x 100.

**Direction of the AUC.** MUSE's AUC is high when the model scores *holdout* texts as more
member-like, so a model that memorised the forget set has AUC near 0 and privleak near -100
(under-unlearning: MUSE's target models have privleak -99.8 on News), and over-unlearning is
positive. ``auc_min_k`` here is that MUSE AUC, i.e. 1 - the ``mia`` suite's AUC (which puts
forget = positive), so that ``privleak`` has MUSE's sign. The ``mia`` suite keeps its own
convention (> 0 under-unlearning); see ``eval/mia.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.encode import EncodeConfig, encode_text
from ..data.muse import load_muse
from ..errors import ConfigError, DataError
from . import mia
from .results import SuiteResult

ICL_STOPS = ("\n\n", "\nQuestion", "Question:")


def rouge_l_f1(predictions: list[str], references: list[str]) -> np.ndarray:
    """ROUGE-L F1 per item (``rouge_score``, no stemming, as MUSE)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)])


def icl_prompt(question: str, shots: list[dict[str, Any]]) -> str:
    """MUSE's KnowMem prompt: the in-context QA pairs, then the question."""
    head = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return head + f"Question: {question}\nAnswer: "


def cut_answer(text: str) -> str:
    """The generated answer before the first of MUSE's stop strings."""
    for stop in ICL_STOPS:
        text = text.split(stop)[0]
    return text


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def verbmem(ev, records: list[dict[str, Any]], max_new_tokens: int) -> tuple[np.ndarray, list[str]]:
    """Per-item ROUGE-L F1 of greedy continuations of ``prompt`` against ``gt`` (cut to ``max_new_tokens`` tokens)."""
    tok = ev.tokenizer
    gens = ev.generate([_ids(tok, r["prompt"]) for r in records], max_new_tokens)
    outputs = [_decode(tok, g) for g in gens]
    refs = [_decode(tok, _ids(tok, r["gt"])[:max_new_tokens]) for r in records]
    return rouge_l_f1(outputs, refs), outputs


def knowmem(ev, qa: list[dict[str, Any]], shots: list[dict[str, Any]], max_new_tokens: int) -> tuple[np.ndarray, list[str]]:
    """Per-item ROUGE-L F1 of in-context greedy answers."""
    tok = ev.tokenizer
    gens = ev.generate([_ids(tok, icl_prompt(r["question"], shots)) for r in qa], max_new_tokens)
    outputs = [cut_answer(_decode(tok, g)) for g in gens]
    return rouge_l_f1(outputs, [r["answer"] for r in qa]), outputs


def muse_auc(ev, forget: list[dict[str, Any]], holdout: list[dict[str, Any]], k: float, max_length: int) -> tuple[float, list, list]:
    """MUSE's Min-K% AUC (see the module docstring for its direction) and the per-item scores."""
    enc = EncodeConfig(max_length=max_length)
    sf = ev.score([encode_text(ev.tokenizer, r["text"], enc) for r in forget])
    sh = ev.score([encode_text(ev.tokenizer, r["text"], enc) for r in holdout])
    f = [mia.min_k_score(s["logprobs"], k) for s in sf]
    h = [mia.min_k_score(s["logprobs"], k) for s in sh]
    return 1.0 - mia.auc(f, h), f, h


def suite_muse(ev, cfg, model_name: str = "") -> SuiteResult:
    """The MUSE suite on ``cfg.muse_dir`` (or the hub); privleak needs the retain model's AUC."""
    from .suites import _retain_result

    root, corpus, n = cfg.muse_dir, cfg.muse_corpus, cfg.max_items
    res = SuiteResult("muse", model_name, meta={"corpus": corpus, "muse_dir": root, "max_items": n, "k": cfg.mia_k,
                                                "verbmem_new_tokens": cfg.muse_verbmem_new_tokens,
                                                "knowmem_new_tokens": cfg.muse_knowmem_new_tokens})
    vm, vm_out = verbmem(ev, load_muse("verbmem", "forget", root, corpus, n), cfg.muse_verbmem_new_tokens)
    res.add("verbmem_f", vm.mean(), False, "VerbMem on forget: ROUGE-L F1 of 128-token greedy continuations (lower is better)", vm)
    res.meta["verbmem_outputs"] = vm_out
    for side, better in (("forget", False), ("retain", True)):
        try:
            qa = load_muse("knowmem", f"{side}_qa", root, corpus, n)
            shots = load_muse("knowmem", f"{side}_qa_icl", root, corpus)
        except DataError as e:  # MUSE-Books in the MUSE repository has no knowmem files
            res.meta[f"knowmem_{side[0]}_skipped"] = str(e)
            continue
        km, km_out = knowmem(ev, qa, shots, cfg.muse_knowmem_new_tokens)
        res.add(f"knowmem_{side[0]}", km.mean(), better,
                f"KnowMem on {side}: ROUGE-L F1 of in-context greedy answers ({'higher' if better else 'lower'} is better)", km)
        res.meta[f"knowmem_{side[0]}_outputs"] = km_out
    a, f, h = muse_auc(ev, load_muse("privleak", "forget", root, corpus, n), load_muse("privleak", "holdout", root, corpus, n),
                       cfg.mia_k, cfg.muse_max_length)
    res.add("auc_min_k", a, False, "MUSE Min-K% AUC, forget vs holdout (near 0: memorised; 0.5: never seen)")
    res.add_items("forget_min_k", f)
    res.add_items("holdout_min_k", h)
    ref = None
    if cfg.retain_muse_result:
        ret = _retain_result(cfg.retain_muse_result, "muse")
        if "auc_min_k" not in ret.summary:
            raise ConfigError(f"'retain_muse_result' {cfg.retain_muse_result}: no 'auc_min_k'; re-run its muse eval.")
        ref = ret.value("auc_min_k")
    elif cfg.muse_retain_auc is not None:
        ref = cfg.muse_retain_auc
    if ref is not None:
        res.add("privleak", mia.privleak(a, ref), False,
                "MUSE PrivLeak (%) vs the retain model's AUC (0 ideal; < 0 under-unlearning, > 0 over-unlearning)")
        res.meta["retain_auc"] = ref
    return res
