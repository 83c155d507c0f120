"""Streaming merge: model files in, merged file out, one tensor at a time.

    from obliviate.merge import MergeConfig, merge_files
    merge_files("base_dir", ["run_a/model", "run_b/model", "lora_run/adapter"], "merged_dir",
                MergeConfig(method="ties", density=0.2, lam=1.0))

For each tensor of the base, the task vector of model i is read from its file when it is needed
(TIES reads each model twice: once to elect the sign, once for the disjoint mean) and the merged
tensor is written straight to the output. Peak memory is therefore a few copies of the largest
tensor, whatever k and the model size (see ``benchmarks/spunge_scaling.py``).

Inputs can be full model directories / ``.safetensors`` files, or LoRA adapter directories
(``adapter_config.json`` + ``adapter_model.safetensors``), whose task vector is merged in delta
space: tau = scaling * B @ A on the adapted weights (scaling = lora_alpha / r, or
lora_alpha / sqrt(r) with rsLoRA), 0 elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ConfigError, DataError
from ..io import atomic_path
from .ops import MergeConfig, merge_tensor, task_vector
from .stio import ModelFiles, SafetensorsFile, SafetensorsWriter

COPY_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")


class FullSource:
    """Task vectors of a full model: tau = theta_i - theta_0, read per tensor."""

    def __init__(self, path: str | os.PathLike):
        self.files = ModelFiles(path)
        self.path = Path(path)

    def tau(self, name: str, base: torch.Tensor) -> torch.Tensor:
        if name not in self.files:
            raise DataError(f"merge: '{self.path}' has no tensor '{name}' (the base model has it).")
        t = self.files.read(name)
        if t.shape != base.shape:
            raise DataError(f"merge: tensor '{name}' is {tuple(t.shape)} in '{self.path}' but {tuple(base.shape)} in the base.")
        return task_vector(t, base)


class LoraSource:
    """Task vectors of a LoRA adapter run: tau = scaling * B @ A for adapted weights, else 0."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        cfg = json.loads((self.path / "adapter_config.json").read_text())
        r, alpha = cfg["r"], cfg.get("lora_alpha", cfg["r"])
        self.scaling = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.file = SafetensorsFile(self.path / "adapter_model.safetensors")
        self.pairs: dict[str, tuple[str, str]] = {}
        for key in self.file.names():
            if ".lora_A." not in key:
                if ".lora_B." not in key:
                    raise DataError(f"merge: adapter '{self.path}' has tensor '{key}', which is not a LoRA A/B matrix; "
                                    f"merging modules_to_save is not supported.")
                continue
            module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            self.pairs[f"{module}.weight"] = (key, key.replace(".lora_A.", ".lora_B."))

    def tau(self, name: str, base: torch.Tensor) -> torch.Tensor:
        if name not in self.pairs:
            return torch.zeros(base.shape, dtype=torch.float32)
        a_key, b_key = self.pairs[name]
        delta = self.file.read(b_key).float() @ self.file.read(a_key).float() * self.scaling
        return (delta.T if self.fan_in_fan_out else delta).reshape(base.shape)


def open_source(path: str | os.PathLike) -> FullSource | LoraSource:
    p = Path(path)
    return LoraSource(p) if (p / "adapter_config.json").is_file() else FullSource(p)


def merge_files(base: str | os.PathLike, models: Sequence[str | os.PathLike], out: str | os.PathLike,
                cfg: MergeConfig | None = None) -> Path:
    """Merge ``models`` into ``base`` tensor by tensor; write ``out``.

    ``out`` is a directory when ``base`` is a model directory (config and tokenizer files are
    copied from the base, weights go to ``out/model.safetensors``), else a ``.safetensors`` file.
    The output is written atomically.
    """
    cfg = cfg or MergeConfig()
    if not models:
        raise ConfigError("merge: give at least one model to merge.")
    base_p, out_p = Path(base), Path(out)
    base_files = ModelFiles(base_p)
    sources = [open_source(m) for m in models]
    specs = {n: base_files.spec(n) for n in base_files.names()}
    with atomic_path(out_p, is_dir=base_p.is_dir()) as tmp:
        if base_p.is_dir():
            tmp.mkdir(parents=True)
            for name in COPY_FILES:
                if (base_p / name).is_file():
                    shutil.copy2(base_p / name, tmp / name)
            target = tmp / "model.safetensors"
        else:
            target = tmp
        writer = SafetensorsWriter(target, specs)
        try:
            for name in specs:
                b = base_files.read(name)
                writer.write(name, merge_tensor(b, lambda i, n=name, b=b: sources[i].tau(n, b), len(sources), cfg, name))
        finally:
            writer.f.close()
        writer.close()
    return out_p
