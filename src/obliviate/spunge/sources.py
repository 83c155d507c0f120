"""Data sources of a SPUNGE run: files, TOFU splits, and ToxiGen's annotated statements.

``Source`` extends the run config's data source with ``toxigen`` (the annotated CSV, whose text
is a Python bytes literal ``b'...'``; ``label`` picks hate or neutral statements), a field filter
``where`` and a cap ``per_value`` on the records kept for each value of ``group_by``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class Source:
    """Where a set of records comes from."""

    path: str | None = field(default=None, metadata={"help": "A data file, a hub id, or the local folder of 'benchmark'."})
    benchmark: Literal["tofu", "toxigen"] | None = field(default=None, metadata={"help": "'tofu' (path = TOFU folder) or 'toxigen' (path = ToxiGen folder)."})
    split: str | None = field(default=None, metadata={"help": "TOFU split (e.g. forget10) or hub split."})
    label: Literal["hate", "neutral"] | None = field(default=None, metadata={"help": "toxigen: keep only statements with this label."})
    where: dict[str, Any] = field(default_factory=dict, metadata={"help": "Keep records whose fields equal these values."})
    group_by: str | None = field(default=None, metadata={"help": "Field used by per_value (and by the per-group evaluation)."})
    per_value: int | None = field(default=None, metadata={"help": "Keep at most N records for each value of group_by."})
    limit: int | None = field(default=None, metadata={"help": "Keep at most N records in all."})

    def __post_init__(self):
        if self.path is None:
            raise ConfigError("A data source needs 'path' (a file, or the benchmark's local folder).")
        if self.benchmark == "tofu" and not self.split:
            raise ConfigError("The 'tofu' data source needs 'split' (e.g. forget10).")
        if self.per_value is not None and not self.group_by:
            raise ConfigError("'per_value' needs 'group_by' (the field whose values are capped).")

    def load(self) -> list[dict[str, Any]]:
        from ..data import load_records, load_tofu

        if self.benchmark == "tofu":
            rows = load_tofu(self.split, self.path)
        elif self.benchmark == "toxigen":
            rows = load_toxigen(self.path, self.label)
        else:
            rows = load_records(self.path, split=self.split)
        rows = [r for r in rows if all(r.get(k) == v for k, v in self.where.items())]
        if self.per_value is not None:
            seen: dict[Any, int] = {}
            kept = []
            for r in rows:
                v = r.get(self.group_by)
                if seen.get(v, 0) < self.per_value:
                    seen[v] = seen.get(v, 0) + 1
                    kept.append(r)
            rows = kept
        rows = rows[: self.limit] if self.limit else rows
        if not rows:
            raise DataError(f"Data source '{self.path}' has no records left after where={self.where}, label={self.label}.")
        return rows


# annotated_train.csv's target_group -> the group in ToxiGen's prompt file names (prompts/hate_<group>_1k.txt)
TOXIGEN_PROMPT_GROUPS = {"mental_dis": "mental_disability", "physical_dis": "physical_disability"}


def toxigen_prompt_group(group: str) -> str:
    """The prompt-file name of an annotated ``target_group`` (e.g. mental_dis -> mental_disability)."""
    return TOXIGEN_PROMPT_GROUPS.get(group, group)


def load_toxigen(root: str, label: str | None = None) -> list[dict[str, Any]]:
    """ToxiGen's human-annotated statements as text records (``text``, ``target_group``, ``label``, ...)."""
    import pandas as pd

    path = Path(root).expanduser()
    path = path / "annotated_train.csv" if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"ToxiGen file '{path}' not found; point 'path' at the ToxiGen folder (annotated_train.csv).")
    df = pd.read_csv(path, keep_default_na=False)
    out = []
    for r in df.to_dict(orient="records"):
        text = r["text"]
        if isinstance(text, str) and text.startswith(("b'", 'b"')):
            try:
                text = ast.literal_eval(text).decode("utf-8", errors="replace")
            except (ValueError, SyntaxError):
                pass
        if label is not None and r.get("label") != label:
            continue
        out.append({**r, "text": text.strip()})
    return [r for r in out if r["text"]]
