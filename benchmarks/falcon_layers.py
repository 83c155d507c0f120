"""FALCON's layer choice against a layer sweep (issue 15): which layer is really best, and which
does each mutual-information estimator pick?

Plants the tests' fact set in SmolLM2-135M (``make_facts(6, 3, seed=1)``, cached), then for every
candidate layer runs FALCON at that layer with the same steps, lr and batch, and measures

* forget drop: 1 - forget Q_A_Prob after / before (people 0-2; higher is better),
* kept retention: kept Q_A_Prob after / before (people 3-5, never trained on; higher is better),
* general perplexity on ``demo_metrics.GENERAL_TEXT`` (lower is better),
* selectivity = forget drop + kept retention - 1 (1 is perfect),
* score = selectivity - max(0, general ppl after / before - 1): the sweep's ground truth of a
  layer (1 is perfect); at a budget where every layer removes the facts, the damage to general text
  is what separates layers.

It also estimates I(forget; retain) per layer on the planted model with the reference estimator
(PCA 95% + KDE, FALCON's code) and with KSG on whitened principal components
(``analysis/mi.py``), and prints each one's pick next to the sweep's best layer, plus a plot.

    python benchmarks/falcon_layers.py                       # every layer of SmolLM2 (30)
    python benchmarks/falcon_layers.py --layers 0 3 7 11 15 19 23 27 --steps 30
    python benchmarks/falcon_layers.py --replot runs/falcon_layers     # redraw sweep.png from sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OBLIVIATE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "obliviate"))

import numpy as np  # noqa: E402

import obliviate  # noqa: E402
from obliviate.analysis.mi import layer_states, plot_selection, select_from_states  # noqa: E402
from obliviate.data.encode import encode_records  # noqa: E402
from obliviate.demo_metrics import GENERAL_TEXT  # noqa: E402
from obliviate.eval.general import perplexity  # noqa: E402
from obliviate.eval.qa import answer_logprobs, answer_prob  # noqa: E402
from obliviate.planted import planted_model  # noqa: E402


def general_ppl(model, tok) -> float:
    total, n = answer_logprobs(model, tok, [{"text": t} for t in GENERAL_TEXT])
    return perplexity(-float(total.sum()), int(n.sum()))


def measure(model, tok, forget, kept) -> dict[str, float]:
    return {"forget_prob": answer_prob(model, tok, forget).mean().item(),
            "kept_prob": answer_prob(model, tok, kept).mean().item(), "general_ppl": general_ppl(model, tok)}


def plot_sweep(rows: list[dict], best: int, ref_pick: int, ksg_pick: int, path: Path) -> Path:
    """Two panels over layers: the sweep's score (best marked) and both estimators' I(F; R) (picks marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layer"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    top.plot(layers, [r["score"] for r in rows], "o-", color="tab:blue", label="sweep score")
    top.plot([best], [next(r["score"] for r in rows if r["layer"] == best)], "*", markersize=16, color="tab:blue",
             markeredgecolor="black", label=f"sweep's best: layer {best}")
    top.set_ylabel("forget drop + kept retention - 1\n- ppl increase")
    top.grid(alpha=0.3)
    top.legend(fontsize=7)
    handles = []
    for ax, key, pick, colour, name in ((bottom, "mi_reference", ref_pick, "tab:purple", "reference (PCA 95% + KDE)"),
                                        (bottom.twinx(), "mi_ksg", ksg_pick, "tab:green", "KSG (whitened PCs)")):
        handles += ax.plot(layers, [r[key] for r in rows], "o-", color=colour, label=name)
        handles += ax.plot([pick], [next(r[key] for r in rows if r["layer"] == pick)], "*", markersize=16,
                           color=colour, markeredgecolor="black", label=f"{name}: picks layer {pick}")
        ax.set_ylabel(f"I(F; R) {name.split(' (')[0]} [nats]", color=colour)
    bottom.set_xlabel("decoder block (output)")
    bottom.grid(alpha=0.3)
    bottom.legend(handles=handles, fontsize=7)
    fig.suptitle("FALCON at every layer of SmolLM2 vs the MI criterion (lowest I picks)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", nargs="+", type=int, default=None, help="candidate layers (default: all)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--alpha", type=float, default=100.0)
    ap.add_argument("--components", type=int, default=4, help="KSG: principal components per set")
    ap.add_argument("--samples", type=int, default=9, help="MI: forget and retain samples (all 9 facts each)")
    ap.add_argument("--out", default="runs/falcon_layers")
    ap.add_argument("--replot", metavar="DIR", help="only redraw DIR/sweep.png from DIR/sweep.json")
    args = ap.parse_args()
    if args.replot:
        d = json.loads((Path(args.replot) / "sweep.json").read_text())
        print(plot_sweep(d["rows"], d["best_layer"], d["reference_pick"], d["ksg_pick"], Path(args.replot) / "sweep.png"))
        return
    facts = obliviate.make_facts(6, 3, seed=1)
    people = list(dict.fromkeys(f["person"] for f in facts))[:3]
    forget = [f for f in facts if f["person"] in people]
    kept = [f for f in facts if f["person"] not in people]
    path = planted_model(args.model, facts, steps=20, lr=2e-4, batch_size=6, progress=False)
    model, tok = obliviate.load_model(path)
    before = measure(model, tok, forget, kept)
    print("planted:", before, flush=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    layers, fs, rs = layer_states(model, encode_records(tok, forget)[:args.samples],
                                  encode_records(tok, kept)[:args.samples], pad, args.layers)
    ref = select_from_states(fs, rs, layers)
    ksg = select_from_states(fs, rs, layers, estimator="ksg", components=args.components)
    rows = []
    for layer in layers:
        model, tok = obliviate.load_model(path)
        obliviate.unlearn(model, tok, forget, kept, method="falcon", layer=layer, lr=args.lr, alpha=args.alpha,
                          tokens="answer", max_steps=args.steps, batch_size=len(forget), scheduler="constant",
                          progress=False, save=False, seed=0)
        m = measure(model, tok, forget, kept)
        m["forget_drop"] = 1 - m["forget_prob"] / before["forget_prob"]
        m["kept_retention"] = m["kept_prob"] / before["kept_prob"]
        m["selectivity"] = m["forget_drop"] + m["kept_retention"] - 1
        m["score"] = m["selectivity"] - max(0.0, m["general_ppl"] / before["general_ppl"] - 1)
        m.update(layer=layer, mi_reference=ref.mi[layer], mi_ksg=ksg.mi[layer])
        rows.append(m)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}, flush=True)
    best = max(rows, key=lambda r: r["score"])["layer"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"before": before, "rows": rows, "best_layer": best,
                                                "reference_pick": ref.layer, "ksg_pick": ksg.layer,
                                                "settings": vars(args)}, indent=1))
    plot_selection(ref, out / "mi.png", title=f"I(F; R) per layer (sweep's best: {best})", other=ksg)
    plot_sweep(rows, best, ref.layer, ksg.layer, out / "sweep.png")
    rank = {r["layer"]: i for i, r in enumerate(sorted(rows, key=lambda r: -r["score"]))}
    print(f"\nsteps={args.steps} lr={args.lr} alpha={args.alpha} batch={len(forget)}; before: forget prob "
          f"{before['forget_prob']:.3f}, kept prob {before['kept_prob']:.3f}, ppl {before['general_ppl']:.2f}")
    print("| layer | forget drop | kept retention | general ppl | selectivity | score | I ref | I ksg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        marks = "".join(s for s, ok in ((" best", r["layer"] == best), (" ref-pick", r["layer"] == ref.layer),
                                        (" ksg-pick", r["layer"] == ksg.layer)) if ok)
        print(f"| {r['layer']}{marks} | {r['forget_drop']:.3f} | {r['kept_retention']:.3f} | {r['general_ppl']:.2f} | "
              f"{r['selectivity']:.3f} | {r['score']:.3f} | {r['mi_reference']:.3f} | {r['mi_ksg']:.3f} |")
    print(f"sweep's best layer {best}; reference estimator picks {ref.layer} (rank {rank[ref.layer] + 1} of "
          f"{len(rows)}), KSG picks {ksg.layer} (rank {rank[ksg.layer] + 1}); Spearman(score, -I): "
          f"reference {_spearman([r['score'] for r in rows], [-r['mi_reference'] for r in rows]):.2f}, "
          f"ksg {_spearman([r['score'] for r in rows], [-r['mi_ksg'] for r in rows]):.2f}")


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic) if len(a) > 2 else float("nan")


if __name__ == "__main__":
    main()
