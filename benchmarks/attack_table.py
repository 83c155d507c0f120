"""Robustness table of SmolLM2 planted facts unlearned with several methods (issue 7).

    .venv/bin/python benchmarks/attack_table.py --out runs/attacks_smollm2 [--methods ga,npo,di,falcon]

Plants 18 facts about 6 fictitious people into SmolLM2-135M (the tests' ``planted`` fixture:
``make_facts(6, 3, seed=1)``, 20 steps, lr 2e-4, batch 6; cached), unlearns people 0-2 (9 facts)
with each method (people 3-5 are the retain set), runs the full attack suite against every
unlearned model and writes ``<out>/<method>/attacks.{json,md}`` plus ``<out>/attacks.md`` with
all tables. A control row relearns the *base* SmolLM2 (which never saw the facts) with the same
budget, to show how much of "recovery" is learning the answer format and names rather than
recalling unlearned facts. Takes ~10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("OBLIVIATE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "obliviate"))

from obliviate import load_model, make_facts, unlearn  # noqa: E402
from obliviate.attacks import AttackSuiteConfig, RelearnConfig, forget_metric, markdown_table, relearn_attack, run_attacks, write_table  # noqa: E402
from obliviate.methods import names  # noqa: E402
from obliviate.planted import planted_model  # noqa: E402

# Unlearning budgets: short, so the table shows weak-to-moderate unlearning typical of a first pass.
# DI and FALCON use the demo's settings (gamma 10; FALCON at layer 7 on answer tokens): with the
# defaults (gamma 3, lr 3e-5; FALCON's MI choice, layer 0) 10 steps leave the facts almost intact.
# FALCON gets 30 steps: equal compute, since its steps cost ~0.14x (benchmarks/RESULTS.md).
METHOD_OPTIONS = {
    "ga": dict(lr=3e-5, max_steps=10),
    "npo": dict(lr=3e-5, max_steps=10, beta=0.1),
    "di": dict(lr=1e-4, max_steps=10, gamma=10.0),
    "falcon": dict(lr=1e-2, max_steps=30, scheduler="constant", layer=7, alpha=100.0, tokens="answer"),
}
SUITE = AttackSuiteConfig(relearn=RelearnConfig(steps=10, lr=1e-4, batch_size=4, seed=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/attacks_smollm2")
    ap.add_argument("--methods", default="ga,npo,di,falcon")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--no-control", action="store_true", help="skip the base-model relearning control")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    facts = make_facts(6, 3, seed=1)
    forget, retain = facts[:9], facts[9:]
    path = planted_model("smollm2-135m", facts, steps=20, lr=2e-4, batch_size=6, progress=False)
    original, tok = load_model(path)
    print(f"planted: forget Q_A_Prob {forget_metric(original, tok, forget):.3f}, retain {forget_metric(original, tok, retain):.3f}")
    tables = []
    for method in [m for m in args.methods.split(",") if m]:
        if method not in names():
            print(f"skip {method}: not registered")
            continue
        t0 = time.time()
        model = copy.deepcopy(original)
        torch.manual_seed(0)
        unlearn(model, tok, forget, retain, method=method, save=False, batch_size=6, warmup_steps=1, seed=0,
                progress=False, **METHOD_OPTIONS.get(method, dict(lr=3e-5, max_steps=10)))
        t1 = time.time()
        rows = run_attacks(model, tok, original, forget, SUITE)
        title = (f"{method} ({METHOD_OPTIONS.get(method)}; retain Q_A_Prob {forget_metric(model, tok, retain):.3f}, "
                 f"original {forget_metric(original, tok, retain):.3f}; unlearn {t1 - t0:.0f}s, attacks {time.time() - t1:.0f}s)")
        write_table(rows, out / method, {"method": method, "options": METHOD_OPTIONS.get(method)}, title)
        tables.append(markdown_table(rows, title))
        print(tables[-1], flush=True)
        del model
    if not args.no_control:
        base, _ = load_model("smollm2-135m")
        ctrl = relearn_attack(base, tok, original, forget, SUITE.relearn)
        line = (f"control (relearn the base model, never planted): held-out Q_A_Prob {ctrl.before:.3f} -> {ctrl.after:.3f} "
                f"(planted model: {ctrl.original:.3f})")
        print(line, flush=True)
        tables.insert(0, line + "\n")
        del base
    out.mkdir(parents=True, exist_ok=True)
    (out / "attacks.md").write_text("\n".join(tables))


if __name__ == "__main__":
    main()
