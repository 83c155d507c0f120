"""Choose SPUNGE's merge density and lambda on a small validation split.

The SPUNGE paper does not publish its TIES settings (PAPERS.md: choose them on a validation split
and report them). For each (density, lambda) candidate we stream-merge the subset models, then
score a random sample of forget records and of retain records (answer probability for QA, for
text exp of the mean token log-prob). Among candidates whose retain score stays >= (1 - tol) x the
original model's, the one with the lowest forget score wins; if none does, the one with the
highest retain score. The validation forget records are drawn from the forget set itself (every
forget record is a target), the retain ones from the retain set.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from ..merge import MergeConfig, merge_files


def _score(path: Path, cfg, forget, retain) -> tuple[float, float]:
    from ..eval import answer_prob
    from ..models import load_model

    model, tok = load_model(path, dtype=cfg.dtype)
    f = float(answer_prob(model, tok, forget, cfg.data).mean())
    r = float(answer_prob(model, tok, retain, cfg.data).mean())
    return f, r


def pick(candidates: list[dict[str, Any]], original_retain: float, tol: float) -> dict[str, Any]:
    """The candidate with the lowest forget score among those keeping retain; else the best retain."""
    ok = [c for c in candidates if c["retain"] >= (1 - tol) * original_retain]
    return min(ok, key=lambda c: c["forget"]) if ok else max(candidates, key=lambda c: c["retain"])


def choose_merge(cfg, base: Path, models: list[str], forget, retain, run: Path) -> tuple[MergeConfig, dict[str, Any]]:
    a = cfg.auto_merge
    rng = random.Random(a.seed)
    vf = rng.sample(forget, min(a.forget_n, len(forget)))
    vr = rng.sample(retain, min(a.retain_n, len(retain)))
    orig_f, orig_r = _score(base, cfg, vf, vr)
    densities = a.densities if cfg.merge.method == "ties" and cfg.merge.dare_p is None else (cfg.merge.density,)
    candidates = []
    tmp = run / "auto_merge_tmp"
    for d in densities:
        for lam in a.lams:
            mc = dataclasses.replace(cfg.merge, density=d, lam=lam)
            merge_files(base, models, tmp, mc)
            f, r = _score(tmp, cfg, vf, vr)
            candidates.append({"density": d, "lam": lam, "forget": f, "retain": r})
    best = pick(candidates, orig_r, a.retain_tolerance)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    chosen = dataclasses.replace(cfg.merge, density=best["density"], lam=best["lam"])
    return chosen, {"original": {"forget": orig_f, "retain": orig_r}, "candidates": candidates, "chosen": best,
                    "rule": f"min forget s.t. retain >= {1 - a.retain_tolerance:.2f} x original"}
