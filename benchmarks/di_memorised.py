"""DI on memorised text, the DI paper's own setting (issue 15): does Deliberate Imagination remove
verbatim memorisation while keeping generation fluent, where gradient ascent degrades it?

1. Passages: the first ``--passages`` paragraphs of WikiText-2 *valid* (between 40 and 120 words,
   de-tokenised lightly), which SmolLM2 has not memorised.
2. Memorise: fine-tune SmolLM2-135M on them (cached by model, passages and recipe) until EL_10 is
   high; the script prints EL_10 and MA of the memorised model.
3. Unlearn the passages with DI (gamma 3, 10, 30), GA and NPO under the same budget (steps, lr,
   batch), and report per method: EL_3/5/10 and MA (``memorisation`` suite, cuts every 20
   tokens), WikiText-2 *test* perplexity, and rep-2 / distinct-2 of greedy continuations of
   WikiText prompts (``ppl`` suite).

    python benchmarks/di_memorised.py                          # 45 min measured (1 thread, beside 2 other jobs)
    python benchmarks/di_memorised.py --passages 16 --steps 10 --methods di3 ga
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

os.environ.setdefault("OBLIVIATE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "obliviate"))

import obliviate  # noqa: E402
from obliviate.planted import finetuned_model  # noqa: E402

DATA = Path(os.environ.get("OBLIVIATE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "wikitext2"
METHODS = {
    "di3": ("di", {"gamma": 3.0}),
    "di10": ("di", {"gamma": 10.0}),
    "di30": ("di", {"gamma": 30.0}),
    "ga": ("ga", {}),
    "npo": ("npo", {"alpha": 0.0}),
}


def passages(n: int, path: Path) -> list[dict[str, str]]:
    """The first ``n`` WikiText paragraphs of 40-120 words (headings skipped), with WikiText's
    tokenisation undone where it is unambiguous (`` @-@ `` -> ``-``, space before punctuation)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("=") or "<unk>" in line:
            continue
        text = re.sub(r" @(.)@ ", r"\1", line)
        text = re.sub(r" ([.,;:!?)'])", r"\1", text).replace("( ", "(")
        if 40 <= len(text.split()) <= 120:
            out.append({"text": text})
        if len(out) == n:
            break
    return out


def measure(model, tok, recs, args) -> dict[str, float]:
    res = obliviate.evaluate(model, tok, suites=["memorisation", "ppl"], memorisation_data=str(args.passages_file),
                             el_stride=20, el_max_new_tokens=40, wikitext=str(DATA), ppl_max_tokens=args.ppl_tokens,
                             fluency_prompts=16, fluency_new_tokens=48, batch_size=8)
    m, p = res["memorisation"], res["ppl"]
    return {"el_3": m.value("el_3"), "el_5": m.value("el_5"), "el_10": m.value("el_10"),
            "ma": m.value("exact_memorisation"), "wiki_ppl": p.value("wikitext_ppl"), "rep_2": p.value("rep_2"),
            "distinct_2": p.value("distinct_2")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=32)
    ap.add_argument("--memorise-epochs", type=float, default=15.0)
    ap.add_argument("--memorise-lr", type=float, default=2e-4)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--out", default="runs/di_memorised")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recs = passages(args.passages, DATA / "valid.txt")
    args.passages_file = out / "passages.jsonl"
    args.passages_file.write_text("".join(json.dumps(r) + "\n" for r in recs))
    path = finetuned_model("smollm2-135m", recs, dict(lr=args.memorise_lr, epochs=args.memorise_epochs, batch_size=8,
                                                      warmup_steps=2, scheduler="constant", max_length=256, seed=0),
                           kind="memorised", progress=True)
    rows = []
    for label in ["base", "memorised"] + args.methods:  # base: SmolLM2 before memorising, for scale
        model, tok = obliviate.load_model("smollm2-135m" if label == "base" else path)
        if label not in ("base", "memorised"):
            name, opts = METHODS[label]
            obliviate.unlearn(model, tok, recs, method=name, max_steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                              scheduler="constant", progress=False, save=False, seed=0, max_length=256, **opts)
        rows.append((label, measure(model, tok, recs, args)))
        print(label, {k: round(v, 4) for k, v in rows[-1][1].items()}, flush=True)
    (out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                  "rows": dict(rows)}, indent=1))
    print(f"\n{len(recs)} passages; unlearning: {args.steps} steps, lr {args.lr}, batch {args.batch_size}")
    print("| model | EL_3 | EL_5 | EL_10 | MA | WikiText-2 ppl | rep-2 | distinct-2 |")
    print("|---|---|---|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['el_3']:.3f} | {m['el_5']:.3f} | {m['el_10']:.3f} | {m['ma']:.3f} | {m['wiki_ppl']:.2f} | "
              f"{m['rep_2']:.3f} | {m['distinct_2']:.3f} |")


if __name__ == "__main__":
    main()
