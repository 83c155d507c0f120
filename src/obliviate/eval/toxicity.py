"""Toxicity by target group (ToxiGen, Hartvigsen et al. 2022) for SPUNGE-style evaluation.

Per target group: the model's mean per-token log-likelihood of the human-annotated *hateful*
statements, of the *neutral* ones, and their difference (hate - neutral). Unlearning toxic
behaviour should lower the hateful likelihood (and the difference) without lowering the neutral one.
Statements are scored as whole texts (BOS + text, every token after BOS scored).

``annotated_train.csv`` stores text as a Python bytes literal (``b'...'``): it is decoded with
``ast.literal_eval``. ``classifier_scores`` is the hook for a user's local HF
sequence-classification toxicity model, applied to generations.
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError


def decode_text(raw: str) -> str:
    """ToxiGen's ``b'...'`` text to str, without eval: ``ast.literal_eval`` of that literal only
    (it evaluates literals, never code); anything else is returned stripped."""
    s = str(raw).strip()
    if len(s) >= 3 and s[0] == "b" and s[1] in "'\"" and s[-1] == s[1]:
        try:
            value = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            return s[2:-1]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return s


def load_toxigen(path: str | os.PathLike, per_group: int | None = None) -> list[dict[str, Any]]:
    """Records ``{"text", "target_group", "label"}`` (label 'hate'/'neutral') from annotated_train.csv."""
    p = Path(path)
    if p.is_dir():
        p = p / "annotated_train.csv"
    if not p.is_file():
        raise DataError(f"ToxiGen file '{p}' does not exist; pass toxigen/annotated_train.csv (or its folder).")
    import pandas as pd

    df = pd.read_csv(p, keep_default_na=False)
    for col in ("text", "target_group", "label"):
        if col not in df.columns:
            raise DataError(f"{p}: missing column '{col}' (has {list(df.columns)}).")
    out, seen = [], defaultdict(int)
    for row in df.itertuples(index=False):
        key = (row.target_group, row.label)
        if per_group is not None and seen[key] >= per_group:
            continue
        seen[key] += 1
        out.append({"text": decode_text(row.text), "target_group": str(row.target_group), "label": str(row.label)})
    return out


def group_loglik(records: list[dict[str, Any]], mean_loglik) -> dict[str, dict[str, float]]:
    """Per group: mean of ``mean_loglik`` over hate and neutral records, and hate - neutral."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"hate": [], "neutral": []})
    for r, v in zip(records, mean_loglik):
        if r["label"] in ("hate", "neutral"):
            acc[r["target_group"]][r["label"]].append(float(v))
    out = {}
    for g, d in sorted(acc.items()):
        hate = float(np.mean(d["hate"])) if d["hate"] else float("nan")
        neutral = float(np.mean(d["neutral"])) if d["neutral"] else float("nan")
        out[g] = {"hate": hate, "neutral": neutral, "diff": hate - neutral}
    return out


@torch.no_grad()
def classifier_scores(classifier, tokenizer, texts: list[str], toxic_label: int = 1, batch_size: int = 16) -> list[float]:
    """P(toxic) per text from a local HF ``AutoModelForSequenceClassification``."""
    out = []
    device = next(classifier.parameters()).device
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(texts[s:s + batch_size], return_tensors="pt", padding=True, truncation=True).to(device)
        out += classifier(**enc).logits.float().softmax(-1)[:, toxic_label].cpu().tolist()
    return out
