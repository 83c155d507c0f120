"""Tokenisation of records into training examples, and padding into batches.

QA records: the prompt is the tokenizer's chat template applied to the question (with the
generation prompt) when the tokenizer has one, else the plain template
``"Question: {question}\nAnswer:"``; the answer follows (a leading space in the plain template)
and EOS is appended. Labels are -100 on the prompt, so losses cover answer tokens only.
Text records train on every token (BOS excluded from the loss, as no token predicts it).

``EncodeConfig.answer_end`` chooses what follows the answer: ``"eos"`` (default; the original TOFU
code's and training's rule) appends one EOS; ``"chat_turn"`` (the ``open-unlearning`` eval preset)
scores the assistant turn as the chat template renders it, i.e. open-unlearning's
``preprocess_chat_instance`` (``src/data/utils.py``): the whole conversation is rendered and
tokenised at once, the prompt is its first ``len(prompt_ids)`` tokens, and an EOS is appended unless
the rendering already ends with one. For SmolLM2 that scores ``answer <|im_end|> \n <|im_end|>``.
Prompts that use no chat template ignore it (the answer + EOS rule).

``with_alternates`` adds a second answer to the same prompt (IdkDPO/IdkNLL's refusal) to each
encoded example. ``collate`` right-pads for training (labels -100 and attention 0 on padding);
``collate(..., side="left")`` left-pads prompts for generation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

from ..errors import ConfigError
from .records import infer_kind

logger = logging.getLogger(__name__)
IGNORE = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class EncodeConfig:
    """How records become token sequences."""

    max_length: int = field(default=256, metadata={"help": "Truncate sequences to this many tokens (the answer is cut first, then the prompt from the left)."})
    template: str = field(default="auto", metadata={"help": "'auto' (chat template if the tokenizer has one, else plain), 'chat', 'plain', or a custom prompt string with {question}."})
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message for chat templates (None: the template's default)."})
    answer_end: Literal["eos", "chat_turn"] = field(default="eos", metadata={"help": "What follows the answer: 'eos' (one EOS) or 'chat_turn' (the chat template's end of the assistant turn, then EOS, as open-unlearning); chat templates only."})

    def __post_init__(self):
        if self.max_length < 2:
            raise ConfigError(f"'data.max_length' must be at least 2, got {self.max_length}.")
        if self.template not in ("auto", "chat", "plain") and "{question}" not in self.template:
            raise ConfigError(
                f"'data.template' must be 'auto', 'chat', 'plain' or a string containing {{question}}, got {self.template!r}."
            )
        if self.answer_end not in ("eos", "chat_turn"):
            raise ConfigError(f"'data.answer_end' must be 'eos' or 'chat_turn', got {self.answer_end!r}.")


def _uses_chat(tokenizer, cfg: EncodeConfig) -> bool:
    return cfg.template == "chat" or bool(cfg.template == "auto" and getattr(tokenizer, "chat_template", None))


def _chat_ids(tokenizer, question: str, cfg: EncodeConfig, answer: str | None = None) -> list[int]:
    """The chat template tokenised: up to the generation prompt, or (``answer`` given) the whole
    conversation with the assistant turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("'data.template' is 'chat' but the tokenizer has no chat template; use 'plain'.")
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) + [
        {"role": "user", "content": question}] + ([{"role": "assistant", "content": answer}] if answer is not None else [])
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def prompt_ids(tokenizer, question: str, cfg: EncodeConfig) -> list[int]:
    """Token ids of the prompt for ``question`` (what precedes the answer)."""
    if _uses_chat(tokenizer, cfg):
        return _chat_ids(tokenizer, question, cfg)
    text = (PLAIN_TEMPLATE if cfg.template in ("auto", "plain") else cfg.template).format(question=question)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def answer_ids(tokenizer, answer: str, cfg: EncodeConfig) -> list[int]:
    prefix = "" if _uses_chat(tokenizer, cfg) else " "
    ids = list(tokenizer(prefix + answer, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]


def qa_ids(tokenizer, question: str, answer: str, cfg: EncodeConfig) -> tuple[list[int], list[int]]:
    """(prompt ids, scored answer ids) of a QA pair under ``cfg`` (``answer_end``: module docstring)."""
    p = prompt_ids(tokenizer, question, cfg)
    if cfg.answer_end == "eos" or not _uses_chat(tokenizer, cfg):
        return p, answer_ids(tokenizer, answer, cfg)
    full = _chat_ids(tokenizer, question, cfg, answer)
    if full[-1] != tokenizer.eos_token_id:
        full.append(tokenizer.eos_token_id)
    return full[:len(p)], full[len(p):]


def encode_qa(tokenizer, question: str, answer: str, cfg: EncodeConfig) -> dict[str, list[int]]:
    return _join(*qa_ids(tokenizer, question, answer, cfg), cfg.max_length)


def _join(p: list[int], a: list[int], max_length: int) -> dict[str, list[int]]:
    """Prompt + answer, labels -100 on the prompt; too long: the answer is cut first, then the prompt from the left."""
    if len(p) + len(a) > max_length:
        a = a[: max(1, max_length - len(p))]
        if len(p) + len(a) > max_length:
            p = p[len(p) + len(a) - max_length:]
    return {"input_ids": p + a, "labels": [IGNORE] * len(p) + a}


def with_alternates(tokenizer, examples: list[dict[str, Any]], answer_for: Callable[[int], str],
                    cfg: EncodeConfig | None = None) -> list[dict[str, Any]]:
    """Copies of encoded ``examples``, each with ``"alternate"``: the same prompt followed by the answer
    ``answer_for(example["index"])`` (e.g. a refusal for IdkDPO/IdkNLL), encoded as ``encode_qa`` would.

    The prompt is the example's leading label -100 tokens (for a text record: its BOS, if any), so
    the two sequences share the exact prompt tokens, truncation included."""
    cfg = cfg or EncodeConfig()
    out = []
    for ex in examples:
        n = next((i for i, lab in enumerate(ex["labels"]) if lab != IGNORE), len(ex["labels"]))
        alt = _join(list(ex["input_ids"][:n]), answer_ids(tokenizer, answer_for(int(ex["index"])), cfg), cfg.max_length)
        out.append({**ex, "alternate": {**alt, "index": ex["index"]}})
    return out


def encode_text(tokenizer, text: str, cfg: EncodeConfig) -> dict[str, list[int]]:
    return _text(tokenizer, list(tokenizer(text, add_special_tokens=True)["input_ids"]), cfg.max_length)


def _text(tokenizer, ids: list[int], max_length: int) -> dict[str, list[int]]:
    ids = ids[:max_length]
    labels = list(ids)
    if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id:
        labels[0] = IGNORE
    return {"input_ids": ids, "labels": labels}


def encode_records(tokenizer, records: list[dict[str, Any]], cfg: EncodeConfig | None = None,
                   where: str = "records") -> list[dict[str, Any]]:
    """Encode every record; each example keeps its record index as ``index``. Records longer than
    ``cfg.max_length`` tokens are truncated, with one warning (naming ``where``) giving their count."""
    cfg = cfg or EncodeConfig()
    out, cut = [], []
    for i, r in enumerate(records):
        if infer_kind(r) == "qa":
            p, a = qa_ids(tokenizer, r["question"], r["answer"], cfg)
            n, ex = len(p) + len(a), _join(p, a, cfg.max_length)
        else:
            ids = list(tokenizer(r["text"], add_special_tokens=True)["input_ids"])
            n, ex = len(ids), _text(tokenizer, ids, cfg.max_length)
        if n > cfg.max_length:
            cut.append(n)
        ex["index"] = i
        out.append(ex)
    if cut:
        logger.warning("%s: %d of %d records are longer than data.max_length=%d tokens (the longest has %d) and were "
                       "truncated: the answer is cut first, then the question from the left. To keep them whole, raise "
                       "it, e.g. --set data.max_length=%d (Python: max_length=%d).", where, len(cut), len(records),
                       cfg.max_length, max(cut), max(cut), max(cut))
    return out


def collate(examples: list[dict[str, Any]], pad_id: int, side: Literal["right", "left"] = "right") -> dict[str, torch.Tensor]:
    """Pad ``input_ids``/``labels`` to the longest example; returns LongTensors [B, T]."""
    T = max(len(e["input_ids"]) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        n = len(e["input_ids"])
        pad = T - n
        lab = e.get("labels", [IGNORE] * n)
        if side == "right":
            ids.append(e["input_ids"] + [pad_id] * pad)
            labels.append(lab + [IGNORE] * pad)
            mask.append([1] * n + [0] * pad)
        else:
            ids.append([pad_id] * pad + e["input_ids"])
            labels.append([IGNORE] * pad + lab)
            mask.append([0] * pad + [1] * n)
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    if all("index" in e for e in examples):
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)
    return batch
