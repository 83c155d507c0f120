"""Named evaluation presets: the settings of a published evaluation, under one name.

    obliviate eval --model M --suite tofu --tofu-dir ../shared/data/tofu --preset open-unlearning --out R
    obliviate.evaluate(model, tok, suites=["tofu"], preset="open-unlearning", tofu_dir=...)
    eval: {suites: [tofu], config: {preset: open-unlearning, tofu_dir: ...}}     # in a run config

A preset is a set of ``EvalConfig`` values. It fills only the options left unset (None); an option
given explicitly wins, so ``--preset open-unlearning --system-prompt ""`` is that preset without a
system prompt. Every option a preset sets must default to None in ``EvalConfig`` ("unset: the
preset's value, else the run's, else the built-in default"); ``test_eval_encoding`` checks it.
To add a setting to a preset (e.g. how a metric is defined), add a None-default field to
``EvalConfig``, read it where it matters, and set it in the presets below.

Resolution order of the prompt encoding (template, system prompt, max length): explicit option >
preset > the encoding the model was trained with (its run's ``data:`` section, see
``config.run_encoding``) > ``EncodeConfig``'s defaults. The result is recorded in every
``eval/<suite>.json`` under ``meta.encoding``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class EvalPreset:
    """The settings of one published evaluation, as ``EvalConfig`` option values."""

    name: str = field(metadata={"help": "What to pass as --preset / preset=."})
    description: str = field(metadata={"help": "Where the settings come from (framework, version, config files)."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "EvalConfig field -> value."})


PRESETS: dict[str, EvalPreset] = {
    "open-unlearning": EvalPreset(
        name="open-unlearning",
        description=(
            "locuslab/open-unlearning's TOFU evaluation (the field's main framework), reproduced item by item: "
            "the tokenizer's chat template with the system prompt 'You are a helpful assistant.' "
            "(configs/model/*.yaml template_args); the assistant turn as the template renders it plus an EOS "
            "is scored (src/data/utils.py preprocess_chat_instance); attention_mask = input_ids != pad_id, "
            "which hides every end-of-turn token when pad == eos (src/data/collators.py; its issue #128); "
            "sequences up to 512 tokens (configs/data/datasets/TOFU_QA_*.yaml); greedy generation of up to 200 "
            "new tokens whatever the prompt length; its extraction strength, exact memorisation, Min-K%(++), "
            "zlib, grad-norm and privleak definitions (src/evals/metrics/memorization.py, utils.py, "
            "privacy.py, mia/*.py). eval/metrics.py lists every difference from obliviate's defaults."
        ),
        options={"template": "chat", "system_prompt": "You are a helpful assistant.", "max_length": 512,
                 "gen_max_new_tokens": 200, "answer_end": "chat_turn", "attention_rule": "not_pad",
                 "definitions": "open-unlearning"},
    ),
    "tofu": EvalPreset(
        name="tofu",
        description=(
            "The original TOFU code (locuslab/TOFU, config/eval_everything.yaml): sequences capped at 200 "
            "tokens; greedy generations too, prompt + answer together (obliviate's default gen_max_length "
            "200, so the budget is 200 - prompt length). TOFU's per-model question templates (e.g. "
            "Llama-2's [INST] ... [/INST]) are not reproduced: the template stays the run's (or 'auto')."
        ),
        options={"max_length": 200},
    ),
}


def get_preset(name: str) -> EvalPreset:
    """The preset called ``name``, or a ConfigError with a "did you mean"."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown eval preset '{name}'.{did_you_mean(name, list(PRESETS))} "
                          f"Presets: {', '.join(PRESETS)}.")
    return PRESETS[name]
