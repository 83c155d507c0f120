"""Greedy decoding throughput by number of decoding rows, and the matmul throughput behind it (issue 19).

    python benchmarks/decode_rows.py --prompts 160 --slots 4 8 16            # tokens/s per DECODE_SLOTS
    python benchmarks/decode_rows.py --prompts 160 --slots 8 --dtype bfloat16
    python benchmarks/decode_rows.py --matmul                                # GFLOP/s of SmolLM2-shaped matmuls

The first ``--prompts`` TOFU retain questions (chat template, system prompt "You are a helpful
assistant.") are decoded greedily to TOFU's budget (prompt + answer <= 200 tokens) by the
``Evaluator`` with ``DECODE_SLOTS`` set to each ``--slots`` value (rows = slots x batch size 16);
each setting prints its tokens/s and whether its generations equal the first setting's. Run alone:
the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def matmul(dtype: torch.dtype) -> None:
    """GFLOP/s of [M x 576] x [576 x 1536] (SmolLM2's MLP) and [M x 576] x [576 x 49152] (its head)."""
    w, head = torch.randn(1536, 576, dtype=dtype), torch.randn(49152, 576, dtype=dtype)
    for m in (16, 32, 64, 128, 256, 512):
        x = torch.randn(m, 576, dtype=dtype)
        rates = []
        for weight, reps in ((w, 200), (head, 5)):
            torch.nn.functional.linear(x, weight)
            t = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.linear(x, weight)
            rates.append(2 * m * 576 * weight.size(0) * reps / (time.perf_counter() - t) / 1e9)
        print(f"{dtype} M={m}: mlp {rates[0]:.0f} GFLOP/s, head {rates[1]:.0f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--slots", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tofu-dir", default=os.path.join(os.environ.get("OBLIVIATE_DATA_DIR", "../shared/data"), "tofu"))
    ap.add_argument("--matmul", action="store_true", help="only the matmul throughput (float32 and bfloat16)")
    args = ap.parse_args()
    if args.matmul:
        for dtype in (torch.float32, torch.bfloat16):
            matmul(dtype)
        return

    from obliviate.data import load_records
    from obliviate.data.encode import EncodeConfig
    from obliviate.eval import runner
    from obliviate.models import load_model

    model, tok = load_model("smollm2-135m", dtype=args.dtype)
    recs = load_records(str(Path(args.tofu_dir) / "retain_perturbed.json"), limit=args.prompts)
    first = None
    for slots in args.slots:
        runner.DECODE_SLOTS = slots
        ev = runner.Evaluator(model, tok, EncodeConfig(system_prompt="You are a helpful assistant."), batch_size=16)
        prompts = ev.prompts(recs)
        t = time.perf_counter()
        gens = ev.generate(prompts, [max(1, 200 - len(p)) for p in prompts])
        dt = time.perf_counter() - t
        first = gens if first is None else first
        same = sum(a == b for a, b in zip(gens, first))
        print(f"{args.dtype} rows {slots * 16}: {sum(map(len, gens))} tokens in {dt:.1f} s = "
              f"{sum(map(len, gens)) / dt:.0f} tokens/s; generations equal to the first setting's: {same}/{len(gens)}")


if __name__ == "__main__":
    main()
