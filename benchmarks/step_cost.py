"""Step cost of every method relative to a plain fine-tuning step on the same model and batch.

For each method (and each ``method+lora`` variant), a fresh subprocess loads the model, runs
``--warmup`` + ``--steps`` optimizer steps through the real engine on the same forget batch
(and a retain batch of the same size for methods that declare retain data), and reports the
mean step time and the peak extra memory (peak RSS on CPU / peak CUDA allocation on GPU, above
the memory held after loading the model). Everything is divided by the ``sft`` row measured in
the same run, so the ratios are comparable on a noisy machine.

    python benchmarks/step_cost.py                      # SmolLM2, every method, CPU
    python benchmarks/step_cost.py --methods npo,rmu --steps 5
    python benchmarks/step_cost.py --model tiny         # a tiny random Llama (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args) -> None:
    """Runs in a subprocess: measure one method; print one JSON line."""
    import resource

    import torch

    import obliviate
    from obliviate.data import encode_records, make_facts
    from obliviate.engine import TrainConfig, train
    from obliviate.methods import build

    torch.manual_seed(0)
    if args.model == "tiny":
        from obliviate.testing import tiny_model_and_tokenizer

        model, tok = tiny_model_and_tokenizer(hidden_size=64, layers=8)
    else:
        model, tok = obliviate.load_model(args.model, dtype=args.dtype)
    name, _, variant = args.method.partition("+")
    facts = make_facts(2 * args.batch_size, 1, seed=0)
    forget = encode_records(tok, facts[: args.batch_size])
    retain = encode_records(tok, facts[args.batch_size:])
    method = build(name, json.loads(args.options or "{}"))
    cfg = dict(max_steps=args.warmup + args.steps, lr=1e-5, batch_size=args.batch_size, progress=False,
               max_grad_norm=1.0, mixed_precision=args.mixed_precision)
    if variant == "lora":
        from obliviate.engine.lora import LoraSettings

        cfg["lora"] = LoraSettings()
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    stamps: list[float] = []
    t_setup = time.perf_counter()
    train(model, tok, method, forget, retain if method.needs.retain else None, TrainConfig(**cfg),
          callbacks=[lambda step, rec: stamps.append(time.perf_counter())])
    times = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])] if args.warmup else []
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"method": args.method, "step_s": sum(times) / len(times), "peak_extra_mb": peak / 2**20,
                      "setup_s": stamps[0] - t_setup - (times[0] if times else 0.0)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", default=None, help="comma-separated; default: every registered method + npo+lora, di+lora")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--mixed-precision", default="no")
    p.add_argument("--options", default=None, help=argparse.SUPPRESS)
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        return worker(args)
    from obliviate.methods import names

    methods = args.methods.split(",") if args.methods else names() + [
        m for m in ("npo+lora", "di+lora", "ga+lora") if m.split("+")[0] in names()]
    rows = []
    for m in ["sft"] + [m for m in methods if m != "sft"]:
        cmd = [sys.executable, __file__, "--method", m, "--model", args.model, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--dtype", args.dtype,
               "--mixed-precision", args.mixed_precision]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{m}: FAILED\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"measured {m}: {rows[-1]['step_s']:.2f} s/step", file=sys.stderr)
    base = rows[0]
    print(f"\nmodel={args.model} batch={args.batch_size} steps={args.steps} dtype={args.dtype} "
          f"device={'cuda' if 'CUDA_VISIBLE_DEVICES' in os.environ else 'auto'}")
    print(f"{'method':14s} {'step s':>8s} {'x sft':>7s} {'peak MB':>9s} {'x sft':>7s} {'setup s':>8s}")
    for r in rows:
        print(f"{r['method']:14s} {r['step_s']:8.3f} {r['step_s'] / base['step_s']:7.2f} {r['peak_extra_mb']:9.0f} "
              f"{r['peak_extra_mb'] / max(base['peak_extra_mb'], 1e-9):7.2f} {r['setup_s']:8.2f}")


if __name__ == "__main__":
    main()
