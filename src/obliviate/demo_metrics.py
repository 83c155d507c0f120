"""The demo's evaluation of one model, written as ``<run_dir>/eval/demo.json`` for the report.

- forget/kept answer probability (TOFU ``Q_A_Prob``) and ROUGE-L recall of greedy answers;
- MIA: AUC of the LOSS attack, forget facts (members) vs facts about never-seen people (0.5 = forgotten);
- general ability: perplexity on a fixed built-in paragraph set (so the demo needs no data files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .config import to_dict
from .data.encode import EncodeConfig
from .eval.general import perplexity
from .eval.metrics import answer_prob as prob_from_sums, rouge_l_recall
from .eval.mia import auc, loss_score
from .eval.results import MetricResult, SuiteResult
from .eval.runner import Evaluator

GENERAL_TEXT = [
    "The river rises in the mountains and flows south for several hundred kilometres before it reaches the sea.",
    "Most plants need sunlight, water and carbon dioxide to make the sugars they use for energy.",
    "The library opens at nine in the morning and closes at six in the evening on weekdays.",
    "A balanced diet includes vegetables, fruit, grains and a source of protein such as beans or fish.",
    "The committee met on Tuesday to discuss the budget for the coming year and approved most of the proposals.",
    "Water boils at one hundred degrees Celsius at sea level, but at a lower temperature on high mountains.",
    "She opened the window, looked at the grey sky, and decided to take an umbrella with her.",
    "The train was delayed by twenty minutes because of maintenance work on the line near the station.",
]

DIRECTION = {"forget_prob": False, "kept_prob": True, "forget_rouge": False, "kept_rouge": True,
             "mia_auc": False, "general_ppl": False}


def _probs(stats) -> np.ndarray:
    return prob_from_sums([float(s["logprobs"].sum()) for s in stats], [len(s["logprobs"]) for s in stats])


def evaluate_demo(model, tok, forget, kept, holdout, original, run_dir: Path | None,
                  encode: EncodeConfig | None = None) -> dict[str, Any]:
    """The demo metrics of ``model``, its prompts encoded with ``encode`` (the encoding it was
    unlearned with; default: ``EncodeConfig()``, which planting used)."""
    encode = encode or EncodeConfig()
    ev = Evaluator(model, tok, encode=encode, batch_size=16)
    f_stats, h_stats = ev.score_records(forget), ev.score_records(holdout)
    general = ev.score_records([{"text": t} for t in GENERAL_TEXT])
    values = {
        "forget_prob": float(_probs(f_stats).mean()),
        "kept_prob": float(_probs(ev.score_records(kept)).mean()),
        "forget_rouge": float(rouge_l_recall(ev.generate_text(forget, 120), [r["answer"] for r in forget]).mean()),
        "kept_rouge": float(rouge_l_recall(ev.generate_text(kept, 120), [r["answer"] for r in kept]).mean()),
        # Members (forget) should look like non-members after unlearning: AUC 0.5 is ideal, 1.0 leaks.
        "mia_auc": auc([loss_score(s["logprobs"]) for s in f_stats], [loss_score(s["logprobs"]) for s in h_stats]),
        "general_ppl": perplexity(-sum(float(s["logprobs"].sum()) for s in general),
                                  sum(len(s["logprobs"]) for s in general)),
    }
    if run_dir is not None:
        summary = {k: MetricResult(k, v, DIRECTION[k], "obliviate demo metric") for k, v in values.items()}
        SuiteResult(suite="demo", model=str(run_dir), summary=summary, items={},
                    meta={"encoding": to_dict(encode)}).save(Path(run_dir))
    return values
