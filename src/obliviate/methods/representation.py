"""Shared machinery of the representation-steering methods (RMU, FALCON).

Layer convention: "layer l" is the *output of decoder block l* (0-based), i.e. Hugging Face's
``outputs.hidden_states[l + 1]`` (``hidden_states[0]`` is the embedding output). This is what the
WMDP RMU code and the FALCON code read: both hook ``model.model.layers[layer_id]``'s output.

- ``layer_activations`` runs a *truncated* forward: embeddings and decoder blocks 0..l only (no
  later blocks, no final norm, no LM head). It stops by raising from a forward hook on block l, so it
  works for any HF decoder without re-implementing its forward (masks, rotary embeddings).
- ``FrozenActivations`` caches the frozen model's layer-l activations per example (they never
  change during a run), so the frozen forward is paid once per example.
- Pure functions: ``random_unit_vector``, ``principal_offset_vector``, ``info_nce``,
  ``masked_mse``, ``masked_cosine_distance``.

Shapes: activations ``[B, T, d]``; ``mask`` ``[B, T]`` (1 on real tokens, 0 on padding).
"""

from __future__ import annotations

import math
import re
from typing import Literal

import torch
import torch.nn.functional as F

from ..engine.sharding import is_fsdp
from ..errors import ConfigError
from .tokens import answer_positions, token_mean


class _Stop(Exception):
    def __init__(self, output: torch.Tensor):
        self.output = output


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return model


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of decoder blocks of an HF causal LM (also inside peft/DDP wrappers)."""
    model = _unwrap(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("layers", "h", "blocks"):
        blocks = getattr(decoder, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise ConfigError(f"Cannot find the decoder blocks of {type(model).__name__} (looked for layers/h/blocks); "
                      f"RMU/FALCON support HF decoder models such as Llama, Mistral, Qwen.")


def num_layers(model: torch.nn.Module) -> int:
    return len(decoder_blocks(model))


def check_layer(model: torch.nn.Module, layer: int, key: str) -> None:
    n = num_layers(model)
    if not 0 <= layer < n:
        raise ConfigError(f"'{key}' = {layer} is out of range: the model has decoder blocks 0..{n - 1}.")


def layer_activations(model: torch.nn.Module, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Output of decoder block ``layer`` ([B, T, d]) from a forward that stops there.

    Equals ``model(..., output_hidden_states=True).hidden_states[layer + 1]`` exactly, at the
    cost of blocks 0..layer only (no LM head: for SmolLM2 the [B, T, 49152] logits dominate).
    The decoder is called directly, except for an FSDP2 model, whose root module must run its
    hooks (gather the embeddings, schedule the gradient reduction): there the whole model is
    called and stops at the same place.
    """
    blocks = decoder_blocks(model)
    decoder = _unwrap(model)
    if not is_fsdp(decoder):
        decoder = decoder.get_decoder() if hasattr(decoder, "get_decoder") else decoder

    def stop(module, args, output):
        raise _Stop(output[0] if isinstance(output, tuple) else output)

    handle = blocks[layer].register_forward_hook(stop)
    try:
        decoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
    except _Stop as s:
        return s.output
    finally:
        handle.remove()
    raise RuntimeError(f"decoder block {layer} was never called")  # pragma: no cover


class FrozenActivations:
    """Cache of the frozen model's layer-``layer`` activations, keyed by (stream, example index).

    Memory: one ``[n_tokens, d]`` tensor per example seen, i.e. (forget + retain tokens) x d x
    bytes of the model dtype; for SmolLM2 (d = 576, fp32) 1,000 examples of 100 tokens are 230 MB.
    ``where="cpu"`` keeps it in host memory (default), ``"device"`` next to the model (fastest),
    ``"off"`` recomputes every step. Valid only while the reference and the data stay the same:
    the cache is dropped when the reference object changes.
    """

    def __init__(self, layer: int, where: Literal["cpu", "device", "off"] = "cpu"):
        self.layer, self.where = layer, where
        self._store: dict[tuple[str, int], torch.Tensor] = {}
        self._owner: int | None = None

    def __len__(self) -> int:
        return len(self._store)

    def get(self, reference, stream: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, d] frozen activations for ``batch`` (zeros on padding), computing only missing examples."""
        if self._owner != id(reference):
            self._store.clear()
            self._owner = id(reference)
        if self.where == "off" or "index" not in batch:
            with reference.active() as ref:
                return layer_activations(ref, batch, self.layer).detach()
        lengths = batch["attention_mask"].sum(-1).tolist()
        keys = [(stream, int(i)) for i in batch["index"].tolist()]
        missing = [b for b, k in enumerate(keys) if k not in self._store]
        if missing:
            sub = {k: batch[k][missing] for k in ("input_ids", "attention_mask")}
            with reference.active() as ref:
                acts = layer_activations(ref, sub, self.layer).detach()
            for j, b in enumerate(missing):
                a = acts[j, : lengths[b]]
                self._store[keys[b]] = a.to("cpu") if self.where == "cpu" else a.clone()
        B, T = batch["input_ids"].shape
        first = self._store[keys[0]]
        out = torch.zeros(B, T, first.shape[-1], dtype=first.dtype, device=batch["input_ids"].device)
        for b, k in enumerate(keys):
            out[b, : lengths[b]] = self._store[k].to(out.device, non_blocking=True)
        return out


def trainable_patterns(layers: tuple[int, ...], module: str) -> tuple[str, ...]:
    """Regexes selecting ``module`` (e.g. ``mlp.down_proj``) in the given decoder blocks."""
    alternatives = "|".join(str(i) for i in layers)
    return (rf"(^|\.)(layers|h|blocks)\.({alternatives})\.{re.escape(module)}\.",)


def default_update_layers(layer: int) -> tuple[int, ...]:
    """Blocks l-2..l (WMDP/FALCON: layers 5, 6, 7 for l = 7), clipped at 0."""
    return tuple(range(max(0, layer - 2), layer + 1))


TokenScope = Literal["all", "answer"]


def forget_mask(batch: dict[str, torch.Tensor], scope: TokenScope) -> torch.Tensor:
    """[B, T] bool: the forget positions a steering loss covers.

    "all": every real token (RMU/FALCON reference code). "answer": positions that *predict* a
    loss-bearing token (``labels[:, t + 1] != -100``), i.e. the answer of QA records; prompt
    tokens shared with retain data (chat-template system prompts) are then left alone, which
    avoids steering and preserving the very same activations at once.
    """
    if scope == "all":
        return batch["attention_mask"].bool()
    return answer_positions(batch)


def random_unit_vector(d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """u = r / |r| with r ~ Uniform[0, 1)^d, seeded (WMDP RMU's ``torch.rand`` control vector)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(d, generator=g, dtype=torch.float64)
    return (r / r.norm()).to(dtype)


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over real tokens of mean_d (h - target)^2 (= ``F.mse_loss`` without padding), in fp32."""
    return token_mean((h.float() - target.float()).pow(2).mean(-1), mask)


def masked_cosine_distance(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - mean over real tokens of cos(h, target), in fp32 (FALCON's retain loss; in bf16 it rounds to 0)."""
    return 1.0 - token_mean(F.cosine_similarity(h.float(), target.float(), dim=-1), mask)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with cosine similarity: -mean log( e^{a.p/tau} / (e^{a.p/tau} + sum_k e^{a.n_k/tau}) ).

    anchor [B, T, d]; positive broadcastable to it (e.g. [d]); negatives [B, T, K, d] (K per token)
    or [B, T, d] (one). All vectors are L2-normalised first; the mean runs over ``mask``-ed tokens.
    Computed in fp32. (FALCON eq. for L_F; reference: one negative, the frozen activation.)
    """
    a = F.normalize(anchor.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1).expand_as(a)
    n = F.normalize(negatives.float(), dim=-1)
    if n.dim() == a.dim():
        n = n.unsqueeze(-2)
    pos = (a * p).sum(-1, keepdim=True)
    neg = torch.einsum("btd,btkd->btk", a, n)
    logits = torch.cat([pos, neg], dim=-1) / tau
    loss = -torch.log_softmax(logits, dim=-1)[..., 0]
    return token_mean(loss, mask) if mask is not None else loss.mean()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n_rank, d] over all processes in rank order (identity on one process).

    A statistic of the whole batch (FALCON's principal offset vector, an SVD of the forget
    activations) must see the global batch under data parallelism; rank r holds the r-th slice
    of it, so concatenation in rank order restores the single-process row order."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(width, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def principal_offset_vector(acts: torch.Tensor, generator: torch.Generator | None = None, k_max: int = 1000,
                            strength: float = 1000.0, noise_std: float = 0.01, iterations: int = 6) -> torch.Tensor:
    """FALCON's principal offset vector (POV) for one forget batch; returns a unit vector [d] (fp32).

    acts [N, d]: the batch's layer-l activations (real tokens). Following the reference code
    (``generate_steering_vector``):
      1. SVD acts = U S V^T; keep the top k = min(k_max, rank) right singular vectors v_i.
      2. P = I + strength * sum_i sigmoid(S_i / S_0) v_i v_i^T   (strength 1000: the principal
         directions dominate the identity; sigmoid(S_i/S_0) in [0.5, 0.73] weights them by size).
      3. P <- tanh(P + noise), noise ~ N(0, noise_std^2) elementwise: a bounded, non-linear
         ("irreversible") version of the projector.
      4. v_0 = 1/sqrt(d) (all-ones, unit norm); ``iterations`` (6) times v <- tanh(v P), v <- v / (|v| + 1e-6).
    The loss only uses the direction (InfoNCE normalises), so the result's scale is irrelevant.
    Deviation: the reference runs SVD over padded sequences (padding included); here only real tokens.
    """
    x = acts.detach().float().reshape(-1, acts.shape[-1])
    d = x.shape[-1]
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k_max, Vh.shape[0])
    w = torch.sigmoid(S[:k] / S[0].clamp_min(1e-12))
    P = torch.eye(d, device=x.device) + strength * (Vh[:k].T * w) @ Vh[:k]
    noise = torch.randn(d, d, generator=generator, device="cpu").to(x.device) * noise_std
    P = torch.tanh(P + noise)
    v = torch.full((d,), 1.0 / math.sqrt(d), device=x.device)
    for _ in range(iterations):
        v = torch.tanh(v @ P)
        v = v / (v.norm() + 1e-6)
    return v
