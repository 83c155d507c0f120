"""Which tokens a scored or generating forward attends to, and at which positions: one place for
the rule, used by every forward of ``Evaluator`` (teacher-forced scoring, greedy and sampled
generation, next-token distributions) and by the gradient-norm attack (``mia.grad_norm_scores``).

* ``"tokens"`` (obliviate's default): every real token is attended, padding is not; position ids
  count real tokens (``cumsum(mask) - 1``), so left- and right-padded batches give the same
  per-item values.
* ``"not_pad"`` (the ``open-unlearning`` preset): open-unlearning's collator
  (``src/data/collators.py``, ``DataCollatorForSupervisedDataset``) builds
  ``attention_mask = input_ids != pad_token_id`` and passes no position ids. When the pad token is
  also a token of the text (SmolLM2: pad == eos == ``<|im_end|>``), every end-of-turn token inside
  the prompt and the answer is masked out of attention too: no later token sees it, though it is
  still scored and its own query still attends to the unmasked tokens before it (open-unlearning
  issue #128, acknowledged). Position ids are what transformers computes for such a call, and that
  differs between the two kinds of forward:

  - teacher-forced scoring (``generating=False``): ``LlamaModel.forward`` without ``position_ids``
    uses ``arange(T)`` (``cache_position``), so a masked end-of-turn token still takes a position.
    open-unlearning scores right-padded batches, where that is the item's own ``0..n-1``; we count
    from the item's first real token (``cumsum(token_mask) - 1``), which is the same for right
    padding and keeps left-padded batches batch-independent.
  - generation's prompt (``generating=True``): ``GenerationMixin`` derives positions from the
    mask, ``cumsum(attention_mask) - 1`` (masked entries set to 0; transformers 4.4x set them to 1,
    which changes nothing as those keys are never attended), so positions *skip* the masked
    end-of-turn tokens. Each decoding step then attends its new token (mask entry 1) at the
    previous last position + 1, as for ``"tokens"``.

  Checked against direct ``model(input_ids, attention_mask=ids != pad)`` and ``model.generate``
  calls in ``tests/test_eval_preset.py``.
"""

from __future__ import annotations

from typing import Literal

import torch

AttentionRule = Literal["tokens", "not_pad"]
RULES = ("tokens", "not_pad")


def attention_inputs(input_ids: torch.Tensor, token_mask: torch.Tensor, pad_id: int, rule: AttentionRule = "tokens",
                     generating: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention_mask, position_ids), both [B, T], for a padded batch.

    Args:
        input_ids: token ids [B, T], left- or right-padded.
        token_mask: 1 on the real (non-padding) tokens, 0 on padding, as ``collate`` returns it.
        pad_id: the tokenizer's pad id (``"not_pad"`` masks every token equal to it).
        rule: ``"tokens"`` or ``"not_pad"`` (module docstring).
        generating: True for the prompt forward of generation / sampling (``"not_pad"`` positions
            then skip masked tokens, as ``model.generate`` computes them); False for teacher-forced
            scoring and next-token distributions.
    """
    if rule == "tokens":
        mask = token_mask
    elif rule == "not_pad":
        mask = token_mask * (input_ids != pad_id).to(token_mask.dtype)
    else:
        raise ValueError(f"unknown attention rule {rule!r}; choose one of {RULES}")
    counted = mask if generating else token_mask
    pos = (counted.cumsum(-1) - 1).clamp_min(0) * (counted != 0)
    return mask, pos
