"""Benchmarks a user runs end to end: ``obliviate bench tofu`` and ``obliviate bench muse``.

Each makes (or takes) a *target* model (fine-tuned on the data, forget set included) and a
*retain* model (the same data without the forget set), runs every requested method from the
target with the bench's fixed settings, evaluates each against the retain model and writes
``leaderboard.json``, ``leaderboard.md`` and ``report.html`` (``runner.py`` holds the shared loop).
"""

from .config import BenchConfig, BenchMuseConfig, BenchTofuConfig, Recipe
from .muse import run_bench_muse
from .tofu import run_bench_tofu

__all__ = ["BenchConfig", "BenchMuseConfig", "BenchTofuConfig", "Recipe", "run_bench_muse", "run_bench_tofu"]
