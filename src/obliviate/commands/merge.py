"""``obliviate merge``: merge fine-tuned/unlearned models (or LoRA adapters) that share a base.

    obliviate merge --base runs/x/base --models runs/x/subsets/a/model runs/x/subsets/b/model \
        --out merged --method ties --density 0.2 --lam 1.0
    obliviate merge --base base_dir --models lora_a lora_b --out merged --method task_arithmetic --dare-p 0.3

Streams tensor by tensor (peak memory: a few copies of the largest tensor, whatever the number
of models).
"""

from __future__ import annotations

import argparse

HELP = "merge models sharing a base (TIES, task arithmetic, linear, DARE)"


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help=HELP, description=HELP + ".", epilog=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the common base model (directory or .safetensors file)")
    p.add_argument("--models", required=True, nargs="+", help="model directories/files or LoRA adapter directories")
    p.add_argument("--out", required=True, help="output directory (or .safetensors file when --base is a file)")
    p.add_argument("--method", default="ties", choices=["ties", "task_arithmetic", "linear"])
    p.add_argument("--density", type=float, default=0.2, help="TIES: fraction of entries kept (default 0.2)")
    p.add_argument("--lam", type=float, default=1.0, help="lambda: scale of the merged task vector (default 1)")
    p.add_argument("--dare-p", type=float, default=None, help="DARE drop probability (default: no DARE)")
    p.add_argument("--weights", type=float, nargs="*", default=[], help="linear: per-model weights")
    p.add_argument("--seed", type=int, default=0, help="DARE seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..merge import MergeConfig, merge_files

    if Path(args.out).exists() and not args.overwrite:
        raise ConfigError(f"Output '{args.out}' exists; choose another --out or pass --overwrite.")
    cfg = MergeConfig(method=args.method, density=args.density, lam=args.lam, dare_p=args.dare_p,
                      weights=tuple(args.weights), seed=args.seed)
    out = merge_files(args.base, args.models, args.out, cfg)
    print(f"merged {len(args.models)} models ({cfg.method}, density={cfg.density}, lam={cfg.lam}, "
          f"dare_p={cfg.dare_p}) into {out}")
    return 0
