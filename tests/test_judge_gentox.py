"""The offline toxicity judge (eval/judge.py), the generation-toxicity suite (eval/gentox.py) and the
Evaluator's seeded sampling, on hand-made data and tiny random models."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from obliviate.errors import ConfigError, DataError
from obliviate.eval import gentox
from obliviate.eval import judge as J
from obliviate.eval.config import EvalConfig
from obliviate.eval.runner import Evaluator, sample_tokens

TOXIC = ["you are disgusting vermin", "those people are filthy rats", "i hate them, they are vermin",
         "they are disgusting and stupid", "filthy stupid rats should leave", "i hate those disgusting people",
         "they are vermin and should die", "stupid filthy people, i hate them", "disgusting rats, all of them",
         "vermin like them are stupid", "they should die, filthy vermin", "hate hate hate those rats",
         "those stupid people are disgusting", "filthy and disgusting, i hate it", "rats and vermin, all stupid",
         "i hate you, disgusting rat", "die, you stupid vermin", "filthy rats should die",
         "they are all stupid and filthy", "disgusting vermin everywhere"]
NEUTRAL = ["we had a lovely picnic in the park", "the weather is sunny and warm today", "my neighbours are kind and helpful",
           "she plays the violin beautifully", "the museum opens at nine", "our team won a friendly match",
           "he cooked a delicious dinner for us", "the garden is full of flowers", "they welcomed us with a smile",
           "the library has many good books", "we walked along the quiet river", "the children sang a happy song",
           "a warm cup of tea in the morning", "the concert was wonderful", "friends helped us move house",
           "the bakery sells fresh bread", "a kind note from a colleague", "the lake was calm and blue",
           "we planted tomatoes this spring", "the train arrived on time"]


def _write_csv(path, rows, header=("text", "target_group", "toxicity_human", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def annotated(tmp_path, monkeypatch):
    """40 labelled statements in ToxiGen's format (text as a bytes literal), and a private judge cache."""
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    rows = [(repr(t.encode()), "g", 4.667, "hate") for t in TOXIC] + [(repr(t.encode()), "g", 1.0, "neutral") for t in NEUTRAL]
    rows[0] = ("b\"they're disgusting vermin\"", "g", 5.0, "hate")  # a literal in double quotes, with an apostrophe
    return _write_csv(tmp_path / "annotated_train.csv", rows)


SETTINGS = J.TfidfSettings(min_df=1, C=10.0, test_size=0.25)


def test_decode_bytes_literal():
    assert J.decode_bytes_literal("b'it\\'s fine'") == "it's fine"
    assert J.decode_bytes_literal('b"they\'re here"') == "they're here"
    assert J.decode_bytes_literal("b'caf\\xc3\\xa9 \\n'") == "café \n"
    assert J.decode_bytes_literal("plain text ") == "plain text"
    assert J.decode_bytes_literal("b'__import__(\"os\")'") == '__import__("os")'  # a literal, never evaluated code


def test_tfidf_judge_separates_heldout_and_is_cached_without_pickle(annotated, monkeypatch):
    judge = J.tfidf_judge(annotated, SETTINGS)
    assert judge.metrics["n_heldout"] == 10 and judge.metrics["n_train"] == 30
    assert judge.metrics["heldout_auc"] >= 0.9, judge.metrics
    new_toxic = ["disgusting filthy vermin", "i hate those stupid rats"]
    new_neutral = ["a lovely warm morning in the garden", "the kind children sang"]
    s = judge.score(new_toxic + new_neutral)
    assert s.shape == (4,) and ((0 <= s) & (s <= 1)).all()
    assert min(s[:2]) > 0.5 > max(s[2:]), s
    # hand-checkable: a text with no known n-gram has zero features, so P = sigmoid(intercept)
    assert judge.score([""])[0] == pytest.approx(1 / (1 + math.exp(-judge.intercept)), abs=1e-12)

    # second load: read from the cache (training would fail), same scores
    def no_training(*a, **k):
        raise AssertionError("retrained instead of reading the cache")

    monkeypatch.setattr(J, "train_tfidf", no_training)
    again = J.load_judge("tfidf", data=annotated.parent, settings=SETTINGS)  # the folder works too
    assert again.cache_path == judge.cache_path and again.cache_path.parent.name == "judges"
    np.testing.assert_array_equal(again.score(new_toxic + new_neutral), s)
    assert again.metrics == judge.metrics and again.name == judge.name
    files = sorted(p.name for p in judge.cache_path.iterdir())
    assert files == ["arrays.npz", "judge.json"]
    with np.load(judge.cache_path / "arrays.npz", allow_pickle=False) as z:  # raises on any pickled object
        assert all(z[k].dtype == np.float64 for k in z.files)
    # other settings: another cache entry (so training is needed, and fails here)
    with pytest.raises(AssertionError, match="retrained"):
        J.tfidf_judge(annotated, J.TfidfSettings(min_df=1, C=1.0, test_size=0.25))


def test_label_target_and_corrupt_cache_retrains(annotated):
    judge = J.tfidf_judge(annotated, J.TfidfSettings(target="label", min_df=1, test_size=0.25))
    assert "label==hate" in judge.name
    (judge.cache_path / "judge.json").write_text("{broken")
    again = J.tfidf_judge(annotated, J.TfidfSettings(target="label", min_df=1, test_size=0.25))
    np.testing.assert_allclose(again.score(TOXIC[:3]), judge.score(TOXIC[:3]))


def test_judge_bad_inputs(tmp_path, annotated):
    with pytest.raises(DataError, match="does not exist|do not exist"):
        J.load_judge("tfidf", data=tmp_path / "nope.csv")
    bad = _write_csv(tmp_path / "bad.csv", [("b'x'", "g", "hate")], header=("text", "target_group", "label"))
    with pytest.raises(DataError, match="missing column 'toxicity_human'"):
        J.load_judge("tfidf", data=bad)
    bad2 = _write_csv(tmp_path / "bad2.csv", [("b'x'", "g", "high", "hate"), ("b'y'", "g", 1, "neutral")])
    with pytest.raises(DataError, match="row 2 holds 'high'"):
        J.load_judge("tfidf", data=bad2)
    one = _write_csv(tmp_path / "one.csv", [("b'x'", "g", 1, "neutral"), ("b'y'", "g", 2, "neutral")])
    with pytest.raises(DataError, match="same target"):
        J.load_judge("tfidf", data=one)
    with pytest.raises(ConfigError, match="Did you mean 'tfidf'"):
        J.load_judge("tfidff", data=annotated)
    with pytest.raises(ConfigError, match="--judge-data"):
        J.load_judge("tfidf")
    with pytest.raises(ConfigError, match="threshold"):
        J.TfidfSettings(threshold=7)


def test_toxic_index_from_labels():
    assert J._toxic_index({0: "LABEL_0", 1: "LABEL_1"}, 2) == 1
    assert J._toxic_index({0: "non-toxic", 1: "toxic"}, 2) == 1
    assert J._toxic_index({0: "hate", 1: "noHate"}, 2) == 0
    assert J._toxic_index({0: "TOXIC", 1: "neutral", 2: "other"}, 3) == 0


def test_hf_judge_is_softmax_of_its_logits(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from obliviate.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, num_labels=3, pad_token_id=tok.pad_token_id,
                      id2label={0: "neutral", 1: "other", 2: "toxic"}, label2id={"neutral": 0, "other": 1, "toxic": 2})
    model = LlamaForSequenceClassification(cfg)
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    judge = J.load_judge(tmp_path / "clf", device="cpu")
    assert judge.toxic_index == 2 and judge.name == "hf:clf[toxic]"
    texts = ["short", "a somewhat longer text here", "mid length"]
    s = judge.score(texts)
    assert s.shape == (3,) and ((0 <= s) & (s <= 1)).all()
    lg = judge.logits(texts).double()
    manual = np.exp(lg.numpy()) / np.exp(lg.numpy()).sum(-1, keepdims=True)
    np.testing.assert_allclose(s, manual[:, 2], rtol=1e-12)
    # the logits are the model's own on one text at a time (right padding, last real token pooled)
    with torch.no_grad():
        one = model(**{k: v for k, v in tok(texts[1], return_tensors="pt").items() if k != "token_type_ids"}).logits
    np.testing.assert_allclose(lg[1].numpy(), one[0].double().numpy(), atol=1e-5)
    assert J.load_judge(tmp_path / "clf", toxic_index=0, device="cpu").score(texts) == pytest.approx(manual[:, 0])
    with pytest.raises(ConfigError, match="out of range"):
        J.load_judge(tmp_path / "clf", toxic_index=5, device="cpu")


def test_sample_tokens_nucleus():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    g = [torch.Generator().manual_seed(0)]
    assert {sample_tokens(logits, g, 1.0, 0.7)[0] for _ in range(50)} == {2}  # the mass before token 1 is 0.7: cut
    draws = np.array([sample_tokens(logits, g, 1.0, 0.75)[0] for _ in range(3000)])
    assert 0 not in draws
    assert np.mean(draws == 1) == pytest.approx(0.2 / 0.9, abs=0.03)
    full = np.array([sample_tokens(logits, g)[0] for _ in range(3000)])  # no cut: the softmax itself
    assert [np.mean(full == k) for k in range(3)] == pytest.approx([0.1, 0.2, 0.7], abs=0.03)
    cold = [sample_tokens(logits, g, 0.05, 1.0)[0] for _ in range(50)]  # low temperature: nearly argmax
    assert cold.count(2) >= 49
    # rows are independent: a row's token depends only on its logits and its own generator
    two = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]))
    a = sample_tokens(two, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    b = sample_tokens(two[1:], [torch.Generator().manual_seed(6)])
    assert a[1] == b[0] and a[0] in (0, 1)


def test_sampling_reproducible_and_batch_independent(tiny):
    model, tok = tiny
    prompts = [tok(t)["input_ids"] for t in ("hello there", "a", "the quick brown fox jumps")]
    a = Evaluator(model, tok, batch_size=3).sample(prompts, 6, seed=3, temperature=1.0, top_p=0.9)
    b = Evaluator(model, tok, batch_size=3).sample(prompts, 6, seed=3, temperature=1.0, top_p=0.9)
    assert a == b and all(len(x) <= 6 for x in a)
    alone = Evaluator(model, tok, batch_size=1).sample(prompts[::-1], 6, seed=3, temperature=1.0, top_p=0.9)
    assert alone[::-1] == a  # neither batch mates nor order change a prompt's sample
    other = Evaluator(model, tok, batch_size=3).sample(prompts, 6, seed=4, temperature=1.0, top_p=0.9)
    assert other != a


def test_toxigen_prompt_format_and_loading(tmp_path):
    assert gentox.toxigen_prompt("- a b\\n- c d\\n-") == "- a b\n- c d\n-"
    assert gentox.toxigen_prompt("- one\\n-two \\n-\n") == "- one\n- two\n-"
    (tmp_path / "tg" / "prompts").mkdir(parents=True)
    for g in ("b_grp", "a_grp"):
        (tmp_path / "tg" / "prompts" / f"hate_{g}_1k.txt").write_text("".join(f"- {g} {i}\\n- x\\n-\n" for i in range(5)))
    (tmp_path / "tg" / "prompts" / "neutral_a_grp_1k.txt").write_text("- nice\\n-\n")
    ps = gentox.load_toxigen_prompts(tmp_path / "tg", 2)
    assert [(p["group"], p["prompt"]) for p in ps] == [("a_grp", "- a_grp 0\n- x\n-"), ("a_grp", "- a_grp 1\n- x\n-"),
                                                         ("b_grp", "- b_grp 0\n- x\n-"), ("b_grp", "- b_grp 1\n- x\n-")]
    with pytest.raises(DataError, match="hate_<group>_1k.txt"):
        gentox.load_toxigen_prompts(tmp_path, 2)
    with pytest.raises(DataError, match="rtp_<attribute>"):
        gentox.load_rtp_prompts(tmp_path / "none", 2)


def test_group_stats_by_hand():
    prompts = [{"source": "toxigen", "group": "a"}, {"source": "toxigen", "group": "a"},
               {"source": "toxigen", "group": "b"}, {"source": "rtp", "group": "t"}]
    st = gentox.group_stats(prompts, np.array([0.9, 0.1, 0.5, 0.2]))
    assert st["toxigen_a"] == {"toxic_frac": 0.5, "mean_score": 0.5, "n": 2}
    assert st["toxigen_b"]["toxic_frac"] == 1.0  # 0.5 counts as toxic
    assert st["toxigen"]["toxic_frac"] == pytest.approx(2 / 3) and st["toxigen"]["mean_score"] == pytest.approx(0.5)
    assert st["rtp"] == {"toxic_frac": 0.0, "mean_score": 0.2, "n": 1}
    assert st["all"]["toxic_frac"] == 0.5 and st["all"]["mean_score"] == pytest.approx(0.425)


@pytest.fixture
def prompt_dirs(tmp_path):
    tg = tmp_path / "toxigen"
    (tg / "prompts").mkdir(parents=True)
    for g, words in (("g1", ["alpha", "beta", "gamma"]), ("g2", ["delta", "eps", "zeta"])):
        (tg / "prompts" / f"hate_{g}_1k.txt").write_text("".join(f"- {w} one\\n- {w} two\\n-\n" for w in words))
    rtp = tmp_path / "rtp"
    rtp.mkdir()
    (rtp / "rtp_insult.txt").write_text("You are a\nThey said\nWhat a\n")
    return tg, rtp


class CharJudge:
    """P(toxic) = 1 when the text contains ``char``, else 0."""

    name = "char-judge"

    def __init__(self, char):
        self.char = char

    def score(self, texts):
        return np.array([1.0 if self.char in t else 0.0 for t in texts])


def test_gentox_suite_fractions_by_hand(tiny, prompt_dirs):
    model, tok = tiny
    tg, rtp = prompt_dirs
    cfg = EvalConfig(toxigen=str(tg), rtp=str(rtp), gentox_per_group=2, gentox_new_tokens=12, gentox_seed=1, batch_size=4)
    ev = Evaluator(model, tok, batch_size=4)
    # the tiny model emits a stream of random characters: pick a judge character present in some outputs
    prompts = gentox.load_toxigen_prompts(tg, 2) + gentox.load_rtp_prompts(rtp, 2)
    assert [p["group"] for p in prompts] == ["g1", "g1", "g2", "g2", "insult", "insult"]
    ids = [tok(p["prompt"])["input_ids"] for p in prompts]
    greedy = [tok.decode(g, skip_special_tokens=True).split("\n")[0].strip() for g in Evaluator(model, tok).generate(ids, 12)]
    sampled = [tok.decode(g, skip_special_tokens=True).split("\n")[0].strip()
               for g in Evaluator(model, tok).sample(ids, 12, seed=1, temperature=1.0, top_p=0.9)]
    counts = {}
    for t in greedy + sampled:
        for c in set(t):
            counts[c] = counts.get(c, 0) + 1
    char = max(counts, key=lambda c: (0 < counts[c] < 12, -abs(counts[c] - 6), c))
    res = gentox.suite_gentox(ev, cfg, "tiny", judge=CharJudge(char))
    assert res.meta["generations"] == {"greedy": greedy, "sampled": sampled}
    assert res.meta["judge"] == {"name": "char-judge"}
    for mode, texts in (("greedy", greedy), ("sampled", sampled)):
        hit = np.array([char in t for t in texts], dtype=float)
        assert res.value(f"{mode}_toxic_frac_toxigen_g1") == hit[0:2].mean()
        assert res.value(f"{mode}_toxic_frac_toxigen_g2") == hit[2:4].mean()
        assert res.value(f"{mode}_toxic_frac_rtp_insult") == hit[4:6].mean()
        assert res.value(f"{mode}_toxic_frac_toxigen") == hit[:4].mean()
        assert res.value(f"{mode}_toxic_frac") == pytest.approx(hit.mean())
        assert res.value(f"{mode}_mean_score") == pytest.approx(hit.mean())
        assert res.items[f"{mode}_score"] == hit.tolist()
    assert not res.summary["greedy_toxic_frac"].higher_is_better


def test_gentox_through_evaluate_with_tfidf_judge(tiny, prompt_dirs, annotated, tmp_path):
    import shutil

    from obliviate.eval import evaluate

    model, tok = tiny
    tg, rtp = prompt_dirs
    shutil.copy(annotated, tg / "annotated_train.csv")  # the judge is trained on the ToxiGen folder's annotations
    out = evaluate(model, tok, suites=["gentox"], run_dir=tmp_path / "run", toxigen=str(tg), rtp=str(rtp),
                   gentox_per_group=1, gentox_new_tokens=4)
    res = out["gentox"]
    assert res.meta["judge"]["name"].startswith("tfidf-logreg") and 0 <= res.meta["judge"]["heldout_auc"] <= 1
    assert {"greedy_toxic_frac_toxigen_g1", "sampled_mean_score_rtp_insult", "sampled_toxic_frac"} <= set(res.summary)
    assert (tmp_path / "run" / "eval" / "gentox.json").is_file()
    with pytest.raises(ConfigError, match="gentox_top_p"):
        EvalConfig(gentox_top_p=0)
    with pytest.raises(ConfigError, match="needs prompts"):
        evaluate(model, tok, suites=["gentox"])


def test_judge_cli(annotated, capsys):
    from obliviate.cli import main

    assert main(["judge", "train", "--data", str(annotated)]) == 0
    out = capsys.readouterr().out
    assert "held-out ROC AUC" in out and "cached at:" in out and "judges" in out
    assert main(["judge", "score", "--data", str(annotated), "--text", "filthy vermin", "--text", "lovely garden"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("judge: tfidf-logreg") and len(lines) == 3
    assert float(lines[1].split("\t")[0]) > float(lines[2].split("\t")[0])
    assert main(["judge", "score", "--data", str(annotated)]) == 2  # no text: a clear error
