"""Items/s of the TOFU suite's two workloads on SmolLM2-135M (CPU): batched runner vs a naive per-item loop.

Scoring: teacher-forced answer, paraphrased and 5 perturbed answers of each forget01_perturbed item
(7 sequences an item) -> per-token log-probs and Min-K%++ statistics. Generation: greedy TOFU
answers (prompt + answer <= --gen-max-length tokens). The naive loop runs the same computation one
sequence at a time (generation still with the KV cache), so the ratio isolates batching. Both paths
must agree (scores to 1e-4, generations exactly), which the script checks.

    .venv/bin/python benchmarks/eval_speed.py --items 8 --gen-max-length 80
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def naive_scores(ev, examples):
    from obliviate.data.encode import collate
    from obliviate.eval.runner import token_stats

    out = []
    with torch.no_grad():
        for ex in examples:
            b = collate([{"input_ids": ex["input_ids"], "labels": ex["labels"]}], ev.pad_id)
            out += token_stats(ev.model(input_ids=b["input_ids"]).logits, b["labels"])
    return out


def naive_generate(ev, prompts, budgets):
    eos = ev.tokenizer.eos_token_id
    out = []
    with torch.no_grad():
        for p, n in zip(prompts, budgets):
            seq = ev.model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                    max_new_tokens=n, do_sample=False, pad_token_id=ev.pad_id, eos_token_id=eos,
                                    temperature=None, top_p=None, top_k=None)[0, len(p):].tolist()
            out.append(seq[:seq.index(eos)] if eos in seq else seq)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen-max-length", type=int, default=200)
    ap.add_argument("--tofu-dir", default=os.environ.get("OBLIVIATE_DATA_DIR", "../shared/data") + "/tofu")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    from obliviate import load_model, load_tofu
    from obliviate.eval.runner import Evaluator

    model, tok = load_model(args.model)
    model.eval()
    recs = load_tofu("forget01_perturbed", args.tofu_dir)[:args.items]
    ev = Evaluator(model, tok, batch_size=args.batch_size)
    flat = [{"question": r["question"], "answer": a} for r in recs
            for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]]
    examples = ev.encode(flat)
    per_item = len(examples) / len(recs)

    t0 = time.perf_counter()
    batched = ev.score(examples)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_scores(ev, examples)
    t_naive = time.perf_counter() - t0
    err = max(float((a["logprobs"] - b["logprobs"]).abs().max()) for a, b in zip(batched, naive))
    assert err < 1e-4, f"batched and naive scores differ by {err}"
    print(f"scoring   ({per_item:.0f} sequences/item): batched {len(recs) / t_batched:7.2f} items/s | "
          f"naive {len(recs) / t_naive:7.2f} items/s | speed-up x{t_naive / t_batched:.2f} (max |diff| {err:.1e})")

    prompts = ev.prompts(recs)
    budgets = [max(1, args.gen_max_length - len(p)) for p in prompts]
    t0 = time.perf_counter()
    g_batched = ev.generate(prompts, budgets)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_naive = naive_generate(ev, prompts, budgets)
    t_naive = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(g_batched, g_naive))
    print(f"generation (<= {args.gen_max_length} tokens): batched {len(recs) / t_batched:7.2f} items/s | "
          f"naive {len(recs) / t_naive:7.2f} items/s | speed-up x{t_naive / t_batched:.2f} "
          f"(identical generations: {same}/{len(recs)})")


if __name__ == "__main__":
    main()
