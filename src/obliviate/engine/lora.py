"""LoRA adapters for any method (via ``peft``): the ``train.lora`` section of a run.

    train: {lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}}

With ``lora`` set, ``engine.train`` wraps the model with ``apply_lora`` before choosing the
trainable parameters: only the adapter matrices train, the base weights stay bit-identical, and
the frozen reference/teacher a method declares is the same model with its adapters disabled
(``Reference(model, disable_adapters=True)``), so no second copy of the weights is held.
Defaults are those of the DI/UNDIAL reference code for GPT-Neo 1.3B and Llama (r = 8,
alpha = 16, dropout 0.05 on q_proj/v_proj). ``save_model(..., merge_adapter=False)`` writes the
adapter alone; the default merges it into an ordinary model directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters W + (alpha / r) * B A on the named linear modules."""

    r: int = field(default=8, metadata={"help": "Adapter rank r."})
    alpha: float = field(default=16.0, metadata={"help": "Scaling numerator: the update is (alpha / r) * B A."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter's input."})
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata={"help": "Module name suffixes to adapt, or ['all-linear']."})
    bias: str = field(default="none", metadata={"help": "Train biases too: 'none', 'all' or 'lora_only'."})
    modules_to_save: tuple[str, ...] = field(default=(), metadata={"help": "Modules trained in full next to the adapters (e.g. lm_head)."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r)."})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"'train.lora.r' must be >= 1, got {self.r}.")
        if not self.alpha > 0:
            raise ConfigError(f"'train.lora.alpha' must be > 0, got {self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'train.lora.dropout' must be in [0, 1), got {self.dropout}.")
        if not self.target_modules:
            raise ConfigError("'train.lora.target_modules' is empty: name modules such as [q_proj, v_proj] or [all-linear].")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"'train.lora.bias' must be 'none', 'all' or 'lora_only', got {self.bias!r}.")


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(getattr(model, "module", model), "peft_config")


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap ``model`` in a peft ``PeftModel`` with fresh LoRA adapters (B = 0, so it computes the
    same function as before). The base modules are modified in place; use the returned model.
    A model that already has adapters is returned unchanged."""
    if is_peft(model):
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - peft is a dependency
        raise ConfigError("train.lora needs the 'peft' package: pip install peft") from None
    targets = settings.target_modules
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias=settings.bias,
        target_modules="all-linear" if targets == ("all-linear",) else list(targets),
        modules_to_save=list(settings.modules_to_save) or None, use_rslora=settings.use_rslora, task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"'train.lora.target_modules' {list(targets)} does not fit this model ({e}). "
            f"Its linear modules are named: {', '.join(linear)}."
        ) from None


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter (LoRA) parameters of a peft model, by name."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n}
