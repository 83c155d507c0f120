"""Multiple-choice knowledge accuracy (MMLU, WMDP) by answer log-likelihood.

Prompt format is lm-evaluation-harness's ``mmlu`` (and ``wmdp``) task, so numbers are comparable::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    [few-shot: {question}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer: {letter}\\n\\n ...]
    {question}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:

The continuations are `` A`` .. `` D`` (target delimiter " "); the prediction is the choice with the
highest log-likelihood (lm-eval's ``acc``). Few-shot examples are the first k of the subject's dev
split, as lm-eval's ``first_n`` sampler for MMLU. Tokenisation follows lm-eval's HF model: no BOS
token is added, and the continuation tokens are those of ``context + continuation`` after the
context's tokens. When every continuation is one token (true for letter answers in common
tokenisers) one forward per question scores all choices.

Files: MMLU CSVs (``question,choice0..choice3,answer`` with answer 0-3; the subject is the file name
without ``_test``/``_dev``) and WMDP-style JSON/JSONL (``question``, ``choices`` list, ``answer`` int).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

LETTERS = "ABCDEFGHIJ"


def format_question(item: dict[str, Any], with_answer: bool) -> str:
    lines = [item["question"].strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"])]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {LETTERS[item['answer']]}" if with_answer else text


def build_prompt(item: dict[str, Any], subject: str, shots: list[dict[str, Any]] = ()) -> str:
    """lm-eval MMLU context for ``item`` with the given few-shot examples."""
    head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return head + "".join(format_question(s, True) + "\n\n" for s in shots) + format_question(item, False)


def accuracy(choice_loglik, answers) -> np.ndarray:
    """Per-item correctness: argmax over choices of the log-likelihood equals the answer."""
    return (np.asarray(choice_loglik).argmax(-1) == np.asarray(answers)).astype(float)


def _item(row: dict[str, Any], where: str, i: int, subject: str) -> dict[str, Any]:
    if "choices" in row:
        choices = list(row["choices"])
    else:
        choices = [str(row[f"choice{j}"]) for j in range(10) if f"choice{j}" in row]
    try:
        answer = int(row["answer"])
    except (KeyError, ValueError, TypeError):
        raise DataError(f"{where}: item {i} needs an integer 'answer' (0-based choice index), got {row.get('answer')!r}.") from None
    if "question" not in row or len(choices) < 2 or not 0 <= answer < len(choices):
        raise DataError(f"{where}: item {i} needs 'question', >= 2 choices and 0 <= answer < {len(choices)}.")
    return {"question": str(row["question"]), "choices": [str(c) for c in choices], "answer": answer,
            "subject": row.get("subject", subject)}


def load_mcq(path: str | os.PathLike, subject: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Read an MMLU-format CSV or a WMDP-format JSON/JSONL file into MCQ items."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"MCQ file '{p}' does not exist.")
    subject = subject or p.stem.removesuffix("_test").removesuffix("_dev").removesuffix("_val")
    if p.suffix == ".csv":
        import pandas as pd

        rows = pd.read_csv(p, keep_default_na=False).to_dict(orient="records")
    elif p.suffix in (".json", ".jsonl"):
        text = p.read_text(encoding="utf-8")
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = rows.get("data", rows) if isinstance(rows, dict) else rows
    else:
        raise DataError(f"MCQ file '{p}': use an MMLU .csv or a WMDP-style .json/.jsonl.")
    rows = rows[:limit] if limit is not None else rows
    return [_item(r, str(p), i, subject) for i, r in enumerate(rows)]


def load_mmlu(root: str | os.PathLike, subjects: list[str] | None = None, limit: int | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(test items, dev items by subject) from an MMLU folder with ``test/`` and ``dev/``."""
    root = Path(root)
    files = sorted((root / "test").glob("*_test.csv"))
    if not files:
        raise DataError(f"No MMLU test CSVs under '{root / 'test'}'; pass the folder holding test/ and dev/.")
    names = [f.name.removesuffix("_test.csv") for f in files]
    if subjects:
        missing = [s for s in subjects if s not in names]
        if missing:
            from ..errors import did_you_mean

            raise DataError(f"Unknown MMLU subject '{missing[0]}'.{did_you_mean(missing[0], names)}")
        files = [f for f, n in zip(files, names) if n in subjects]
    items, dev = [], {}
    for f in files:
        s = f.name.removesuffix("_test.csv")
        items += load_mcq(f, s, limit)
        d = root / "dev" / f"{s}_dev.csv"
        dev[s] = load_mcq(d, s) if d.is_file() else []
    return items, dev


def choice_logliks(evaluator, items: list[dict[str, Any]], dev: dict[str, list] | None = None, shots: int = 0) -> np.ndarray:
    """Log-likelihood of each choice letter per item, [N, n_choices]."""
    tok = evaluator.tokenizer
    n_choices = len(items[0]["choices"])
    contexts, conts = [], []
    for it in items:
        ctx = build_prompt(it, it["subject"], (dev or {}).get(it["subject"], [])[:shots])
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        contexts.append(ctx_ids)
        conts.append([tok(ctx + " " + LETTERS[j], add_special_tokens=False)["input_ids"][len(ctx_ids):]
                      for j in range(len(it["choices"]))])
    single = all(len(c) == 1 for cs in conts for c in cs) and all(len(cs) == n_choices for cs in conts)
    if single and all([c[0] for c in cs] == [c[0] for c in conts[0]] for cs in conts):
        return evaluator.next_token_logprobs(contexts, [c[0] for c in conts[0]]).numpy()
    examples = [{"input_ids": ctx + c, "labels": [-100] * len(ctx) + c} for ctx, cs in zip(contexts, conts) for c in cs]
    stats = evaluator.score(examples)
    out, k = np.full((len(items), max(len(cs) for cs in conts)), -np.inf), 0
    for i, cs in enumerate(conts):
        for j in range(len(cs)):
            out[i, j] = float(stats[k]["logprobs"].double().sum())
            k += 1
    return out
