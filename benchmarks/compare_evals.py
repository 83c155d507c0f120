"""Compare two ``obliviate eval`` run directories metric by metric (e.g. float32 vs bfloat16 compute).

    python benchmarks/compare_evals.py runs/eval_fp32 runs/eval_bf16 [--suites tofu mia memorisation]

Prints, per suite, each summary metric of A and B with the absolute difference, each per-item
metric's largest absolute difference, and the stage times each run recorded (``meta.timings``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def compare(a: Path, b: Path, suites: list[str]) -> str:
    from obliviate.eval.results import load_suite

    lines = []
    for suite in suites:
        ra, rb = load_suite(a, suite), load_suite(b, suite)
        lines += [f"## {suite}", "", "| metric | A | B | abs diff |", "|---|---|---|---|"]
        for name, m in ra.summary.items():
            x = m.value
            y = rb.summary[name].value if name in rb.summary else float("nan")
            lines.append(f"| {name} | {x:.4f} | {y:.4f} | {abs(x - y):.2e} |")
        worst = []
        for name, xs in ra.items.items():
            ys = rb.items.get(name)
            if ys is None or len(ys) != len(xs):
                continue
            d = [abs(float(x) - float(y)) for x, y in zip(xs, ys) if x is not None and y is not None
                 and not (math.isnan(float(x)) or math.isnan(float(y)))]
            if d:
                worst.append(f"{name} {max(d):.2e}")
        lines += ["", "largest per-item abs diff: " + ", ".join(worst), ""]
        for label, r in (("A", ra), ("B", rb)):
            t = r.meta.get("timings")
            if t:
                lines.append(f"{label} timings (cumulative over the run's suites so far): "
                             + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items()))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--suites", nargs="+", default=["tofu", "mia", "memorisation"])
    args = p.parse_args()
    print(compare(args.a, args.b, args.suites))


if __name__ == "__main__":
    main()
