"""Safe writes: atomic files and directories, run directories that are never lost half-way.

- ``atomic_path``: write to a temporary sibling, fsync, then rename over the target; a failed
  write (disk full, permissions) leaves the target untouched and raises ``StorageError``.
- ``run_directory``: the life cycle of a run directory (refuse a non-empty one, ``--overwrite``
  replaces the old run only once the new one succeeded, a failed run leaves nothing that looks
  like a run unless it holds a resumable checkpoint).
- ``safetensors_problem``: a cheap header/length check that names a truncated weight file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError, StorageError

#: Markers of an I/O failure in the messages of libraries that do not raise OSError: torch.save
#: ("[enforce fail at inline_container.cc] ... file write failed") and safetensors ("IoError(Os
#: { code: 28, kind: StorageFull ... })").
_IO_MARKERS = ("inline_container", "file write failed", "PytorchStreamWriter", "IoError", "No space left",
               "StorageFull", "os error")


def io_failure(e: BaseException) -> str | None:
    """A short reason if ``e`` is a failed write/read of a file (disk full, permissions), else None."""
    if isinstance(e, StorageError):
        return None
    if isinstance(e, OSError):
        if e.errno == errno.ENOSPC:
            return "no space left on device"
        return e.strerror or str(e)
    text = str(e)
    if isinstance(e, RuntimeError) or type(e).__name__ == "SafetensorError":
        if any(m in text for m in _IO_MARKERS):
            if "No space left" in text or "StorageFull" in text or "code: 28" in text:
                return "no space left on device"
            return "the write failed (" + text.strip().splitlines()[0][:160] + "; is the disk full?)"
    return None


def storage_error(path: str | os.PathLike, reason: str, kept: str = "") -> StorageError:
    """``StorageError`` naming ``path``, the reason, the free space there and what was kept."""
    where = Path(path)
    free = ""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f" ({shutil.disk_usage(probe).free / 2**20:.0f} MiB free there)"
    except OSError:
        pass
    return StorageError(f"Could not write '{where}': {reason}{free}.{(' ' + kept) if kept else ''} "
                        f"Free space (or fix the permissions) and retry.")


@contextmanager
def atomic_path(target: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``.

    On an exception the temporary file/dir is removed and ``target`` is untouched, so a
    crash never leaves a half-written file that a later run would trust. An I/O failure (disk
    full, permissions; also torch's and safetensors' own write errors) becomes ``StorageError``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as e:
        raise storage_error(target, io_failure(e) or str(e)) from None
    work = tmp / target.name  # a directory target is created by the caller
    try:
        try:
            yield work
            _commit(work, target, is_dir)
        except Exception as e:
            reason = io_failure(e)
            if reason is None:
                raise
            raise storage_error(target, reason) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit(work: Path, target: Path, is_dir: bool) -> None:
    """Rename the finished ``work`` over ``target`` (a directory: the old one is moved aside
    first and put back if the rename fails)."""
    if not is_dir:
        with open(work, "rb") as f:
            os.fsync(f.fileno())
        os.replace(work, target)
        return
    if not target.exists():
        os.replace(work, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(work, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def path_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, sorted): what a
    cache key needs to notice that data changed."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f != p:
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and flush (a torn last line is skipped by ``read_jsonl``)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
    except OSError as e:
        raise storage_error(path, io_failure(e) or str(e)) from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
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


#: What makes a run directory worth keeping after a failure: a complete checkpoint to resume from,
#: or a complete model, at its top or nested (SPUNGE's finished subsets).
RECOVERABLE = ("**/checkpoints/step-*/state.json", "**/model/config.json", "**/model/adapter_config.json")


def holds_recoverable_state(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(next(p.glob(g), None) is not None for g in RECOVERABLE)


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a Path, refusing one that is (or lies under) a file."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            what = "is a file" if q == p else f"lies under '{q}', which is a file"
            raise ConfigError(f"Output directory '{p}' {what}; choose a directory path (or move the file).")
    return p


@contextmanager
def run_directory(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Create/claim the run directory ``path`` for the body of the ``with``; never lose a run.

    - A non-empty directory is refused unless ``overwrite`` or ``resume``.
    - ``overwrite``: the old contents are moved aside to a hidden sibling (``.<name>.previous-*``)
      and deleted only when the body succeeds; if it fails, they are moved back, unless the new
      run left a resumable checkpoint, in which case both are kept and the message says where.
    - A new run that fails without a checkpoint or model to keep leaves the directory as it was
      (absent or empty), so simply re-running is not refused as "not empty".
    - ``resume`` of an existing run: nothing is removed, whatever happens.
    Notes on what was kept/restored are added to the exception (``add_note``; the CLI prints them).
    """
    p = check_output_dir(path)
    existing = p.is_dir() and any(p.iterdir())
    if existing and not (overwrite or resume):
        raise ConfigError(f"Run directory '{p}' is not empty. Choose another, pass --overwrite, or --resume to continue it.")
    aside: Path | None = None
    try:
        if existing and overwrite and not resume:
            real = p.resolve()
            if real == Path.cwd().resolve() or real in Path.cwd().resolve().parents:
                raise ConfigError(f"--overwrite cannot replace '{p}': it holds the current directory. Run from "
                                  f"elsewhere, or choose another output_dir.")
            aside = Path(tempfile.mkdtemp(prefix=f".{real.name}.previous-", dir=real.parent))
            os.replace(real, aside)  # onto the empty placeholder: atomic
        created = not p.exists()
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(p, io_failure(e) or str(e)) from None
    try:
        yield p
    except BaseException as e:
        note = _after_failure(p, aside, created, keep_all=existing and aside is None)
        if note and "--resume" in " ".join([str(e), *getattr(e, "__notes__", [])]):
            note = note.replace(f"The unfinished run in '{p}' can be continued with --resume.", "").strip()
        if note:
            e.add_note(note)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _after_failure(p: Path, aside: Path | None, created: bool, keep_all: bool) -> str | None:
    if keep_all:  # a resumed run: everything in it is the user's
        return None
    if holds_recoverable_state(p):
        kept = f" The run that --overwrite was replacing is kept in '{aside}'." if aside else ""
        return f"The unfinished run in '{p}' can be continued with --resume.{kept}"
    shutil.rmtree(p, ignore_errors=True)
    if aside is not None:
        os.replace(aside, p)
        return f"'{p}' was restored as it was (--overwrite replaces a run only once the new one has finished)."
    if not created:
        p.mkdir(exist_ok=True)
    return None


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete safetensors file (empty, truncated, bad header), or None.

    Reads only the header: 8 bytes of little-endian header length, the JSON header, and checks
    that the file holds every byte the tensors' ``data_offsets`` claim."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            if size < 8:
                return "is empty" if size == 0 else f"is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"is truncated: its header alone needs {n + 8} bytes, the file has {size}"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"cannot be read ({e})"
    if not isinstance(header, dict):
        return "has an invalid header"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets", ())) == 2]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"is truncated ({size} of {need} bytes)"
    return None
