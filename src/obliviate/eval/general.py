"""General ability: WikiText-2 perplexity (strided sliding window) and generation fluency.

Perplexity follows the Hugging Face "Perplexity of fixed-length models" recipe: the test text's
lines are joined with "\\n\\n" (as the recipe does with the ``datasets`` rows) and tokenised once; windows
of ``max_length`` tokens start every ``stride`` tokens; each window scores only the tokens not
scored by the previous one (the rest is context), so every token after the first is scored exactly
once with at least ``max_length - stride`` tokens of context (except near the start).
PPL = exp(sum NLL / number of scored tokens). Unlike the recipe, which averages per-window mean
losses weighted by window length, we sum token NLLs exactly. Defaults: max_length 512, stride 256.

Fluency (as in the Deliberate Imagination paper, but greedy so it is deterministic): continue a
fixed prompt set (the first ``prompt_words`` words of the first WikiText-2 test paragraphs that are
long enough) for ``max_new_tokens`` tokens; report rep-2/3/4 (mean per generation) and distinct-2/3
over all generations, on whitespace words so numbers compare across tokenisers; and the
perplexity of the generations under a fluency model (the original model, when given).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .memorisation import distinct_n, rep_n


def strided_windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_target) per window: tokens [begin, end), the last n_target of them scored.

    The very first token is never scored (nothing predicts it).
    """
    if stride < 1 or max_length < 2 or stride > max_length:
        raise ValueError(f"need 1 <= stride <= max_length and max_length >= 2, got stride={stride}, max_length={max_length}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        n_target = end - prev_end - (1 if prev_end == 0 else 0)
        if n_target > 0:
            out.append((begin, end, n_target))
        prev_end = end
        if end == n_tokens:
            break
    return out


def perplexity(nll_sum: float, n_tokens: int) -> float:
    return math.exp(nll_sum / max(n_tokens, 1))


def read_wikitext(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_dir():
        p = p / "test.txt"
    if not p.is_file():
        raise DataError(f"WikiText file '{p}' does not exist; pass wikitext2/test.txt (or its folder).")
    return "\n\n".join(p.read_text(encoding="utf-8").splitlines())


def wikitext_perplexity(evaluator, text: str, max_length: int = 512, stride: int = 256,
                        max_tokens: int | None = None) -> tuple[float, list[float]]:
    """(perplexity, per-window mean NLL) of ``text`` under the evaluator's model."""
    ids = evaluator.tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    examples = []
    for begin, end, n_target in strided_windows(len(ids), max_length, stride):
        window = ids[begin:end]
        examples.append({"input_ids": window, "labels": [-100] * (len(window) - n_target) + window[len(window) - n_target:]})
    stats = evaluator.score(examples)
    nll = [-float(s["logprobs"].double().sum()) for s in stats]
    counts = [s["logprobs"].numel() for s in stats]
    return perplexity(sum(nll), sum(counts)), [a / max(b, 1) for a, b in zip(nll, counts)]


def fluency_prompts(text: str, n: int = 32, prompt_words: int = 32) -> list[str]:
    """The first ``prompt_words`` words of the first ``n`` paragraphs with at least twice as many words
    (none for ``n <= 0``)."""
    out: list[str] = []
    if n <= 0:
        return out
    for line in text.split("\n\n"):
        words = line.split()
        if len(words) >= 2 * prompt_words and not line.strip().startswith("="):
            out.append(" ".join(words[:prompt_words]))
            if len(out) == n:
                break
    return out


def fluency_stats(generations: list[str]) -> dict[str, float]:
    """rep-2/3/4 (mean over generations) and distinct-2/3 (corpus) on whitespace words."""
    words = [g.split() for g in generations]
    out = {f"rep_{n}": float(np.mean([rep_n(w, n) for w in words])) for n in (2, 3, 4)}
    out.update({f"distinct_{n}": distinct_n(words, n) for n in (2, 3)})
    return out


def text_perplexity(evaluator, prompts: list[str], continuations: list[str]) -> float:
    """Token-weighted perplexity of ``continuations`` given ``prompts`` under the evaluator's model."""
    tok = evaluator.tokenizer
    examples = []
    for p, c in zip(prompts, continuations):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        c_ids = tok(p + c, add_special_tokens=False)["input_ids"][len(p_ids):]
        if c_ids:
            examples.append({"input_ids": p_ids + c_ids, "labels": [-100] * len(p_ids) + c_ids})
    if not examples:
        return float("nan")
    stats = evaluator.score(examples)
    return perplexity(-sum(float(s["logprobs"].double().sum()) for s in stats), sum(s["logprobs"].numel() for s in stats))
