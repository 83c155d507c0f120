"""Minimal safetensors reading and writing, one tensor at a time, without mmap.

``safetensors.safe_open`` memory-maps whole files, so every tensor read stays resident in the
process (RSS grows to the size of all k inputs). The format is simple (an 8-byte little-endian
header length, a JSON header of dtype/shape/byte offsets, then raw little-endian data), so we read
each tensor with ``pread`` (into buffers reused from tensor to tensor, the next one prefetched
in a background thread) and write the output header first, then each tensor in order. Files
written here load with ``safetensors.torch.load_file``.

Every header is checked when a file is opened and every read checks its length, so a truncated,
empty or corrupt file is a ``ModelError`` naming it, never a tensor of zeros. Model directories
(``model.safetensors`` or a sharded ``model.safetensors.index.json``) are read through
``ModelFiles``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import DataError, ModelError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}
#: bytes per element of every safetensors dtype (those torch cannot read here are refused on read)
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "U64": 8, "U32": 4, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on the JSON header


def _corrupt(path: Path, what: str) -> ModelError:
    return ModelError(f"'{path}' is not a valid safetensors file: {what}. The file is truncated or corrupt; "
                      f"re-save or re-copy it (e.g. save the model again with save_pretrained).")


class SafetensorsFile:
    """Header of one ``.safetensors`` file and tensor reads by name.

    The header is checked when the file is opened (length, JSON, each tensor's dtype, shape and
    byte range against dtype x shape and the file size), and every read checks that it got all
    its bytes, so a truncated or corrupt file is a ``ModelError`` naming it, never zeros.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = None
        if not self.path.is_file():
            raise DataError(f"'{self.path}' does not exist (expected a .safetensors file or a model directory).")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _corrupt(self.path, f"it has {size} bytes, fewer than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise _corrupt(self.path, f"its header claims {n} bytes but the file has {size} bytes in all")
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _corrupt(self.path, f"its header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise _corrupt(self.path, "its header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        self.metadata = metadata if isinstance(metadata, dict) else {}
        self.header = header
        self.start = 8 + n
        self._fd: int | None = None  # opened on the first read, kept for the next ones
        for name, h in header.items():
            self._check(name, h, size)

    def _check(self, name: str, h: object, size: int) -> None:
        try:
            dtype, shape, (a, b) = h["dtype"], h["shape"], h["data_offsets"]  # type: ignore[index]
            ok = (dtype in ITEMSIZE and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(a, int) and isinstance(b, int) and 0 <= a <= b)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _corrupt(self.path, f"tensor '{name}' has a malformed header entry {h!r}")
        expected = ITEMSIZE[dtype] * math.prod(shape)
        if b - a != expected:
            raise _corrupt(self.path, f"tensor '{name}' ({dtype} {shape}) should take {expected} bytes but its "
                                      f"offsets give {b - a}")
        if self.start + b > size:
            raise _corrupt(self.path, f"tensor '{name}' ends at byte {self.start + b} but the file has only {size} "
                                      f"bytes ({100 * size / (self.start + b):.0f}% of it)")

    def names(self) -> list[str]:
        return list(self.header)

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        h = self.header[name]
        if h["dtype"] not in DTYPES:
            raise DataError(f"{self.path}: tensor '{name}' has dtype {h['dtype']}, which merging does not support "
                            f"(supported: {', '.join(DTYPES)}).")
        return DTYPES[h["dtype"]], tuple(h["shape"])

    def read(self, name: str, into: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor, read with one ``readinto`` (no mmap) into a fresh writable buffer, or into
        the front of ``into`` (a uint8 buffer of at least its size in bytes, reused by the caller)."""
        dtype, shape = self.spec(name)
        a, b = self.header[name]["data_offsets"]
        buf = torch.empty(b - a, dtype=torch.uint8) if into is None else into[:b - a]
        view, got = memoryview(buf.numpy()), 0
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        while got < b - a:  # pread may return less than asked; 0 means the file ended early
            n = os.preadv(self._fd, [view[got:]], self.start + a + got)
            if n <= 0:
                raise _corrupt(self.path, f"reading tensor '{name}' returned {got} of its {b - a} bytes "
                                          f"(the file shrank while being read?)")
            got += n
        return buf.view(dtype).reshape(shape)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()


class ReadBuffers:
    """A ring of ``depth`` read buffers used in turn (the tensors returned lately, the one being
    prefetched), shareable by several ``ModelFiles`` read one after the other: memory stays
    ``depth`` tensors whatever their number. A tensor read into them stays valid until the
    ``depth - 1``-th read after it returns (with 3: the next read leaves it intact)."""

    def __init__(self, depth: int = 2):
        assert depth >= 2, depth
        self.buffers: list[torch.Tensor | None] = [None] * depth
        self.current = 0  # the buffer of the tensor returned last
        self.pending: tuple[object, str, Future] | None = None  # (reader, name, read in flight into the next)
        self.f32: list[torch.Tensor | None] = [None] * (depth - 1)  # float32 scratch for readers that convert
        self.f32_next = 0

    def get(self, i: int, nbytes: int) -> torch.Tensor:
        if self.buffers[i] is None or self.buffers[i].numel() < nbytes:
            self.buffers[i] = torch.empty(nbytes, dtype=torch.uint8)
        return self.buffers[i]

    @property
    def next(self) -> int:
        return (self.current + 1) % len(self.buffers)

    def scratch(self, n: int) -> torch.Tensor:
        """A float32 buffer of ``n`` entries, the scratches taken in turn (each valid as long as a read)."""
        i, self.f32_next = self.f32_next, (self.f32_next + 1) % len(self.f32)
        if self.f32[i] is None or self.f32[i].numel() < n:
            self.f32[i] = torch.empty(n)
        return self.f32[i][:n]

    def settle(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending[2].result()


class ModelFiles:
    """All tensors of a model directory (single or sharded safetensors) or of one file."""

    def __init__(self, path: str | os.PathLike, buffers: ReadBuffers | None = None):
        p = Path(path)
        self.path = p
        self.buffers = buffers or ReadBuffers()
        if p.is_dir():
            index = p / "model.safetensors.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                    shards = sorted(set(weight_map.values()))
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                    raise ModelError(f"'{index}' is not a valid safetensors index (JSON with a 'weight_map' of tensor "
                                     f"name -> shard file): {e!r}. Re-save the model.") from None
                files = {f: SafetensorsFile(p / f) for f in shards}
                self._where = {n: files[f] for n, f in weight_map.items()}
            elif (p / "model.safetensors").is_file():
                f = SafetensorsFile(p / "model.safetensors")
                self._where = {n: f for n in f.names()}
            else:
                raise DataError(f"'{p}' has neither model.safetensors nor model.safetensors.index.json.")
        else:
            f = SafetensorsFile(p)
            self._where = {n: f for n in f.names()}

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        return self._where[name].spec(name)

    def read(self, name: str, reuse: bool = False) -> torch.Tensor:
        """Tensor ``name``; with ``reuse`` it lives in one of the ring buffers of ``self.buffers``
        (shared with other ``ModelFiles``, no fresh memory per tensor), valid until the
        ``depth - 1``-th ``read(..., reuse=True)`` after it on those buffers returns."""
        if not reuse:
            return self._where[name].read(name)
        ring = self.buffers
        pending, ring.pending = ring.pending, None
        if pending is not None:
            t = pending[2].result()  # wait for it even if unused: it writes into the next buffer
            if pending[0] is self and pending[1] == name:
                ring.current = ring.next
                return t
        ring.current = ring.next
        return self._where[name].read(name, into=ring.get(ring.current, self._nbytes(name)))

    def prefetch(self, name: str, pool: ThreadPoolExecutor) -> None:
        """Start reading ``name`` into the next buffer on ``pool``; the next ``read(name,
        reuse=True)`` on these buffers returns it."""
        ring = self.buffers
        ring.settle()
        spare = ring.get(ring.next, self._nbytes(name))
        ring.pending = (self, name, pool.submit(self._where[name].read, name, spare))

    def _nbytes(self, name: str) -> int:
        a, b = self._where[name].header[name]["data_offsets"]
        return b - a

    def close(self) -> None:
        self.buffers.settle()
        for f in set(self._where.values()):
            f.close()


class SafetensorsWriter:
    """Write tensors whose names, dtypes and shapes are known up front, in that order.

    With ``background`` each ``write`` hands its bytes to one writer thread and returns (at most
    one write in flight: the caller may reuse a tensor's memory from the second ``write`` after
    it on), so writing overlaps the computation of the next tensor.
    """

    def __init__(self, path: str | os.PathLike, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None, background: bool = False):
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, (dtype, shape) in specs.items():
            size = torch.empty((), dtype=dtype).element_size() * int(torch.Size(shape).numel())
            header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.specs = specs
        self.order = list(specs)
        self.offsets = {name: 8 + len(raw) + header[name]["data_offsets"][0] for name in specs}
        self.next = 0
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(raw)) + raw)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="safetensors-writer") if background else None
        self._pending: Future | None = None

    def _bytes(self, name: str, tensor: torch.Tensor) -> memoryview:
        dtype, shape = self.specs[name]
        assert tensor.dtype == dtype and tuple(tensor.shape) == shape, name
        return memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())

    def wait(self) -> None:
        """Wait for the write in flight (re-raising its error, e.g. a full disk)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        assert name == self.order[self.next], f"tensors must be written in header order ({self.order[self.next]} next)"
        data = self._bytes(name, tensor)
        self.wait()
        if self._pool is None:
            self.f.write(data)
        else:
            self._pending = self._pool.submit(self.f.write, data)
        self.next += 1

    def rewrite(self, name: str, tensor: torch.Tensor) -> None:
        """Replace the bytes of a tensor already written (the file stays at its end)."""
        assert self.order.index(name) < self.next, f"'{name}' was not written yet"
        self.wait()
        end = self.f.tell()
        self.f.seek(self.offsets[name])
        self.f.write(self._bytes(name, tensor))
        self.f.seek(end)

    def close(self) -> None:
        """Finish the writes and close; raises if a write failed or a tensor is missing."""
        try:
            self.wait()
            assert self.next == len(self.order), "not every tensor was written"
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without checks (after an error elsewhere)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.f.close()
