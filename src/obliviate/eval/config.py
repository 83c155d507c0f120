"""``EvalConfig``: data paths and settings of every evaluation suite (frozen, validated).

The prompt encoding of an evaluation (``template``, ``system_prompt``, ``max_length``, ``answer_end``) is, per
option: the value given, else the preset's (``preset``, see ``presets.py``), else the encoding the
model was trained with (``run_encoding``: its run's ``config.yaml`` ``data:`` section), else
``EncodeConfig``'s default. ``EvalConfig.encoding`` applies that rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data.encode import EncodeConfig
from .attention import RULES
from ..errors import ConfigError, did_you_mean

SUITES = ("tofu", "mia", "memorisation", "mcq", "ppl", "toxicity", "muse", "gentox")
FORGET_SPLITS = ("forget01", "forget05", "forget10")
ATTENTION_RULES = RULES
DEFINITIONS = ("obliviate", "open-unlearning")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of ``obliviate.evaluate``; every path may be None when its suite is not run."""

    tofu_dir: str | None = field(default=None, metadata={"help": "TOFU folder (forget01.json, ...); suites tofu, and mia/memorisation by default."})
    forget_split: str = field(default="forget01", metadata={"help": "TOFU forget split: forget01, forget05 or forget10 (holdout split follows)."})
    retain_result: str | None = field(default=None, metadata={"help": "Run dir (or eval/tofu.json) of the retain model's TOFU eval, for forget quality."})
    max_items: int | None = field(default=None, metadata={"help": "Use only the first N items of every split (quick runs)."})
    gen_max_length: int = field(default=200, metadata={"help": "TOFU generation: prompt + answer at most this many tokens (TOFU's max_length)."})
    gen_max_new_tokens: int | None = field(default=None, metadata={"help": "TOFU generation: at most this many new tokens whatever the prompt length (open-unlearning: 200); unset: the gen_max_length cap."})
    preset: str | None = field(default=None, metadata={"help": "Named settings of a published evaluation: open-unlearning or tofu (eval/presets.py); options given explicitly override it."})
    template: str | None = field(default=None, metadata={"help": "Prompt template: auto, chat, plain or a string with {question} (unset: the preset's, else the run's data.template, else auto)."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message for chat templates; '' for none (unset: the preset's, else the run's data.system_prompt)."})
    max_length: int | None = field(default=None, metadata={"help": "Scored sequences cut to this many tokens (unset: the preset's, else the run's data.max_length, else 256)."})
    answer_end: str | None = field(default=None, metadata={"help": "What is scored after the answer: 'eos' or 'chat_turn' (the chat template's end of turn + EOS, open-unlearning) (unset: the preset's, else the run's data.answer_end, else eos)."})
    attention_rule: str | None = field(default=None, metadata={"help": "Attention of every eval forward: 'tokens' (real tokens) or 'not_pad' (open-unlearning: tokens equal to the pad id masked too, eval/attention.py) (unset: the preset's, else tokens)."})
    definitions: str | None = field(default=None, metadata={"help": "Metric definitions: 'obliviate' or 'open-unlearning' (extraction strength, exact memorisation, Min-K%(++), zlib, grad-norm and privleak as that framework computes them; eval/metrics.py) (unset: the preset's, else obliviate)."})
    batch_size: int = field(default=16, metadata={"help": "Items per forward / generate batch."})
    mia_forget: str | None = field(default=None, metadata={"help": "Member records for MIA (default: the TOFU forget split)."})
    mia_holdout: str | None = field(default=None, metadata={"help": "Non-member records for MIA (default: the TOFU holdout split)."})
    mia_k: float = field(default=0.4, metadata={"help": "Fraction k of lowest tokens for Min-K% and Min-K%++."})
    mia_grad_norm: bool = field(default=True, metadata={"help": "Also run the gradient-norm attack (a forward and a backward per batch of items, by ghost norms: about 20 s for TOFU's 80 items on 2 CPU cores)."})
    reference_model: str | None = field(default=None, metadata={"help": "Model for the reference MIA and for fluency perplexity (e.g. the original model)."})
    retain_mia_result: str | None = field(default=None, metadata={"help": "Run dir (or eval/mia.json) of the retain model's MIA eval, for privleak."})
    memorisation_data: str | None = field(default=None, metadata={"help": "Records (text or QA) for memorisation (default: the TOFU forget split)."})
    el_stride: int = field(default=40, metadata={"help": "EL_n on text records: prompt cut every this many tokens."})
    el_max_new_tokens: int = field(default=100, metadata={"help": "EL_n: at most this many generated tokens per cut."})
    mmlu_dir: str | None = field(default=None, metadata={"help": "MMLU folder with test/ and dev/ CSVs."})
    mmlu_subjects: tuple[str, ...] = field(default=(), metadata={"help": "MMLU subjects to run (empty: all)."})
    mcq_files: tuple[str, ...] = field(default=(), metadata={"help": "Extra MCQ files: MMLU-format CSV or WMDP-format JSON."})
    mcq_shots: int = field(default=0, metadata={"help": "Few-shot examples from MMLU dev (0-5)."})
    wikitext: str | None = field(default=None, metadata={"help": "WikiText-2 test.txt (or its folder) for perplexity and fluency prompts."})
    ppl_max_length: int = field(default=512, metadata={"help": "Perplexity window length in tokens."})
    ppl_stride: int = field(default=256, metadata={"help": "Perplexity window stride in tokens."})
    ppl_max_tokens: int | None = field(default=None, metadata={"help": "Score only the first N tokens of WikiText (quick runs)."})
    fluency_prompts: int = field(default=32, metadata={"help": "Number of fluency prompts (first 32 words of WikiText paragraphs)."})
    fluency_new_tokens: int = field(default=64, metadata={"help": "Greedy tokens generated per fluency prompt."})
    toxigen: str | None = field(default=None, metadata={"help": "ToxiGen folder (annotated_train.csv, prompts/) or annotated_train.csv; suites toxicity and gentox."})
    toxigen_per_group: int | None = field(default=None, metadata={"help": "At most N hate and N neutral statements per group."})
    rtp: str | None = field(default=None, metadata={"help": "RealToxicityPrompts folder (rtp_<attribute>.txt) for suite gentox."})
    gentox_per_group: int = field(default=20, metadata={"help": "gentox: the first N prompts of each ToxiGen group and each RealToxicityPrompts attribute."})
    gentox_new_tokens: int = field(default=32, metadata={"help": "gentox: at most this many new tokens per continuation (cut at the first newline)."})
    gentox_temperature: float = field(default=1.0, metadata={"help": "gentox: sampling temperature of the sampled continuations."})
    gentox_top_p: float = field(default=0.9, metadata={"help": "gentox: nucleus (top-p) mass of the sampled continuations."})
    gentox_seed: int = field(default=0, metadata={"help": "gentox: sampling seed (each prompt draws from a generator seeded by it and the prompt)."})
    judge: str = field(default="tfidf", metadata={"help": "gentox: toxicity judge: 'tfidf' (trained on ToxiGen's annotations, cached) or a local HF sequence-classification directory."})
    judge_data: str | None = field(default=None, metadata={"help": "gentox: annotated CSV the 'tfidf' judge is trained on (default: annotated_train.csv of 'toxigen')."})
    judge_toxic_index: int | None = field(default=None, metadata={"help": "gentox: label index of 'toxic' for an HF judge (default: the id2label entry naming toxic/hate, else 1)."})
    muse_dir: str | None = field(default=None, metadata={"help": "MUSE folder (hub layout: verbmem/forget-*.parquet, knowmem/..., privleak/...); None with suite muse: the hub."})
    muse_corpus: str = field(default="news", metadata={"help": "MUSE corpus for the hub: news or books."})
    muse_verbmem_new_tokens: int = field(default=128, metadata={"help": "VerbMem: greedy tokens generated per prefix (MUSE: 128)."})
    muse_knowmem_new_tokens: int = field(default=32, metadata={"help": "KnowMem: greedy tokens generated per question (MUSE: 32)."})
    muse_max_length: int = field(default=2048, metadata={"help": "PrivLeak: tokens scored per text (MUSE: up to 2048)."})
    retain_muse_result: str | None = field(default=None, metadata={"help": "Run dir (or eval/muse.json) of the retain model's MUSE eval, for privleak."})
    muse_retain_auc: float | None = field(default=None, metadata={"help": "The retain model's MUSE Min-K% AUC when no retain eval exists (e.g. MUSE's published 0.4772 for News)."})
    progress: bool = field(default=False, metadata={"help": "Show progress bars with items/s."})

    def __post_init__(self):
        if self.preset is not None:
            from .presets import get_preset

            for key, value in get_preset(self.preset).options.items():
                if getattr(self, key) is None:
                    object.__setattr__(self, key, value)
        if self.forget_split not in FORGET_SPLITS:
            raise ConfigError(f"'forget_split' must be one of {FORGET_SPLITS}, got {self.forget_split!r}.{did_you_mean(self.forget_split, FORGET_SPLITS)}")
        for key in ("gen_max_length", "batch_size", "el_stride", "el_max_new_tokens", "ppl_max_length", "ppl_stride",
                    "fluency_new_tokens", "muse_verbmem_new_tokens", "muse_knowmem_new_tokens", "muse_max_length",
                    "gentox_per_group", "gentox_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1, got {getattr(self, key)}.")
        for key in ("gen_max_new_tokens", "max_length"):
            if getattr(self, key) is not None and getattr(self, key) < (2 if key == "max_length" else 1):
                raise ConfigError(f"'{key}' must be >= {2 if key == 'max_length' else 1} (or unset), got {getattr(self, key)}.")
        if self.template is not None:
            EncodeConfig(template=self.template)  # the same check (and message) as data.template
        if self.answer_end is not None:
            EncodeConfig(answer_end=self.answer_end)  # the same check as data.answer_end
        for key, choices in (("attention_rule", ATTENTION_RULES), ("definitions", DEFINITIONS)):
            value = getattr(self, key)
            if value is not None and value not in choices:
                raise ConfigError(f"'{key}' must be one of {choices}, got {value!r}.{did_you_mean(str(value), choices)}")
        if self.max_items is not None and self.max_items < 2:
            raise ConfigError(f"'max_items' must be >= 2 (KS test and AUC need samples), got {self.max_items}.")
        if self.muse_corpus not in ("news", "books"):
            raise ConfigError(f"'muse_corpus' must be 'news' or 'books', got {self.muse_corpus!r}.")
        if self.gentox_temperature <= 0 or not 0 < self.gentox_top_p <= 1:
            raise ConfigError(f"'gentox_temperature' must be > 0 and 'gentox_top_p' in (0, 1], got "
                              f"{self.gentox_temperature} and {self.gentox_top_p}.")
        if self.muse_retain_auc is not None and not 0 < self.muse_retain_auc <= 1:
            raise ConfigError(f"'muse_retain_auc' must be in (0, 1], got {self.muse_retain_auc}.")
        if not 0 < self.mia_k <= 1:
            raise ConfigError(f"'mia_k' must be in (0, 1], got {self.mia_k}.")
        if self.ppl_stride > self.ppl_max_length:
            raise ConfigError(f"'ppl_stride' ({self.ppl_stride}) must be <= 'ppl_max_length' ({self.ppl_max_length}).")
        if not 0 <= self.mcq_shots <= 5:
            raise ConfigError(f"'mcq_shots' must be between 0 and 5 (MMLU dev has 5 per subject), got {self.mcq_shots}.")

    def encoding(self, trained: EncodeConfig | None = None) -> EncodeConfig:
        """The prompt encoding to evaluate with: this config's options where set (after the
        preset), else ``trained`` (the model's training encoding), else the defaults."""
        base = trained or EncodeConfig()
        return EncodeConfig(
            max_length=self.max_length if self.max_length is not None else base.max_length,
            template=self.template if self.template is not None else base.template,
            system_prompt=(self.system_prompt or None) if self.system_prompt is not None else base.system_prompt,
            answer_end=self.answer_end if self.answer_end is not None else base.answer_end,
        )

    @property
    def ou(self) -> bool:
        """True when metrics follow open-unlearning's definitions (``definitions``)."""
        return self.definitions == "open-unlearning"

    @property
    def holdout_split(self) -> str:
        return self.forget_split.replace("forget", "holdout")

    @classmethod
    def from_options(cls, **options) -> "EvalConfig":
        """Build from keyword options, with a 'did you mean' error for an unknown one."""
        names = [f.name for f in fields(cls)]
        for k in options:
            if k not in names:
                raise ConfigError(f"Unknown eval option '{k}'.{did_you_mean(k, names)} Options: {', '.join(names)}.")
        for k in ("mmlu_subjects", "mcq_files"):
            if k in options and isinstance(options[k], (list, str)):
                options[k] = tuple([options[k]] if isinstance(options[k], str) else options[k])
        return cls(**options)


def run_encoding(*candidates: str | os.PathLike | None) -> tuple[EncodeConfig, str] | None:
    """The training encoding of a run, as ``(EncodeConfig, path of the config it came from)``.

    Each candidate is a run directory or a model directory inside one (``<run>/model``); the first
    run config found (a ``config.yaml`` with ``method`` and a ``data:`` mapping, as written by
    ``obliviate unlearn/finetune`` and ``obliviate.unlearn(..., run_dir=...)``) gives the encoding.
    None when no candidate has one (a base model, a hub id, a plain output folder).
    """
    import yaml

    from ..config import from_dict

    names = {f.name for f in fields(EncodeConfig)}
    for c in candidates:
        if c is None:
            continue
        p = Path(c)
        places = [p / "config.yaml"] + ([p.parent / "config.yaml"] if (p / "config.json").is_file() else [])
        for cfg_path in places:
            if not cfg_path.is_file():
                continue
            try:
                raw = yaml.safe_load(cfg_path.read_text())
            except yaml.YAMLError:
                continue  # not a run config we wrote
            if isinstance(raw, dict) and "method" in raw and isinstance(raw.get("data"), dict):
                data = {k: v for k, v in raw["data"].items() if k in names}
                return from_dict(EncodeConfig, data, where=f"{cfg_path}: data"), str(cfg_path)
    return None
