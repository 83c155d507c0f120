"""The gradient-norm membership attack: the norm of each item's loss gradient over every parameter.

``grad_norm_scores`` computes, per encoded item, -|d mean NLL(item) / d theta|_2 (or open-unlearning's
mean of per-tensor 2-norms), as one backward per item would (up to float summation order), from
**one batched forward and one backward per batch of items**, by "ghost norms" (Goodfellow 2015, "Efficient per-example
gradient computations", arXiv 1510.01799; Li et al. 2022, "ghost clipping", arXiv 2110.05679):

* A linear layer y = x W^T (+ b) run on one item's tokens has gradient dL/dW = sum_t g_t x_t^T
  (g_t = dL/dy_t, x_t its input), so |dL/dW|^2 = sum_{t,s} (g_t . g_s)(x_t . x_s) = <G G^T, X X^T>:
  two T x T Gram matrices instead of the out x in gradient, computed from the activations the
  forward and backward pass anyway. An embedding's gradient is the same with one-hot rows for g
  (row ``id_t`` gets the gradient of its output). A weight used twice (SmolLM2's embedding tied to
  its output head) gets the cross terms of its two uses, <G1 G2^T, X1 X2^T>, so its norm is that of
  the summed gradient, as a plain backward accumulates it. Where materialising the item's
  gradient (G^T X) is cheaper than the Grams (long items, narrow layers), it is materialised.
* Any other module holding parameters (RMSNorm / LayerNorm scales, GPT-2's ``Conv1D``) gets its
  per-item parameter gradients by re-running that module alone, per item, on its recorded input
  with the output gradient from the batched backward (``torch.func.vjp`` under ``vmap``).
* Items in one batch do not interact (right padding; padding is never attended by real tokens and
  gets zero gradient), so the batched backward of the summed per-item losses carries each item's own
  output gradients. Parameters are frozen during it, so no weight gradient is ever formed: the
  backward computes activation gradients only (about a third of a plain backward's matmuls saved),
  and batching makes its matmuls large.

On SmolLM2-135M, 80 TOFU items (forget01 + holdout01, ~79 tokens each, 2 CPU cores): 20.9 s in
fp32 and 16.9 s in bf16, where one backward per item took 37.3 s and 40.1 s in the same run (``python
benchmarks/gradnorm_speed.py``). fp32 scores equal the per-item backward's within 1.3e-6 relative
(same AUC; ``tests/test_gradnorm.py`` checks both against plain autograd on tiny Llama, tied Llama,
Qwen2 and GPT-2 models). With bf16 weights the ghost norms are computed from bf16 activations in
float32/float64 where a per-item backward accumulates bf16 gradients: against fp32 the ghost scores
are within 1.9% (the per-item backward's within 2.8%), the AUC the same.

Models this cannot follow (an embedding with ``max_norm``/``scale_grad_by_freq``/sparse
gradients, a parameter-holding module whose output is not a tensor) use ``exact_grad_norms``, one
backward per item.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

GRADNORM_TOKENS = 1024  # padded tokens per batch of the attack (its vocabulary logits and their gradients dominate memory)


class _Unsupported(Exception):
    """The model holds something the ghost norms do not follow; use one backward per item."""


def squared_norm(g: torch.Tensor) -> torch.Tensor:
    """Sum of squares of ``g`` in float64: float32 sums along the last axis (a row of a weight, a few
    hundred to a few thousand terms), then a float64 sum of the rows: within 1e-6 relative of an
    all-float64 sum (1e-10 on SmolLM2's embedding gradient) at a quarter of its cost."""
    g = g.float()
    rows = g.reshape(-1, g.shape[-1]) if g.dim() > 1 else g.reshape(1, -1)
    return rows.square().sum(1).double().sum()


def item_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_id: int, attention_rule: str,
                drop_last: bool) -> torch.Tensor:
    """Mean NLL over each item's scored tokens (``drop_last``: but the last one), [B]."""
    from ..methods.losses import token_logprobs
    from .attention import attention_inputs

    mask, pos = attention_inputs(batch["input_ids"], batch["attention_mask"], pad_id, attention_rule)
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos, use_cache=False).logits
    lp, scored = token_logprobs(logits, batch["labels"])
    scored = scored.bool()
    if drop_last:  # open-unlearning's tokenwise_logprobs: without the last scored token
        last = scored.int().cumsum(1) == scored.sum(1, keepdim=True)
        scored = scored & ~last
    n = scored.sum(1).clamp_min(1)
    return -(lp * scored).sum(1) / n


@dataclass
class _Use:
    """One use of a parameter in one batched forward call, as factors of each item's gradient:
    grad_b = sum_t u[b, t] (outer) v[b, t], reshaped to the parameter's shape. ``u`` is None for an
    embedding, whose u rows are one-hot at ``ids`` [B, T] (-1: no gradient); ``full`` holds per-item
    gradients [B, *shape] instead, for modules re-run per item. Rows at padding have u = 0 (no
    gradient reaches padding), so they add nothing."""

    u: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    v: torch.Tensor | None = None
    full: torch.Tensor | None = None

    def grad(self, b: int, shape: torch.Size) -> torch.Tensor:
        """Item ``b``'s gradient (float32), of ``shape``."""
        if self.full is not None:
            return self.full[b].float().reshape(shape)
        v = self.v[b].float()
        if self.u is not None:
            return (self.u[b].float().T @ v).reshape(shape)
        keep = self.ids[b] >= 0
        return torch.zeros(shape[0], v.size(-1), device=v.device).index_add_(0, self.ids[b][keep], v[keep]).reshape(shape)


def _gram_u(a: _Use, b: _Use) -> torch.Tensor:
    """[B, Ta, Tb] inner products of two uses' u rows (one-hot rows given as indices)."""
    if a.u is not None and b.u is not None:
        return torch.bmm(a.u.float(), b.u.float().transpose(1, 2))
    if a.u is None and b.u is None:
        return ((a.ids[:, :, None] == b.ids[:, None, :]) & (a.ids[:, :, None] >= 0)).float()
    if a.u is None:
        return _gram_u(b, a).transpose(1, 2)
    idx = b.ids.clamp_min(0)[:, None, :].expand(-1, a.u.size(1), -1)  # u_a[t] . onehot(id_s) = u_a[t, id_s]
    return torch.gather(a.u.float(), 2, idx) * (b.ids >= 0).float()[:, None, :]


def _sq_norms(uses: list[_Use], shape: torch.Size, items: int) -> torch.Tensor:
    """|sum of the uses' gradients|^2 per item, [B] float64: by Gram matrices of the whole batch, or,
    where that costs more (long items, narrow layers) or a use is ``full``, by materialising each
    item's gradient in turn."""
    numel, dense = shape.numel(), [u for u in uses if u.u is not None]
    if any(u.full is not None for u in uses):
        gram_cost, direct_cost = float("inf"), 0
    else:
        width = [u.u.size(-1) if u.u is not None else 1 for u in uses]
        gram_cost = sum(uses[i].v.size(1) * uses[j].v.size(1) * (min(width[i], width[j]) + uses[i].v.size(-1))
                        for i in range(len(uses)) for j in range(i, len(uses)))
        direct_cost = sum(u.v.size(1) for u in dense) * numel + (len(uses) + 1) * numel
    if direct_cost <= gram_cost:
        out = []
        for b in range(items):
            total = uses[0].grad(b, shape)
            for u in uses[1:]:
                total += u.grad(b, shape)
            out.append(squared_norm(total))
        return torch.stack(out)
    sq = 0
    for i, a in enumerate(uses):
        for j in range(i, len(uses)):
            c = uses[j]
            kv = torch.bmm(a.v.float(), c.v.float().transpose(1, 2))
            term = (_gram_u(a, c).double() * kv.double()).sum((1, 2))
            sq = sq + (term if i == j else 2 * term)
    return sq


class _Recorder:
    """Forward hooks that record every parameter's uses in a batched forward and reduce them, in the
    backward, to per-item squared gradient norms ``sq[param index]`` [B] (float64)."""

    def __init__(self, model: torch.nn.Module, items: int):
        self.params = list(model.parameters())
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.items = items
        self.sq = torch.zeros(len(self.params), items, dtype=torch.float64, device=self.params[0].device)
        self.calls: Counter = Counter()
        self.pending: dict[int, list[_Use]] = {}
        self.modules: list[tuple[torch.nn.Module, tuple, dict, list]] = []  # re-run per item after the backward
        self.handles = []
        for m in model.modules():
            own = [p for _, p in m.named_parameters(recurse=False)]
            if not own:
                continue
            if isinstance(m, torch.nn.Embedding):
                if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
                    raise _Unsupported(f"embedding {m}")
                self.handles.append(m.register_forward_hook(self._embedding))
            elif type(m) is torch.nn.Linear:
                self.handles.append(m.register_forward_hook(self._linear))
            else:
                self.handles.append(m.register_forward_hook(self._module, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    # ---- forward hooks: count each parameter's uses and hook each use's output gradient
    def _linear(self, m, args, out):
        x = args[0].detach()
        x = x.reshape(x.size(0), -1, x.size(-1))
        for p in (m.weight, m.bias):
            if p is not None:
                self.calls[id(p)] += 1

        def backward(g: torch.Tensor) -> None:
            g = g.detach().reshape(x.size(0), -1, g.size(-1))
            self._add(m.weight, _Use(u=g, v=x))
            if m.bias is not None:  # its gradient is sum_t g_t: u = g, v = 1
                self._add(m.bias, _Use(u=g, v=x.new_ones(*x.shape[:-1], 1)))

        out.register_hook(backward)
        return out

    def _embedding(self, m, args, out):
        ids = args[0].reshape(args[0].size(0), -1)
        if m.padding_idx is not None:  # nn.Embedding gives the padding row no gradient
            ids = ids.masked_fill(ids == m.padding_idx, -1)
        self.calls[id(m.weight)] += 1
        leaf = out.detach().requires_grad_(True)  # the backward starts here: no parameter needs a gradient
        leaf.register_hook(lambda g: self._add(m.weight, _Use(ids=ids, v=g.detach().reshape(*ids.shape, -1))))
        return leaf

    def _module(self, m, args, kwargs, out):
        if not isinstance(out, torch.Tensor):
            raise _Unsupported(f"{type(m).__name__} returns {type(out).__name__}")
        for _, p in m.named_parameters(recurse=False):
            self.calls[id(p)] += 1
        if out.requires_grad:
            record = (m, args, kwargs, [])
            self.modules.append(record)
            out.register_hook(lambda g: record[3].append(g.detach()))
        return out

    # ---- reductions
    def _add(self, p: torch.Tensor, use: _Use) -> None:
        self.pending.setdefault(id(p), []).append(use)
        if len(self.pending[id(p)]) == self.calls[id(p)]:  # every use seen: reduce now, free the activations
            self._reduce(p)

    def _reduce(self, p: torch.Tensor) -> None:
        uses = self.pending.pop(id(p), [])
        if uses:
            self.sq[self.index[id(p)]] = _sq_norms(uses, p.shape, self.items)

    def finish(self) -> torch.Tensor:
        """After the backward: the re-run modules' per-item gradients, the remaining reductions; ``sq``."""
        self.remove()  # re-running a module must not record it again
        for m, args, kwargs, grads in self.modules:
            if not grads:
                continue
            names = [n for n, _ in m.named_parameters(recurse=False)]
            for name, g in zip(names, _per_item_param_grads(m, args, kwargs, grads[0])):
                self._add(getattr(m, name), _Use(full=g))
        for p in self.params:
            if id(p) in self.pending:
                self._reduce(p)
        return self.sq


def _per_item_param_grads(m: torch.nn.Module, args: tuple, kwargs: dict, grad_out: torch.Tensor) -> list[torch.Tensor]:
    """Per-item gradients [B, *shape] of ``m``'s own parameters, given its batched inputs and output gradient."""
    from torch.func import functional_call, vjp, vmap

    own = {n: p.detach() for n, p in m.named_parameters(recurse=False)}
    bsz = grad_out.size(0)
    batched = [isinstance(a, torch.Tensor) and a.dim() > 0 and a.size(0) == bsz for a in args]

    def one(params, g, *xs):
        full = [x.unsqueeze(0) if bat else x for x, bat in zip(xs, batched)]
        _, pull = vjp(lambda q: functional_call(m, q, tuple(full), kwargs), params)
        return pull(g.unsqueeze(0))[0]

    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        with torch.enable_grad():
            out = vmap(one, in_dims=(None, 0, *[0 if bat else None for bat in batched]))(own, grad_out, *plain)
        return [out[n] for n in own]
    except Exception:  # a forward vmap cannot trace: one call per item
        grads = {n: [] for n in own}
        for b in range(bsz):
            xs = [x[b] if bat else x for x, bat in zip(plain, batched)]
            with torch.enable_grad():
                res = one(own, grad_out[b], *xs)
            for n in own:
                grads[n].append(res[n])
        return [torch.stack(grads[n]) for n in own]


def _batches(examples: list[dict], max_tokens: int) -> list[list[int]]:
    """Item indices in batches of similar length, at most ``max_tokens`` padded tokens each."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(examples[i]["input_ids"]) > max_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + [cur] if cur else out


def _scores(sq: torch.Tensor, per_tensor_mean: bool) -> list[float]:
    """Scores from per-parameter, per-item squared norms [P, B]."""
    if per_tensor_mean:
        return (-sq.sqrt().sum(0) / sq.size(0)).tolist()
    return (-sq.sum(0).sqrt()).tolist()


def ghost_grad_norms(model: torch.nn.Module, examples: list[dict], pad_id: int, attention_rule: str = "tokens",
                     per_tensor_mean: bool = False, max_tokens: int = GRADNORM_TOKENS) -> list[float]:
    """``grad_norm_scores`` by ghost norms (module docstring); raises ``_Unsupported`` where it cannot."""
    from ..data.encode import collate

    dev = next(model.parameters()).device
    out: list[float] = [0.0] * len(examples)
    for idx in _batches(examples, max_tokens):
        exs = [examples[i] for i in idx]
        batch = {k: v.to(dev) for k, v in collate(exs, pad_id).items()}
        rec = _Recorder(model, len(exs))
        try:
            losses = item_losses(model, batch, pad_id, attention_rule, per_tensor_mean)
            if not losses.requires_grad:
                raise _Unsupported("no embedding starts the model's graph")
            losses.sum().backward()
            del losses
            sq = rec.finish()
        finally:
            rec.remove()
            rec.modules.clear()  # the recorded activations go with the batch
            rec.pending.clear()
        for i, s in zip(idx, _scores(sq, per_tensor_mean)):
            out[i] = s
    return out


def exact_grad_norms(model: torch.nn.Module, examples: list[dict], pad_id: int, attention_rule: str = "tokens",
                     per_tensor_mean: bool = False) -> list[float]:
    """``grad_norm_scores`` by one backward per item: each parameter's gradient is reduced to its
    squared norm by a post-accumulate hook and freed at once (memory: one item's activations and the
    largest gradient). The reference the ghost norms are tested against, and their fallback."""
    from ..data.encode import collate

    params = list(model.parameters())
    sq = torch.zeros(len(params), dtype=torch.float64, device=params[0].device)
    index = {id(p): i for i, p in enumerate(params)}

    def reduce(p: torch.Tensor) -> None:
        sq[index[id(p)]] += squared_norm(p.grad.detach())
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(reduce) for p in params]
    try:
        out = []
        for ex in examples:
            batch = {k: v.to(params[0].device) for k, v in collate([ex], pad_id).items()}
            sq.zero_()
            item_losses(model, batch, pad_id, attention_rule, per_tensor_mean).sum().backward()
            out += _scores(sq[:, None], per_tensor_mean)
        return out
    finally:
        for h in handles:
            h.remove()


@torch.enable_grad()  # callers may hold no_grad (evaluation does); the attack needs its backward
def grad_norm_scores(model: torch.nn.Module, examples: list[dict], pad_id: int, attention_rule: str = "tokens",
                     per_tensor_mean: bool = False, exact: bool = False) -> list[float]:
    """Gradient-norm attack: -|d mean NLL(x) / d theta|_2 per encoded example (labels -100 = unscored),
    over every parameter (frozen ones included), in eval mode (no dropout).

    ``attention_rule``: see ``attention.py``. ``per_tensor_mean`` (open-unlearning's ``GradNormAttack``
    with p = 2): the loss is the mean NLL over the scored tokens but the last, and the score is
    -mean over parameter tensors of each tensor's gradient 2-norm. MIMIR averages per-tensor p-norms
    too (p = inf, in train mode); the default is the norm of the whole gradient vector. The ranking,
    hence the AUC, can differ between the two.

    Computed by ghost norms, batched (module docstring); ``exact=True`` (or a model the ghost norms
    cannot follow) takes one backward per item. The model's ``.grad``s, ``requires_grad`` flags and
    train/eval mode are restored afterwards.
    """
    params = list(model.parameters())
    flags, grads, was_training = [p.requires_grad for p in params], [p.grad for p in params], model.training
    try:
        model.eval()
        for p in params:
            p.grad = None
            p.requires_grad_(False)
        if not exact:
            try:
                return ghost_grad_norms(model, examples, pad_id, attention_rule, per_tensor_mean)
            except _Unsupported:
                pass
        for p in params:
            p.requires_grad_(True)
        return exact_grad_norms(model, examples, pad_id, attention_rule, per_tensor_mean)
    finally:
        for p, f, g in zip(params, flags, grads):
            p.requires_grad_(f)
            p.grad = g
        model.train(was_training)


__all__ = ["grad_norm_scores", "ghost_grad_norms", "exact_grad_norms", "squared_norm", "item_losses"]
