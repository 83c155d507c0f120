"""Batched, memoised model runner shared by every suite.

``Evaluator.score(examples)`` runs teacher-forced forwards over encoded examples (``input_ids`` and
``labels`` with -100 on unscored positions) and returns, per item and per scored token:
``logprobs`` (log p(y_t)), ``match`` (argmax == y_t), and ``mu``/``sigma`` (mean and std of
log p(z), z ~ p(.|y_<t), for Min-K%++). One forward feeds probability, truth ratio, MIA and
memorisation; results are memoised by token sequence, so a suite never scores the same
sequence twice (e.g. TOFU's forget answers reused by the MIA suite).

``Evaluator.generate(prompts, budgets)`` is batched greedy decoding with left padding and the KV
cache (``model.generate``); each item is cut at EOS and at its own token budget, so the result does
not depend on which other items share its batch.

Items are sorted by length before batching (less padding); position ids are derived from the
attention mask so left- and right-padded batches give the same per-item scores.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..data.encode import IGNORE, EncodeConfig, collate, encode_records, prompt_ids


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


def token_stats(logits: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per-item stats of the scored tokens from logits [B, T, V] and labels [B, T] (-100 = skip)."""
    lg, tg = logits[:, :-1], labels[:, 1:]
    valid = tg != IGNORE
    sel = lg[valid].float()  # [N, V], only scored positions
    lsm = F.log_softmax(sel, dim=-1)
    target = tg[valid]
    lp = lsm.gather(-1, target[:, None]).squeeze(-1)
    match = sel.argmax(-1) == target
    p = lsm.exp()
    mu = (p * lsm).sum(-1)
    sigma = (p * (lsm - mu[:, None]).square()).sum(-1).sqrt()  # centred: no E[x^2] - mu^2 cancellation
    counts = valid.sum(-1).tolist()
    out = []
    for a, b, c, d in zip(lp.split(counts), match.split(counts), mu.split(counts), sigma.split(counts)):
        out.append({"logprobs": a.cpu(), "match": b.cpu(), "mu": c.cpu(), "sigma": d.cpu()})
    return out


class Evaluator:
    """Scores and generates for one model, with memoisation; the model's mode is restored on exit."""

    def __init__(self, model, tokenizer, encode: EncodeConfig | None = None, batch_size: int = 16,
                 progress: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.encode_cfg = encode or EncodeConfig()
        self.batch_size = batch_size
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._scores: dict[tuple, dict[str, torch.Tensor]] = {}
        self._gens: dict[tuple, list[int]] = {}
        self.timings = {"score_s": 0.0, "score_items": 0, "generate_s": 0.0, "generate_items": 0}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- teacher-forced scoring -------------------------------------------------------------
    def encode(self, records: list[dict[str, Any]], answer_field: str = "answer") -> list[dict[str, Any]]:
        """Encode QA records with ``answer_field`` as the answer (e.g. ``paraphrased_answer``)."""
        recs = [{"question": r["question"], "answer": r[answer_field]} if "question" in r else r for r in records]
        return encode_records(self.tokenizer, recs, self.encode_cfg)

    @staticmethod
    def _key(ex: dict[str, Any]) -> tuple:
        return tuple(ex["input_ids"]), tuple(ex["labels"])

    @torch.no_grad()
    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"].to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        return self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask, position_ids=pos).logits

    def score(self, examples: list[dict[str, Any]], side: Literal["right", "left"] = "right") -> list[dict[str, torch.Tensor]]:
        """Per-item token stats (see module docstring), in the order of ``examples``."""
        todo = {}
        for ex in examples:
            k = self._key(ex)
            if k not in self._scores:
                todo.setdefault(k, ex)
        if todo:
            self._score_new(list(todo.values()), side)
        return [self._scores[self._key(ex)] for ex in examples]

    def _score_new(self, examples: list[dict[str, Any]], side: str) -> None:
        order = sorted(examples, key=lambda e: len(e["input_ids"]))
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        with _progress(len(order), "score", self.progress) as bar:
            for s in range(0, len(order), self.batch_size):
                chunk = order[s:s + self.batch_size]
                b = collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in chunk], self.pad_id, side=side)
                for ex, st in zip(chunk, token_stats(self._forward(b), b["labels"].to(self.device))):
                    self._scores[self._key(ex)] = st
                bar.update(len(chunk))
        self.model.train(was_training)
        self.timings["score_s"] += time.perf_counter() - t0
        self.timings["score_items"] += len(order)

    def score_records(self, records: list[dict[str, Any]], answer_field: str = "answer") -> list[dict[str, torch.Tensor]]:
        return self.score(self.encode(records, answer_field))

    def mean_nll(self, records: list[dict[str, Any]], answer_field: str = "answer") -> torch.Tensor:
        """Per-token mean NLL of ``answer_field`` per record, [N] (float64)."""
        return torch.tensor([-float(s["logprobs"].double().mean()) for s in self.score_records(records, answer_field)],
                            dtype=torch.float64)

    def options_nll(self, records: list[dict[str, Any]], field: str) -> torch.Tensor:
        """Per-token mean NLL of every option in the list field ``field`` (e.g. ``perturbed_answer``), [N, K]."""
        k = len(records[0][field])
        flat = [{"question": r["question"], "answer": a} for r in records for a in r[field]]
        if any(len(r[field]) != k for r in records):
            from ..errors import DataError

            raise DataError(f"field '{field}' must hold the same number of options in every record (first has {k}).")
        return self.mean_nll(flat).view(len(records), k)

    # ---- generation -------------------------------------------------------------------------
    def prompts(self, records: list[dict[str, Any]]) -> list[list[int]]:
        return [prompt_ids(self.tokenizer, r["question"], self.encode_cfg) for r in records]

    def generate(self, prompts: list[list[int]], budgets: list[int] | int) -> list[list[int]]:
        """Greedy continuation token ids per prompt (EOS and later removed), at most ``budgets[i]`` tokens."""
        if isinstance(budgets, int):
            budgets = [budgets] * len(prompts)
        keys = [(tuple(p), int(b)) for p, b in zip(prompts, budgets)]
        todo = sorted({k for k in keys if k not in self._gens}, key=lambda k: len(k[0]))
        if todo:
            self._generate_new(todo)
        return [self._gens[k] for k in keys]

    @torch.no_grad()
    def _generate_new(self, keys: list[tuple]) -> None:
        was_training = self.model.training
        self.model.eval()
        eos = self.tokenizer.eos_token_id
        t0 = time.perf_counter()
        with _progress(len(keys), "generate", self.progress) as bar:
            for s in range(0, len(keys), self.batch_size):
                chunk = keys[s:s + self.batch_size]
                b = collate([{"input_ids": list(p)} for p, _ in chunk], self.pad_id, side="left")
                max_new = max(1, max(n for _, n in chunk))
                out = self.model.generate(
                    input_ids=b["input_ids"].to(self.device), attention_mask=b["attention_mask"].to(self.device),
                    max_new_tokens=max_new, do_sample=False, num_beams=1, pad_token_id=self.pad_id, eos_token_id=eos,
                    temperature=None, top_p=None, top_k=None,
                )[:, b["input_ids"].size(1):].cpu().tolist()
                for (p, n), seq in zip(chunk, out):
                    seq = seq[:n]
                    if eos in seq:
                        seq = seq[:seq.index(eos)]
                    self._gens[(p, n)] = seq
                bar.update(len(chunk))
        self.model.train(was_training)
        self.timings["generate_s"] += time.perf_counter() - t0
        self.timings["generate_items"] += len(keys)

    def generate_text(self, records: list[dict[str, Any]], max_length: int = 200) -> list[str]:
        """TOFU-style greedy answers: prompt + generation at most ``max_length`` tokens per item."""
        prompts = self.prompts(records)
        gens = self.generate(prompts, [max(1, max_length - len(p)) for p in prompts])
        return [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gens]

    # ---- next-token distributions (MCQ) -----------------------------------------------------
    @torch.no_grad()
    def next_token_logprobs(self, contexts: list[list[int]], candidates: list[int]) -> torch.Tensor:
        """log p(candidate | context) at each context's last position, [N, len(candidates)]."""
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        out = torch.empty(len(contexts), len(candidates), dtype=torch.float64)
        was_training = self.model.training
        self.model.eval()
        cand = torch.tensor(candidates, device=self.device)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            b = collate([{"input_ids": contexts[i]} for i in idx], self.pad_id, side="right")
            logits = self._forward(b)
            last = b["attention_mask"].sum(-1).to(self.device) - 1
            lsm = F.log_softmax(logits[torch.arange(len(idx), device=self.device), last].float(), -1)
            out[idx] = lsm[:, cand].double().cpu()
        self.model.train(was_training)
        return out
