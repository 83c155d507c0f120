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
``Evaluator.sample(prompts, budgets, seed, temperature, top_p)`` is the same with temperature /
nucleus sampling; each prompt draws from its own ``torch.Generator`` seeded by ``seed`` and the prompt's
tokens, so a continuation depends on the seed and the prompt, not on batch order or batch mates.

Items are sorted by length before batching (less padding); position ids are derived from the
attention mask so left- and right-padded batches give the same per-item scores.
"""

from __future__ import annotations

import inspect
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


def sample_tokens(logits: torch.Tensor, generators: list[torch.Generator], temperature: float = 1.0,
                  top_p: float = 1.0) -> list[int]:
    """One token per row of ``logits`` [B, V] from softmax(logits / temperature), restricted to the
    smallest set of most likely tokens whose mass reaches ``top_p`` (nucleus sampling, Holtzman et al.
    2020) and renormalised. Row i uses one uniform draw from ``generators[i]`` (inverse CDF), so its
    token depends only on its own logits and generator."""
    probs = F.softmax(logits.detach().float() / temperature, dim=-1)
    p_sorted, idx = probs.sort(dim=-1, descending=True)
    if top_p < 1:
        p_sorted = p_sorted * ((p_sorted.cumsum(-1) - p_sorted) < top_p)  # keep while the mass before is < top_p
    cdf = p_sorted.double().cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).to(cdf.device)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_max(cdf.size(-1) - 1)
    return idx.gather(-1, pick)[:, 0].tolist()


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
        self._samples: dict[tuple, list[int]] = {}
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

    def generate_text(self, records: list[dict[str, Any]], max_length: int = 200,
                      max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers per item: at most ``max_new_tokens`` new tokens when given (open-unlearning),
        else prompt + generation at most ``max_length`` tokens (the TOFU code's budget)."""
        prompts = self.prompts(records)
        if max_new_tokens is not None:
            budgets = [max_new_tokens] * len(prompts)
        else:
            budgets = [max(1, max_length - len(p)) for p in prompts]
        gens = self.generate(prompts, budgets)
        return [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gens]

    def sample(self, prompts: list[list[int]], budgets: list[int] | int, seed: int = 0, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[int]]:
        """Sampled continuation token ids per prompt (EOS and later removed), at most ``budgets[i]`` tokens;
        reproducible per (seed, prompt) whatever the batch (see the module docstring)."""
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if isinstance(budgets, int):
            budgets = [budgets] * len(prompts)
        keys = [(tuple(p), int(b), int(seed), float(temperature), float(top_p)) for p, b in zip(prompts, budgets)]
        todo = sorted({k for k in keys if k not in self._samples}, key=lambda k: len(k[0]))
        if todo:
            was_training = self.model.training
            self.model.eval()
            t0 = time.perf_counter()
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s:s + self.batch_size]
                for k, seq in zip(chunk, self._sample_batch(chunk)):
                    self._samples[k] = seq
            self.model.train(was_training)
            self.timings["generate_s"] += time.perf_counter() - t0
            self.timings["generate_items"] += len(todo)
        return [self._samples[k] for k in keys]

    @torch.no_grad()
    def _sample_batch(self, keys: list[tuple]) -> list[list[int]]:
        """Left-padded batched decoding with the KV cache; item i samples with its own generator."""
        import hashlib

        eos = self.tokenizer.eos_token_id
        gens = []
        for p, _, seed, _, _ in keys:
            digest = hashlib.sha256(repr((seed, p)).encode()).digest()
            gens.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))
        # transformers >= 5 names the KV cache ``cache``; older versions ``past_key_values``
        params = inspect.signature(self.model.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # no [B, T, V] logits of the prompt
        b = collate([{"input_ids": list(k[0])} for k in keys], self.pad_id, side="left")
        mask = b["attention_mask"].to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=b["input_ids"].to(self.device), attention_mask=mask, position_ids=pos, use_cache=True,
                         **last)
        seqs: list[list[int]] = [[] for _ in keys]
        done = [k[1] < 1 for k in keys]
        temperature, top_p = keys[0][3], keys[0][4]  # one setting per call (part of every key)
        for _ in range(max(k[1] for k in keys)):
            nxt = sample_tokens(out.logits[:, -1], gens, temperature, top_p)
            for i, t in enumerate(nxt):
                if not done[i]:
                    if t == eos:
                        done[i] = True
                    else:
                        seqs[i].append(t)
                        done[i] = len(seqs[i]) >= keys[i][1]
            if all(done):
                break
            mask = torch.cat([mask, mask.new_ones(len(keys), 1)], dim=1)
            pos = pos[:, -1:] + 1
            past = {cache_kw: out[cache_kw] if cache_kw in out else out.past_key_values}
            out = self.model(input_ids=torch.tensor(nxt, device=self.device)[:, None], attention_mask=mask,
                             position_ids=pos, use_cache=True, **past)
        return seqs

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
