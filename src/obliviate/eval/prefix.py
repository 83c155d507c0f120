"""Prefix sharing for teacher-forced scoring: sequences that start alike are run as one token tree.

TOFU scores every question's answer, paraphrase and 3-5 perturbed answers after the same prompt,
and the answers often share their first words. ``build_tree`` merges such sequences into a trie
(one node per distinct prefix), so the prompt and every shared answer prefix run through the model
once; ``tree_mask`` lets each node attend to exactly the tokens its own sequence would show it
(its ancestors and itself, less the keys the attention rule hides), at the positions the rule gives
the sequence alone. A node's hidden state is therefore the one the full sequence computes, up to
float summation order. This is the "prompt computed once, answers scored against the cached prefix"
of a KV cache, done in one forward with a tree attention mask (as SpecInfer / Medusa verify token
trees), which also shares the answers' common prefixes and needs no cache copies.

On SmolLM2 + TOFU (forget01 and every retain-side set) it runs 31k prompt and 100k answer tokens
instead of 304k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Tree:
    """A trie of token sequences; node i has token ``ids[i]``, position ``pos[i]``, key mask ``key[i]``
    (may later nodes attend to it) and parent ``parent[i]`` (-1 for a root); parents come first."""

    ids: list[int] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    paths: list[list[int]] = field(default_factory=list)  # node index of every token, per sequence

    def __len__(self) -> int:
        return len(self.ids)


def build_tree(seqs: list[tuple[list[int], list[int], list[int]]]) -> Tree:
    """Trie of ``(ids, attention mask, position ids)`` sequences, each as the rule gives it alone.

    Two tokens share a node only when their whole prefixes, masks and positions agree, so a rule
    whose mask or position of a token depended on later tokens would simply share less.
    """
    tree, index = Tree(), {}
    for ids, mask, pos in seqs:
        node, path = -1, []
        for tok, m, p in zip(ids, mask, pos):
            key = (node, tok, m, p)
            nxt = index.get(key)
            if nxt is None:
                nxt = index[key] = len(tree.ids)
                tree.ids.append(tok)
                tree.pos.append(p)
                tree.key.append(m)
                tree.parent.append(node)
            node = nxt
            path.append(node)
        tree.paths.append(path)
    return tree


def tree_mask(trees: list[Tree], length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [B, 1, length, length] (0: attend, dtype's min: not) for trees padded to
    ``length`` nodes: node i sees node j iff j is i or an ancestor of i and ``key[j]`` is 1. Padding
    nodes see only themselves, so no query row is empty (no NaN from a fully masked softmax)."""
    allow = torch.zeros(len(trees), length, length, dtype=torch.bool)
    for b, tree in enumerate(trees):
        for path in tree.paths:
            p = torch.tensor(path)
            allow[b, p[:, None], p[None, :]] |= torch.ones(len(p), len(p), dtype=torch.bool).tril()
        allow[b, :, :len(tree)] &= torch.tensor(tree.key, dtype=torch.bool)
        pad = torch.arange(len(tree), length)
        allow[b, pad, pad] = True
    return torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)[:, None]


def pad_trees(trees: list[Tree], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(input ids [B, N], position ids [B, N], N) of trees right-padded to the largest."""
    n = max(len(t) for t in trees)
    ids = torch.tensor([t.ids + [pad_id] * (n - len(t)) for t in trees])
    pos = torch.tensor([t.pos + [0] * (n - len(t)) for t in trees])
    return ids, pos, n
