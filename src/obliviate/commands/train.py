"""``obliviate unlearn`` and ``obliviate finetune``: one run from a YAML config."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = {
    "unlearn": """examples:
  obliviate unlearn --config configs/npo.yaml
  obliviate unlearn --config configs/npo.yaml --set train.lr=2e-5 --set method.beta=0.2
  obliviate unlearn --config configs/npo.yaml --dry-run
  obliviate unlearn --config configs/npo.yaml --resume""",
    "finetune": """examples:
  obliviate finetune --config configs/finetune_tofu.yaml
  obliviate finetune --config configs/finetune_tofu.yaml --set train.max_steps=10 --overwrite""",
}


def register(sub, name: str) -> None:
    what = "unlearn forget data from a model" if name == "unlearn" else "fine-tune a model (e.g. to plant facts)"
    p = sub.add_parser(name, help=what, description=what, epilog=EXAMPLES[name],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run YAML (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-5")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--overwrite", action="store_true",
                   help="allow a non-empty output_dir: its contents are replaced once the new run has finished (kept if it fails)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue although method, data or train settings differ from the checkpoint's")
    p.add_argument("--merge-adapter", action=argparse.BooleanOptionalAction, default=True,
                   help="with train.lora: save model/ merged into the base (default) or, with --no-merge-adapter, the adapter alone")
    p.set_defaults(func=lambda a: run(a, name))


def run(args, name: str) -> int:
    from ..api import finetune, unlearn
    from ..config import apply_overrides, dump_yaml, load_yaml
    from ..models import load_model
    from ..runconfig import parse_run_config

    from ..errors import ConfigError

    loaded = load_yaml(args.config)
    if not loaded:
        raise ConfigError(f"Config file '{args.config}' is empty; it needs at least model, forget and output_dir "
                          f"(see configs/ for examples).")
    raw = apply_overrides(loaded, args.set)
    if name == "finetune":
        raw["method"] = {"name": "sft"}
    cfg = parse_run_config(raw)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    forget = cfg.forget.load()
    method = dict(cfg.method)
    method_name = method.pop("name")
    model, tok = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    from ..config import to_dict

    options = {**method, **{k: v for k, v in to_dict(cfg.train).items()}, **to_dict(cfg.data)}
    options["adam_betas"] = tuple(options["adam_betas"])
    options["trainable"] = tuple(options["trainable"])
    if name == "finetune":
        result = finetune(model, tok, forget, run_dir=cfg.output_dir, overwrite=args.overwrite, resume=args.resume,
                          merge_adapter=args.merge_adapter, allow_config_change=args.allow_config_change, **options)
    else:
        retain = cfg.retain.load() if cfg.retain else None
        result = unlearn(model, tok, forget, retain, method=method_name, run_dir=cfg.output_dir,
                         overwrite=args.overwrite, resume=args.resume, merge_adapter=args.merge_adapter,
                         allow_config_change=args.allow_config_change, **options)
    from ..io import is_main_process, write_text

    if not is_main_process():  # rank 0 of a multi-process launch writes and evaluates
        return 0
    write_text(f"{cfg.output_dir}/config.yaml", dump_yaml(cfg))
    loss = f", final loss {result.log[-1]['loss']:.4f}" if result.log and "loss" in result.log[-1] else ""
    print(f"done: {result.steps} steps{loss}; model saved to {cfg.output_dir}/model")
    if cfg.eval.suites:
        evaluate_run(result.model, tok, cfg.output_dir, cfg.eval, model_name=f"{cfg.output_dir}/model")
    return 0


def evaluate_run(model, tok, run_dir, spec, model_name: str) -> None:
    """Run ``spec.suites`` on the finished model, record the headline metrics, write the report."""
    from ..eval.api import evaluate
    from ..io import update_summary
    from ..report import build_report

    results = evaluate(model, tok, suites=spec.suites, run_dir=run_dir, config=spec.config, model_name=model_name)
    update_summary(run_dir, forget_metric=spec.forget_metric, utility_metric=spec.utility_metric,
                   eval={suite: {k: m.value for k, m in res.summary.items()} for suite, res in results.items()})
    report = build_report([run_dir], Path(run_dir) / "report.html", title=f"obliviate run {run_dir}")
    print(f"evaluated {', '.join(spec.suites)} -> {run_dir}/eval/; report: {report.html}")
