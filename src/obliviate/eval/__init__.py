"""Evaluation: metrics (pure functions), a batched memoised runner, suites and ``evaluate``.

Modules: ``metrics`` (TOFU), ``mia``, ``memorisation`` (also rep-n/distinct-n), ``mcq``, ``general``
(perplexity, fluency), ``toxicity``; ``runner.Evaluator``; ``suites``/``suites_general``; ``results``
(the JSON format of ``<run_dir>/eval/<suite>.json``); ``api.evaluate``.
"""

from .api import evaluate
from .config import SUITES, EvalConfig
from .qa import answer_logprobs, answer_prob
from .results import MetricResult, SuiteResult, load_suite
from .runner import Evaluator

__all__ = ["answer_logprobs", "answer_prob", "evaluate", "EvalConfig", "SUITES", "Evaluator", "MetricResult",
           "SuiteResult", "load_suite"]
