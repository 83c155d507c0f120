"""``EvalConfig``: data paths and settings of every evaluation suite (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import ConfigError, did_you_mean

SUITES = ("tofu", "mia", "memorisation", "mcq", "ppl", "toxicity")
FORGET_SPLITS = ("forget01", "forget05", "forget10")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of ``obliviate.evaluate``; every path may be None when its suite is not run."""

    tofu_dir: str | None = field(default=None, metadata={"help": "TOFU folder (forget01.json, ...); suites tofu, and mia/memorisation by default."})
    forget_split: str = field(default="forget01", metadata={"help": "TOFU forget split: forget01, forget05 or forget10 (holdout split follows)."})
    retain_result: str | None = field(default=None, metadata={"help": "Run dir (or eval/tofu.json) of the retain model's TOFU eval, for forget quality."})
    max_items: int | None = field(default=None, metadata={"help": "Use only the first N items of every split (quick runs)."})
    gen_max_length: int = field(default=200, metadata={"help": "TOFU generation: prompt + answer at most this many tokens (TOFU's max_length)."})
    batch_size: int = field(default=16, metadata={"help": "Items per forward / generate batch."})
    mia_forget: str | None = field(default=None, metadata={"help": "Member records for MIA (default: the TOFU forget split)."})
    mia_holdout: str | None = field(default=None, metadata={"help": "Non-member records for MIA (default: the TOFU holdout split)."})
    mia_k: float = field(default=0.4, metadata={"help": "Fraction k of lowest tokens for Min-K% and Min-K%++."})
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
    toxigen: str | None = field(default=None, metadata={"help": "ToxiGen folder or annotated_train.csv."})
    toxigen_per_group: int | None = field(default=None, metadata={"help": "At most N hate and N neutral statements per group."})
    progress: bool = field(default=False, metadata={"help": "Show progress bars with items/s."})

    def __post_init__(self):
        if self.forget_split not in FORGET_SPLITS:
            raise ConfigError(f"'forget_split' must be one of {FORGET_SPLITS}, got {self.forget_split!r}.{did_you_mean(self.forget_split, FORGET_SPLITS)}")
        for key in ("gen_max_length", "batch_size", "el_stride", "el_max_new_tokens", "ppl_max_length", "ppl_stride",
                    "fluency_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1, got {getattr(self, key)}.")
        if self.max_items is not None and self.max_items < 2:
            raise ConfigError(f"'max_items' must be >= 2 (KS test and AUC need samples), got {self.max_items}.")
        if not 0 < self.mia_k <= 1:
            raise ConfigError(f"'mia_k' must be in (0, 1], got {self.mia_k}.")
        if self.ppl_stride > self.ppl_max_length:
            raise ConfigError(f"'ppl_stride' ({self.ppl_stride}) must be <= 'ppl_max_length' ({self.ppl_max_length}).")
        if not 0 <= self.mcq_shots <= 5:
            raise ConfigError(f"'mcq_shots' must be between 0 and 5 (MMLU dev has 5 per subject), got {self.mcq_shots}.")

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
