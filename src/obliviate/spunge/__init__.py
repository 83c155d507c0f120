"""SPUNGE (Kadhe et al. 2024, arXiv 2406.11780): split the forget data by an attribute, unlearn each
subset from the same base with any registered method, merge the results (TIES by default).

``run_spunge(parse_spunge_config(dict))`` runs the pipeline; ``obliviate spunge --config`` is its CLI.
"""

from .config import AutoMergeConfig, SpungeConfig, parse_spunge_config
from .pipeline import run_spunge
from .runner import BackendConfig, SubsetFailed, SubsetJob, run_jobs
from .sources import Source, load_toxigen
from .split import SplitConfig, split_records

__all__ = ["AutoMergeConfig", "BackendConfig", "Source", "SplitConfig", "SpungeConfig", "SubsetFailed", "SubsetJob",
           "load_toxigen", "parse_spunge_config", "run_jobs", "run_spunge", "split_records"]
