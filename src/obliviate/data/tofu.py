"""TOFU (Maini et al. 2024, locuslab/TOFU): fictitious-author QA.

``load_tofu(split, root=...)`` reads a split from a local folder laid out like the hub
repository (``full.json``, ``forget10.json``, ``forget10_perturbed.json``, ...; JSON lines),
or from the hub id ``locuslab/TOFU`` when ``root`` is None (needs a network). Each record gets
an ``author`` attribute: every author has 20 consecutive records in ``full``, so the author of a
record is its position in ``full`` divided by 20 (records are matched to ``full`` by question).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError, did_you_mean
from .records import load_records

SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain90", "retain95", "retain99",
    "holdout01", "holdout05", "holdout10", "forget01_perturbed", "forget05_perturbed",
    "forget10_perturbed", "retain_perturbed", "real_authors", "real_authors_perturbed",
    "world_facts", "world_facts_perturbed",
)
AUTHOR_SPLITS = tuple(s for s in SPLITS if not s.startswith(("real_authors", "world_facts")))
RECORDS_PER_AUTHOR = 20
HUB_ID = "locuslab/TOFU"


def _load(split: str, root: Path | None) -> list[dict[str, Any]]:
    if root is None:
        return load_records(f"hub:{HUB_ID}", name=split, split="train")
    path = root / f"{split}.json"
    if not path.is_file():
        raise DataError(f"TOFU split '{split}' not found at {path}; is '{root}' a TOFU folder?")
    return load_records(path, kind="qa")


def load_tofu(split: str, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Load one TOFU split as QA records with an ``author`` attribute (int, 0..199).

    Args:
        split: one of ``SPLITS``.
        root: a local folder (e.g. ``../shared/data/tofu``); None loads ``locuslab/TOFU`` from the hub.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown TOFU split '{split}'.{did_you_mean(split, SPLITS)} Available: {', '.join(SPLITS)}.")
    root_p = Path(root).expanduser() if root is not None else None
    records = _load(split, root_p)
    if split in AUTHOR_SPLITS:
        full = records if split == "full" else _load("full", root_p)
        author_of = {}
        for i, r in enumerate(full):
            author_of.setdefault(r["question"], i // RECORDS_PER_AUTHOR)
        for r in records:
            if r["question"] in author_of:
                r["author"] = author_of[r["question"]]
    return records
