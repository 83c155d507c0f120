"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models").

``load_muse(subset, split, root=...)`` reads one split of MUSE-News or MUSE-Books from a local
folder in the hub's layout (``<subset>/<split>-00000-of-00001.parquet``, as ``muse-bench/MUSE-News``
stores it) or in the layout of the MUSE GitHub repository (``<subset>/<split>.json``, a JSON array;
``.jsonl`` also works), or from the hub when ``root`` is None (needs a network).

Subsets and their record fields (the hub's ``dataset_info``):

* ``raw``: ``forget``, ``retain1``, ``retain2``, ``holdout`` -- ``{"text"}`` (the corpora);
* ``verbmem``: ``forget`` -- ``{"prompt", "gt"}`` (a prefix and its true continuation);
* ``knowmem``: ``forget_qa``, ``retain_qa``, ``forget_qa_icl``, ``retain_qa_icl`` -- ``{"question", "answer"}``;
* ``privleak``: ``forget``, ``retain``, ``holdout`` -- ``{"text"}``;
* ``train``, ``scal``, ``sust``: ``{"text"}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataError, did_you_mean

SUBSETS: dict[str, tuple[str, ...]] = {
    "raw": ("forget", "retain1", "retain2", "holdout"),
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
    "train": ("forget", "retain1", "retain2"),
    "scal": ("forget_1", "forget_2", "forget_3", "forget_4"),
    "sust": ("forget_1", "forget_2", "forget_3", "forget_4"),
}
FIELDS: dict[str, tuple[str, ...]] = {"verbmem": ("prompt", "gt"), "knowmem": ("question", "answer")}
HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}


def _files(root: Path, subset: str, split: str) -> list[Path]:
    d = root / subset
    parquet = sorted(d.glob(f"{split}-*.parquet"))
    if parquet:
        return parquet
    for ext in (".json", ".jsonl", ".parquet"):
        if (d / f"{split}{ext}").is_file():
            return [d / f"{split}{ext}"]
    raise DataError(f"MUSE split '{subset}/{split}' not found in '{root}': expected {d}/{split}-00000-of-00001.parquet "
                    f"(the hub's layout) or {d}/{split}.json (the MUSE repository's). Is '{root}' a MUSE folder?")


def _read(path: Path) -> list[Any]:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except (OSError, ValueError) as e:  # pyarrow's errors subclass these; JSON errors are ValueErrors
        raise DataError(f"Cannot read MUSE file '{path}': {e}") from None
    except Exception as e:  # pyarrow.lib.ArrowInvalid is a ValueError; anything else is still a bad file
        raise DataError(f"Cannot read MUSE file '{path}': {type(e).__name__}: {e}") from None


def load_muse(subset: str, split: str, root: str | os.PathLike | None = None, corpus: str = "news",
              limit: int | None = None) -> list[dict[str, Any]]:
    """Load one MUSE split as a list of dicts with the subset's fields (see module docstring).

    Args:
        subset, split: e.g. ``("verbmem", "forget")`` or ``("knowmem", "retain_qa")``.
        root: a local MUSE folder; None loads ``HUB_IDS[corpus]`` from the hub.
        corpus: ``news`` or ``books`` (only used with the hub).
        limit: keep the first N records.
    """
    if subset not in SUBSETS:
        raise DataError(f"Unknown MUSE subset '{subset}'.{did_you_mean(subset, list(SUBSETS))} Subsets: {', '.join(SUBSETS)}.")
    if split not in SUBSETS[subset]:
        raise DataError(f"Unknown split '{split}' of MUSE subset '{subset}'.{did_you_mean(split, list(SUBSETS[subset]))} "
                        f"Splits: {', '.join(SUBSETS[subset])}.")
    fields = FIELDS.get(subset, ("text",))
    if root is None:
        if corpus not in HUB_IDS:
            raise DataError(f"MUSE corpus must be one of {sorted(HUB_IDS)}, got {corpus!r}.")
        from .records import load_records

        return load_records(f"hub:{HUB_IDS[corpus]}", name=subset, split=split, limit=limit)
    records: list[dict[str, Any]] = []
    for path in _files(Path(root).expanduser(), subset, split):
        rows = _read(path)
        if not isinstance(rows, list):
            raise DataError(f"MUSE file '{path}' must hold a list of records, got {type(rows).__name__}.")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or any(not isinstance(r.get(f), str) for f in fields):
                got = sorted(r) if isinstance(r, dict) else type(r).__name__
                raise DataError(f"MUSE file '{path}', record {i}: expected string fields {list(fields)}, got {got}.")
            records.append({f: r[f] for f in fields})
    if not records:
        raise DataError(f"MUSE split '{subset}/{split}' in '{root}' is empty.")
    return records[:limit] if limit else records
