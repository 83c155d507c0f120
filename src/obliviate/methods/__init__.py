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
from .ceu import CEU, CEUConfig
from .di import DI, DIConfig
from .dpo import DPO, DPOConfig
from .falcon import FALCON, FALCONConfig
from .ga import GA, GAConfig
from .graddiff import GradDiff, GradDiffConfig
from .idknll import IdkNLL, IdkNLLConfig
from .npo import NPO, NPOConfig
from .pdu import PDU, PDUConfig
from .rmu import RMU, RMUConfig
from .satimp import SatImp, SatImpConfig
from .sft import SFT, SFTConfig
from .simnpo import SimNPO, SimNPOConfig
from .tvn import TVN, TVNConfig
from .wga import WGA, WGAConfig


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
        "dpo": MethodSpec(DPO, DPOConfig, "IdkDPO: DPO preferring a refusal over the forget answer (Zhang et al. 2024)"),
        "idknll": MethodSpec(IdkNLL, IdkNLLConfig, "NLL on a refusal answer to each forget question + retain (TOFU)"),
        "wga": MethodSpec(WGA, WGAConfig, "Weighted gradient ascent, token weight p^beta (Wang et al. 2025)"),
        "satimp": MethodSpec(SatImp, SatImpConfig, "Saturation-importance weighted ascent (Yang et al. 2025)"),
        "ceu": MethodSpec(CEU, CEUConfig, "Cross-entropy unlearning: true token masked from the target (Yang 2025)"),
        "pdu": MethodSpec(PDU, PDUConfig, "Primal-dual: forget loss s.t. retain loss <= epsilon (Entesari et al. 2025)"),
    },
    aliases={"undial": "di", "idkdpo": "dpo"},
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
