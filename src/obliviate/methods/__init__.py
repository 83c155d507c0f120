"""Unlearning methods: an explicit registry of name -> (method class, config class).

Add a method by writing ``methods/<name>.py`` (a config dataclass and a class with ``needs``
and ``loss``; see ``base.py``) and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import from_dict
from ..registry import Registry
from .base import Aux, Batch, LossOutput, Method, Needs, Reference
from .di import DI, DIConfig
from .falcon import FALCON, FALCONConfig
from .ga import GA, GAConfig
from .graddiff import GradDiff, GradDiffConfig
from .npo import NPO, NPOConfig
from .rmu import RMU, RMUConfig
from .sft import SFT, SFTConfig
from .simnpo import SimNPO, SimNPOConfig
from .tvn import TVN, TVNConfig


@dataclass(frozen=True)
class MethodSpec:
    cls: type
    config: type
    summary: str


METHODS: Registry[MethodSpec] = Registry(
    "method",
    {
        "ga": MethodSpec(GA, GAConfig, "Gradient ascent on the forget set"),
        "graddiff": MethodSpec(GradDiff, GradDiffConfig, "Forget ascent + retain NLL/KL (gradient difference)"),
        "npo": MethodSpec(NPO, NPOConfig, "Negative Preference Optimization (Zhang et al. 2024)"),
        "simnpo": MethodSpec(SimNPO, SimNPOConfig, "Reference-free NPO (Fan et al. 2024)"),
        "rmu": MethodSpec(RMU, RMUConfig, "Representation Misdirection for Unlearning (Li et al. 2024, WMDP)"),
        "falcon": MethodSpec(FALCON, FALCONConfig, "Contrastive representation steering + orthogonal gradient projection (Hu et al. 2025)"),
        "tvn": MethodSpec(TVN, TVNConfig, "Task-vector negation: fine-tune on forget, subtract the task vector"),
        "di": MethodSpec(DI, DIConfig, "Deliberate Imagination / UNDIAL self-distillation (Dong et al. 2024)"),
    },
    aliases={"undial": "di"},
)
# Not an unlearning method, but run by the same engine for `obliviate finetune`.
FINETUNE = MethodSpec(SFT, SFTConfig, "Plain fine-tuning (NLL)")


def names() -> list[str]:
    """Names of the registered unlearning methods."""
    return METHODS.names()


def build(name: str, options: dict[str, Any] | Any | None = None) -> Method:
    """Instantiate a method from its name and a config object or dict of options."""
    spec = FINETUNE if name == "sft" else METHODS.get(name)
    if options is None or isinstance(options, dict):
        config = from_dict(spec.config, options or {}, where=METHODS.canonical(name) if name != "sft" else "sft")
    else:
        config = options
    return spec.cls(config)


__all__ = ["Aux", "Batch", "LossOutput", "Method", "Needs", "Reference", "METHODS", "MethodSpec", "names", "build"]
