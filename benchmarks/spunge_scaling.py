"""SPUNGE scaling: wall time of k = 1, 2, 4 subset runs sequential vs parallel, and the peak memory
of the streaming TIES merge vs k.

    .venv/bin/python benchmarks/spunge_scaling.py                      # both tables
    .venv/bin/python benchmarks/spunge_scaling.py --skip-wall --size-mb 200 --ks 2 4 8

Wall time: k subsets of ``--records`` synthetic facts, each unlearned with GA for ``--steps``
steps from the same base model directory (a random Llama of ``--hidden``/``--layers``; SmolLM2
with ``--model smollm2-135m``), through SPUNGE's own runner (``spunge.runner.run_jobs``):
``sequential`` (one after the other, in this process) vs ``local`` (one worker process per subset:
one per GPU on a GPU machine, an equal share of the cores each on a CPU machine). The speed-up is
bounded by the devices: k GPUs give up to k x; on a CPU machine the cores are shared either way.

Merge memory: writes a toy base model of ``--size-mb`` MB (fp32, tensors of SmolLM2-like shapes) and k
perturbed copies as safetensors, then merges them in a fresh subprocess per k and reports that
process's peak RSS (``ru_maxrss``) above its current RSS after imports (Linux), plus wall time. The in-memory
merge (all k state dicts loaded) is measured alongside for contrast.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from safetensors.torch import load_file
from obliviate.merge import MergeConfig, merge_files, merge_state_dicts
torch.set_num_threads(1)
mode, base, out, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rss0 = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024  # current RSS, KB
t0 = time.time()
if mode == "stream":
    merge_files(base, models, out, MergeConfig())
else:
    merge_state_dicts(load_file(base), [load_file(m) for m in models], MergeConfig())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": (peak - rss0) / 1024, "seconds": time.time() - t0}))
"""


def make_models(root: Path, size_mb: int, k: int) -> tuple[Path, list[Path]]:
    import torch
    from safetensors.torch import save_file

    d, ff = 576, 1536  # SmolLM2-135M widths
    per_layer = 4 * d * d + 3 * d * ff
    layers = max(1, size_mb * 2**20 // 4 // per_layer)
    g = torch.Generator().manual_seed(0)
    base = {}
    for i in range(layers):
        for n, shape in (("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)), ("gate", (ff, d)), ("up", (ff, d)),
                         ("down", (d, ff))):
            base[f"layers.{i}.{n}.weight"] = torch.randn(shape, generator=g) * 0.02
    save_file(base, str(root / "base.safetensors"))
    paths = []
    for j in range(k):
        m = {n: t + torch.randn(t.shape, generator=g) * 1e-3 for n, t in base.items()}
        paths.append(root / f"m{j}.safetensors")
        save_file(m, str(paths[-1]))
        del m
    return root / "base.safetensors", paths


def wall_times(root: Path, ks: list[int], model: str, records: int, steps: int, hidden: int, layers: int) -> None:
    """Table: k | sequential s | parallel s | speed-up, through spunge.runner.run_jobs."""
    import os

    import torch

    from obliviate.data import make_facts
    from obliviate.models import save_model
    from obliviate.spunge.runner import BackendConfig, SubsetJob, run_jobs

    label = model
    if model == "tiny":
        from obliviate.testing import tiny_llama, tiny_tokenizer

        model, label = str(root / "base"), f"random Llama d={hidden} L={layers}"
        save_model(tiny_llama(vocab_size=128, hidden_size=hidden, layers=layers, seed=0), tiny_tokenizer(), model)
    facts = make_facts(records * max(ks), 1, seed=0)
    print(f"\nwall time: GA, {steps} steps x {records} records per subset, model {label}, "
          f"{os.cpu_count()} CPUs, {torch.cuda.device_count()} GPUs")
    print("| k | sequential s | parallel s (local, k workers) | speed-up |\n|---|---|---|---|")
    for k in ks:
        seconds = {}
        for name in ("sequential", "local"):
            jobs = [SubsetJob(f"s{i}", model, "ga", {"max_steps": steps, "batch_size": 4, "lr": 1e-5, "progress": False},
                              facts[i * records:(i + 1) * records], None, str(root / f"{name}-{k}" / f"s{i}"))
                    for i in range(k)]
            t = time.time()
            run_jobs(jobs, BackendConfig(name=name, workers=k if name == "local" else None))
            seconds[name] = time.time() - t
        print(f"| {k} | {seconds['sequential']:.1f} | {seconds['local']:.1f} | {seconds['sequential'] / seconds['local']:.2f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--in-memory", action="store_true", help="also measure the in-memory merge")
    ap.add_argument("--wall-ks", type=int, nargs="+", default=[1, 2, 4], help="k for the wall-time table")
    ap.add_argument("--model", default="tiny", help="'tiny' (random Llama, see --hidden/--layers) or a model alias/dir")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-wall", action="store_true", help="only the merge-memory table")
    ap.add_argument("--skip-merge", action="store_true", help="only the wall-time table")
    args = ap.parse_args()
    if not args.skip_wall:
        with tempfile.TemporaryDirectory() as tmp:
            wall_times(Path(tmp), args.wall_ks, args.model, args.records, args.steps, args.hidden, args.layers)
    if args.skip_merge:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, models = make_models(root, args.size_mb, max(args.ks))
        size = base.stat().st_size / 2**20
        print(f"model size {size:.0f} MB (fp32)")
        print("| k | mode | peak RSS above start (MB) | x model size | seconds |\n|---|---|---|---|---|")
        for k in args.ks:
            for mode in ("stream", "memory") if args.in_memory else ("stream",):
                t = time.time()
                out = subprocess.run([sys.executable, "-c", CHILD, mode, str(base), str(root / "out.safetensors"),
                                      *map(str, models[:k])], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {k} | {mode} | {r['peak_mb']:.0f} | {r['peak_mb'] / size:.2f} | {r['seconds']:.1f} |")
                del t


if __name__ == "__main__":
    main()
