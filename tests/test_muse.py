"""MUSE loaders and the ``muse`` suite on hand-written fixtures in the hub's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from obliviate.data.muse import load_muse
from obliviate.errors import DataError
from obliviate.eval.muse import cut_answer, icl_prompt, rouge_l_f1

VERB = [{"prompt": "Once upon a time", "gt": " the king sat on the mat"},
        {"prompt": "The news today", "gt": " rain will fall in the north"}]
QA = [{"question": "Who sat?", "answer": "the king"}, {"question": "Where?", "answer": "in the north"}]
ICL = [{"question": "Which city?", "answer": "London"}]
TEXTS = {"forget": [{"text": "the king sat on the mat"}, {"text": "rain will fall in the north"}],
         "holdout": [{"text": "a dog ran in the park"}, {"text": "snow may come soon"}],
         "retain": [{"text": "the queen read a book"}]}


def write_hub_layout(root: Path) -> Path:
    """Parquet files named as the hub stores them: <subset>/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {("verbmem", "forget"): VERB, ("knowmem", "forget_qa"): QA, ("knowmem", "retain_qa"): QA[::-1],
             ("knowmem", "forget_qa_icl"): ICL, ("knowmem", "retain_qa_icl"): ICL,
             **{("privleak", k): v for k, v in TEXTS.items()},
             ("raw", "forget"): TEXTS["forget"], ("raw", "retain1"): TEXTS["retain"], ("raw", "retain2"): TEXTS["retain"],
             ("raw", "holdout"): TEXTS["holdout"]}
    for (subset, split), rows in files.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / subset / f"{split}-00000-of-00001.parquet")
    return root


@pytest.fixture
def muse_dir(tmp_path) -> Path:
    return write_hub_layout(tmp_path / "MUSE-News")


def test_load_muse_hub_and_repo_layouts(muse_dir, tmp_path):
    assert load_muse("verbmem", "forget", muse_dir) == VERB
    assert load_muse("knowmem", "retain_qa", muse_dir, limit=1) == [QA[1]]
    assert load_muse("privleak", "holdout", muse_dir) == TEXTS["holdout"]
    repo = tmp_path / "repo" / "knowmem"  # the MUSE GitHub repository's layout: JSON arrays
    repo.mkdir(parents=True)
    (repo / "forget_qa.json").write_text(json.dumps(QA))
    assert load_muse("knowmem", "forget_qa", tmp_path / "repo") == QA


def test_load_muse_clear_errors(muse_dir, tmp_path):
    with pytest.raises(DataError, match="Unknown MUSE subset 'verbmen'. Did you mean 'verbmem'"):
        load_muse("verbmen", "forget", muse_dir)
    with pytest.raises(DataError, match="Unknown split 'retain' of MUSE subset 'knowmem'"):
        load_muse("knowmem", "retain", muse_dir)
    with pytest.raises(DataError, match=r"'verbmem/forget' not found in .*forget-00000-of-00001.parquet"):
        load_muse("verbmem", "forget", tmp_path / "empty")
    bad = tmp_path / "bad" / "verbmem"
    bad.mkdir(parents=True)
    (bad / "forget.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(DataError, match=r"forget.json', record 0: expected string fields \['prompt', 'gt'\]"):
        load_muse("verbmem", "forget", tmp_path / "bad")
    (bad / "forget.json").unlink()
    (bad / "forget-00000-of-00001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="Cannot read MUSE file .*forget-00000-of-00001.parquet"):
        load_muse("verbmem", "forget", tmp_path / "bad")


def test_rouge_f1_icl_prompt_and_cut_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 3/3, R = 3/6, F1 = 2PR/(P+R) = 2/3.
    assert rouge_l_f1(["the cat sat"], ["the cat sat on the mat"])[0] == pytest.approx(2 / 3)
    # No stemming (MUSE): "cats" does not match "cat".
    assert rouge_l_f1(["cats"], ["cat"])[0] == 0.0
    assert icl_prompt("Who?", ICL) == "Question: Which city?\nAnswer: London\n\nQuestion: Who?\nAnswer: "
    assert cut_answer("the king\n\nQuestion: next") == "the king"
    assert cut_answer("the king\nQuestion") == "the king"


class FakeEvaluator:
    """Greedy outputs and token log-probs chosen by hand, keyed by decoded prompt text."""

    def __init__(self, tok, outputs: dict[str, str], logprob: dict[str, float]):
        self.tokenizer, self.logprob = tok, logprob
        self.outputs = {tuple(tok(k, add_special_tokens=True)["input_ids"]): v for k, v in outputs.items()}

    def generate(self, prompts, budget):
        out = []
        for p in prompts:
            ids = self.tokenizer(self.outputs[tuple(p)], add_special_tokens=False)["input_ids"]
            out.append(list(ids)[:budget])
        return out

    def score(self, examples):
        res = []
        for ex in examples:
            text = self.tokenizer.decode(ex["input_ids"], skip_special_tokens=True)
            n = sum(1 for t in ex["labels"] if t != -100) - 1
            res.append({"logprobs": torch.full((max(n, 1),), self.logprob[text])})
        return res


def test_suite_muse_hand_checked_values(muse_dir, tiny):
    from obliviate.eval.config import EvalConfig
    from obliviate.eval.muse import suite_muse

    _, tok = tiny
    outputs = {"Once upon a time": " the king sat", "The news today": " snow",
               icl_prompt("Who sat?", ICL): "the king\n\nQuestion: x", icl_prompt("Where?", ICL): "in the south"}
    logprob = {"the king sat on the mat": -0.1, "rain will fall in the north": -0.2,  # memorised forget texts
               "a dog ran in the park": -3.0, "snow may come soon": -2.5}
    ev = FakeEvaluator(tok, outputs, logprob)
    res = suite_muse(ev, EvalConfig(muse_dir=str(muse_dir), muse_retain_auc=0.5, muse_verbmem_new_tokens=128))
    # VerbMem: "the king sat" vs "the king sat on the mat": F1 2/3; "snow" vs the rain sentence: 0.
    assert res.value("verbmem_f") == pytest.approx((2 / 3 + 0) / 2)
    # KnowMem forget: "the king" exact (1.0); "in the south" vs "in the north": LCS 2, P = R = 2/3.
    assert res.value("knowmem_f") == pytest.approx((1 + 2 / 3) / 2)
    # Retain QA is the same pairs reversed: same mean.
    assert res.value("knowmem_r") == pytest.approx((1 + 2 / 3) / 2)
    # Every forget text scores above every holdout text: MUSE AUC 0 (memorised), privleak -100.
    assert res.value("auc_min_k") == pytest.approx(0.0)
    assert res.value("privleak") == pytest.approx(-100.0)


def test_suite_muse_on_a_tiny_model_through_evaluate(muse_dir, tiny, tmp_path):
    import obliviate

    model, tok = tiny
    res = obliviate.evaluate(model, tok, suites=["muse"], run_dir=tmp_path / "run", muse_dir=str(muse_dir),
                             muse_verbmem_new_tokens=8, muse_knowmem_new_tokens=8, muse_retain_auc=0.5)["muse"]
    for k in ("verbmem_f", "knowmem_f", "knowmem_r", "auc_min_k"):
        assert 0.0 <= res.value(k) <= 1.0
    assert res.value("privleak") == pytest.approx((res.value("auc_min_k") - 0.5) / 0.5 * 100)
    assert (tmp_path / "run" / "eval" / "muse.json").is_file()
