"""``obliviate bench tofu|muse``: a leaderboard of methods on a model that learned the data.

    obliviate bench tofu --tofu-dir ../shared/data/tofu --out runs/bench_tofu            # CPU default
    obliviate bench tofu --tofu-dir ../shared/data/tofu --quick --out runs/bench_quick
    obliviate bench tofu --tofu-dir DIR --methods npo,ga,spunge:npo --target DIR --retain-model DIR
    obliviate bench muse --data path/to/MUSE-News --out runs/bench_muse
    obliviate bench tofu --config bench.yaml --force     # YAML keys: those of obliviate.bench.BenchTofuConfig
"""

from __future__ import annotations

import argparse

HELP = "benchmark methods on a model fine-tuned on the data (TOFU or MUSE leaderboard)"

# config key -> (flag, type, help); flags left unset keep the YAML (or default) value; a ``bool`` flag is a
# switch that sets True.
COMMON = {
    "model": ("--model", str, "base model fine-tuned into the target and retain models (default smollm2-135m)"),
    "methods": ("--methods", str, "comma-separated, e.g. ga,npo,spunge:npo (default: every method)"),
    "target": ("--target", str, "existing target model directory (e.g. a published fine-tune)"),
    "retain_model": ("--retain-model", str, "existing retain model directory"),
    "out": ("--out", str, "bench directory"),
    "recipe": ("--recipe", str, "fine-tuning recipe of target/retain: cpu (default) or tofu (lr 1e-5, 5 epochs, batch 32)"),
    "steps": ("--steps", int, "unlearning steps per method (default 10)"),
    "lr_scale": ("--lr-scale", float, "factor on the lr of methods shipping TOFU's 1e-5 (default: recipe lr / 1e-5, "
                 "i.e. 50 for the cpu recipe; 1 with --target)"),
    "eval_items": ("--eval-items", int, "items per eval set other than the TOFU forget split (default 40; 0 = all)"),
}
KINDS = {
    "tofu": ("TOFU: target/retain models made here, every method, one leaderboard", {
        "tofu_dir": ("--tofu-dir", str, "TOFU folder (as for obliviate eval); default: the hub"),
        "forget_split": ("--forget-split", str, "forget01 (default), forget05 or forget10"),
        "authors": ("--authors", int, "fine-tune on the first N authors + the forget authors (default 20; 0 = all 200)"),
        "mia_grad_norm": ("--mia-grad-norm", bool, "also run the gradient-norm MIA attack (~20 s a row on CPU; "
                                                   "off by default: the leaderboard's privleak is Min-K%%)"),
    }),
    "muse": ("MUSE: the same leaderboard on a MUSE-News/Books folder", {
        "data": ("--data", str, "MUSE folder in the hub's layout; default: the hub"),
        "corpus": ("--corpus", str, "news (default) or books"),
        "train_items": ("--train-items", int, "texts per raw split used for fine-tuning and unlearning (default 64; 0 = all)"),
    }),
}
ZERO_IS_ALL = ("authors", "eval_items", "train_items")


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help=HELP, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for kind, (what, flags) in KINDS.items():
        t = kinds.add_parser(kind, help=what, description=what + ".")
        t.add_argument("--config", help=f"bench YAML (keys of obliviate.bench.Bench{kind.capitalize()}Config)")
        for key, (flag, typ, text) in {**flags, **COMMON}.items():
            if typ is bool:
                t.add_argument(flag, dest=key, action="store_const", const=True, default=None, help=text)
            else:
                t.add_argument(flag, dest=key, type=typ, default=None, help=text)
        t.add_argument("--quick", action="store_true", help="at most four methods, half the steps, 40 items per eval set")
        t.add_argument("--force", action="store_true", help="re-run every row (default: finished rows are reused)")
        t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        t.set_defaults(func=run, flag_keys=tuple({**flags, **COMMON}))


def resolve(args):
    """The bench config of the YAML (if any) with the flags applied."""
    from ..bench import BenchMuseConfig, BenchTofuConfig
    from ..config import from_dict, load_yaml

    data = load_yaml(args.config) if args.config else {}
    for key in args.flag_keys:
        v = getattr(args, key)
        if v is None:
            continue
        if key == "methods":
            v = [m.strip() for m in v.split(",") if m.strip()]
        if key in ZERO_IS_ALL and v == 0:
            v = None
        data[key] = v
    cls = BenchTofuConfig if args.bench == "tofu" else BenchMuseConfig
    cfg = from_dict(cls, data, where="bench")
    return cfg.quick() if args.quick else cfg


def run(args) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from ..bench import run_bench_muse, run_bench_tofu
    from ..config import dump_yaml

    cfg = resolve(args)
    if args.dry_run:
        print(dump_yaml(asdict(cfg)), end="")
        return 0
    (run_bench_tofu if args.bench == "tofu" else run_bench_muse)(cfg, force=args.force)
    out = Path(cfg.out)
    print((out / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"leaderboard: {out / 'leaderboard.json'}, {out / 'leaderboard.md'}; report: {out / 'report.html'}")
    return 0
