"""The typed config of a CLI run (``obliviate unlearn/finetune --config run.yaml``).

    model: smollm2-135m            # HF directory, hub id, or alias
    forget: {path: forget.jsonl}   # or {benchmark: tofu, split: forget10, path: ../shared/data/tofu}
    retain: {path: retain.jsonl}
    method: {name: npo, beta: 0.1} # or just `method: npo`
    train: {lr: 1.0e-5, max_steps: 50, batch_size: 4}
    data: {max_length: 256, template: auto}
    output_dir: runs/npo
    eval: {suites: [tofu], config: {tofu_dir: ../shared/data/tofu}}   # optional
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .config import from_dict
from .data.encode import EncodeConfig
from .engine.config import TrainConfig
from .eval.config import EvalConfig
from .errors import ConfigError


@dataclass(frozen=True)
class DataSource:
    """Where a set of records comes from."""

    path: str | None = field(default=None, metadata={"help": "A .json/.jsonl/.csv/.parquet file, a hub id (hub:owner/name), or a benchmark's local folder."})
    benchmark: Literal["tofu"] | None = field(default=None, metadata={"help": "Load a benchmark split (path = its local folder; empty = the hub)."})
    split: str | None = field(default=None, metadata={"help": "Benchmark or hub split (e.g. TOFU 'forget10')."})
    name: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N records."})

    def __post_init__(self):
        if self.path is None and self.benchmark is None:
            raise ConfigError("A data source needs 'path' (a file or hub id) or 'benchmark' with 'split'.")
        if self.benchmark and not self.split:
            raise ConfigError(f"The '{self.benchmark}' data source needs 'split' (e.g. forget10).")

    def load(self) -> list[dict[str, Any]]:
        from .data import load_records, load_tofu

        if self.benchmark == "tofu":
            recs = load_tofu(self.split, self.path)
            return recs[: self.limit] if self.limit else recs
        return load_records(self.path, split=self.split, name=self.name, limit=self.limit)


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation run on the finished model (results in ``<output_dir>/eval/``, then the report)."""

    suites: tuple[str, ...] = field(default=(), metadata={"help": "Suites to run after training (tofu, mia, memorisation, mcq, ppl, toxicity); empty: none."})
    config: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Suite settings (data folders, batch size, ...), as for `obliviate eval`."})
    forget_metric: str | None = field(default=None, metadata={"help": "Metric on the report's forget axis, e.g. tofu/forget_quality (default: a guess)."})
    utility_metric: str | None = field(default=None, metadata={"help": "Metric on the report's utility axis, e.g. tofu/model_utility (default: a guess)."})

    def __post_init__(self):
        from .errors import did_you_mean
        from .eval.config import SUITES

        for s in self.suites:
            if s not in SUITES:
                raise ConfigError(f"eval.suites: unknown suite '{s}'.{did_you_mean(s, SUITES)} Suites: {', '.join(SUITES)}.")


@dataclass(frozen=True)
class RunConfig:
    """One unlearning (or fine-tuning) run."""

    model: str = field(metadata={"help": "Model directory, hub id, or alias (see `obliviate models`)."})
    forget: DataSource = field(metadata={"help": "The data to unlearn (for finetune: the training data)."})
    output_dir: str = field(metadata={"help": "Run directory (must be empty unless --overwrite/--resume)."})
    method: dict[str, Any] = field(default_factory=lambda: {"name": "npo"}, metadata={"help": "Method name and its options, e.g. {name: npo, beta: 0.1}."})
    retain: DataSource | None = field(default=None, metadata={"help": "Data whose behaviour to keep (methods that declare retain)."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation settings."})
    data: EncodeConfig = field(default_factory=EncodeConfig, metadata={"help": "Tokenisation settings."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={"help": "Weights dtype when loading."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub (off by default)."})
    eval: EvalSpec = field(default_factory=EvalSpec, metadata={"help": "Evaluate the result (eval/*.json, summary.json, report.html)."})

    def __post_init__(self):
        from .methods import METHODS, build

        name = self.method.get("name")
        if not isinstance(name, str):
            raise ConfigError("'method.name' is required, e.g. method: {name: npo}.")
        if name != "sft":
            METHODS.canonical(name)
        build(name, {k: v for k, v in self.method.items() if k != "name"})  # validates the options


def parse_run_config(data: dict[str, Any]) -> RunConfig:
    data = dict(data)
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    return from_dict(RunConfig, data)
