"""The training engine's typed config (the ``train:`` section of a run YAML)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from .lora import LoraSettings


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, budget, precision, logging and checkpointing of one run."""

    lr: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    optimizer: Literal["adamw", "sgd", "sign_momentum"] = field(default="adamw", metadata={"help": "'adamw' (default), 'sgd' (momentum 0.9), or 'sign_momentum' (lr * sign of an EMA of gradients, beta 0.965: FALCON's SophiaG without Hessian updates)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW/SGD weight decay."})
    adam_betas: tuple[float, ...] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas."})
    scheduler: Literal["constant", "linear", "cosine"] = field(default="linear", metadata={"help": "LR decay after warmup."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps."})
    batch_size: int = field(default=4, metadata={"help": "Forget examples per device per micro-step."})
    retain_batch_size: int | None = field(default=None, metadata={"help": "Retain examples per device per micro-step (default: batch_size)."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-steps accumulated per optimizer step."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the global gradient norm (None: no clipping)."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps to run (overrides epochs)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the forget data when max_steps is not set."})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={"help": "Autocast precision where the device supports it."})
    seed: int = field(default=0, metadata={"help": "Seed for data order, initialisation of method state and dropout."})
    log_every: int = field(default=1, metadata={"help": "Write a train_log.jsonl line every N steps."})
    checkpoint_every: int | None = field(default=None, metadata={"help": "Save a resumable checkpoint every N steps, written once the next step proved its state good (None: no periodic ones). A weights-only final checkpoint always guards the model save and is removed once model/ is written."})
    keep_checkpoints: int = field(default=2, metadata={"help": "How many periodic checkpoints to keep."})
    tensorboard: bool = field(default=False, metadata={"help": "Also log to TensorBoard under run_dir/tb (needs tensorboard)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    compile: bool = field(default=False, metadata={"help": "torch.compile each decoder block in place (regional compilation; the first steps pay the compilation). Meant for GPUs (not yet measured there); no gain measured on 2 CPU cores (benchmarks/step_cost.py rows '... compile')."})
    reference_offload: bool = field(default=False, metadata={"help": "Keep the frozen reference/teacher copy in CPU memory and stream it to the device one module at a time for its forwards (with the per-run caches these run about once per example); for models where a second copy does not fit."})
    trainable: tuple[str, ...] = field(default=(), metadata={"help": "Regexes of trainable parameter names, overriding the method's choice (empty: method default). Not with lora (use lora.target_modules)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar with the live losses."})
    lora: LoraSettings | None = field(default=None, metadata={"help": "Train LoRA adapters instead of the full weights (r, alpha, dropout, target_modules); None: full weights."})

    def __post_init__(self):
        def bad(key: str, why: str):
            raise ConfigError(f"'train.{key}' {why}.")

        if not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr}")
        for k in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, k) < 1:
                bad(k, f"must be >= 1, got {getattr(self, k)}")
        if self.retain_batch_size is not None and self.retain_batch_size < 1:
            bad("retain_batch_size", f"must be >= 1, got {self.retain_batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", f"must be >= 1, got {self.max_steps}")
        if not self.epochs > 0:
            bad("epochs", f"must be > 0, got {self.epochs}")
        if self.warmup_steps < 0:
            bad("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", f"must be > 0 or null, got {self.max_grad_norm}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            bad("checkpoint_every", f"must be >= 1 or null, got {self.checkpoint_every}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            bad("adam_betas", f"must be two numbers in [0, 1), got {list(self.adam_betas)}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        for i, pattern in enumerate(self.trainable):
            try:
                re.compile(pattern)
            except re.error as e:
                bad(f"trainable[{i}]", f"{pattern!r} is not a valid regular expression ({e})")
        if self.trainable and self.lora is not None:
            bad("trainable", "cannot be combined with train.lora: with LoRA only the adapters train (choose the adapted "
                "modules with train.lora.target_modules, or train extra modules fully with train.lora.modules_to_save); "
                "remove one of the two")
