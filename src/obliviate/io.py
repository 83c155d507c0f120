"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(target: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``.

    On an exception the temporary file/dir is removed and ``target`` is untouched, so a
    crash never leaves a half-written file that a later run would trust.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    work = tmp / target.name  # a directory target is created by the caller
    try:
        yield work
        if is_dir:
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(work, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(work, target)
        else:
            with open(work, "rb") as f:
                os.fsync(f.fileno())
            os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and flush (a torn last line is skipped by ``read_jsonl``)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash
    return out


def update_summary(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``<run_dir>/summary.json`` (atomically) and return the result.

    ``summary.json`` is a run's one-glance record read by ``obliviate report``: ``method``,
    ``steps``, ``train_time_s``, the final losses, and once evaluated ``forget_metric`` /
    ``utility_metric`` (names like ``tofu/forget_quality`` of the report's trade-off axes).
    """
    path = Path(run_dir) / "summary.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            data = {}
    data.update(fields)
    write_json(path, data)
    return data


def is_main_process() -> bool:
    """True in the process that writes a run's outputs: a plain process, or rank 0 of an
    ``accelerate launch``/``torchrun`` job (both set ``RANK``). The other ranks train alongside
    it and write nothing, so N processes never race on one run directory."""
    return int(os.environ.get("RANK", "0")) == 0
