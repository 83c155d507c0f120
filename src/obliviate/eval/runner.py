"""Batched, memoised model runner shared by every suite.

``Evaluator.score(examples)`` runs teacher-forced forwards over encoded examples (``input_ids`` and
``labels`` with -100 on unscored positions) and returns, per item and per scored token:
``logprobs`` (log p(y_t)), ``match`` (argmax == y_t), and ``mu``/``sigma`` (mean and std of
log p(z), z ~ p(.|y_<t), for Min-K%++). One forward feeds probability, truth ratio, MIA and
memorisation; results are memoised by token sequence, so a suite never scores the same
sequence twice (e.g. TOFU's forget answers reused by the MIA suite).

Scoring is organised to compute each thing once:

* examples with the same prompt (the tokens before the first scored one) are packed into one row
  as a token tree (``prefix.py``): the prompt and the answers' shared prefixes run once;
* the decoder body runs on the tree; the vocabulary projection and softmax statistics run only on
  the nodes that predict a scored token (for TOFU, 100k of 304k positions), in blocks whose
  softmax passes stay in cache (``node_stats``).

``Evaluator.generate(prompts, budgets)`` is greedy decoding and ``Evaluator.sample(prompts,
budgets, seed, temperature, top_p)`` temperature / nucleus sampling, both by continuous batching
with the KV cache (``decode.py``): a sequence leaves the batch at a stop token (EOS, or any of the
model's ``generation_config.eos_token_id``, e.g. an end-of-turn token) or at its own budget, and a
waiting prompt takes its row. Sampling draws each prompt's tokens from its own ``torch.Generator``
seeded by ``seed`` and the prompt's tokens, so a continuation depends on the seed and the prompt,
not on batch order or batch mates. A greedy continuation is memoised per prompt: a shorter budget
for the same prompt reuses its prefix.

Every forward takes its attention mask and position ids from ``attention.attention_inputs``
(``attention_rule``: ``"tokens"``, or ``"not_pad"`` for the open-unlearning preset), computed on
each sequence as if alone, so results do not depend on padding or batch mates (up to float
summation order). Decoding steps attend their new token (mask 1) at the previous position + 1.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..data.encode import IGNORE, EncodeConfig, collate, encode_records, prompt_ids
from .attention import RULES, AttentionRule, attention_inputs
from .decode import _kv, _plain, decode
from .prefix import Tree, build_tree, pad_trees, tree_mask

HEAD_BLOCK = 512  # rows of vocabulary logits computed at once
STATS_CHUNK = 16  # rows per softmax pass: 16 x 49k floats stay in a core's L2 cache
DECODE_SLOTS = 8  # rows decoding at once, per unit of batch_size. SmolLM2 fp32 on 2 CPU cores, 160 TOFU prompts to
# the 200-token cap: 64 rows 257 tokens/s, 128 rows 350, 256 rows 364 (a decoding step is matmuls of
# rows x hidden, efficient from ~128 rows); a row's cache (~18 MB at 400 slots) stays small next to that
SHARED_MIN = 4  # leading tokens that all sequences of a forward share, at least, to run them once as a cached prefix
GROUP_MAX = 16  # sequences per token tree at most (its attention grows with its size squared)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


def node_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logsumexp, argmax, mu, sigma), each [N], of next-token logits [N, V] (float32):
    mu = sum_z p(z) log p(z) and sigma = sqrt(sum_z p(z) (log p(z) - mu)^2), centred (no
    E[x^2] - mu^2 cancellation). Runs ``STATS_CHUNK`` rows at a time so the five passes over each
    chunk hit the cache rather than memory."""
    out = []
    for x in logits.split(STATS_CHUNK):
        lse = torch.logsumexp(x, -1, keepdim=True)
        lsm = x - lse
        p = lsm.exp()
        mu = torch.linalg.vecdot(p, lsm)
        sigma = torch.linalg.vecdot(p, lsm.sub_(mu[:, None]).square_()).sqrt()
        out.append((lse[:, 0], x.argmax(-1), mu, sigma))
    return tuple(torch.cat(parts) for parts in zip(*out))


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


def _shared_prefix(seqs: list[list[int]], limit: int) -> int:
    """How many leading tokens every one of ``seqs`` shares, at most ``limit``; 0 below ``SHARED_MIN``.
    Both attention rules give a token's mask entry and position from it and the tokens before it
    (``attention.py``), so equal leading tokens have equal masks and positions too: in token trees
    they are the first nodes of every tree, one chain."""
    n = min(len(os.path.commonprefix(seqs)), limit)
    return n if n >= SHARED_MIN else 0


def _first_scored(labels: list[int]) -> int:
    """Index of the first scored token (position 0 is never scored: nothing predicts it)."""
    return next((t for t in range(1, len(labels)) if labels[t] != IGNORE), len(labels))


class Evaluator:
    """Scores and generates for one model, with memoisation; the model's mode is restored on exit.

    ``batch_size``: sequences per scoring forward (a prompt's group of up to ``GROUP_MAX`` answers is
    never split, so a forward may hold more); ``DECODE_SLOTS * batch_size`` rows decode at once.
    """

    def __init__(self, model, tokenizer, encode: EncodeConfig | None = None, batch_size: int = 16,
                 progress: bool = False, attention_rule: AttentionRule = "tokens"):
        if attention_rule not in RULES:
            from ..errors import ConfigError

            raise ConfigError(f"attention_rule must be one of {RULES}, got {attention_rule!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.encode_cfg = encode or EncodeConfig()
        self.batch_size = batch_size
        self.progress = progress
        self.attention_rule = attention_rule
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._scores: dict[tuple, dict[str, torch.Tensor]] = {}
        self._gens: dict[tuple, tuple[list[int], bool]] = {}  # prompt -> (continuation, ended by a stop token)
        self._samples: dict[tuple, list[int]] = {}
        self._cache_kw: str | None = None
        self._prefix_kv: dict[tuple, list] | None = {}  # shared prefix -> its keys/values (None: the model's cache is not plain)
        self.timings = {"score_s": 0.0, "score_items": 0, "score_nodes": 0, "generate_s": 0.0, "generate_items": 0}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- the model, split into decoder body and vocabulary head ------------------------------
    def _body(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache=None, use_cache: bool = False):
        """(final hidden states [B, T, d], cache) of the decoder; ``mask`` is 2-D [B, past + T] or an
        additive 4-D tree mask."""
        body = self.model.get_decoder()
        if self._cache_kw is None:  # transformers >= 5 names it ``cache``, 4.x ``past_key_values``
            self._cache_kw = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
        device = self.device
        out = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                   use_cache=use_cache, **({self._cache_kw: cache} if cache is not None else {}))
        if not use_cache:
            return out.last_hidden_state, None
        new_cache = getattr(out, "cache", None)
        return out.last_hidden_state, new_cache if new_cache is not None else out.past_key_values

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (float32) of hidden states [..., d], with the model's final logit soft-capping if any."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _rule(self, seqs: list[list[int]], generating: bool = False) -> list[tuple[list[int], list[int]]]:
        """(attention mask, position ids) of each sequence as if alone (right-padded batch, cut back)."""
        b = collate([{"input_ids": list(s)} for s in seqs], self.pad_id, side="right")
        mask, pos = attention_inputs(b["input_ids"], b["attention_mask"], self.pad_id, self.attention_rule, generating)
        return [(m[:len(s)].tolist(), p[:len(s)].tolist()) for s, m, p in zip(seqs, mask, pos)]

    def _prefix_cache(self, ids: list[int], mask: list[int], pos: list[int], rows: int):
        """A cache holding, for ``rows`` rows, the keys/values of the prefix ``ids`` (attended per ``mask``,
        at ``pos``), computed once per prefix; None where the model's cache is not a plain one.

        Every sequence of an evaluation starts with the same chat-template turn (``<|im_start|>system
        ...<|im_start|>user``): it runs once instead of once per prompt. Its keys/values are the ones
        each sequence computes for itself, up to float summation order (one row instead of a batch)."""
        if self._prefix_kv is None or not ids:
            return None
        key = (tuple(ids), tuple(mask), tuple(pos))
        if key not in self._prefix_kv:
            _, cache = self._body(torch.tensor([ids]), torch.tensor([mask]), torch.tensor([pos]), use_cache=True)
            if not _plain(cache):
                self._prefix_kv = None
                return None
            if len(self._prefix_kv) >= 16:
                self._prefix_kv.clear()
            self._prefix_kv[key] = [(k.detach(), v.detach()) for k, v in _kv(cache)]
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (k, v) in enumerate(self._prefix_kv[key]):
            cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), i)
        return cache

    def _tree_hidden(self, trees: list[Tree], shared: int = 0) -> torch.Tensor:
        """Hidden states [B, N - shared, d] of the nodes of ``trees`` (right-padded to N nodes) after the
        first ``shared``, which every tree starts with as one chain (``_shared_prefix``) and which run
        once, as a cached prefix."""
        impl = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        if "flash" in impl:
            from ..errors import ConfigError

            raise ConfigError(f"scoring packs sequences as token trees, which needs an attention that takes a 4-D mask; "
                              f"the model uses {impl!r}: load it with attn_implementation='sdpa' (or 'eager').")
        ids, pos, n = pad_trees(trees, self.pad_id)
        dtype = next(self.model.parameters()).dtype
        mask = tree_mask(trees, n, dtype)
        t0 = trees[0]
        cache = self._prefix_cache(t0.ids[:shared], t0.key[:shared], t0.pos[:shared], len(trees)) if shared else None
        if cache is None:
            return self._body(ids, mask, pos)[0][:, shared:]
        return self._body(ids[:, shared:], mask[:, :, shared:], pos[:, shared:], cache=cache, use_cache=True)[0]

    # ---- teacher-forced scoring -------------------------------------------------------------
    def encode(self, records: list[dict[str, Any]], answer_field: str = "answer") -> list[dict[str, Any]]:
        """Encode QA records with ``answer_field`` as the answer (e.g. ``paraphrased_answer``)."""
        recs = [{"question": r["question"], "answer": r[answer_field]} if "question" in r else r for r in records]
        return encode_records(self.tokenizer, recs, self.encode_cfg)

    @staticmethod
    def _key(ex: dict[str, Any]) -> tuple:
        return tuple(ex["input_ids"]), tuple(ex["labels"])

    def score(self, examples: list[dict[str, Any]], side: Literal["right", "left"] = "right") -> list[dict[str, torch.Tensor]]:
        """Per-item token stats (see module docstring), in the order of ``examples``. ``side`` is
        accepted for compatibility; results never depend on padding."""
        todo = {}
        for ex in examples:
            k = self._key(ex)
            if k not in self._scores:
                todo.setdefault(k, ex)
        if todo:
            self._score_new(list(todo.values()))
        return [self._scores[self._key(ex)] for ex in examples]

    def _groups(self, examples: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], Tree]]:
        """Examples grouped by prompt (at most ``GROUP_MAX`` a group), each group with its token tree,
        smallest trees first. A group whose tree saves under a quarter of its tokens (e.g. texts
        sharing only BOS) is split into single sequences: a tree's attention grows with its size squared."""
        by_prompt: dict[tuple, list[dict[str, Any]]] = {}
        for ex in examples:
            by_prompt.setdefault(tuple(ex["input_ids"][:_first_scored(ex["labels"])]), []).append(ex)
        rules = dict(zip(map(self._key, examples), self._rule([ex["input_ids"] for ex in examples])))
        groups = []
        for same in by_prompt.values():
            for s in range(0, len(same), GROUP_MAX):
                exs = same[s:s + GROUP_MAX]
                seqs = [(ex["input_ids"], *rules[self._key(ex)]) for ex in exs]
                tree = build_tree(seqs)
                if len(exs) > 1 and len(tree) > 0.75 * sum(len(ex["input_ids"]) for ex in exs):
                    groups += [([ex], build_tree([seq])) for ex, seq in zip(exs, seqs)]
                else:
                    groups.append((exs, tree))
        return sorted(groups, key=lambda g: len(g[1]))

    def _score_new(self, examples: list[dict[str, Any]]) -> None:
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        groups = self._groups(examples)
        with _progress(len(examples), "score", self.progress) as bar:
            start = 0
            while start < len(groups):
                end, n = start, 0
                while end < len(groups) and (end == start or n + len(groups[end][0]) <= self.batch_size):
                    n += len(groups[end][0])
                    end += 1
                self._score_groups(groups[start:end])
                bar.update(n)
                start = end
        self.model.train(was_training)
        self.timings["score_s"] += time.perf_counter() - t0
        self.timings["score_items"] += len(examples)

    @torch.no_grad()
    def _score_groups(self, groups: list[tuple[list[dict[str, Any]], Tree]]) -> None:
        trees = [tree for _, tree in groups]
        # a prefix node's hidden state is not computed: it may not predict a scored token
        shared = _shared_prefix([ex["input_ids"] for exs, _ in groups for ex in exs],
                                min(_first_scored(ex["labels"]) for exs, _ in groups for ex in exs) - 1)
        hidden = self._tree_hidden(trees, shared)
        n = hidden.size(1)
        rows: dict[int, int] = {}  # flat node index -> row of the head's input
        pred, target, counts, owners = [], [], [], []
        for b, (exs, tree) in enumerate(groups):
            for ex, path in zip(exs, tree.paths):
                ts = [t for t in range(1, len(ex["labels"])) if ex["labels"][t] != IGNORE]
                pred += [rows.setdefault(b * n + path[t - 1] - shared, len(rows)) for t in ts]
                target += [ex["labels"][t] for t in ts]
                counts.append(len(ts))
                owners.append(ex)
        dev = hidden.device
        flat = hidden.reshape(-1, hidden.size(-1))[torch.tensor(list(rows), dtype=torch.long, device=dev)]
        pred_t = torch.tensor(pred, dtype=torch.long, device=dev)
        target_t = torch.tensor(target, dtype=torch.long, device=dev)
        stats = {name: torch.empty(len(pred), dtype=torch.bool if name == "match" else torch.float32, device=dev)
                 for name in ("logprobs", "match", "mu", "sigma")}
        for s in range(0, len(rows), HEAD_BLOCK):
            logits = self._head(flat[s:s + HEAD_BLOCK])
            lse, top, mu, sigma = node_stats(logits)
            sel = (pred_t >= s) & (pred_t < s + HEAD_BLOCK)
            local, tgt = pred_t[sel] - s, target_t[sel]
            stats["logprobs"][sel] = logits[local, tgt] - lse[local]
            stats["match"][sel] = top[local] == tgt
            stats["mu"][sel], stats["sigma"][sel] = mu[local], sigma[local]
        stats = {name: v.cpu().split(counts) for name, v in stats.items()}
        for i, ex in enumerate(owners):
            self._scores[self._key(ex)] = {name: stats[name][i].clone() for name in stats}
        self.timings["score_nodes"] += sum(len(t) for t in trees)

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

    def _stop_ids(self) -> set[int]:
        stop = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        stop |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
        return {t for t in stop if t is not None}

    def prefill(self, prompts: list[list[int]]):
        """Decoding's prompt forward (``decode.Stepper``): right-padded prompts, the rule's generation
        mask and positions; logits at each prompt's last token."""
        b = collate([{"input_ids": list(p)} for p in prompts], self.pad_id, side="right")
        mask, pos = attention_inputs(b["input_ids"], b["attention_mask"], self.pad_id, self.attention_rule, True)
        shared = _shared_prefix(prompts, min(map(len, prompts)) - 1)  # each prompt keeps its last token
        cache = self._prefix_cache(prompts[0][:shared], mask[0, :shared].tolist(), pos[0, :shared].tolist(),
                                   len(prompts)) if shared else None
        if cache is None:
            shared = 0
        hidden, cache = self._body(b["input_ids"][:, shared:], mask, pos[:, shared:], cache=cache, use_cache=True)
        last = torch.tensor([len(p) - 1 - shared for p in prompts], device=hidden.device)
        rows = torch.arange(len(prompts), device=hidden.device)
        return self._head(hidden[rows, last]), cache, mask.to(hidden.device), pos.to(hidden.device)[rows, last + shared]

    def step(self, tokens: torch.Tensor, cache, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """One decoding step (``decode.Stepper``): each row's new token at its last position + 1, mask 1."""
        mask = torch.cat([mask, mask.new_ones(len(tokens), 1)], 1)
        hidden, _ = self._body(tokens[:, None], mask, (last + 1)[:, None], cache=cache, use_cache=True)
        return self._head(hidden[:, -1])

    @torch.no_grad()
    def _decode(self, prompts: list[tuple], budgets: list[int], pick, desc: str) -> list[tuple[list[int], bool]]:
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        with _progress(len(prompts), desc, self.progress) as bar:
            res = decode(self, [list(prompts[i]) for i in order], [budgets[i] for i in order],
                         lambda logits, items: pick(logits, [order[i] for i in items]), self._stop_ids(),
                         DECODE_SLOTS * self.batch_size, on_done=lambda i: bar.update(1))
        self.model.train(was_training)
        self.timings["generate_s"] += time.perf_counter() - t0
        self.timings["generate_items"] += len(prompts)
        out: list = [None] * len(prompts)
        for i, r in zip(order, res):
            out[i] = r
        return out

    def _known(self, prompt: tuple, budget: int) -> list[int] | None:
        """The memoised greedy continuation of ``prompt`` cut to ``budget``, if one covers it."""
        if prompt not in self._gens:
            return None
        seq, stopped = self._gens[prompt]
        return seq[:budget] if stopped or len(seq) >= budget else None

    def generate(self, prompts: list[list[int]], budgets: list[int] | int) -> list[list[int]]:
        """Greedy continuation token ids per prompt (stop token and later removed), at most ``budgets[i]`` tokens."""
        if isinstance(budgets, int):
            budgets = [budgets] * len(prompts)
        keys = [(tuple(p), max(0, int(b))) for p, b in zip(prompts, budgets)]
        todo: dict[tuple, int] = {}
        for p, b in keys:
            if self._known(p, b) is None:
                todo[p] = max(b, todo.get(p, 0))
        if todo:
            ps = list(todo)
            greedy = lambda logits, items: logits.argmax(-1).tolist()  # noqa: E731
            for p, r in zip(ps, self._decode(ps, [todo[p] for p in ps], greedy, "generate")):
                self._gens[p] = r
        return [self._known(p, b) for p, b in keys]

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
        """Sampled continuation token ids per prompt (stop token and later removed), at most ``budgets[i]`` tokens;
        reproducible per (seed, prompt) whatever the batch (see the module docstring)."""
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if isinstance(budgets, int):
            budgets = [budgets] * len(prompts)
        keys = [(tuple(p), int(b), int(seed), float(temperature), float(top_p)) for p, b in zip(prompts, budgets)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._samples))
        if todo:
            gens = []
            for p, _, s, _, _ in todo:
                digest = hashlib.sha256(repr((s, p)).encode()).digest()
                gens.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))
            draw = lambda logits, items: sample_tokens(logits, [gens[i] for i in items], temperature, top_p)  # noqa: E731
            for k, (seq, _) in zip(todo, self._decode([k[0] for k in todo], [k[1] for k in todo], draw, "sample")):
                self._samples[k] = seq
        return [self._samples[k] for k in keys]

    # ---- next-token distributions (MCQ) -----------------------------------------------------
    @torch.no_grad()
    def next_token_logprobs(self, contexts: list[list[int]], candidates: list[int]) -> torch.Tensor:
        """log p(candidate | context) at each context's last position, [N, len(candidates)]."""
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        out = torch.empty(len(contexts), len(candidates), dtype=torch.float64)
        was_training = self.model.training
        self.model.eval()
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            seqs = [contexts[i] for i in idx]
            trees = [build_tree([(c, m, p)]) for c, (m, p) in zip(seqs, self._rule(seqs))]
            hidden = self._tree_hidden(trees)
            last = hidden[torch.arange(len(idx), device=hidden.device), torch.tensor([len(c) - 1 for c in seqs])]
            out[idx] = F.log_softmax(self._head(last), -1)[:, candidates].double().cpu()
        self.model.train(was_training)
        return out
