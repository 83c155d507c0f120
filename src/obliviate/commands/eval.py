"""``obliviate eval``: run evaluation suites on a model, writing ``<out>/eval/<suite>.json``."""

from __future__ import annotations

import argparse
import dataclasses

EPILOG = """examples:
  obliviate eval --model runs/npo/model --suite tofu --tofu-dir ../shared/data/tofu --out runs/npo
  obliviate eval --model runs/npo/model --suite tofu --tofu-dir ../shared/data/tofu \\
      --retain-result runs/retain --out runs/npo            # adds forget quality
  obliviate eval --model smollm2-135m --suite mcq --mmlu-dir ../shared/data/mmlu --mmlu-subjects anatomy --out runs/base
  obliviate eval --model M --suite ppl --wikitext ../shared/data/wikitext2 --reference-model smollm2-135m --out R
  obliviate eval --model M --suite tofu --suite mia --data-dir ../shared/data/tofu --max-items 10 --out R --force
  obliviate eval --model M --suite tofu --data-dir ../shared/data/tofu --preset open-unlearning --out R
      # open-unlearning's settings and definitions: chat template, system prompt "You are a helpful assistant.",
      # up to 200 new tokens per answer, answer scored with its end of turn + EOS, pad (= end-of-turn) tokens
      # masked out of attention, its ES / Min-K% / privleak formulas (eval/metrics.py lists each); any
      # option given explicitly wins (--system-prompt "", --gen-max-new-tokens 64)

prompt encoding: --template/--system-prompt/--max-length, else the --preset's, else the training run's
data: section (found from --model RUN/model or --out RUN), else the defaults; recorded in each
OUT/eval/<suite>.json under meta.encoding."""

_ALIASES = {"tofu_dir": ["--data-dir"]}


def register(sub, name: str) -> None:
    from ..eval.config import SUITES, EvalConfig

    p = sub.add_parser(name, help="evaluate a model (TOFU, MIA, memorisation, MCQ, perplexity, toxicity)",
                       description="Run evaluation suites; results go to OUT/eval/<suite>.json (existing ones are kept unless --force).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory, hub id or alias (see `obliviate models`)")
    p.add_argument("--suite", action="append", choices=SUITES, required=True, help="suite to run (repeatable)")
    p.add_argument("--out", required=True, help="run directory; results go to OUT/eval/<suite>.json")
    p.add_argument("--force", action="store_true", help="re-run suites whose result file already exists")
    p.add_argument("--dtype", default="float32",
                   help="model dtype (float32, bfloat16, float16). bfloat16 is ~1.7x faster on CPUs with AMX, but "
                        "greedy answers then change at near-ties, even with the batch size (ROUGE moves by up to "
                        "0.03): keep float32 for numbers to compare (benchmarks/RESULTS.md, issue 19)")
    for f in dataclasses.fields(EvalConfig):
        flags = [f"--{f.name.replace('_', '-')}"] + _ALIASES.get(f.name, [])
        helptext = f.metadata.get("help", "").replace("%", "%%")
        if f.type in ("bool",) or isinstance(f.default, bool):
            p.add_argument(*flags, dest=f.name, action="store_true", help=helptext)
        elif f.name in ("mmlu_subjects", "mcq_files"):
            p.add_argument(*flags, dest=f.name, nargs="+", default=None, help=helptext)
        else:
            kind = float if isinstance(f.default, float) else int if isinstance(f.default, int) or "int" in str(f.type) else str
            p.add_argument(*flags, dest=f.name, type=kind, default=None, help=f"{helptext} (default {f.default})")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..eval.api import evaluate
    from ..eval.config import EvalConfig
    from ..models import load_model

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig)
               if getattr(args, f.name) not in (None, False)}
    cfg = EvalConfig.from_options(**options)
    model, tok = load_model(args.model, dtype=args.dtype)
    results = evaluate(model, tok, suites=args.suite, run_dir=args.out, config=cfg, force=args.force, model_name=args.model)
    for name, res in results.items():
        print(f"[{name}] -> {args.out}/eval/{name}.json")
        enc = res.meta.get("encoding")
        if enc:
            print(f"  encoding: template={enc['template']!r} system_prompt={enc['system_prompt']!r} "
                  f"max_length={enc['max_length']} preset={enc['preset']} (run config: {enc['train_encoding_from']})")
        for metric, m in list(res.summary.items())[:20]:
            arrow = "^" if m.higher_is_better else "v"
            print(f"  {metric:32s} {m.value:10.4f} {arrow}")
    return 0
