"""Pure evaluation metrics on hand-built inputs (values worked out by hand or with scipy/sklearn)."""

import json
import math
import zlib

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from obliviate.eval import general, mcq, memorisation as mem, metrics, mia, toxicity
from obliviate.eval.results import SuiteResult, load_suite


def test_tofu_prob_is_exp_mean_logprob():
    # sum log p = -2 over 4 tokens -> exp(-0.5)
    assert metrics.answer_prob([-2.0], [4])[0] == pytest.approx(math.exp(-0.5))


def test_normalised_prob():
    # p_true = 1, two perturbed with p = 1/2 -> 1 / (1 + 1) = 0.5
    assert metrics.normalised_prob([0.0], [[math.log(2), math.log(2)]])[0] == pytest.approx(0.5)


def test_truth_ratio_is_tofu_code_geometric_mean():
    # paraphrased NLL 1, perturbed NLLs 2 and 4 -> exp(1 - 3)
    assert metrics.truth_ratio([1.0], [[2.0, 4.0]])[0] == pytest.approx(math.exp(-2))
    # perturbed probs 1 and 1/4: geometric mean 1/2 (the paper's arithmetic mean would give 0.625)
    assert metrics.truth_ratio([0.0], [[0.0, math.log(4)]])[0] == pytest.approx(0.5)


def test_truth_ratio_stat_both_sides():
    r = [0.5, 2.0]
    assert metrics.truth_ratio_stat(r, forget=False) == pytest.approx((0.5 + 0.0) / 2)  # max(0, 1 - R)
    assert metrics.truth_ratio_stat(r, forget=True) == pytest.approx(0.5)  # min(R, 1/R)
    assert metrics.truth_ratio_stat([1.0], forget=True) == 1.0


def test_forget_quality_is_ks_pvalue():
    a, b = [0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7, 0.8, 0.95]
    assert metrics.forget_quality(a, b) == pytest.approx(stats.ks_2samp(a, b).pvalue)
    assert metrics.forget_quality(a, a) == pytest.approx(1.0)
    assert metrics.forget_quality([0.1] * 20, [0.9] * 20) < 1e-6


def test_model_utility_harmonic_mean():
    assert metrics.model_utility([1.0, 0.5]) == pytest.approx(2 / 3)  # 2 / (1/1 + 1/0.5)
    assert metrics.model_utility([0.3] * 9) == pytest.approx(0.3)
    assert metrics.model_utility([0.5, 0.0, 0.9]) == 0.0


def test_rouge_l_recall_worked_example():
    # LCS("the cat sat on the mat", "the cat was on the mat") = "the cat on the mat" = 5 of 6 reference words
    r = metrics.rouge_l_recall(["the cat was on the mat", "cats sitting"], ["the cat sat on the mat", "cat sits"])
    assert r[0] == pytest.approx(5 / 6)
    assert r[1] == pytest.approx(1.0)  # Porter stemmer: cats -> cat, sitting/sits -> sit


def test_mia_scores_by_hand():
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert mia.loss_score(lp) == pytest.approx(-3.0)
    assert mia.min_k_score(lp, 0.4) == pytest.approx(-4.5)  # the 2 lowest: -5, -4
    assert mia.min_k_score(lp, 0.1) == pytest.approx(-5.0)  # at least one token
    assert mia.zlib_score(lp, "hello hello") == pytest.approx(-3.0 / len(zlib.compress(b"hello hello")))
    mu, sigma = torch.full((5,), -3.0), torch.full((5,), 2.0)
    # z = (lp + 3) / 2 = [1, .5, 0, -.5, -1]; 2 lowest mean -0.75
    assert mia.min_k_plus_plus_score(lp, mu, sigma, 0.4) == pytest.approx(-0.75)
    assert mia.reference_score(lp, lp - 1) == pytest.approx(1.0)


def test_auc_and_privleak():
    assert mia.auc([3, 4], [1, 2]) == 1.0
    assert mia.auc([1, 3], [2, 4]) == pytest.approx(0.25)  # 1 of 4 pairs ranked right
    f, h = np.random.default_rng(0).normal(size=30), np.random.default_rng(1).normal(size=40)
    assert mia.auc(f, h) == pytest.approx(roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[f, h]))
    assert mia.privleak(0.6, 0.5) == pytest.approx(20.0)
    assert mia.privleak(0.5, 0.5) == 0.0


def test_memorisation_metrics():
    m = torch.tensor([1, 0, 1, 1], dtype=torch.bool)
    assert mem.exact_memorisation(m) == 0.75
    assert mem.extraction_strength(m) == pytest.approx(0.5)  # last mismatch at 1 -> k = 2 -> 1 - 2/4
    assert mem.extraction_strength(torch.ones(5, dtype=torch.bool)) == 1.0
    assert mem.extraction_strength(torch.tensor([True, True, False])) == 0.0
    assert mem.ngram_overlap([1, 2, 3, 4], [2, 3, 4, 5], 2) == pytest.approx(2 / 3)
    assert mem.extraction_likelihood([[1, 2, 3], [7, 8]], [[1, 2, 3], [1, 2]], 2) == pytest.approx(0.5)
    assert mem.ngram_overlap([1, 2], [1, 2, 3], 3) == 0.0


def test_rep_and_distinct():
    assert mem.rep_n("a b a b".split(), 2) == pytest.approx(1 / 3)  # ab ba ab: 2 unique of 3
    assert mem.distinct_n(["a b a b".split(), "a b".split()], 2) == pytest.approx(0.5)  # ab ba ab ab
    s = general.fluency_stats(["x y z w", "x x x x"])
    assert s["rep_2"] == pytest.approx((0 + 2 / 3) / 2)


def test_strided_windows_score_every_token_once():
    assert general.strided_windows(10, 4, 2) == [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    for n, L, s in [(1000, 128, 64), (77, 512, 256), (513, 512, 512), (300, 100, 7)]:
        assert sum(t for _, _, t in general.strided_windows(n, L, s)) == n - 1
    assert general.perplexity(2 * math.log(3), 2) == pytest.approx(3.0)


def test_mmlu_prompt_format_matches_lm_eval():
    item = {"question": " What is 1+1? ", "choices": ["1", "2", "3", "4"], "answer": 1}
    shot = {"question": "Q0", "choices": ["a", "b", "c", "d"], "answer": 3}
    assert mcq.build_prompt(item, "high_school_math", [shot]) == (
        "The following are multiple choice questions (with answers) about high school math.\n\n"
        "Q0\nA. a\nB. b\nC. c\nD. d\nAnswer: D\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")
    assert list(mcq.accuracy([[0, 1, 0, 0], [5, 1, 0, 0]], [1, 1])) == [1.0, 0.0]


def test_mcq_loaders(tmp_path):
    (tmp_path / "anatomy_test.csv").write_text("question,choice0,choice1,choice2,choice3,answer\nQ?,a,b,c,d,2\n")
    items = mcq.load_mcq(tmp_path / "anatomy_test.csv")
    assert items == [{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2, "subject": "anatomy"}]
    (tmp_path / "bio.json").write_text(json.dumps([{"question": "Q", "choices": ["x", "y"], "answer": 0}]))
    assert mcq.load_mcq(tmp_path / "bio.json")[0]["subject"] == "bio"
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "Q", "choices": ["x", "y"], "answer": 5}]))
    with pytest.raises(Exception, match="item 0"):
        mcq.load_mcq(tmp_path / "bad.json")


def test_toxicity_grouping():
    assert toxicity.decode_text("b'it\\'s ok'") == "it's ok"
    recs = [{"target_group": g, "label": lab} for g, lab in [("a", "hate"), ("a", "hate"), ("a", "neutral"), ("b", "neutral")]]
    out = toxicity.group_loglik(recs, [-1.0, -3.0, -4.0, -2.0])
    assert out["a"] == {"hate": -2.0, "neutral": -4.0, "diff": 2.0}
    assert math.isnan(out["b"]["hate"])


def test_results_format_roundtrip(tmp_path):
    res = SuiteResult("tofu", "m")
    res.add("forget_prob", 0.25, False, "d", [0.5, float("nan")])
    path = res.save(tmp_path)
    d = json.loads(path.read_text())
    assert path == tmp_path / "eval" / "tofu.json"
    assert d == {"suite": "tofu", "model": "m", "summary": {"forget_prob": {"value": 0.25, "higher_is_better": False,
                 "description": "d"}}, "items": {"forget_prob": [0.5, None]}, "meta": {}}
    back = load_suite(tmp_path, "tofu")
    assert back.value("forget_prob") == 0.25 and math.isnan(back.items["forget_prob"][1])


def test_fluency_prompts_counts_and_zero():
    """The first n long-enough paragraphs, cut to prompt_words; n = 0 gives none (not all)."""
    from obliviate.eval.general import fluency_prompts

    text = "\n\n".join([" = Heading = " + "x " * 10, "a " * 8, "b c " * 4, "d " * 3])
    assert fluency_prompts(text, 5, prompt_words=4) == ["a a a a", "b c b c"]
    assert fluency_prompts(text, 1, prompt_words=4) == ["a a a a"]
    assert fluency_prompts(text, 0, prompt_words=4) == []


def test_squared_norm_equals_float64_sum():
    """The gradient-norm attack's per-tensor sum of squares (float32 rows, float64 total) against an
    all-float64 sum, for 1-D, 2-D and 3-D tensors and bf16 gradients."""
    import torch

    from obliviate.eval.gradnorm import squared_norm as _squared_norm

    torch.manual_seed(0)
    for shape in [(7,), (300, 576), (4, 5, 1536)]:
        g = torch.randn(*shape) * 1e-3
        exact = g.double().pow(2).sum()
        assert abs(float(_squared_norm(g)) - float(exact)) <= 1e-6 * float(exact)
    b = torch.randn(64, 32).bfloat16()
    assert abs(float(_squared_norm(b)) - float(b.double().pow(2).sum())) <= 1e-6 * float(b.double().pow(2).sum())
    assert float(_squared_norm(torch.tensor([3.0, 4.0]))) == 25.0
