"""Memorisation metrics as pure functions over token ids / per-token argmax matches.

* Exact memorisation (Tirumala et al. 2022; open-unlearning's ``exact_memorization``): the fraction
  of answer tokens y_t with argmax p(.|x, y_<t) = y_t under teacher forcing.
* Memorisation accuracy MA (Tirumala et al. 2022; Jang et al. 2023 "Knowledge Unlearning", Eq. 2;
  used by Deliberate Imagination): the same fraction over every next-token position of a text.
* Extraction strength (Carlini et al. 2021; open-unlearning): ES = 1 - k/|y| with k the smallest
  prefix length of y from which greedy decoding reproduces the rest of y. Greedy decoding from
  (x, y_<k) follows y exactly iff every teacher-forced argmax at positions >= k matches, so k is one
  past the last mismatch and ES is read off the argmax-match vector without generating.
* Extraction likelihood EL_n (Jang et al. 2023, Eq. 1; DI paper): for a cut t, the fraction of the
  n-grams of the greedy continuation f(x_<t) found among the n-grams of the true continuation x_>=t;
  averaged over cuts. Deviation from Eq. 1, which averages over *every* cut t: like the DI code we
  cut at multiples of a stride (40 tokens) to keep generation affordable; for QA records the one cut
  is the prompt/answer boundary.

open-unlearning's definitions (``definitions="open-unlearning"``, its ``src/evals/metrics/memorization.py``
with ``tokenwise_vocab_logprobs`` in ``utils.py``): both exact memorisation and extraction strength
drop the last scored token (the appended EOS; "-1 to ignore eos prediction"), and its ES loop
``for k in range(n): if preds[k:] == labels[k:]: break`` never reaches k = n, so an item whose last
(kept) token is wrong scores 1/n where ES = 1 - k/|y| gives 0 (``extraction_strength(...,
stop_before_last=True)``). ``suites.ou_token_stats`` does the dropping.
"""

from __future__ import annotations

from collections import Counter

import torch


def exact_memorisation(match: torch.Tensor) -> float:
    """Mean of a per-token argmax-match vector (bool/0-1, [n]); NaN for an empty vector."""
    return float(match.double().mean()) if match.numel() else float("nan")


memorisation_accuracy = exact_memorisation  # MA: the same quantity over all positions of a text


def extraction_strength(match: torch.Tensor, stop_before_last: bool = False) -> float:
    """ES = 1 - k/|y| with k = 1 + index of the last mismatch (0 when every token matches).

    ``stop_before_last``: open-unlearning's loop, k = min(1 + last mismatch, |y| - 1), so the
    minimum is 1/|y| instead of 0; an empty vector then scores 0 (its value) instead of NaN.
    E.g. match [1, 0, 1]: 1 - 2/3 either way; match [1, 1, 0]: 0, or 1/3 with ``stop_before_last``.
    """
    n = match.numel()
    if n == 0:
        return 0.0 if stop_before_last else float("nan")
    wrong = (~match.bool()).nonzero()
    k = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1
    if stop_before_last:
        k = min(k, n - 1)
    return 1.0 - k / n


def ngrams(tokens, n: int) -> list[tuple]:
    tokens = list(tokens)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_overlap(generated, reference, n: int) -> float:
    """overlap_n(a, b) = sum_{c in ng(a)} 1{c in ng(b)} / |ng(a)|; 0 if a has no n-gram."""
    gen = ngrams(generated, n)
    if not gen:
        return 0.0
    ref = set(ngrams(reference, n))
    return sum(g in ref for g in gen) / len(gen)


def extraction_likelihood(generations: list, references: list, n: int) -> float:
    """EL_n of one sequence: mean overlap_n over its cuts (lists of token ids per cut)."""
    if not generations:
        return float("nan")
    return sum(ngram_overlap(g, r, n) for g, r in zip(generations, references)) / len(generations)


def rep_n(tokens, n: int) -> float:
    """rep-n (Welleck et al. 2020): 1 - |unique n-grams| / |n-grams| of one sequence; 0 if none."""
    g = ngrams(tokens, n)
    return 1.0 - len(set(g)) / len(g) if g else 0.0


def distinct_n(sequences: list, n: int) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / all n-grams over a corpus of sequences."""
    counts = Counter(g for s in sequences for g in ngrams(s, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0
