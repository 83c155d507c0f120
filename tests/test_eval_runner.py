"""Batched runner and suites on a tiny random Llama: padding invariance, memoisation, properties
(forget quality 1 / privleak 0 against itself, reference AUC 0.5), result files, CLI."""

import json

import pytest
import torch

import obliviate
from obliviate.eval import mcq
from obliviate.eval.qa import answer_prob
from obliviate.eval.runner import Evaluator

QA = [{"question": "What is x?", "answer": "a long answer here"}, {"question": "Q?", "answer": "b"},
      {"question": "Who wrote the thing that", "answer": "someone did it, yes"}, {"question": "Why", "answer": "no"}]


def test_padding_side_and_batch_size_never_change_scores(tiny):
    model, tok = tiny
    ex = Evaluator(model, tok).encode(QA)
    right = Evaluator(model, tok, batch_size=4).score(ex, side="right")
    left = Evaluator(model, tok, batch_size=4).score(ex, side="left")
    single = Evaluator(model, tok, batch_size=1).score(ex)
    for r, l, s in zip(right, left, single):
        for key in ("logprobs", "mu", "sigma"):
            torch.testing.assert_close(r[key], l[key], atol=1e-5, rtol=0)
            torch.testing.assert_close(r[key], s[key], atol=1e-5, rtol=0)
        assert torch.equal(r["match"], l["match"])


def test_scores_agree_with_qa_answer_prob_and_are_memoised(tiny):
    model, tok = tiny
    ev = Evaluator(model, tok, batch_size=3)
    nll = ev.mean_nll(QA)
    torch.testing.assert_close(torch.exp(-nll).float(), answer_prob(model, tok, QA), atol=1e-5, rtol=0)
    ev.mean_nll(QA + QA[:2])
    assert ev.timings["score_items"] == len(QA)  # nothing scored twice


def test_batched_generation_equals_per_item(tiny):
    model, tok = tiny
    prompts = Evaluator(model, tok).prompts(QA)
    batched = Evaluator(model, tok, batch_size=4).generate(prompts, [3, 8, 5, 12])
    single = Evaluator(model, tok, batch_size=1).generate(prompts, [3, 8, 5, 12])
    assert batched == single
    assert [len(g) <= b for g, b in zip(batched, [3, 8, 5, 12])] == [True] * 4


def test_greedy_continuation_has_full_extraction_strength(tiny):
    from obliviate.eval import memorisation as mem

    model, tok = tiny
    ev = Evaluator(model, tok)
    prompt = ev.prompts(QA[:1])[0]
    gen = ev.generate([prompt], 6)[0]
    st = ev.score([{"input_ids": prompt + gen, "labels": [-100] * len(prompt) + gen}])[0]
    assert mem.extraction_strength(st["match"]) == 1.0 and mem.exact_memorisation(st["match"]) == 1.0


def test_mcq_single_token_shortcut_equals_full_scoring(tiny):
    model, tok = tiny
    ev = Evaluator(model, tok)
    items = [{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"},
             {"question": "Sky?", "choices": ["blue", "red", "x", "y"], "answer": 0, "subject": "math"}]
    fast = mcq.choice_logliks(ev, items)
    ctx = [tok(mcq.build_prompt(it, "math"), add_special_tokens=False)["input_ids"] for it in items]
    letters = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in "ABCD"]
    # the char tokenizer makes " A" two tokens: the shortcut is skipped and every pair is scored
    assert all(len(letter) == 2 for letter in letters)
    full = [[float(ev.score([{"input_ids": c + l, "labels": [-100] * len(c) + l}])[0]["logprobs"].sum()) for l in letters]
            for c in ctx]
    assert fast.ravel().tolist() == pytest.approx(sum(full, []), abs=1e-5)
    torch.testing.assert_close(ev.next_token_logprobs(ctx, [5, 6]).float()[:, 0],
                               torch.tensor([ev.score([{"input_ids": c + [5], "labels": [-100] * len(c) + [5]}])[0]["logprobs"][0]
                                             for c in ctx]), atol=1e-5, rtol=0)


WORDS = "red blue green black white grey pink gold".split()


def _tofu_dir(tmp_path):
    """A TOFU-shaped folder; forget and holdout answers interleave one pool so no character separates them."""
    d = tmp_path / "tofu"
    d.mkdir()

    def rows(tag, idx):
        return [{"question": f"{tag} question {i}?", "answer": f"the {WORDS[i]} one is {WORDS[(3 * i) % 8]}",
                 "paraphrased_answer": f"{WORDS[i]} it is", "perturbed_answer": [f"wrong {WORDS[i]}", f"bad {i}"]}
                for i in idx]
    sets = {"forget01": rows("f", [0, 3, 4, 7]), "holdout01": rows("h", [1, 2, 5, 6]), "retain_perturbed": rows("r", range(3)),
            "real_authors_perturbed": rows("a", range(3)), "world_facts_perturbed": rows("w", range(3))}
    sets["forget01_perturbed"] = sets["forget01"]
    sets["full"] = sets["retain_perturbed"] + sets["forget01"] + sets["holdout01"]
    for name, recs in sets.items():
        (d / f"{name}.json").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return d


def test_evaluate_tofu_mia_memorisation_properties(tiny, tmp_path):
    model, tok = tiny
    tofu = _tofu_dir(tmp_path)
    run = tmp_path / "run"
    res = obliviate.evaluate(model, tok, suites=["tofu", "mia", "memorisation"], run_dir=run, tofu_dir=str(tofu),
                             gen_max_length=40, reference=(model, tok))
    tofu_res = res["tofu"]
    for key in ("forget_prob", "retain_rouge", "world_facts_truth_ratio", "model_utility"):
        assert key in tofu_res.summary
    assert res["mia"].value("auc_reference") == 0.5  # a model against itself cannot separate anything
    assert set(json.loads((run / "eval" / "tofu.json").read_text())) == {"suite", "model", "summary", "items", "meta"}
    # the unlearned model *is* the retain model: forget quality 1, privleak 0
    again = obliviate.evaluate(model, tok, suites=["tofu", "mia"], run_dir=tmp_path / "run2", tofu_dir=str(tofu),
                               gen_max_length=40, retain_result=str(run), retain_mia_result=str(run))
    assert again["tofu"].value("forget_quality") == pytest.approx(1.0)
    leaks = {k: m.value for k, m in again["mia"].summary.items() if k.startswith("privleak_")}
    assert leaks["privleak_loss"] == pytest.approx(0.0)
    assert all(v == pytest.approx(0.0) or v != v for v in leaks.values())  # 0, or NaN where AUC_retain = 0
    assert again["tofu"].value("model_utility") == pytest.approx(tofu_res.value("model_utility"))


def test_existing_results_are_skipped_unless_forced(tiny, tmp_path):
    model, tok = tiny
    tofu = _tofu_dir(tmp_path)
    obliviate.evaluate(model, tok, suites=["mia"], run_dir=tmp_path / "r", tofu_dir=str(tofu))
    path = tmp_path / "r" / "eval" / "mia.json"
    d = json.loads(path.read_text())
    d["summary"]["auc_loss"]["value"] = 0.123
    path.write_text(json.dumps(d))
    kept = obliviate.evaluate(model, tok, suites=["mia"], run_dir=tmp_path / "r", tofu_dir=str(tofu))
    assert kept["mia"].value("auc_loss") == 0.123
    forced = obliviate.evaluate(model, tok, suites=["mia"], run_dir=tmp_path / "r", tofu_dir=str(tofu), force=True)
    assert forced["mia"].value("auc_loss") != 0.123


def test_finetuning_on_forget_set_moves_prob_and_mia(tiny, tmp_path):
    model, tok = tiny
    tofu = _tofu_dir(tmp_path)
    before = obliviate.evaluate(model, tok, suites=["mia"], tofu_dir=str(tofu))["mia"]
    forget = obliviate.load_tofu("forget01", tofu)
    p0 = answer_prob(model, tok, forget).mean()
    obliviate.finetune(model, tok, forget, lr=3e-3, max_steps=30, batch_size=4, progress=False, save=False)
    after = obliviate.evaluate(model, tok, suites=["mia"], tofu_dir=str(tofu))["mia"]
    assert answer_prob(model, tok, forget).mean() > 3 * p0
    assert after.value("auc_loss") >= 0.75 and after.value("auc_loss") > before.value("auc_loss")


def test_unknown_suite_and_option_errors(tiny):
    model, tok = tiny
    with pytest.raises(obliviate.ObliviateError, match="Did you mean 'tofu'"):
        obliviate.evaluate(model, tok, suites=["tofo"])
    with pytest.raises(obliviate.ObliviateError, match="Did you mean 'tofu_dir'"):
        obliviate.evaluate(model, tok, suites=["tofu"], tofu_dirr="x")
    with pytest.raises(obliviate.ObliviateError, match="needs 'tofu_dir'"):
        obliviate.evaluate(model, tok, suites=["tofu"])


def test_cli_eval(tiny, tmp_path, capsys):
    from obliviate.cli import main

    model, tok = tiny
    obliviate.save_model(model, tok, tmp_path / "model")
    tofu = _tofu_dir(tmp_path)
    rc = main(["eval", "--model", str(tmp_path / "model"), "--suite", "memorisation", "--data-dir", str(tofu),
               "--out", str(tmp_path / "run"), "--max-items", "2"])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "eval" / "memorisation.json").read_text())["suite"] == "memorisation"
    assert "exact_memorisation" in capsys.readouterr().out


def test_memorisation_on_text_records_cuts_every_stride(tiny, tmp_path):
    model, tok = tiny
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["abcdefghij" * 3, "the quick brown fox jumps"]) + "\n")
    res = obliviate.evaluate(model, tok, suites=["memorisation"], memorisation_data=str(path), el_stride=8,
                             el_max_new_tokens=6)["memorisation"]
    assert len(res.items["el_3"]) == 2 and all(0 <= v <= 1 for v in res.items["el_3"])
    assert res.meta["el_stride"] == 8
