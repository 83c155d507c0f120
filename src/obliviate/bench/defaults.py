"""The bench's fixed per-method settings: the shipped ``configs/<method>.yaml`` method section and
learning rate, the same for every run of the bench (no tuning on the test split).

``tests/test_bench.py`` checks that these equal the shipped configs, so the two cannot drift.
Step budget and batch size are bench-wide (``BenchTofuConfig.steps``/``batch_size``), so every
method gets the same number of optimizer steps on the same batches.
"""

from __future__ import annotations

from typing import Any

METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "ga": {"lr": 1e-5},
    "graddiff": {"lr": 1e-5, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    "npo": {"lr": 1e-5, "beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    "simnpo": {"lr": 1e-5, "beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0, "retain_loss": "nll"},
    "rmu": {"lr": 5e-5, "layer": 7, "update_module": "mlp.down_proj", "c": 6.5, "alpha": 1200.0, "scheduler": "constant"},
    "falcon": {"lr": 5e-5, "layer": None, "tau": 0.7, "alpha": 100.0, "retain_loss": "cosine", "combine": "falcon",
               "scheduler": "constant"},
    "di": {"lr": 1e-5, "gamma": 3.0, "alpha": 0.0, "cache": "none"},
    "tvn": {"lr": 1e-5, "lam": 1.0},
    "dpo": {"lr": 1e-5, "seed": 0, "beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    "idknll": {"lr": 1e-5, "seed": 0, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    "wga": {"lr": 1e-5, "beta": 1.0, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    "satimp": {"lr": 1e-5, "beta1": 5.0, "beta2": 1.0, "gamma": 0.1, "alpha": 1.0, "retain_loss": "nll"},
    "ceu": {"lr": 1e-5, "ignore_first": 1, "alpha": 0.0},
    "pdu": {"lr": 1e-5, "alpha": 1.0, "dual_step_size": 1.0, "dual_warmup_steps": 0, "dual_every": 1, "gamma": 1.0,
            "retain_loss": "nll"},
}
# Settings that depend on the bench's data, filled in by the bench (``runner.data_options``):
# ``refusals`` (IdkDPO / IdkNLL: TOFU's idontknow.jsonl next to the TOFU files) and PDU's
# ``epsilon`` (the shipped 2.7 is SmolLM2's retain NLL before fine-tuning; the bench uses the
# target's own mean retain NLL + 0.1, the rule of PDU's README: "somewhat above the starting
# model's retain loss").
TOFU_UNLEARN_LR = 1e-5
DATA_OPTIONS = {"dpo": ("refusals",), "idknll": ("refusals",), "pdu": ("epsilon",)}
PDU_EPSILON_MARGIN = 0.1


def method_options(name: str, lr_scale: float = 1.0) -> dict[str, Any]:
    """The bench options of ``name`` (a registered method; unknown ones run with their config defaults).

    ``lr_scale`` multiplies the lr of the methods that ship TOFU's unlearning rate (1e-5: GA,
    GradDiff, NPO, SimNPO, DI, TVN, the IdK/WGA/SatImp/CEU/PDU family). RMU and FALCON keep their
    papers' rates: they move activations towards a steering target, and their rate was not set
    relative to how the model was fine-tuned (``BenchConfig.unlearn_lr_scale`` gives the factor).
    """
    opts = dict(METHOD_OPTIONS.get(name, {}))
    if lr_scale != 1.0 and opts.get("lr") == TOFU_UNLEARN_LR:
        opts["lr"] = TOFU_UNLEARN_LR * lr_scale
    return opts
