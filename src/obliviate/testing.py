"""Tiny models and tokenizers for tests and quick experiments (no downloads)."""

from __future__ import annotations

import string

import torch

from .models import prepare_tokenizer, tiny_llama

__all__ = ["tiny_llama", "tiny_tokenizer", "tiny_model_and_tokenizer"]


def tiny_tokenizer():
    """A character-level fast tokenizer: specials <pad>=0, </s>=1, <s>=2, then printable ASCII."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>")
    prepare_tokenizer(tok)
    return tok


def tiny_model_and_tokenizer(hidden_size: int = 32, layers: int = 4, seed: int = 0) -> tuple[torch.nn.Module, object]:
    tok = tiny_tokenizer()
    return tiny_llama(vocab_size=128, hidden_size=hidden_size, layers=layers, seed=seed), tok
