"""Optional adapter: run real lm-evaluation-harness tasks (``pip install obliviate[lm-eval]``).

    from obliviate.eval.lm_eval_adapter import run_lm_eval
    res = run_lm_eval(model, tok, ["mmlu_anatomy", "wmdp_bio"], num_fewshot=0, limit=50)

Returns a ``SuiteResult`` named ``lm_eval`` with one summary metric per task and lm-eval metric
(``<task>/acc``, ...), all higher-is-better. Tasks that download data need a network. Not exercised by
the test suite (lm-eval is not a dependency); the built-in ``mcq`` suite reproduces the MMLU format offline.
"""

from __future__ import annotations

from ..errors import ObliviateError
from .results import SuiteResult


def run_lm_eval(model, tokenizer, tasks: list[str], num_fewshot: int = 0, limit: int | None = None,
                batch_size: int = 8, model_name: str = "") -> SuiteResult:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise ObliviateError("lm-evaluation-harness is not installed: pip install 'obliviate[lm-eval]' "
                             "(or use the built-in 'mcq' suite, which needs no network).") from None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit)
    res = SuiteResult("lm_eval", model_name, meta={"tasks": list(tasks), "num_fewshot": num_fewshot, "limit": limit})
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if isinstance(value, (int, float)) and "stderr" not in name:
                res.add(f"{task}/{name}", float(value), True, f"lm-eval {task} {name}")
    return res
