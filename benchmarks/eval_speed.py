"""Evaluation speed by stage: the Evaluator before issue 19 (kept here as the reference) vs today's, in one run.

Workload: what ``obliviate eval --suite tofu --suite mia --suite memorisation`` asks of the runner,
on the first ``--items`` records of each TOFU set. Scoring: answer, truth-ratio base and perturbed
answers of forget01_perturbed, retain_perturbed, real_authors_perturbed and world_facts_perturbed,
plus the holdout01 answers (MIA). Generation: the greedy TOFU answer of every item (prompt +
answer <= --gen-max-length tokens) and memorisation's forget01 continuations (budget = answer
length).

* old path: length-sorted batches of ``--batch-size`` full sequences, right-padded, logits of every
  position, stats of the scored ones (``old_token_stats``); generation with ``model.generate`` on
  left-padded batches, each batch running until its longest answer ends.
* new path: ``Evaluator`` (prefix trees, head on scored positions only, continuous batching).

Checks: per-token log-prob, mu and sigma within 1e-4 (absolute; per-item mean NLL relative), argmax
matches and greedy generations equal, each mismatch listed. Times are wall and CPU seconds; on a
shared machine only ratios within one run count, and the CPU-time ratio (run with OMP_NUM_THREADS=1)
is the one other jobs disturb least.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --items 16
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --items 4 --attention-rule not_pad
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

SETS = (("forget01_perturbed", "paraphrased_answer"), ("retain_perturbed", "paraphrased_answer"),
        ("real_authors_perturbed", None), ("world_facts_perturbed", None))


# ---- the reference: the runner as it was before issue 19 ---------------------------------------
def old_token_stats(logits: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per-item stats of the scored tokens from logits [B, T, V] and labels [B, T] (-100 = skip)."""
    lg, tg = logits[:, :-1], labels[:, 1:]
    valid = tg != -100
    sel = lg[valid].float()
    lsm = F.log_softmax(sel, dim=-1)
    target = tg[valid]
    lp = lsm.gather(-1, target[:, None]).squeeze(-1)
    match = sel.argmax(-1) == target
    p = lsm.exp()
    mu = (p * lsm).sum(-1)
    sigma = (p * (lsm - mu[:, None]).square()).sum(-1).sqrt()
    counts = valid.sum(-1).tolist()
    return [{"logprobs": a, "match": b, "mu": c, "sigma": d}
            for a, b, c, d in zip(lp.split(counts), match.split(counts), mu.split(counts), sigma.split(counts))]


@torch.no_grad()
def old_score(model, examples, pad_id: int, batch_size: int, rule: str) -> list[dict[str, torch.Tensor]]:
    from obliviate.data.encode import collate
    from obliviate.eval.attention import attention_inputs

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    out: list = [None] * len(examples)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = collate([{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]} for i in idx], pad_id)
        mask, pos = attention_inputs(b["input_ids"], b["attention_mask"], pad_id, rule)
        logits = model(input_ids=b["input_ids"], attention_mask=mask, position_ids=pos).logits
        for i, st in zip(idx, old_token_stats(logits, b["labels"])):
            out[i] = st
    return out


@torch.no_grad()
def old_generate(model, prompts, budgets, pad_id: int, eos: int, batch_size: int, rule: str) -> list[list[int]]:
    from obliviate.data.encode import collate
    from obliviate.eval.attention import attention_inputs

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = collate([{"input_ids": prompts[i]} for i in idx], pad_id, side="left")
        mask, _ = attention_inputs(b["input_ids"], b["attention_mask"], pad_id, rule, generating=True)
        gen = model.generate(input_ids=b["input_ids"], attention_mask=mask, max_new_tokens=max(1, max(budgets[i] for i in idx)),
                             do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos, temperature=None,
                             top_p=None, top_k=None)[:, b["input_ids"].size(1):].tolist()
        for i, seq in zip(idx, gen):
            seq = seq[:budgets[i]]
            out[i] = seq[:seq.index(eos)] if eos in seq else seq
    return out


# ---- workload and comparison ---------------------------------------------------------------------
def workload(ev, tofu_dir: str, items: int, gen_max_length: int):
    from obliviate import load_tofu

    records, prompts, budgets = [], [], []
    for name, base in SETS:
        recs = load_tofu(name, tofu_dir)[:items]
        for r in recs:
            answers = [r["answer"]] + ([r[base]] if base else []) + list(r["perturbed_answer"])
            records += [{"question": r["question"], "answer": a} for a in answers]
        ps = ev.prompts(recs)
        prompts += ps
        budgets += [max(1, gen_max_length - len(p)) for p in ps]
        if name.startswith("forget"):  # memorisation: continue the prompt for |answer| tokens
            prompts += ps
            budgets += [max(1, len(e["labels"]) - len(p)) for e, p in zip(ev.encode(recs), ps)]
    records += load_tofu("holdout01", tofu_dir)[:items]
    return ev.encode(records), prompts, budgets


def compare_scores(old, new) -> str:
    d = {k: max(float((a[k] - b[k]).abs().max()) for a, b in zip(old, new)) for k in ("logprobs", "mu", "sigma")}
    rel = max(abs(float(a["logprobs"].double().mean() / b["logprobs"].double().mean()) - 1) for a, b in zip(old, new))
    bad = sum(not torch.equal(a["match"], b["match"]) for a, b in zip(old, new))
    ok = max(d.values()) < 1e-4 and rel < 1e-4
    return (f"max |diff| logprob {d['logprobs']:.1e} mu {d['mu']:.1e} sigma {d['sigma']:.1e}; mean-NLL rel {rel:.1e}; "
            f"items with an argmax flip {bad}/{len(old)} -> {'OK' if ok else 'DIFFERENT'}")


def compare_gens(old, new, tok) -> str:
    diff = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    lines = [f"identical generations {len(old) - len(diff)}/{len(old)}"]
    for i in diff[:5]:
        k = next((j for j, (x, y) in enumerate(zip(old[i], new[i])) if x != y), min(len(old[i]), len(new[i])))
        a, b = tok.decode(old[i][k:k + 8]), tok.decode(new[i][k:k + 8])
        lines.append(f"  item {i}: first difference at token {k}: old {a!r} new {b!r}")
    return "\n".join(lines)


class Clock(str):
    """'wall s / CPU s' of one call; CPU time (this process, all threads) is what other jobs on a
    shared machine disturb least, so the ratio is taken on it."""

    def __new__(cls, wall: float, cpu: float):
        obj = super().__new__(cls, f"{wall:.1f} / {cpu:.1f}")
        obj.wall, obj.cpu = wall, cpu
        return obj


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, Clock(time.perf_counter() - w, time.process_time() - c)


def ratio(old: Clock, new: Clock) -> str:
    return f"x{old.wall / new.wall:.2f} / x{old.cpu / new.cpu:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16, help="records per TOFU set")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gen-max-length", type=int, default=200)
    ap.add_argument("--attention-rule", default="tokens", choices=["tokens", "not_pad"])
    ap.add_argument("--stages", default="score,generate")
    ap.add_argument("--tofu-dir", default=os.environ.get("OBLIVIATE_DATA_DIR", "../shared/data") + "/tofu")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    from obliviate import load_model
    from obliviate.eval.runner import Evaluator

    model, tok = load_model(args.model)
    model.eval()
    ev = Evaluator(model, tok, batch_size=args.batch_size, attention_rule=args.attention_rule)
    examples, prompts, budgets = workload(ev, args.tofu_dir, args.items, args.gen_max_length)
    unique = list({(tuple(e["input_ids"]), tuple(e["labels"])): e for e in examples}.values())
    print(f"{args.model}, {torch.get_num_threads()} threads, rule {args.attention_rule}, batch {args.batch_size}: "
          f"{len(unique)} sequences to score ({sum(len(e['input_ids']) for e in unique)} tokens), {len(prompts)} generations")
    print("| stage | old s (wall / CPU) | new s (wall / CPU) | old / new (wall / CPU) | equal? |\n|---|---|---|---|---|")
    if "score" in args.stages:
        (old, t_old), (new, t_new) = timed(old_score, model, unique, ev.pad_id, args.batch_size, args.attention_rule), \
            timed(ev.score, unique)
        print(f"| scoring ({len(unique)} seq, {ev.timings['score_nodes']} tree nodes) | {t_old} | {t_new} | "
              f"{ratio(t_old, t_new)} | {compare_scores(old, new)} |")
    if "generate" in args.stages:
        (old, t_old), (new, t_new) = \
            timed(old_generate, model, prompts, budgets, ev.pad_id, tok.eos_token_id, args.batch_size, args.attention_rule), \
            timed(ev.generate, prompts, budgets)
        print(f"| generation ({len(prompts)} calls, {ev.timings['generate_items']} decoded) | {t_old} | {t_new} | "
              f"{ratio(t_old, t_new)} | {compare_gens(old, new, tok)} |")


if __name__ == "__main__":
    main()
