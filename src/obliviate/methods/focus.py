"""Focus weighting of tokens for DI/UNDIAL, without an NLP dependency.

The later UNDIAL variant (FUnDIAL; reference code ``DITrainer.compute_loss`` with ``focus``)
weights the loss of tokens inside named entities / noun chunks found by spaCy by
1 + (c - 1) * [focus], c = 10. obliviate approximates "entity" without spaCy: a token is in
focus when it belongs to a *word* that is capitalised (first letter upper-case, not one of a
short list of capitalised function words such as "The", "In", "She") or contains a digit.
Words are rebuilt from the tokenizer's own pieces: a piece starting with a space marker
(``Ġ``/``▁``/" "), a non-alphanumeric piece, or a piece after whitespace starts a new word;
other pieces continue the current one and share its flag. This catches names, places, titles
and numbers (the facts unlearning usually targets) and misses lower-case common nouns, which
spaCy's noun chunks would include; sentence-initial ordinary words are false positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STOP = frozenset(
    "the a an in on at to of for and but or if it its he she they we i you his her their our my your "
    "this that these those what where which who whom how when why is was are were be as by with from".split()
)
_SPACE_MARKERS = ("Ġ", "▁", "Ċ")


@dataclass(frozen=True)
class VocabTable:
    """Per token id: its text (space markers as " "), whether it starts a word, is capitalised, has a digit."""

    texts: tuple[str, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VocabTable":
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(getattr(tokenizer, "all_special_tokens", []))
        texts = []
        for p in pieces:
            p = p or ""
            if p in special:
                texts.append(" ")
                continue
            for m in _SPACE_MARKERS:
                p = p.replace(m, " ")
            texts.append(p)
        return cls(tuple(texts))


def token_focus(ids: list[int], table: VocabTable) -> list[bool]:
    """Whether each token of one sequence is in a focus word (capitalised non-stop word or digits)."""
    words: list[list[int]] = []  # token positions of each word; whitespace/special tokens belong to none
    after_space = True
    for pos, t in enumerate(ids):
        text = table.texts[t] if 0 <= t < len(table.texts) else " "
        word = text.strip()
        if not word:
            after_space = True
            continue
        if after_space or text[0].isspace() or not word[0].isalnum() or not words:
            words.append([])
        words[-1].append(pos)
        after_space = text[-1].isspace() or not word[-1].isalnum()
    out = [False] * len(ids)
    for span in words:
        w = "".join(table.texts[ids[p]] for p in span).strip()
        if (w[0].isupper() and w.lower() not in STOP) or any(c.isdigit() for c in w):
            for p in span:
                out[p] = True
    return out


def focus_weights(input_ids: torch.Tensor, labels: torch.Tensor, table: VocabTable, coeff: float) -> torch.Tensor:
    """Weights [B, T-1] for the shifted loss positions: position t predicts token t+1 and gets
    1 + (coeff - 1) * focus(token t+1), as the reference code shifts its focus indices by one."""
    rows = []
    for b in range(input_ids.shape[0]):
        f = token_focus(input_ids[b].tolist(), table)
        rows.append(f[1:])
    focus = torch.tensor(rows, dtype=torch.float32, device=input_ids.device)
    return 1.0 + (coeff - 1.0) * focus
