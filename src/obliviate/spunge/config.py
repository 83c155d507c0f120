"""The typed config of ``obliviate spunge --config spunge.yaml`` (see configs/spunge_*.yaml).

    model: smollm2-135m
    forget: {benchmark: tofu, split: forget10, path: ../shared/data/tofu}
    retain: {benchmark: tofu, split: retain90, path: ../shared/data/tofu, limit: 200}
    method: {name: npo, beta: 0.1}
    train: {lr: 1.0e-5, max_steps: 5}       # per subset; the unsplit base run gets the sum
    split: {by: author}
    overrides: {"3": {lr: 2.0e-5}}          # per-subset method/train options
    merge: {method: ties, density: 0.2, lam: 1.0}   # preset: paper (default), mergekit or legacy
    auto_merge: {densities: [0.1, 0.2, 0.5], lams: [0.5, 1.0, 2.0]}   # optional
    backend: {name: sequential}
    output_dir: runs/spunge_tofu
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import from_dict
from ..data.encode import EncodeConfig
from ..engine.config import TrainConfig
from ..errors import ConfigError
from ..merge import MergeConfig
from .evaluate import EvalSet
from .runner import BackendConfig
from .sources import Source
from .split import SplitConfig


@dataclass(frozen=True)
class AutoMergeConfig:
    """Choose TIES density and lambda on a validation split (the ``auto_merge:`` section)."""

    densities: tuple[float, ...] = field(default=(0.1, 0.2, 0.5), metadata={"help": "Candidate densities (TIES)."})
    lams: tuple[float, ...] = field(default=(0.5, 1.0, 2.0), metadata={"help": "Candidate lambdas."})
    forget_n: int = field(default=32, metadata={"help": "Validation forget records (sampled from the forget set)."})
    retain_n: int = field(default=32, metadata={"help": "Validation retain records (sampled from the retain set)."})
    retain_tolerance: float = field(default=0.1, metadata={"help": "Keep candidates whose retain score is >= (1 - tol) x the original's."})
    seed: int = field(default=0, metadata={"help": "Seed of the validation sample."})

    def __post_init__(self):
        if not self.densities or not self.lams:
            raise ConfigError("'auto_merge.densities' and 'auto_merge.lams' need at least one value each.")
        if not 0 <= self.retain_tolerance < 1:
            raise ConfigError(f"'auto_merge.retain_tolerance' must be in [0, 1), got {self.retain_tolerance}.")


@dataclass(frozen=True)
class SpungeConfig:
    """One SPUNGE run: split -> unlearn each subset -> merge -> evaluate vs. the base method."""

    model: str = field(metadata={"help": "Base model directory or alias."})
    forget: Source = field(metadata={"help": "The data to unlearn."})
    split: SplitConfig = field(metadata={"help": "How to split the forget data."})
    output_dir: str = field(metadata={"help": "Run directory."})
    method: dict[str, Any] = field(default_factory=lambda: {"name": "npo"}, metadata={"help": "Base method and its options."})
    retain: Source | None = field(default=None, metadata={"help": "Retain data (shared by every subset); also the utility eval set."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Per-subset optimisation settings."})
    data: EncodeConfig = field(default_factory=EncodeConfig, metadata={"help": "Tokenisation settings."})
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "Subset value -> method/train options for that subset."})
    merge: MergeConfig = field(default_factory=MergeConfig, metadata={"help": "Merge operator and its settings (TIES rules: preset 'paper' by default, the TIES reference code's; 'mergekit' or 'legacy', or the single options trim_scope/trim_count/sign_tie/normalize)."})
    auto_merge: AutoMergeConfig | None = field(default=None, metadata={"help": "Choose density/lambda on a validation split (overrides merge.density/lam)."})
    backend: BackendConfig = field(default_factory=BackendConfig, metadata={"help": "Where subset runs execute."})
    eval_sets: tuple[EvalSet, ...] = field(default=(), metadata={"help": "Extra evaluation sets (e.g. ToxiGen neutral statements by group)."})
    eval_retain_n: int = field(default=100, metadata={"help": "Retain records scored in the report."})
    run_base: bool = field(default=True, metadata={"help": "Also run the method on the unsplit forget set with the same total steps."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={"help": "Weights dtype."})

    def __post_init__(self):
        from ..methods import METHODS, build

        name = self.method.get("name")
        if not isinstance(name, str):
            raise ConfigError("'method.name' is required, e.g. method: {name: npo}.")
        METHODS.canonical(name)
        build(name, {k: v for k, v in self.method.items() if k != "name"})
        if self.auto_merge is not None and self.retain is None:
            raise ConfigError("'auto_merge' needs 'retain' data for its validation split.")


def parse_spunge_config(data: dict[str, Any]) -> SpungeConfig:
    data = dict(data)
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    return from_dict(SpungeConfig, data)
