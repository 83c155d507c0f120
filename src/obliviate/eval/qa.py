"""Batched teacher-forced scoring of QA/text records: per-item answer log-probs.

``answer_logprobs`` is the shared primitive (sum of answer-token log-probs and the number of
answer tokens per item); ``answer_prob`` is TOFU's ``Q_A_Prob`` per item:
exp(-mean answer-token NLL) = exp(sum log p / |y|).
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.encode import EncodeConfig, collate, encode_records
from ..methods.losses import token_logprobs


@torch.no_grad()
def answer_logprobs(model, tokenizer, records: list[dict[str, Any]], encode: EncodeConfig | None = None,
                    batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of answer-token log-probs [N], answer lengths [N]) for every record, in order.

    Items are sorted by length into batches (less padding) and scored right-padded; the model's
    train/eval mode is restored afterwards.
    """
    enc = encode_records(tokenizer, records, encode or EncodeConfig())
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]["input_ids"]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total = torch.empty(len(enc))
    lengths = torch.empty(len(enc), dtype=torch.long)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = collate([enc[i] for i in idx], pad)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        lp, mask = token_logprobs(logits, b["labels"].to(device))
        total[idx] = lp.sum(-1).float().cpu()
        lengths[idx] = mask.sum(-1).cpu()
    model.train(was_training)
    return total, lengths


def answer_prob(model, tokenizer, records, encode: EncodeConfig | None = None, batch_size: int = 16) -> torch.Tensor:
    """TOFU ``Q_A_Prob`` per item: exp(mean answer-token log-prob), [N] in (0, 1]."""
    total, n = answer_logprobs(model, tokenizer, records, encode, batch_size)
    return (total / n.clamp_min(1)).exp()
