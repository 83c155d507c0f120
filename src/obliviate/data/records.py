"""Forget/retain data as records.

A record is a dict. QA records have ``question`` and ``answer`` (strings); text records have
``text``. Every other field is kept as an attribute (``author``, ``target_group``, ...) for
SPUNGE's split and per-attribute evaluation.

``load_records(source)`` reads JSON (a list, or ``{"data": [...]}``), JSON lines, CSV, Parquet,
a Python list of dicts, a ``datasets.Dataset``/``DatasetDict`` split, or a hub id
(``"hub:owner/name"`` or ``"owner/name"`` with ``split=``). Every record is validated: a missing
file, a record without ``question``/``answer``/``text``, a non-string field, or an empty set
raises ``DataError`` naming the file, the record number and the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal

from ..errors import DataError

Kind = Literal["qa", "text"]
REQUIRED: dict[str, tuple[str, ...]] = {"qa": ("question", "answer"), "text": ("text",)}


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        return _parse_file(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); re-save the file as UTF-8.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}).") from None


def _text(path: Path) -> str:
    """The file's text; a UTF-8 error names the line it is on."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line} is not UTF-8 text (byte {e.start}: {e.reason}); re-save the file "
                        f"as UTF-8.") from None


def _parse_file(path: Path) -> list[dict[str, Any]]:
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(path).splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i} is not valid JSON ({e.msg}).") from None
        return rows
    if suffix == ".json":
        text = _text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as whole:
            if text.lstrip().startswith("["):  # a JSON array: its own error, with the position
                raise DataError(f"{path}: not valid JSON: {whole.msg} at line {whole.lineno}, column {whole.colno}.") from None
            # TOFU's files are JSON lines named .json: accept that layout too.
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}: neither JSON ({whole.msg} at line {whole.lineno}, column "
                                        f"{whole.colno}) nor JSON lines (line {i}: {e.msg}, column {e.colno}).") from None
            return rows
        if isinstance(data, dict):
            for key in ("data", "records", "train"):
                if isinstance(data.get(key), list):
                    return data[key]
            raise DataError(f"{path}: a JSON object must hold the records under 'data' (a list).")
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
        return data
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        # every column as text: answers like "1945" stay strings, and empty cells stay "" (not NaN)
        try:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise DataError(f"{path}: not a valid {suffix[1:].upper()} file ({str(e).strip()}).") from None
        return df.to_dict(orient="records")
    if suffix == ".parquet":
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict(orient="records")
        except (ValueError, ImportError) as e:  # pyarrow raises ArrowInvalid (a ValueError) for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({str(e).strip().splitlines()[0]}).") from None
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .json, .jsonl, .csv, .tsv or .parquet.")


def _from_datasets(obj: Any, split: str | None, where: str) -> list[dict[str, Any]]:
    if hasattr(obj, "keys") and hasattr(obj, "values") and not hasattr(obj, "column_names") or (
        hasattr(obj, "column_names") and isinstance(obj.column_names, dict)
    ):  # a DatasetDict
        if split is None:
            raise DataError(f"{where}: a DatasetDict needs split=... (one of {list(obj.keys())}).")
        if split not in obj:
            raise DataError(f"{where}: split '{split}' not found; available: {list(obj.keys())}.")
        obj = obj[split]
    return [dict(r) for r in obj]


def load_records(
    source: str | os.PathLike | Iterable[dict[str, Any]] | Any,
    kind: Kind | None = None,
    split: str | None = None,
    name: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Load and validate records.

    Args:
        source: a file path, a list of dicts, a ``datasets`` Dataset/DatasetDict, or a hub id
            (``hub:owner/name``; needs a network).
        kind: ``"qa"`` or ``"text"``; inferred from the first record when omitted.
        split: the split of a DatasetDict or hub dataset.
        name: the hub dataset's config name (e.g. TOFU's ``forget10``).
        limit: keep only the first ``limit`` records.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    if isinstance(source, (str, os.PathLike)):
        s = str(source)
        if s.startswith("hub:") or (not Path(s).exists() and s.count("/") == 1 and not s.startswith((".", "/", "~"))
                                   and Path(s).suffix == ""):
            import datasets

            hub_id = s.removeprefix("hub:")
            try:
                obj = datasets.load_dataset(hub_id, name, split=split)
            except Exception as e:  # network, missing config...
                raise DataError(f"Could not load hub dataset '{hub_id}' (config {name!r}, split {split!r}): {e}") from None
            rows = _from_datasets(obj, split, where)
        else:
            path = Path(s).expanduser()
            if not path.is_file():
                raise DataError(f"Data file '{path}' does not exist.")
            rows = _read_file(path)
    elif isinstance(source, (list, tuple)):
        rows = list(source)
    else:
        rows = _from_datasets(source, split, where)
    if limit is not None:
        rows = rows[:limit]
    return validate_records(rows, kind=kind, where=where)


def infer_kind(record: dict[str, Any]) -> Kind | None:
    if "question" in record or "answer" in record:
        return "qa"
    if "text" in record:
        return "text"
    return None


def validate_records(rows: list[Any], kind: Kind | None = None, where: str = "records") -> list[dict[str, Any]]:
    """Check every record has string ``question``/``answer`` (qa) or ``text`` (text)."""
    if not rows:
        raise DataError(f"{where}: the data set is empty; it needs at least one record.")
    if kind is None:
        first = rows[0] if isinstance(rows[0], dict) else {}
        kind = infer_kind(first)
        if kind is None:
            raise DataError(
                f"{where}: record 0 has neither 'question'/'answer' (QA) nor 'text' fields; "
                f"its fields are {sorted(first)}. Rename the columns or pass kind=."
            )
    if kind not in REQUIRED:
        raise DataError(f"{where}: kind must be 'qa' or 'text', got {kind!r}.")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"{where}: record {i} is a {type(r).__name__}, not a mapping of fields.")
        for field in REQUIRED[kind]:
            if field not in r:
                raise DataError(
                    f"{where}: record {i} has no '{field}' field (it has {sorted(r)}); "
                    f"{kind} records need {' and '.join(REQUIRED[kind])}."
                )
            if not isinstance(r[field], str):
                raise DataError(
                    f"{where}: record {i} field '{field}' must be a string, got {type(r[field]).__name__} ({r[field]!r:.60})."
                )
            if not r[field].strip():
                raise DataError(f"{where}: record {i} field '{field}' is empty.")
        out.append(dict(r))
    return out


def records_kind(records: list[dict[str, Any]]) -> Kind:
    kind = infer_kind(records[0])
    assert kind is not None, "validate_records guarantees a kind"
    return kind
