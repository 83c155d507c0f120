"""Knowledge-recovery attacks: does unlearned knowledge come back?

Relearning (``relearn``), quantisation round-trips (``quantize``), logit lens and linear probes
(``probe``) and fixed prompt templates (``prompts``), run together by ``suite.run_attacks`` into
a robustness table (``<run_dir>/attacks.json`` / ``attacks.md``). CLI: ``obliviate attack``.
"""

from .common import AttackResult, forget_metric, recovery
from .probe import ProbeConfig, logit_lens, probe_attacks, truth_probe
from .prompts import PromptConfig, prompt_attacks
from .quantize import INT4, INT8, QuantConfig, quant_attack, quantize_model, quantize_rtn
from .relearn import RelearnConfig, relearn_attack, split_forget
from .suite import SUITES, AttackSuiteConfig, markdown_table, run_attacks, write_table

__all__ = ["AttackResult", "forget_metric", "recovery", "ProbeConfig", "logit_lens", "probe_attacks", "truth_probe",
           "PromptConfig", "prompt_attacks", "INT4", "INT8", "QuantConfig", "quant_attack", "quantize_model",
           "quantize_rtn", "RelearnConfig", "relearn_attack", "split_forget", "SUITES", "AttackSuiteConfig",
           "markdown_table", "run_attacks", "write_table"]
