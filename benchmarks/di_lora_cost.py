"""Cost of DI/UNDIAL and of LoRA: step time vs plain fine-tuning, and peak memory full vs LoRA.

    python benchmarks/di_lora_cost.py                 # SmolLM2-135M on CPU (or the GPU if present)
    python benchmarks/di_lora_cost.py --model big     # a random 1.1B Llama in bf16 (GPU only)
    python benchmarks/di_lora_cost.py --steps 8 --batch-size 6

Each configuration runs in a fresh subprocess on the same forget set (generated facts) and
batch, so its peak memory is its own: on CPU the growth of the peak resident set size
(sampled every 5 ms from /proc) over the RSS after loading the model; on CUDA ``torch.cuda.max_memory_allocated``
minus the memory after loading. Step time is the median of the per-step times after the first
epoch (so the DI teacher cache is warm), reported as a ratio to the ``sft`` step: ratios, not
absolute seconds, are comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

CONFIGS = {
    "sft": ("sft", {}, None),
    "di": ("di", {}, None),
    "di_cache_full": ("di", {"cache": "full"}, None),
    "di_cache_top64": ("di", {"cache": "topk", "cache_top_k": 64}, None),
    "ga_full": ("ga", {}, None),
    "ga_lora": ("ga", {}, {"r": 8, "alpha": 16, "dropout": 0.05}),
    "npo_full": ("npo", {"alpha": 0.0}, None),
    "npo_lora": ("npo", {"alpha": 0.0}, {"r": 8, "alpha": 16, "dropout": 0.05}),
    "di_full": ("di", {}, None),
    "di_lora": ("di", {}, {"r": 8, "alpha": 16, "dropout": 0.05}),
}


def _load(which: str):
    import torch

    import obliviate

    if which == "big":  # ~1.1B parameters, TinyLlama-like shape, random weights, bf16
        from transformers import LlamaConfig, LlamaForCausalLM

        from obliviate.testing import tiny_tokenizer

        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                          num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        return model, tiny_tokenizer()
    return obliviate.load_model("smollm2-135m")


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; falls back to the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PeakRSS(threading.Thread):
    """Samples the RSS every 5 ms while training runs (the CPU analogue of max_memory_allocated)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self._stop = _rss_mib(), threading.Event()

    def run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def stop(self) -> float:
        self._stop.set()
        self.join()
        return max(self.peak, _rss_mib())


def worker(name: str, which: str, steps: int, batch_size: int) -> dict:
    import torch

    import obliviate

    method, opts, lora = CONFIGS[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = _load(which)
    model.to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base, sampler = _rss_mib(), _PeakRSS()
        sampler.start()
    facts = obliviate.make_facts(batch_size, 3, seed=1)
    extra = {"lora": lora} if lora else {}
    run = obliviate.finetune if method == "sft" else obliviate.unlearn
    kwargs = {} if method == "sft" else {"method": method}
    t = time.time()
    result = run(model, tok, facts, save=False, max_steps=steps, lr=1e-5, batch_size=batch_size, progress=False,
                 seed=0, **kwargs, **opts, **extra)
    total = time.time() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else sampler.stop()
    stamps = [0.0] + [r["elapsed_s"] for r in result.log]
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    warm = per_step[3:] if len(per_step) > 4 else per_step[1:]  # after one epoch of 3 batches
    return {"config": name, "device": device, "step_s": statistics.median(warm), "total_s": total,
            "peak_growth_mib": peak - base, "after_load_mib": base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["smollm2", "big"], default="smollm2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps, args.batch_size)))
        return
    rows = []
    for name in args.configs:
        cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    sft = next((r["step_s"] for r in rows if r["config"] == "sft"), None)
    print(f"\n{'config':<16}{'step s':>9}{'x sft':>8}{'peak growth MiB':>17}")
    for r in rows:
        ratio = f"{r['step_s'] / sft:.2f}" if sft else "-"
        print(f"{r['config']:<16}{r['step_s']:>9.3f}{ratio:>8}{r['peak_growth_mib']:>17.0f}")


if __name__ == "__main__":
    main()
