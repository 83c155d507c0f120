"""The gradient-norm attack by ghost norms against one backward per item (issue 19).

    python benchmarks/gradnorm_speed.py                      # SmolLM2, forget01 + holdout01, fp32 and bf16
    python benchmarks/gradnorm_speed.py --dtypes float32 --per-tensor-mean

For each dtype: the time of ``grad_norm_scores`` (ghost norms, batched) and of ``exact=True`` (one
backward per item) on the same items in one run, their ratio, the largest per-item relative
difference, and both AUCs (forget vs holdout); for bf16 also each against the fp32 ghost scores.
Run alone: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tofu-dir", default=os.path.join(os.environ.get("OBLIVIATE_DATA_DIR", "../shared/data"), "tofu"))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--per-tensor-mean", action="store_true", help="open-unlearning's per-tensor mean of 2-norms")
    args = ap.parse_args()

    from obliviate.data import load_records
    from obliviate.data.encode import EncodeConfig
    from obliviate.eval import gradnorm
    from obliviate.eval.mia import auc
    from obliviate.eval.runner import Evaluator
    from obliviate.models import load_model

    forget = load_records(str(Path(args.tofu_dir) / "forget01.json"))
    holdout = load_records(str(Path(args.tofu_dir) / "holdout01.json"))
    rel = lambda a, b: max(abs(x - y) / abs(y) for x, y in zip(a, b))  # noqa: E731
    split = lambda s: auc(s[:len(forget)], s[len(forget):])  # noqa: E731
    fp32 = None
    for dtype in args.dtypes:
        model, tok = load_model("smollm2-135m", dtype=dtype)
        ev = Evaluator(model, tok, EncodeConfig(system_prompt="You are a helpful assistant."))
        items = ev.encode(forget + holdout)
        runs = {}
        for exact in (False, True):
            t = time.perf_counter()
            scores = gradnorm.grad_norm_scores(model, items, ev.pad_id, per_tensor_mean=args.per_tensor_mean, exact=exact)
            runs[exact] = (time.perf_counter() - t, scores)
        (tg, ghost), (te, exact) = runs[False], runs[True]
        print(f"{dtype}: {len(items)} items, ghost {tg:.1f} s, one backward per item {te:.1f} s (x{te / tg:.2f}); "
              f"largest relative difference {rel(ghost, exact):.2e}; AUC ghost {split(ghost):.4f}, per item {split(exact):.4f}")
        if dtype == "float32":
            fp32 = ghost
        elif fp32 is not None:
            print(f"  against fp32 ghost scores: ghost within {rel(ghost, fp32):.2e}, per-item backward within "
                  f"{rel(exact, fp32):.2e}")


if __name__ == "__main__":
    main()
