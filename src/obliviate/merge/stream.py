"""Streaming merge: model files in, merged file out, one tensor at a time.

    from obliviate.merge import MergeConfig, merge_files
    merge_files("base_dir", ["run_a/model", "run_b/model", "lora_run/adapter"], "merged_dir",
                MergeConfig(method="ties", density=0.2, lam=1.0))

For each tensor of the base, the task vector of each model is read once from its file and the
merged tensor is written straight to the output (model-scope TIES, the ``paper`` preset, first
makes two more reading passes to find each model's global trim threshold). Peak memory is
therefore a few copies of the largest tensor, whatever k and the model size (see
``benchmarks/spunge_scaling.py`` and ``benchmarks/merge_speed.py``).

Inputs can be full model directories / ``.safetensors`` files, or LoRA adapter directories
(``adapter_config.json`` + ``adapter_model.safetensors``), whose task vector is merged in delta
space: tau = scaling * B @ A on the adapted weights (scaling = lora_alpha / r, or
lora_alpha / sqrt(r) with rsLoRA), 0 elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ConfigError, DataError, ModelError
from ..io import atomic_path
from .ops import MergeConfig, merge_model
from .stio import ModelFiles, ReadBuffers, SafetensorsFile, SafetensorsWriter

GROUP = 4  # TIES folds up to 4 task vectors per pass: its running sums cross memory once per pass
COPY_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")


class FullSource:
    """Task vectors of a full model: tau = theta_i - theta_0, read per tensor into reused buffers
    (the tensor returned by ``tau`` lives as long as a ``read(..., reuse=True)`` of ``buffers``)."""

    def __init__(self, path: str | os.PathLike, buffers: ReadBuffers | None = None):
        self.files = ModelFiles(path, buffers)
        self.path = Path(path)

    def prefetch(self, name: str, pool) -> None:
        """Start reading tensor ``name`` in the background (see ``ModelFiles.prefetch``)."""
        if name in self.files:
            self.files.prefetch(name, pool)

    def tau(self, name: str, base: torch.Tensor) -> torch.Tensor:
        if name not in self.files:
            raise DataError(f"merge: '{self.path}' has no tensor '{name}' (the base model has it).")
        t = self.files.read(name, reuse=True)  # valid while the read buffers allow (see ReadBuffers)
        if t.shape != base.shape:
            raise DataError(f"merge: tensor '{name}' is {tuple(t.shape)} in '{self.path}' but {tuple(base.shape)} in the base.")
        if t.dtype != torch.float32:  # convert into a shared float32 scratch
            t = self.files.buffers.scratch(t.numel()).view(t.shape).copy_(t)
        return t.sub_(base.float())


class LoraSource:
    """Task vectors of a LoRA adapter run: tau = scaling * B @ A for adapted weights, else 0."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            cfg = json.loads((self.path / "adapter_config.json").read_text(encoding="utf-8"))
            r, alpha = float(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"'{self.path / 'adapter_config.json'}' is not a valid LoRA adapter config (JSON with a "
                             f"numeric 'r'): {e!r}. Re-save the adapter.") from None
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

    def prefetch(self, name: str, pool) -> None:
        """Nothing to prefetch: adapters are small and read whole per tensor."""

    def tau(self, name: str, base: torch.Tensor) -> torch.Tensor:
        if name not in self.pairs:
            return torch.zeros(base.shape, dtype=torch.float32)
        a_key, b_key = self.pairs[name]
        delta = self.file.read(b_key).float() @ self.file.read(a_key).float() * self.scaling
        return (delta.T if self.fan_in_fan_out else delta).reshape(base.shape)


def open_source(path: str | os.PathLike, buffers: ReadBuffers | None = None) -> FullSource | LoraSource:
    p = Path(path)
    return LoraSource(p) if (p / "adapter_config.json").is_file() else FullSource(p, buffers)


def check_out(base: str | os.PathLike, models: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Refuse an output path that is, contains or lies inside the base or an input model: writing
    it would replace (or land inside) an input."""
    o = Path(out).resolve()
    for what, p in [("the base", base)] + [(f"input model {i + 1}", m) for i, m in enumerate(models)]:
        q = Path(p).resolve()
        if o == q or o in q.parents or q in o.parents:
            relation = "is" if o == q else "contains" if o in q.parents else "is inside"
            raise ConfigError(f"merge: the output '{out}' {relation} {what} ('{p}'); merging never writes over its "
                              f"inputs. Choose an --out outside every input.")


def merge_files(base: str | os.PathLike, models: Sequence[str | os.PathLike], out: str | os.PathLike,
                cfg: MergeConfig | None = None) -> Path:
    """Merge ``models`` into ``base`` tensor by tensor; write ``out``.

    ``out`` is a directory when ``base`` is a model directory (config and tokenizer files are
    copied from the base, weights go to ``out/model.safetensors``), else a ``.safetensors`` file.
    The output is written into a temporary sibling and moved into place only when complete (an
    existing ``out`` is replaced then); an ``out`` that is, contains or lies inside an input is
    refused.
    """
    cfg = cfg or MergeConfig()
    if not models:
        raise ConfigError("merge: give at least one model to merge.")
    check_out(base, models, out)
    base_p, out_p = Path(base), Path(out)
    base_files = ModelFiles(base_p)
    # the models are read one after the other: one ring of GROUP + 1 buffers serves them all (the
    # task vectors folded together, the next one being read meanwhile); with k <= GROUP the TIES
    # sums need no full-size buffers, so memory is at most ~10 copies of the largest tensor, any k
    shared = ReadBuffers(depth=GROUP + 1)
    sources = [open_source(m, shared) for m in models]
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
        writer = SafetensorsWriter(target, specs, background=True)
        names = list(specs)
        after = dict(zip(names, names[1:] + names[:1]))  # tensors are visited in this order (each pass)
        pool = ThreadPoolExecutor(2, thread_name_prefix="merge-reader")  # reads overlap the arithmetic

        def base_of(name: str) -> torch.Tensor:
            b = base_files.read(name, reuse=True)
            base_files.prefetch(after[name], pool)
            return b

        def tau_of(i: int, name: str, b: torch.Tensor) -> torch.Tensor:
            t = sources[i].tau(name, b)  # then read the next model's tensor (or the next tensor's first)
            sources[(i + 1) % len(sources)].prefetch(name if i + 1 < len(sources) else after[name], pool)
            return t

        try:
            merge_model(names, base_of, tau_of, len(sources), cfg, writer.write, writer.rewrite, reuse_output=True,
                        group=GROUP)
        except BaseException:
            writer.abort()
            raise
        finally:
            for f in [base_files] + [s.files for s in sources if isinstance(s, FullSource)]:
                f.close()
            pool.shutdown(wait=True)
        writer.close()
    return out_p
