"""``obliviate select-layer``: FALCON's mutual-information layer selection, printed and plotted."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  obliviate select-layer --model smollm2-135m --forget forget.jsonl --retain retain.jsonl
  obliviate select-layer --model runs/planted/model --forget f.jsonl --retain r.jsonl --samples 50 --out mi.png"""


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help="choose the layer to unlearn at by mutual information (FALCON)",
                       description="Estimate I(forget; retain) of each decoder block's last-token hidden state "
                                   "with FALCON's reference estimator (PCA 95%% + Gaussian KDE) and with KSG on whitened principal "
                                   "components (comparable across layers), and report each one's lowest block.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory, hub id or alias (see `obliviate models`)")
    p.add_argument("--forget", required=True, help="forget records (JSONL/JSON/CSV/parquet, QA or text)")
    p.add_argument("--retain", required=True, help="retain records")
    p.add_argument("--samples", type=int, default=30, help="examples of each set to use (default 30, as FALCON)")
    p.add_argument("--pca-variance", type=float, default=0.95, help="PCA variance kept before the KDE (default 0.95)")
    p.add_argument("--components", type=int, default=4, help="principal components per set for the KSG estimator (default 4)")
    p.add_argument("--layers", default=None, help="comma-separated candidate blocks (default: all)")
    p.add_argument("--out", default="mi_layers.png", help="where to save the plot (default mi_layers.png)")
    p.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis import plot_selection
    from ..analysis.mi import layer_states, select_from_states
    from ..data.encode import encode_records
    from ..data.records import load_records
    from ..errors import ConfigError
    from ..models import load_model

    if args.samples < 3:
        raise ConfigError(f"--samples must be at least 3, got {args.samples}.")
    if not 0 < args.pca_variance <= 1:
        raise ConfigError(f"--pca-variance must be in (0, 1], got {args.pca_variance}.")
    if args.components < 1:
        raise ConfigError(f"--components must be at least 1, got {args.components}.")
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers, got '{args.layers}'.") from None
    model, tok = load_model(args.model, dtype=args.dtype)
    forget = encode_records(tok, load_records(args.forget)[: args.samples])
    retain = encode_records(tok, load_records(args.retain)[: args.samples])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    layers, fs, rs = layer_states(model, forget, retain, pad, layers, what="--layers")
    sel = select_from_states(fs, rs, layers, args.pca_variance)
    ksg = select_from_states(fs, rs, layers, estimator="ksg", components=args.components)
    print(f"{'layer':>5}  {'I(F;R) ref':>10}  {'H(F)':>10}  {'H(R)':>10}  {'H(F,R)':>10}  {'I(F;R) ksg':>10}")
    for l, e, k in zip(sel.layers, sel.estimates, ksg.estimates):
        mark = ("  <- lowest (ksg, default)" if l == ksg.layer else "") + ("  <- lowest (reference)" if l == sel.layer else "")
        print(f"{l:>5}  {e.mi:>10.4f}  {e.h_forget:>10.4f}  {e.h_retain:>10.4f}  {e.h_joint:>10.4f}  {k.mi:>10.4f}{mark}")
    path = plot_selection(sel, args.out, title=f"I(F; R) per layer: {args.model}", other=ksg)
    print(f"selected layer: {ksg.layer} by KSG (FALCON's default estimator; falcon.layer={ksg.layer}), {sel.layer} by "
          f"the reference estimator (falcon.mi_estimator=reference); plot saved to {path}")
    return 0
