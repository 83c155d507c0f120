"""Refusal answers ("I don't know") for IdkDPO and IdkNLL, read from a file by path.

TOFU ships 100 of them as ``idontknow.jsonl`` (one plain-text refusal a line, despite the
extension); ``load_refusals`` also reads JSON lines holding a string or an object with an
``answer``/``text`` field. ``pick_refusal`` chooses one per forget example from a fixed seed
and the example's index alone, so the choice does not depend on batch order, process count or
resumption (open-unlearning instead draws a fresh one with the global RNG each time an item is
fetched, which differs between epochs, runs and processes).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError


@lru_cache(maxsize=8)
def load_refusals(path: str) -> tuple[str, ...]:
    """The non-empty refusal answers in ``path``, in file order."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"Refusal file '{path}' does not exist. Give a file with one refusal answer a line, e.g. "
                          f"TOFU's idontknow.jsonl (../shared/data/tofu/idontknow.jsonl).")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line
        if isinstance(value, dict):
            value = value.get("answer", value.get("text"))
            if not isinstance(value, str):
                raise DataError(f"{path}:{n}: a JSON object line needs a string 'answer' or 'text' field.")
        out.append(value if isinstance(value, str) else line)
    out = [s.strip() for s in out if s.strip()]
    if not out:
        raise DataError(f"Refusal file '{path}' holds no answers (one refusal a line expected).")
    return tuple(out)


def pick_refusal(refusals: tuple[str, ...], seed: int, index: int) -> str:
    """The refusal for forget example ``index``: uniform over ``refusals``, a function of (seed, index) only."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    return refusals[int(rng.integers(len(refusals)))]
