"""``obliviate attack``: knowledge-recovery attacks on an unlearned model, as a robustness table.

    obliviate attack --model runs/npo/model --original base_dir --forget forget.jsonl --out runs/npo
    obliviate attack ... --suite relearn,quant --set relearn.steps=20 --set relearn.lr=5e-5

Writes ``<out>/attacks.json`` and ``<out>/attacks.md`` and prints the Markdown table.
"""

from __future__ import annotations

import argparse

EPILOG = """examples:
  obliviate attack --model runs/npo/model --original smollm2-135m --forget forget.jsonl --out runs/npo
  obliviate attack --model runs/npo/model --original base --forget f.jsonl --suite quant,prompt --out runs/npo
  obliviate attack ... --set relearn.steps=20 --set relearn.group_by=person --set prompt.templates=[role-play,french]

suites: relearn (fine-tune on part of the forget set, test on the rest), quant (int8/int4 RTN
round-trip), probe (logit lens + linear truth probe), prompt (fixed templates, worst case)."""


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help="knowledge-recovery attacks (relearning, quantisation, probing, prompts)",
                       description="Run knowledge-recovery attacks on an unlearned model and write a robustness table.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the unlearned model (directory or alias)")
    p.add_argument("--original", required=True, help="the model before unlearning (directory or alias)")
    p.add_argument("--forget", required=True, help="forget-set records (QA: question/answer), any format load_records reads")
    p.add_argument("--suite", default="relearn,quant,probe,prompt", help="comma-separated attacks (default: all)")
    p.add_argument("--out", required=True, help="directory for attacks.json and attacks.md")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an attack setting, e.g. relearn.steps=20")
    p.add_argument("--template", default="auto", help="prompt template of the QA encoding (auto, chat, plain, or a string with {question})")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..attacks import AttackSuiteConfig, markdown_table, run_attacks, write_table
    from ..config import apply_overrides, from_dict
    from ..data.encode import EncodeConfig
    from ..data.records import load_records
    from ..models import load_model

    raw = apply_overrides({"suite": [s.strip() for s in args.suite.split(",") if s.strip()], "seed": args.seed}, args.set)
    cfg = from_dict(AttackSuiteConfig, raw, where="attack")
    encode = from_dict(EncodeConfig, {"template": args.template}, where="data")
    forget = load_records(args.forget, kind="qa")
    model, tok = load_model(args.model, dtype=args.dtype)
    original, _ = load_model(args.original, dtype=args.dtype)
    rows = run_attacks(model, tok, original, forget, cfg, encode)
    meta = {"model": str(args.model), "original": str(args.original), "forget": str(args.forget),
            "n_forget": len(forget), "suite": list(cfg.suite), "seed": cfg.seed}
    write_table(rows, args.out, meta, title=f"Robustness of {args.model}")
    print(markdown_table(rows, title=f"Robustness of {args.model}"), end="")
    return 0
