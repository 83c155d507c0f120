"""Step cost of RMU and FALCON relative to a plain fine-tuning step (method "sft") on the same batch.

    python benchmarks/repr_step_cost.py [--model smollm2-135m] [--layer 7] [--batch 6] [--steps 6]

Prints each method's median step time and peak memory (CUDA peak allocated, or CPU peak RSS growth
on CPU) divided by SFT's. RMU/FALCON run blocks 0..layer only and read cached frozen activations,
so with layer 7 of SmolLM2's 30 blocks a step should cost well under half an SFT step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import obliviate
from obliviate import methods
from obliviate.data.encode import encode_records
from obliviate.engine import TrainConfig, train


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def _peak(device, base):
    if device.type == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return float("nan")


def measure(model_name: str, name: str, opts: dict, forget, retain, steps: int, batch: int) -> tuple[float, float]:
    model, tok = obliviate.load_model(model_name)
    ef, er = encode_records(tok, forget), encode_records(tok, retain)
    times: list[float] = []
    last = [time.perf_counter()]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = _peak_reset(device) if device.type == "cuda" else 0

    def cb(step, record):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    model.to(device)
    base = _peak_reset(device)
    m = methods.build(name, opts)
    # the same forget batch every step (batch == len(forget)); steps after the first hit the frozen cache
    train(model, tok, m, ef, er if name != "sft" else None,
          TrainConfig(lr=1e-5, max_steps=steps, batch_size=batch, progress=False), callbacks=[cb])
    return statistics.median(times[1:]), _peak(device, base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=7)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    facts = obliviate.make_facts(2 * a.batch, 1, seed=0)
    forget, retain = facts[: a.batch], facts[a.batch:]
    runs = {"sft": {}, "rmu": {"layer": a.layer}, "falcon": {"layer": a.layer}}
    res = {n: measure(a.model, n, o, forget, retain, a.steps, a.batch) for n, o in runs.items()}
    t0, m0 = res["sft"]
    print(f"{'method':8s} {'step_s':>8s} {'time/sft':>9s} {'peak_MiB':>9s} {'mem/sft':>8s}")
    for n, (t, mem) in res.items():
        print(f"{n:8s} {t:8.3f} {t / t0:9.2f} {mem:9.1f} {mem / m0 if m0 == m0 and m0 else float('nan'):8.2f}")


if __name__ == "__main__":
    main()
