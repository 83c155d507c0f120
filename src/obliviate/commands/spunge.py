"""``obliviate spunge``: split -> unlearn each subset -> merge -> evaluate, from one YAML.

    obliviate spunge --config configs/spunge_tofu_forget10.yaml
    obliviate spunge --config configs/spunge_toxigen.yaml --set train.max_steps=2 --set backend.name=ray
    obliviate spunge --config configs/spunge_tofu_forget10.yaml --resume    # skip finished subsets
"""

from __future__ import annotations

import argparse

HELP = "SPUNGE: unlearn per attribute value and merge (Kadhe et al. 2024)"


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help=HELP, description=HELP + ".", epilog=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="SPUNGE YAML (see configs/spunge_*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the split, then exit")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    p.add_argument("--resume", action="store_true", help="continue a run: finished subsets are skipped")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import apply_overrides, dump_yaml, load_yaml
    from ..spunge import parse_spunge_config, run_spunge, split_records

    cfg = parse_spunge_config(apply_overrides(load_yaml(args.config), args.set))
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        subsets = split_records(cfg.forget.load(), cfg.split)
        print("# split: " + ", ".join(f"{k}={len(v)}" for k, v in subsets.items()))
        return 0
    run_spunge(cfg, resume=args.resume, overwrite=args.overwrite)
    print((__import__("pathlib").Path(cfg.output_dir) / "report.md").read_text())
    print(f"report written to {cfg.output_dir}/report.md and report.json")
    return 0
