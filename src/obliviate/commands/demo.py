"""``obliviate demo``: the side-by-side unlearning demo on the bundled SmolLM2 (offline)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  obliviate demo                      # full demo (first run plants the facts, then cached)
  obliviate demo --quick              # a shorter version
  obliviate demo --methods npo,ga     # only some methods
  obliviate demo --out runs/my_demo"""


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help="plant facts in SmolLM2, unlearn them with several methods, compare",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer methods and steps (about 3 minutes once the facts are planted)")
    p.add_argument("--methods", default=None, help="comma-separated methods (spunge:<method> for SPUNGE around one)")
    p.add_argument("--steps", type=int, default=None, help="unlearning steps per method")
    p.add_argument("--out", default="runs/demo", help="where to write the run directories and report")
    p.add_argument("--model", default="smollm2-135m", help="model alias or directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import DemoConfig, format_table, run_demo
    from ..methods import METHODS

    cfg = DemoConfig(out=args.out, model=args.model)
    if args.quick:
        # same planted facts as the full demo (one cache serves both), fewer methods and steps
        cfg = DemoConfig(out=args.out, model=args.model, steps=6, methods=("ga", "npo", "rmu"))
    methods = tuple(args.methods.split(",")) if args.methods else cfg.methods
    for m in methods:
        METHODS.canonical(m.split(":")[-1])  # "did you mean" for typos, before any work
    import dataclasses

    cfg = dataclasses.replace(cfg, methods=methods, **({"steps": args.steps} if args.steps else {}))
    rows = run_demo(cfg)
    print()
    print(format_table(rows))
    return 0
