"""Deliberate Imagination vs gradient ascent (and NPO) under the same step budget (issue 8).

DI's claim (Dong et al. 2024) is that self-distillation towards "imagined" alternatives removes the
memorised answers while generation survives, where GA collapses the model. This script plants the
tests' fact set in SmolLM2-135M (``make_facts(6, 3, seed=1)``, cached), unlearns people 0-2 with
each method at each budget (same steps, lr, batch), and prints per run:

* forget / kept answer probability (TOFU ``Q_A_Prob``; kept facts are never trained on),
* WikiText-2 perplexity (strided, 512/256, the first ``--ppl-tokens`` tokens of test.txt),
* rep-2 and distinct-2 of greedy continuations of 8 WikiText prompts (fluency).

    python benchmarks/di_vs_ga.py                           # ~10 min on 2 CPU cores
    python benchmarks/di_vs_ga.py --steps 6 12 --methods di ga
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OBLIVIATE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "obliviate"))

import obliviate  # noqa: E402
from obliviate.eval import answer_prob  # noqa: E402
from obliviate.planted import planted_model  # noqa: E402

METHODS = {
    "di": {"gamma": 10.0, "cache": "full"},
    "di(g=3)": {"gamma": 3.0, "cache": "full"},
    "ga": {},
    "npo": {"alpha": 0.0},
}


def measure(model, tok, forget, kept, wikitext, ppl_tokens) -> dict[str, float]:
    general = obliviate.evaluate(model, tok, suites=["ppl"], wikitext=wikitext, ppl_max_tokens=ppl_tokens,
                                 fluency_prompts=8, fluency_new_tokens=48, batch_size=8)["ppl"]
    return {"forget_prob": answer_prob(model, tok, forget).mean().item(), "kept_prob": answer_prob(model, tok, kept).mean().item(),
            "wiki_ppl": general.value("wikitext_ppl"), "rep_2": general.value("rep_2"), "distinct_2": general.value("distinct_2")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--steps", nargs="+", type=int, default=[6, 12])
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--wikitext", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2"))
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    args = ap.parse_args()
    text = args.wikitext
    facts = obliviate.make_facts(6, 3, seed=1)
    people = list(dict.fromkeys(f["person"] for f in facts))[:3]
    forget = [f for f in facts if f["person"] in people]
    kept = [f for f in facts if f["person"] not in people]
    path = planted_model("smollm2-135m", facts, steps=20, lr=2e-4, batch_size=6, progress=False)
    rows = []
    model, tok = obliviate.load_model(path)
    rows.append(("planted", 0, measure(model, tok, forget, kept, text, args.ppl_tokens)))
    print(*rows[-1], flush=True)
    for steps in args.steps:
        for label in args.methods:
            model, tok = obliviate.load_model(path)
            name = label.split("(")[0]
            obliviate.unlearn(model, tok, forget, method=name, max_steps=steps, lr=args.lr, batch_size=len(forget),
                              scheduler="constant", progress=False, save=False, seed=0, **METHODS[label])
            rows.append((label, steps, measure(model, tok, forget, kept, text, args.ppl_tokens)))
            print(*rows[-1], flush=True)
    print(f"\nlr={args.lr} batch={len(forget)} (all forget facts) wikitext tokens={args.ppl_tokens}")
    print("| method | steps | forget prob | kept prob | WikiText-2 ppl | rep-2 | distinct-2 |")
    print("|---|---|---|---|---|---|---|")
    for label, steps, m in rows:
        print(f"| {label} | {steps} | {m['forget_prob']:.3f} | {m['kept_prob']:.3f} | {m['wiki_ppl']:.2f} | "
              f"{m['rep_2']:.3f} | {m['distinct_2']:.3f} |")


if __name__ == "__main__":
    main()
