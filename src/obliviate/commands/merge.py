"""``obliviate merge``: merge fine-tuned/unlearned models (or LoRA adapters) that share a base.

    obliviate merge --base runs/x/base --models runs/x/subsets/a/model runs/x/subsets/b/model \\
        --out merged --method ties --density 0.2 --lam 1.0
    obliviate merge --base B --models M1 M2 --out merged --preset mergekit          # = mergekit ties
    obliviate merge --base base_dir --models lora_a lora_b --out merged --method task_arithmetic --dare-p 0.3

TIES presets (an option given explicitly wins over its preset):
  paper     the TIES reference code (default): trim each task vector over the whole flattened
            model, keeping int(d*n)+1 entries plus ties at the threshold; a zero trimmed sum
            takes the majority of the elected signs over the whole model; disjoint mean.
  mergekit  mergekit's `ties` with normalize: true, bit for bit: per tensor, exactly
            max(1, int(d*n)) entries in torch.argsort order; a zero sum elects +.
            --no-normalize gives its `normalize: false` (disjoint sum).
  legacy    obliviate 0.1: per tensor, ceil(d*n) entries plus ties; the tensor's majority sign.

DARE masks are seeded per (seed, tensor name, model index): reproducible, and the same in
streaming and in-memory merges, but not mergekit's random stream.

Streams tensor by tensor (peak memory: a few copies of the largest tensor, whatever the number of
models). The output is written next to --out and moved into place only when complete; an --out
that is, contains or lies inside the base or an input model is refused, even with --overwrite.
"""

from __future__ import annotations

import argparse

HELP = "merge models sharing a base (TIES, task arithmetic, linear, DARE)"


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help=HELP, description=HELP + ".", epilog=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the common base model (directory or .safetensors file)")
    p.add_argument("--models", required=True, nargs="+", help="model directories/files or LoRA adapter directories")
    p.add_argument("--out", "-o", required=True, help="output directory (or .safetensors file when --base is a file)")
    p.add_argument("--method", default="ties", choices=["ties", "task_arithmetic", "linear"])
    p.add_argument("--density", type=float, default=0.2, help="TIES: fraction of entries kept (default 0.2)")
    p.add_argument("--lam", type=float, default=1.0, help="lambda: scale of the merged task vector (default 1)")
    p.add_argument("--dare-p", type=float, default=None, help="DARE drop probability (default: no DARE)")
    p.add_argument("--weights", type=float, nargs="*", default=[],
                   help="per-model weights: linear (normalised) or ties (mergekit's weights)")
    p.add_argument("--seed", type=int, default=0, help="DARE seed")
    p.add_argument("--preset", default="paper", choices=["paper", "mergekit", "legacy"],
                   help="TIES rules (default paper; see below); the four options below override it")
    p.add_argument("--trim-scope", choices=["tensor", "model"], default=None,
                   help="TIES: trim per tensor or over the whole flattened model (also the scope of --sign-tie majority)")
    p.add_argument("--trim-count", choices=["ceil_ties", "int_plus_one_ties", "int_exact"], default=None,
                   help="TIES: entries kept of n: ceil(d*n) + ties | int(d*n)+1 + ties | exactly max(1, int(d*n))")
    p.add_argument("--sign-tie", choices=["majority", "positive"], default=None,
                   help="TIES: sign elected where the trimmed sum is exactly 0")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="TIES: mean of the agreeing entries (default) or, with --no-normalize, their sum")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..merge import MergeConfig, merge_files
    from ..merge.stream import check_out

    check_out(args.base, args.models, args.out)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"Output '{args.out}' exists; choose another --out or pass --overwrite.")
    if out.exists() and out.is_dir() != Path(args.base).is_dir():
        kind = "directory" if out.is_dir() else "file"
        raise ConfigError(f"Output '{args.out}' is a {kind}, but merging base '{args.base}' writes a "
                          f"{'directory' if Path(args.base).is_dir() else 'file'}; remove it or choose another --out.")
    cfg = MergeConfig(method=args.method, density=args.density, lam=args.lam, dare_p=args.dare_p,
                      weights=tuple(args.weights), seed=args.seed, preset=args.preset, trim_scope=args.trim_scope,
                      trim_count=args.trim_count, sign_tie=args.sign_tie, normalize=args.normalize)
    merged = merge_files(args.base, args.models, args.out, cfg)
    rules = (f", preset={cfg.preset} (trim_scope={cfg.trim_scope}, trim_count={cfg.trim_count}, "
             f"sign_tie={cfg.sign_tie}, normalize={cfg.normalize})") if cfg.method == "ties" else ""
    print(f"merged {len(args.models)} models ({cfg.method}, density={cfg.density}, lam={cfg.lam}, "
          f"dare_p={cfg.dare_p}{rules}) into {merged}")
    return 0
