"""Streaming TIES merge speed: today's kernels vs the obliviate 0.1 implementation, in one run.

    .venv/bin/python benchmarks/merge_speed.py --ks 2 4 8            # SmolLM2-135M copies
    .venv/bin/python benchmarks/merge_speed.py --ks 2 --synthetic    # random tensors, same shapes

Writes k perturbed copies of the converted SmolLM2-135M (``resolve_alias("smollm2-135m")``,
float32, 134.5M entries; ``--synthetic``: random tensors of the same shapes) as safetensors into
a temporary directory: every entry moves by N(0, 1e-3), except half of the embedding rows (tokens
a fine-tune never saw), which stay bit-identical to the base, so the task vectors hold exact zeros
and ties. Each merge runs in a fresh subprocess, which reports its wall time and its peak RSS
above its RSS after imports (``VmHWM``, Linux), and its CPU seconds (all threads):

- ``reference``: ``reference_merge_files`` below, the obliviate 0.1 streaming TIES merge kept
  verbatim (per tensor: every model read twice, trimmed twice with ``torch.kthvalue``, two
  accumulation passes with per-model temporaries);
- ``legacy``: today's ``merge_files`` with ``preset="legacy"`` (the same rules), which must give
  a byte-identical output file (checked);
- ``mergekit``, ``paper``: the other presets, for their cost (different rules, so no equality).

Every merge runs with ``--threads`` torch threads (default 1; both sides alike). The machine may
be shared: compare ratios within one run, not seconds across runs; ``--repeats N`` runs every
merge N times and reports the fastest (CPU seconds, which waiting for a busy core does not
inflate, are a second view of the same ratio).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import merge_speed
import torch
from obliviate.merge import MergeConfig, merge_files
mode, base, out, density, threads, models = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), sys.argv[7:]
if threads:
    torch.set_num_threads(threads)
rss0 = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024  # KB
t0, c0 = time.perf_counter(), time.process_time()
if mode == "reference":
    merge_speed.reference_merge_files(base, models, out, density)
else:
    merge_files(base, models, out, MergeConfig(method="ties", density=density, preset=mode))
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
# VmHWM: this process's own peak (ru_maxrss survives exec, so it would include the parent's RSS)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": (peak - rss0) / 1024}))
"""


# ---- obliviate 0.1's streaming TIES merge, kept as the baseline (do not optimise) ----

class _RefFile:
    """obliviate 0.1's SafetensorsFile: header parsed once, each read a zero-filled bytearray + readinto."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.start = 8 + n

    def read(self, name: str):
        import torch

        from obliviate.merge.stio import DTYPES

        h = self.header[name]
        a, b = h["data_offsets"]
        buf = bytearray(b - a)
        with open(self.path, "rb") as f:
            f.seek(self.start + a)
            f.readinto(buf)
        return torch.frombuffer(buf, dtype=DTYPES[h["dtype"]]).reshape(h["shape"])


def _ref_trim_topk(tau, density):
    import torch

    n = tau.numel()
    keep = min(n, math.ceil(density * n))
    if keep >= n or n == 0:
        return tau.clone()
    mag = tau.abs().reshape(-1)
    threshold = torch.kthvalue(mag, n - keep + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def _ref_elect_sign(total):
    import torch

    sign = torch.sign(total)
    majority = torch.sign(sign.sum())
    return torch.where(sign == 0, majority if majority != 0 else torch.ones_like(majority), sign)


def _ref_ties_tau(get, k, density):
    import torch

    trimmed = lambda i: _ref_trim_topk(get(i), density)  # noqa: E731
    total = trimmed(0)
    for i in range(1, k):
        total = total + trimmed(i)
    sign = _ref_elect_sign(total)
    agree_sum = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for i in range(k):
        t = trimmed(i)
        agree = ((sign > 0) & (t > 0)) | ((sign < 0) & (t < 0))
        agree_sum = agree_sum + torch.where(agree, t, torch.zeros_like(t))
        count = count + agree.to(t.dtype)
    return agree_sum / count.clamp_min(1)


def reference_merge_files(base: str, models: list[str], out: str, density: float, lam: float = 1.0) -> None:
    """obliviate 0.1's ``merge_files`` for TIES on ``.safetensors`` files (no DARE, no LoRA)."""
    from obliviate.merge.stio import SafetensorsFile, SafetensorsWriter

    from obliviate.io import atomic_path

    base_f = SafetensorsFile(base)
    specs = {n: base_f.spec(n) for n in base_f.names()}
    base_r, model_r = _RefFile(base), [_RefFile(m) for m in models]
    with atomic_path(out) as tmp:
        writer = SafetensorsWriter(tmp, specs)
        for name in specs:
            b = base_r.read(name)
            if not b.is_floating_point():
                writer.write(name, b.clone())
                continue
            get = lambda i, n=name, b=b: model_r[i].read(n).float() - b.float()  # noqa: E731
            writer.write(name, (b.float() + lam * _ref_ties_tau(get, len(models), density)).to(b.dtype))
        writer.close()


# ---- inputs ----

def make_models(root: Path, k: int, synthetic: bool) -> tuple[Path, list[Path]]:
    import torch
    from safetensors.torch import load_file, save_file

    if synthetic:
        d, ff, vocab, layers = 576, 1536, 49152, 30
        g = torch.Generator().manual_seed(0)
        base = {"model.embed_tokens.weight": torch.randn(vocab, d, generator=g) * 0.02, "model.norm.weight": torch.ones(d)}
        for i in range(layers):
            p = f"model.layers.{i}."
            for n, shape in (("self_attn.q_proj", (d, d)), ("self_attn.k_proj", (192, d)), ("self_attn.v_proj", (192, d)),
                             ("self_attn.o_proj", (d, d)), ("mlp.gate_proj", (ff, d)), ("mlp.up_proj", (ff, d)),
                             ("mlp.down_proj", (d, ff))):
                base[p + n + ".weight"] = torch.randn(shape, generator=g) * 0.02
            base[p + "input_layernorm.weight"] = torch.ones(d)
            base[p + "post_attention_layernorm.weight"] = torch.ones(d)
        save_file(base, str(root / "base.safetensors"), metadata={"format": "pt"})
    else:
        from obliviate.models import resolve_alias

        shutil.copy(resolve_alias("smollm2-135m") / "model.safetensors", root / "base.safetensors")
        base = load_file(str(root / "base.safetensors"))
    paths = []
    for j in range(k):
        g = torch.Generator().manual_seed(100 + j)
        m = {}
        for n, t in base.items():
            if not t.is_floating_point():
                m[n] = t
                continue
            delta = torch.randn(t.shape, generator=g) * 1e-3
            if "embed_tokens" in n:
                delta[torch.rand(t.shape[0], generator=g) < 0.5] = 0
            m[n] = (t.float() + delta).to(t.dtype)
        paths.append(root / f"m{j}.safetensors")
        save_file(m, str(paths[-1]), metadata={"format": "pt"})
        del m
    return root / "base.safetensors", paths


def run(mode: str, base: Path, models: list[Path], out: Path, density: float, threads: int) -> dict:
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", CHILD, here, mode, str(base), str(out), str(density), str(threads),
                           *map(str, models)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--synthetic", action="store_true", help="random tensors of SmolLM2's shapes instead of SmolLM2")
    ap.add_argument("--modes", nargs="+", default=["reference", "legacy", "mergekit", "paper"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every merge (default 1: on a shared machine, multi-threaded ops wait for "
                         "descheduled threads and the timings mean little; 0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every merge; the fastest is reported")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one; needs (max k + 4) x 0.54 GB)")
    args = ap.parse_args()
    import torch

    root = Path(args.dir or tempfile.mkdtemp(prefix="merge_speed_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.time()
        base, models = make_models(root, max(args.ks), args.synthetic)
        size = base.stat().st_size / 2**20
        print(f"inputs: {'synthetic' if args.synthetic else 'SmolLM2-135M'} copies, {size:.0f} MB each (written in "
              f"{time.time() - t:.0f} s); {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{args.threads or torch.get_num_threads()} threads; "
              f"TIES density {args.density}")
        print("| k | mode | seconds | x reference | CPU s | x reference | peak RSS MB | x model size | output |\n"
              "|---|---|---|---|---|---|---|---|---|")
        for k in args.ks:
            ref = None
            for mode in args.modes:
                out = root / f"out_{mode}.safetensors"
                runs = [run(mode, base, models[:k], out, args.density, args.threads) for _ in range(args.repeats)]
                r = min(runs, key=lambda x: x["seconds"])
                r["cpu"] = min(x["cpu"] for x in runs)
                if mode == "reference":
                    ref = r
                check = ""
                if mode == "legacy" and (root / "out_reference.safetensors").exists():
                    ok = same_file(out, root / "out_reference.safetensors")
                    check = "byte-identical to reference" if ok else "DIFFERS from reference"
                    if not ok:
                        raise SystemExit(f"k={k}: legacy output differs from the reference")
                ratio = f"{r['seconds'] / ref['seconds']:.3f}" if ref else "-"
                cpu_ratio = f"{r['cpu'] / ref['cpu']:.3f}" if ref else "-"
                print(f"| {k} | {mode} | {r['seconds']:.1f} | {ratio} | {r['cpu']:.1f} | {cpu_ratio} | {r['peak_mb']:.0f} | "
                      f"{r['peak_mb'] / size:.2f} | {check} |", flush=True)
            for mode in args.modes:
                (root / f"out_{mode}.safetensors").unlink(missing_ok=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
