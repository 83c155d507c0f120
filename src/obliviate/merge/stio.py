"""Minimal safetensors reading and writing, one tensor at a time, without mmap.

``safetensors.safe_open`` memory-maps whole files, so every tensor read stays resident in the
process (RSS grows to the size of all k inputs). The format is simple (an 8-byte little-endian
header length, a JSON header of dtype/shape/byte offsets, then raw little-endian data), so we read
each tensor with a plain ``seek`` + ``readinto`` and write the output header first, then each
tensor in order. Files written here load with ``safetensors.torch.load_file``.

Model directories (``model.safetensors`` or a sharded ``model.safetensors.index.json``) are
read through ``ModelFiles``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from ..errors import DataError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """Header of one ``.safetensors`` file and tensor reads by name."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"'{self.path}' does not exist (expected a .safetensors file or a model directory).")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", None) or {}
        self.header = header
        self.start = 8 + n

    def names(self) -> list[str]:
        return list(self.header)

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        h = self.header[name]
        if h["dtype"] not in DTYPES:
            raise DataError(f"{self.path}: tensor '{name}' has unsupported dtype {h['dtype']}.")
        return DTYPES[h["dtype"]], tuple(h["shape"])

    def read(self, name: str) -> torch.Tensor:
        dtype, shape = self.spec(name)
        a, b = self.header[name]["data_offsets"]
        buf = bytearray(b - a)
        with open(self.path, "rb") as f:
            f.seek(self.start + a)
            f.readinto(buf)
        if not buf:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(shape)


class ModelFiles:
    """All tensors of a model directory (single or sharded safetensors) or of one file."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        self.path = p
        if p.is_dir():
            index = p / "model.safetensors.index.json"
            if index.is_file():
                weight_map = json.loads(index.read_text())["weight_map"]
                files = {f: SafetensorsFile(p / f) for f in sorted(set(weight_map.values()))}
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

    def read(self, name: str) -> torch.Tensor:
        return self._where[name].read(name)


class SafetensorsWriter:
    """Write tensors whose names, dtypes and shapes are known up front, in that order."""

    def __init__(self, path: str | os.PathLike, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
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
        self.next = 0
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        assert name == self.order[self.next], f"tensors must be written in header order ({self.order[self.next]} next)"
        dtype, shape = self.specs[name]
        assert tensor.dtype == dtype and tuple(tensor.shape) == shape, name
        self.f.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self.next += 1

    def close(self) -> None:
        assert self.next == len(self.order), "not every tensor was written"
        self.f.close()
