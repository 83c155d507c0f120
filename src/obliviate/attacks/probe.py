"""Probing attacks: is the forgotten knowledge still readable inside the model?

* **Logit lens** (nostalgebraist 2020): decode the residual stream after every decoder layer
  through the model's own final norm and LM head, ``logits_l = head(norm(h_l))``, and measure
  the true answer tokens (teacher-forced after the question): their rank among the vocabulary
  (0 = top-1) and TOFU's Q_A_Prob under that layer's distribution. At the last layer this is
  the model's own output. An unlearned model whose intermediate layers still rank the answer
  high only hides the knowledge at its output (the concern RMU/FALCON raise).
* **Linear probe** (truth probe, after Burns et al. 2023 / Marks & Tegmark 2023, simplified):
  for each forget item, the question with its true answer (label 1) and with a distractor answer
  of the same form (label 0); features are the mean hidden state over the answer tokens at one
  layer; a logistic regression (standardised features, L2, ``C``) is cross-validated with
  folds grouped so that an item's two answers, and any answer text reused as another item's
  distractor, never sit on both sides of a split (``fold_groups``).
  Its accuracy is compared with the output-level accuracy (how often the model's own
  answer log-prob prefers the true answer). Selecting the best layer on the same folds is
  optimistic; with a handful of items this is a coarse, noisy signal.

Distractors: ``perturbed_answer`` when a record has it (TOFU; the first if a list), else, for
records with a ``person`` field (``make_facts``), another forget item's answer to the same
question template with the name swapped in, else another record's answer (seeded).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.encode import EncodeConfig, IGNORE, collate, encode_qa
from ..errors import ConfigError
from .common import AttackResult


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of the logit lens and the linear probe."""

    folds: int = field(default=5, metadata={"help": "Cross-validation folds of the linear probe (capped at the number of items)."})
    C: float = field(default=1.0, metadata={"help": "Inverse L2 strength of the logistic-regression probe."})
    seed: int = field(default=0, metadata={"help": "Seed of the distractor choice and the folds."})
    batch_size: int = field(default=8, metadata={"help": "Items per forward pass."})

    def __post_init__(self):
        if self.folds < 2:
            raise ConfigError(f"'probe.folds' must be >= 2, got {self.folds}.")
        if not self.C > 0:
            raise ConfigError(f"'probe.C' must be > 0, got {self.C}.")


def _parts(model):
    """(embedding, decoder layers, final norm, LM head) of a Llama-style causal LM."""
    dec = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    if not all(hasattr(dec, a) for a in ("layers", "norm", "embed_tokens")):
        raise ConfigError(f"Probing needs a Llama-style decoder (embed_tokens, layers, norm); {type(model).__name__} has none.")
    return dec.embed_tokens, dec.layers, dec.norm, model.get_output_embeddings()


@torch.no_grad()
def hidden_states(model, input_ids, attention_mask) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Residual stream after the embedding and after every decoder layer ([L+1] x [B, T, d]) and the logits."""
    emb, layers, _, _ = _parts(model)
    captured: list[torch.Tensor] = []

    def hook(_m, _i, out):
        captured.append((out[0] if isinstance(out, tuple) else out).detach())

    handles = [emb.register_forward_hook(hook)] + [layer.register_forward_hook(hook) for layer in layers]
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        for h in handles:
            h.remove()
    return captured, logits


def lens_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer token: rank of the true next token (0 = top-1) and its log-prob; ([n], [n]) over masked positions."""
    lg, tg = logits[:, :-1].float(), labels[:, 1:]
    mask = tg != IGNORE
    lg, tg = lg[mask], tg[mask]
    true = lg.gather(-1, tg[:, None])
    rank = (lg > true).sum(-1)
    logp = (true.squeeze(-1) - torch.logsumexp(lg, -1))
    return rank, logp


def _batches(tokenizer, examples, batch_size):
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for s in range(0, len(examples), batch_size):
        yield collate(examples[s:s + batch_size], pad)


@torch.no_grad()
def logit_lens(model, tokenizer, records, encode: EncodeConfig | None = None, batch_size: int = 8) -> dict[str, list[float]]:
    """Per layer (0 = embeddings): mean/median answer-token rank, top-1 rate and mean Q_A_Prob."""
    _, _, norm, head = _parts(model)
    enc = encode or EncodeConfig()
    examples = [encode_qa(tokenizer, r["question"], r["answer"], enc) for r in records]
    device = next(model.parameters()).device
    ranks: dict[int, list[torch.Tensor]] = {}
    probs: dict[int, list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    for b in _batches(tokenizer, examples, batch_size):
        hs, _ = hidden_states(model, b["input_ids"].to(device), b["attention_mask"].to(device))
        labels = b["labels"].to(device)
        n_tok = (labels[:, 1:] != IGNORE).sum(-1)
        item = torch.repeat_interleave(torch.arange(len(n_tok), device=device), n_tok)
        for li, h in enumerate(hs):
            rank, logp = lens_stats(head(norm(h)), labels)
            ranks.setdefault(li, []).append(rank.cpu())
            per_item = torch.zeros(len(n_tok), device=device).index_add_(0, item, logp) / n_tok.clamp_min(1)
            probs.setdefault(li, []).append(per_item.exp().cpu())
    model.train(was_training)
    out: dict[str, list[float]] = {"mean_rank": [], "median_rank": [], "top1": [], "answer_prob": []}
    for li in sorted(ranks):
        r = torch.cat(ranks[li]).float()
        out["mean_rank"].append(float(r.mean()))
        out["median_rank"].append(float(r.median()))
        out["top1"].append(float((r == 0).float().mean()))
        out["answer_prob"].append(float(torch.cat(probs[li]).mean()))
    return out


def distractors(records: list[dict[str, Any]], seed: int = 0) -> list[str]:
    """A wrong answer of the same form for every record (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for i, r in enumerate(records):
        pa = r.get("perturbed_answer")
        if pa:
            out.append(pa[0] if isinstance(pa, list) else str(pa))
            continue
        cands = []
        if "person" in r:
            shape = r["question"].replace(r["person"], "{}")
            cands = [o["answer"].replace(o["person"], r["person"]) for o in records
                     if "person" in o and o["person"] != r["person"] and o["question"].replace(o["person"], "{}") == shape]
        cands = [c for c in cands if c != r["answer"]] or [o["answer"] for o in records if o["answer"] != r["answer"]]
        if not cands:
            raise ConfigError(f"Cannot build a distractor for forget record {i}: every record has the same answer.")
        out.append(rng.choice(cands))
    return out


@torch.no_grad()
def answer_features(model, tokenizer, records, answers: list[str], encode: EncodeConfig | None = None,
                    batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Mean hidden state over the answer tokens per layer, [L+1, N, d], and mean answer log-prob, [N]."""
    from ..methods.losses import token_logprobs

    enc = encode or EncodeConfig()
    examples = [encode_qa(tokenizer, r["question"], a, enc) for r, a in zip(records, answers)]
    device = next(model.parameters()).device
    feats, scores = [], []
    was_training = model.training
    model.eval()
    for b in _batches(tokenizer, examples, batch_size):
        hs, logits = hidden_states(model, b["input_ids"].to(device), b["attention_mask"].to(device))
        m = (b["labels"] != IGNORE).to(device).unsqueeze(-1).float()
        feats.append(torch.stack([(h.float() * m).sum(1) / m.sum(1) for h in hs]).cpu())
        lp, mask = token_logprobs(logits, b["labels"].to(device))
        scores.append((lp.sum(-1) / mask.sum(-1).clamp_min(1)).cpu())
    model.train(was_training)
    return torch.cat(feats, 1).numpy(), torch.cat(scores).numpy()


def probe_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, C: float) -> float:
    """Grouped k-fold accuracy of a standardised L2 logistic regression on ``features`` [N, d]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, len(np.unique(groups)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return float(cross_val_score(clf, features, labels, groups=groups, cv=GroupKFold(n_splits=k)).mean())


def fold_groups(records: list[dict[str, Any]]) -> np.ndarray:
    """Cross-validation group of each item: its question template for swapped-name distractors.

    A swapped distractor is another item's true answer, so with folds by item the held-out item's
    true answer occurs in training only as a distractor (label 0) and a probe that reads answer
    content scores systematically *below* chance (we measured 0.3 on 9 planted facts). Grouping
    by template (``make_facts`` templates have disjoint value lists) keeps every answer's content
    within one fold, so the probe must find a truth direction that transfers across templates.
    Records with their own ``perturbed_answer`` (TOFU) are grouped by item."""
    keys = [r["question"].replace(r["person"], "{}") if "person" in r and not r.get("perturbed_answer") else f"#{i}"
            for i, r in enumerate(records)]
    ids = {k: j for j, k in enumerate(dict.fromkeys(keys))}
    out = np.array([ids[k] for k in keys])
    return out if len(ids) >= 2 else np.arange(len(records))


def truth_probe(model, tokenizer, records, cfg: ProbeConfig = ProbeConfig(), encode: EncodeConfig | None = None) -> dict[str, Any]:
    """Per-layer probe accuracy and the output-level accuracy (true answer's log-prob > distractor's)."""
    wrong = distractors(records, cfg.seed)
    f_true, s_true = answer_features(model, tokenizer, records, [r["answer"] for r in records], encode, cfg.batch_size)
    f_false, s_false = answer_features(model, tokenizer, records, wrong, encode, cfg.batch_size)
    n = len(records)
    labels = np.r_[np.ones(n), np.zeros(n)]
    g = fold_groups(records)
    groups = np.r_[g, g]
    acc = [probe_accuracy(np.concatenate([a, b]), labels, groups, cfg.folds, cfg.C) for a, b in zip(f_true, f_false)]
    return {"layer_accuracy": acc, "output_accuracy": float((s_true > s_false).mean()), "n_items": n}


def probe_attacks(model, tokenizer, original, forget, cfg: ProbeConfig = ProbeConfig(),
                  encode: EncodeConfig | None = None) -> list[AttackResult]:
    """Two rows: the logit lens's best layer and the linear truth probe's best layer."""
    lens_u = logit_lens(model, tokenizer, forget, encode, cfg.batch_size)
    lens_o = logit_lens(original, tokenizer, forget, encode, cfg.batch_size)
    best = int(np.argmax(lens_u["answer_prob"]))
    lens = AttackResult(
        attack="logit-lens", metric="Q_A_Prob (best layer)", before=lens_u["answer_prob"][-1],
        after=lens_u["answer_prob"][best], original=lens_o["answer_prob"][-1],
        details={"best_layer": best, "unlearned": lens_u, "original": lens_o},
    )
    tp_u = truth_probe(model, tokenizer, forget, cfg, encode)
    tp_o = truth_probe(original, tokenizer, forget, cfg, encode)
    best = int(np.argmax(tp_u["layer_accuracy"]))
    probe = AttackResult(
        attack="linear-probe", metric="true-vs-distractor acc (output -> best-layer probe)",
        before=tp_u["output_accuracy"], after=tp_u["layer_accuracy"][best], original=tp_o["output_accuracy"],
        comparable=False,
        details={"best_layer": best, "unlearned": tp_u, "original": tp_o,
                 "original_best_probe": max(tp_o["layer_accuracy"])},
    )
    return [lens, probe]
