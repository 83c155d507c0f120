"""Step cost of every method relative to a plain fine-tuning step on the same model and batch.

Each row runs in a fresh subprocess: load the model, run ``--warmup`` + ``--steps`` optimizer steps
through the real engine on the same forget batch (and, for methods that declare retain data, a
retain batch of the same size), and measure

* the mean time of the steps after the warm-up (caches that a method fills once -- NPO's reference
  log-probs, RMU/FALCON's frozen activations, DI's teacher targets -- are filled by then; the time
  spent filling them is reported separately as ``setup s``);
* the peak memory growth while training, above the memory held right after loading the model
  (CUDA: ``max_memory_allocated``; CPU: the resident set size sampled every 5 ms).

Both are divided by the ``sft`` row of the same run, so the ratios are comparable on a noisy
machine. Rows marked ``+R`` also process a retain batch (twice the tokens of ``sft``).

    python benchmarks/step_cost.py                        # SmolLM2-135M, every row
    python benchmarks/step_cost.py --rows sft,npo,rmu     # a subset
    python benchmarks/step_cost.py --model tiny           # tiny random Llama (seconds; smoke test)
    python benchmarks/step_cost.py --model llama-1b --dtype bfloat16   # random 1.1B Llama (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# TOFU's refusals when the shared data sits next to the repository, else the tests' three
REFUSALS = next(str(p) for p in (Path(__file__).resolve().parents[2] / "shared/data/tofu/idontknow.jsonl",
                                 Path(__file__).resolve().parents[1] / "tests/refusals.txt") if p.is_file())

# label -> (method, method options, lora settings or None, train options). The reference-free "npo"
# row (alpha=0) is the one the "NPO <= 1.15x" goal refers to: same tokens as the sft row; "npo+R"
# adds the retain NLL batch.
ROWS: dict[str, tuple[str, dict, dict | None, dict]] = {
    "sft": ("sft", {}, None, {}),
    "ga": ("ga", {}, None, {}),
    "graddiff+R": ("graddiff", {}, None, {}),
    "npo": ("npo", {"alpha": 0.0}, None, {}),
    "npo+R": ("npo", {}, None, {}),
    "simnpo": ("simnpo", {"alpha": 0.0}, None, {}),
    "rmu+R": ("rmu", {"layer": 7}, None, {}),
    "falcon+R": ("falcon", {"layer": 7}, None, {}),
    "di": ("di", {}, None, {}),
    "di cache=full": ("di", {"cache": "full"}, None, {}),
    "di cache=top64": ("di", {"cache": "topk", "cache_top_k": 64}, None, {}),
    # the frozen teacher kept in host memory, streamed to the device per module (a GPU figure)
    "di offload": ("di", {}, None, {"reference_offload": True}),
    "sft lora": ("sft", {}, {}, {}),
    "ga lora": ("ga", {}, {}, {}),
    "npo lora": ("npo", {"alpha": 0.0}, {}, {}),
    "di lora": ("di", {}, {}, {}),
    # gradient checkpointing: activations are what is left once LoRA removes grads + optimizer state
    "sft gc": ("sft", {}, None, {"gradient_checkpointing": True}),
    "npo lora gc": ("npo", {"alpha": 0.0}, {}, {"gradient_checkpointing": True}),
    # regional torch.compile of the decoder blocks (compilation happens in the warm-up steps)
    "sft compile": ("sft", {}, None, {"compile": True}),
    "npo compile": ("npo", {"alpha": 0.0}, None, {"compile": True}),
    # issue 17's methods. dpo/idknll also read a refusal per example (a second sequence); "dpo" has
    # no retain term, like "npo"
    "dpo": ("dpo", {"alpha": 0.0, "refusals": REFUSALS}, None, {}),
    "dpo+R": ("dpo", {"refusals": REFUSALS}, None, {}),
    "idknll+R": ("idknll", {"refusals": REFUSALS}, None, {}),
    "wga": ("wga", {"alpha": 0.0}, None, {}),
    "satimp": ("satimp", {"alpha": 0.0}, None, {}),
    "ceu": ("ceu", {}, None, {}),
    "pdu+R": ("pdu", {"epsilon": 2.0}, None, {}),
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRSS(threading.Thread):
    """Samples the resident set size every 5 ms (the CPU analogue of ``max_memory_allocated``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_mib()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, _rss_mib())


def _load(name: str, dtype: str):
    import torch

    import obliviate

    if name == "tiny":
        from obliviate.testing import tiny_model_and_tokenizer

        return tiny_model_and_tokenizer(hidden_size=64, layers=8)
    if name == "llama-1b":  # TinyLlama-1.1B shape, random weights: memory/time only, no knowledge
        from transformers import LlamaConfig, LlamaForCausalLM

        from obliviate.testing import tiny_tokenizer

        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                          num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False)
        return LlamaForCausalLM(cfg).to(getattr(torch, dtype)), tiny_tokenizer()
    return obliviate.load_model(name, dtype=dtype)


def worker(args) -> dict:
    """Runs in a subprocess: measure one row."""
    import torch

    from obliviate.data import encode_records, make_facts
    from obliviate.engine import TrainConfig, train
    from obliviate.engine.lora import LoraSettings
    from obliviate.methods import build

    method_name, options, lora, extra = ROWS[args.row]
    torch.manual_seed(0)
    model, tok = _load(args.model, args.dtype)
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
        sampler = _PeakRSS()
        sampler.start()
    facts = make_facts(2 * args.batch_size, 1, seed=0)
    forget = encode_records(tok, facts[: args.batch_size])
    retain = encode_records(tok, facts[args.batch_size:])
    method = build(method_name, options)
    cfg = TrainConfig(max_steps=args.warmup + args.steps, lr=1e-5, batch_size=args.batch_size, progress=False,
                      max_grad_norm=1.0, mixed_precision=args.mixed_precision,
                      lora=LoraSettings(**lora) if lora is not None else None, **extra)
    stamps: list[float] = []
    last: dict = {}

    def stamp(step, record) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        last.update(record)

    t0 = time.perf_counter()
    train(model, tok, method, forget, retain if method.needs.retain else None, cfg, callbacks=[stamp])
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else sampler.stop()
    steps = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])]
    first = stamps[0] - t0
    typical = sum(steps) / len(steps)
    return {"row": args.row, "step_s": typical, "peak_extra_mib": peak - base, "setup_s": max(first - typical, 0.0),
            "device": "cuda" if cuda else "cpu",
            # DI's teacher cache reports its approximation error (total variation to the exact targets)
            **{k: last[k] for k in ("cache_tv_mean", "cache_tv_max") if k in last}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias/path, 'tiny' or 'llama-1b'")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--mixed-precision", default="no")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.row:
        print(json.dumps(worker(args)))
        return
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    rows = []
    for label in ["sft"] + [r for r in wanted if r != "sft"]:
        cmd = [sys.executable, __file__, "--row", label, "--model", args.model, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--dtype", args.dtype,
               "--mixed-precision", args.mixed_precision]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if r.returncode != 0:
            print(f"{label}: FAILED\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"measured {label}: {rows[-1]['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    if not rows or rows[0]["row"] != "sft":
        sys.exit("the sft baseline failed; no ratios")
    base = rows[0]
    print(f"\nmodel={args.model} batch={args.batch_size} steps={args.steps} (+{args.warmup} warm-up) "
          f"dtype={args.dtype} device={base['device']} threads={os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"| {'row':15s} | {'step s':>7s} | {'x sft':>6s} | {'peak MiB':>8s} | {'x sft':>6s} | {'setup s':>7s} |")
    print(f"|{'-' * 17}|{'-' * 9}|{'-' * 8}|{'-' * 10}|{'-' * 8}|{'-' * 9}|")
    for r in rows:
        print(f"| {r['row']:15s} | {r['step_s']:7.3f} | {r['step_s'] / base['step_s']:6.2f} | "
              f"{r['peak_extra_mib']:8.0f} | {r['peak_extra_mib'] / max(base['peak_extra_mib'], 1e-9):6.2f} | "
              f"{r['setup_s']:7.2f} |")
    for r in rows:
        if "cache_tv_mean" in r:
            print(f"{r['row']}: cache total-variation error mean {r['cache_tv_mean']:.2e}, max {r['cache_tv_max']:.2e}")
    if args.json:
        from obliviate.io import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()
