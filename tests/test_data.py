"""Data loading, validation errors, tokenisation and label masking."""

import json

import pytest
import torch

from obliviate.data import EncodeConfig, collate, encode_records, load_records, load_tofu, make_facts
from obliviate.errors import DataError

from .conftest import data_dir


def test_formats_round_trip(tmp_path):
    recs = [{"question": "Q1?", "answer": "A1", "author": "x"}, {"question": "Q2?", "answer": "A2", "author": "y"}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    import pandas as pd

    pd.DataFrame(recs).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
    for f in ["d.json", "d.jsonl", "d.csv", "d.parquet"]:
        assert load_records(tmp_path / f) == recs, f
    assert load_records(recs) == recs
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(recs)})
    assert load_records(dd, split="train") == recs


def test_errors_name_file_record_field(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "missing.json")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q"}))
    with pytest.raises(DataError, match=r"bad\.jsonl: record 1 has no 'answer'"):
        load_records(tmp_path / "bad.jsonl")
    (tmp_path / "num.json").write_text(json.dumps([{"question": "q", "answer": 3}]))
    with pytest.raises(DataError, match=r"num\.json: record 0 field 'answer' must be a string"):
        load_records(tmp_path / "num.json")
    (tmp_path / "cols.csv").write_text("prompt,response\nq,a\n")
    with pytest.raises(DataError, match=r"cols\.csv: record 0 has neither"):
        load_records(tmp_path / "cols.csv")
    with pytest.raises(DataError, match="empty"):
        load_records([])


def test_labels_cover_answer_only(tiny):
    _, tok = tiny
    ex = encode_records(tok, [{"question": "Who?", "answer": "Bob"}], EncodeConfig(template="plain"))[0]
    n_ans = len(tok(" Bob", add_special_tokens=False)["input_ids"]) + 1  # + EOS
    assert ex["labels"][-n_ans:] == ex["input_ids"][-n_ans:]
    assert all(l == -100 for l in ex["labels"][:-n_ans])
    assert ex["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(ex["input_ids"][:-n_ans]).endswith("Answer:")
    text = encode_records(tok, [{"text": "hello"}])[0]
    assert text["labels"][1:] == text["input_ids"][1:]


def test_truncation_keeps_an_answer_token(tiny):
    _, tok = tiny
    ex = encode_records(tok, [{"question": "x" * 50, "answer": "y" * 50}], EncodeConfig(max_length=20, template="plain"))[0]
    assert len(ex["input_ids"]) == 20 and sum(l != -100 for l in ex["labels"]) >= 1


def test_collate_padding_sides():
    exs = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "index": 0}, {"input_ids": [8], "labels": [8], "index": 1}]
    r = collate(exs, pad_id=0)
    assert r["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert r["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert r["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    l = collate(exs, pad_id=0, side="left")
    assert l["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]] and l["attention_mask"][1].tolist() == [0, 0, 1]
    assert r["index"].tolist() == [0, 1]


def test_chat_template_used_when_present(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    ex = encode_records(tok, [{"question": "Who?", "answer": "Bob"}])[0]
    text = tok.decode(ex["input_ids"])
    assert "<|im_start|>user\nWho?<|im_end|>" in text and text.endswith("assistant\nBob<|im_end|>")
    answer = tok.decode([t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100])
    assert answer == "Bob<|im_end|>"


def test_facts_deterministic():
    a, b = make_facts(5, 3, seed=2), make_facts(5, 3, seed=2)
    assert a == b and len(a) == 15 and len({r["person"] for r in a}) == 5
    assert make_facts(5, 3, seed=3) != a


def test_tofu_local_authors():
    root = data_dir("tofu")
    f = load_tofu("forget01", root)
    assert len(f) == 40 and {r["author"] for r in f} == {198, 199}
    full = load_tofu("full", root)
    assert full[0]["author"] == 0 and full[19]["author"] == 0 and full[20]["author"] == 1
    with pytest.raises(DataError, match="Did you mean 'forget10'"):
        load_tofu("forget100", root)
