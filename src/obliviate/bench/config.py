"""Typed configs of ``obliviate bench tofu`` and ``obliviate bench muse`` (CLI flags or YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Recipe:
    """How the target and retain models are fine-tuned (the same recipe for both)."""

    lr: float = field(default=1e-5, metadata={"help": "Peak learning rate (TOFU: 1e-5)."})
    epochs: float = field(default=5.0, metadata={"help": "Passes over the fine-tuning data (TOFU: 5)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per micro-step."})
    grad_accum: int = field(default=4, metadata={"help": "Micro-steps per optimizer step (TOFU: effective batch 32)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (TOFU: 0.01)."})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Linear warm-up length in epochs (TOFU: one epoch), then linear decay."})
    seed: int = field(default=0, metadata={"help": "Data order seed."})

    def __post_init__(self):
        if not self.lr > 0 or not self.epochs > 0 or self.batch_size < 1 or self.grad_accum < 1 or self.warmup_epochs < 0:
            raise ConfigError(f"bench recipe: lr and epochs must be > 0, batch_size and grad_accum >= 1, "
                              f"warmup_epochs >= 0; got {self}.")

    def train_options(self, n_records: int) -> dict[str, Any]:
        """Options for ``obliviate.finetune`` on ``n_records`` records."""
        per_epoch = max(1, -(-n_records // (self.batch_size * self.grad_accum)))
        return dict(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, grad_accum=self.grad_accum,
                    weight_decay=self.weight_decay, warmup_steps=int(round(self.warmup_epochs * per_epoch)),
                    scheduler="linear", seed=self.seed, max_grad_norm=1.0)


TOFU_LR = 1e-5
"""TOFU's fine-tuning (and unlearning) learning rate."""

RECIPES: dict[str, Recipe] = {
    # TOFU's own fine-tuning recipe (Maini et al. 2024, finetune.py): for GPUs and 1B+ models.
    "tofu": Recipe(),
    # The CPU default for SmolLM2-135M: same epochs, effective batch and decay, higher learning
    # rate. Measured on authors 0, 198, 199 (60 QA; forget01 = 198, 199): lr 1e-4 reaches forget
    # Q_A_Prob 0.42 / ROUGE-L recall 0.44 (not learned); lr 5e-4 reaches 0.86 / 0.74.
    "cpu": Recipe(lr=5e-4, epochs=5.0, batch_size=8, grad_accum=4, warmup_epochs=0.5),
}

TOFU_METHODS = ("ga", "graddiff", "npo", "simnpo", "rmu", "falcon", "di", "tvn", "dpo", "idknll", "wga", "satimp",
                "ceu", "pdu", "spunge:npo")
MUSE_METHODS = ("ga", "graddiff", "npo", "simnpo", "rmu", "falcon", "di", "tvn", "wga", "satimp", "ceu", "pdu")
QUICK_METHODS = ("ga", "npo", "di", "spunge:npo")


@dataclass(frozen=True)
class BenchConfig:
    """What every bench shares: the models, the methods and their budget, the output directory."""

    model: str = field(default="smollm2-135m", metadata={"help": "Base model (alias, directory or hub id) fine-tuned into the target and retain models."})
    methods: tuple[str, ...] = field(default=TOFU_METHODS, metadata={"help": "Methods to run; 'spunge:<method>' runs SPUNGE (split by author for TOFU, TIES) around one."})
    target: str | None = field(default=None, metadata={"help": "An existing target model directory (skips making one)."})
    retain_model: str | None = field(default=None, metadata={"help": "An existing retain model directory (skips making one)."})
    out: str = field(default="runs/bench", metadata={"help": "Bench directory (leaderboard.json/.md, report.html, one folder per row)."})
    recipe: str = field(default="cpu", metadata={"help": "Fine-tuning recipe of target and retain models: 'cpu' or 'tofu'."})
    recipe_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Recipe fields to change, e.g. {lr: 5e-5}."})
    steps: int = field(default=10, metadata={"help": "Unlearning optimizer steps per method (the same for every method; SPUNGE: per subset). 10: as many optimizer steps as TOFU's protocol takes on forget01 (5 epochs of 40 at batch 32), at batch 8; keeps the CPU default under 45 min with cached models."})
    batch_size: int = field(default=8, metadata={"help": "Unlearning forget (and retain) batch size."})
    max_length: int = field(default=256, metadata={"help": "Token cap of one training sequence."})
    eval_items: int | None = field(default=40, metadata={"help": "Items per eval set that is not the forget split (None: all; 40 = the size of forget01, keeps the CPU default under an hour)."})
    eval_batch_size: int = field(default=16, metadata={"help": "Items per scoring / generation batch."})
    keep_models: bool = field(default=False, metadata={"help": "Save every unlearned model under <out>/<method>/model (about one model size each)."})
    seed: int = field(default=0, metadata={"help": "Seed of every unlearning run."})
    lr_scale: float | None = field(default=None, metadata={"help": "Factor on the learning rate of every method whose shipped lr is TOFU's 1e-5 (None: the recipe's lr / 1e-5 when the bench fine-tunes the target, 1 for a given --target)."})

    def __post_init__(self):
        from ..methods import METHODS

        if self.recipe not in RECIPES:
            raise ConfigError(f"bench 'recipe' must be one of {sorted(RECIPES)}, got {self.recipe!r}.{did_you_mean(self.recipe, list(RECIPES))}")
        self.finetune_recipe()  # validates the overrides
        if not self.methods:
            raise ConfigError("bench 'methods' is empty: name at least one, e.g. --methods npo,ga.")
        for m in self.methods:
            if m in ("target", "retain"):
                raise ConfigError(f"'{m}' is a leaderboard row, not a method.")
            METHODS.canonical(m.split(":", 1)[1] if m.startswith("spunge:") else m)
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"bench 'methods' lists a method twice: {', '.join(self.methods)}.")
        for key in ("steps", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"bench '{key}' must be >= 1, got {getattr(self, key)}.")
        if self.eval_items is not None and self.eval_items < 2:
            raise ConfigError(f"bench 'eval_items' must be >= 2 (or null for all), got {self.eval_items}.")
        if self.lr_scale is not None and not self.lr_scale > 0:
            raise ConfigError(f"bench 'lr_scale' must be > 0 (or null for the recipe's rule), got {self.lr_scale}.")

    def unlearn_lr_scale(self) -> float:
        """The factor on TOFU-rate methods' learning rate (see ``defaults.scaled_lr``).

        TOFU unlearns at the rate it fine-tuned with (1e-5 both); a target taught at 50x that rate
        (the ``cpu`` recipe, 5e-4) is untaught at 50x too, so every likelihood method gets the same
        budget relative to how the facts were learned. A given ``--target`` was made elsewhere
        (e.g. a published TOFU fine-tune at 1e-5): factor 1.
        """
        if self.lr_scale is not None:
            return float(self.lr_scale)
        if self.target is not None:
            return 1.0
        return self.finetune_recipe().lr / TOFU_LR

    def finetune_recipe(self) -> Recipe:
        names = [f.name for f in fields(Recipe)]
        for k in self.recipe_overrides:
            if k not in names:
                raise ConfigError(f"Unknown recipe field '{k}'.{did_you_mean(k, names)} Fields: {', '.join(names)}.")
        return replace(RECIPES[self.recipe], **self.recipe_overrides)

    def quick(self):
        """The ``--quick`` variant: at most four methods, half the steps, 40 items per eval set."""
        return replace(self, methods=tuple(m for m in self.methods if m in QUICK_METHODS) or QUICK_METHODS,
                       steps=max(1, self.steps // 2), eval_items=min(self.eval_items or 40, 40))


@dataclass(frozen=True)
class BenchTofuConfig(BenchConfig):
    """A TOFU leaderboard: target and retain models, every method from the target, one table."""

    tofu_dir: str | None = field(default=None, metadata={"help": "TOFU folder (full.json, forget01.json, ...); None: the hub (needs a network)."})
    forget_split: Literal["forget01", "forget05", "forget10"] = field(default="forget01", metadata={"help": "TOFU forget split."})
    authors: int | None = field(default=20, metadata={"help": "Fine-tune on the first N authors plus the forget split's authors (None: all 200, TOFU 'full')."})
    gen_max_length: int = field(default=200, metadata={"help": "TOFU generation: prompt + answer at most this many tokens."})
    mia_grad_norm: bool = field(default=False, metadata={"help": "Also run the gradient-norm MIA attack (about 20 s of a row's eval on CPU; the leaderboard's privleak uses Min-K%, so it is off by default)."})
    out: str = field(default="runs/bench_tofu", metadata={"help": "Bench directory (leaderboard.json/.md, report.html, one folder per row)."})

    def __post_init__(self):
        super().__post_init__()
        if self.authors is not None and self.authors < 1:
            raise ConfigError(f"bench 'authors' must be >= 1 (or null for all), got {self.authors}.")
        if self.gen_max_length < 1:
            raise ConfigError(f"bench 'gen_max_length' must be >= 1, got {self.gen_max_length}.")


@dataclass(frozen=True)
class BenchMuseConfig(BenchConfig):
    """A MUSE leaderboard: target fine-tuned on raw forget + retain texts, retain model without forget."""

    data: str | None = field(default=None, metadata={"help": "MUSE folder in the hub's layout (raw/, verbmem/, knowmem/, privleak/); None: the hub."})
    corpus: Literal["news", "books"] = field(default="news", metadata={"help": "MUSE corpus (for the hub)."})
    train_items: int | None = field(default=64, metadata={"help": "Texts taken from each of raw/forget, raw/retain1, raw/retain2 for fine-tuning and unlearning (None: all)."})
    methods: tuple[str, ...] = field(default=MUSE_METHODS, metadata={"help": "Methods to run (SPUNGE needs an attribute to split by, which MUSE texts lack)."})
    max_length: int = field(default=512, metadata={"help": "Token cap of one training text (MUSE trains on 2048-token chunks)."})
    eval_max_length: int = field(default=512, metadata={"help": "PrivLeak: tokens scored per text (MUSE: 2048)."})
    out: str = field(default="runs/bench_muse", metadata={"help": "Bench directory."})

    def __post_init__(self):
        super().__post_init__()
        if self.train_items is not None and self.train_items < 1:
            raise ConfigError(f"bench 'train_items' must be >= 1 (or null for all), got {self.train_items}.")
        for m in self.methods:
            if m.startswith("spunge:"):
                raise ConfigError(f"'{m}': MUSE texts have no attribute to split by; SPUNGE runs on TOFU (by author).")
