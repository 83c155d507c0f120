"""Per-attribute evaluation of SPUNGE vs. the base method, and the report table.

Every record gets a score: for QA records TOFU's ``Q_A_Prob`` (``obliviate.eval.answer_prob``:
exp of the mean answer-token log-prob), for text records the mean per-token log-likelihood
(``answer_logprobs`` sum / tokens; for ToxiGen: of hateful vs. neutral statements). A set's score
is the mean over its records, overall and per value of its group field. Lower forget scores mean
more forgetting; retain/neutral scores should stay close to the original model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.encode import EncodeConfig
from .sources import Source


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set: records, and the field to break the score down by."""

    name: str = field(metadata={"help": "Row label in the table (e.g. 'neutral')."})
    source: Source = field(metadata={"help": "Where its records come from."})
    by: str | None = field(default=None, metadata={"help": "Field whose values get their own rows (None: overall only)."})


def record_scores(model, tokenizer, records: list[dict[str, Any]], encode: EncodeConfig | None = None) -> torch.Tensor:
    """Per record: answer probability (QA) or mean per-token log-likelihood (text)."""
    from ..eval import answer_logprobs, answer_prob

    if "question" in records[0]:
        return answer_prob(model, tokenizer, records, encode)
    total, n = answer_logprobs(model, tokenizer, records, encode)
    return total / n.clamp_min(1)


def group_means(scores: torch.Tensor, values: list[str] | None) -> dict[str, float]:
    """{'all': mean, value: mean over that value's records, ...} (values in first-seen order)."""
    out = {"all": float(scores.mean())}
    if values is not None:
        for v in dict.fromkeys(values):
            idx = [i for i, x in enumerate(values) if x == v]
            out[str(v)] = float(scores[idx].mean())
    return out


def evaluate_model(model, tokenizer, sets: dict[str, tuple[list[dict[str, Any]], str | None]],
                   encode: EncodeConfig | None = None) -> dict[str, dict[str, float]]:
    """set name -> group -> mean score, for ``sets`` of (records, group field)."""
    out = {}
    for name, (records, by) in sets.items():
        scores = record_scores(model, tokenizer, records, encode)
        out[name] = group_means(scores, [str(r.get(by)) for r in records] if by else None)
    return out


def table_markdown(results: dict[str, dict[str, dict[str, float]]], kinds: dict[str, str]) -> str:
    """A Markdown table: rows (set, group), one column per model, and spunge - base."""
    models = list(results)
    head = "| set | group | metric | " + " | ".join(models) + (" | spunge - base |" if {"spunge", "base"} <= set(models) else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    first = results[models[0]]
    for s, groups in first.items():
        for g in groups:
            vals = [results[m][s][g] for m in models]
            row = f"| {s} | {g} | {kinds.get(s, '')} | " + " | ".join(f"{v:.4f}" for v in vals)
            if {"spunge", "base"} <= set(models):
                row += f" | {results['spunge'][s][g] - results['base'][s][g]:+.4f}"
            lines.append(row + " |")
    return "\n".join(lines) + "\n"
