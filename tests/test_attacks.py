"""Knowledge-recovery attacks: quantisation bounds, logit lens, probes, prompts, relearning, CLI.

The relearning tests memorise six short strings in a tiny random Llama (module fixture), unlearn
them with a few GA steps and check that relearning half of them brings the other half back,
while relearning a model that never forgot leaves the held-out half where it was.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from obliviate.attacks import (INT4, INT8, AttackSuiteConfig, PromptConfig, QuantConfig, RelearnConfig, logit_lens,
                               quantize_model, quantize_rtn, recovery, relearn_attack, run_attacks, split_forget,
                               write_table)
from obliviate.attacks.common import encode_with, score_examples
from obliviate.attacks.probe import distractors, hidden_states, lens_stats, probe_accuracy, truth_probe
from obliviate.attacks.prompts import apply_template
from obliviate.data.encode import EncodeConfig
from obliviate.errors import ConfigError
from obliviate.eval import answer_prob

PLAIN = EncodeConfig(template="plain")
FACTS = [{"question": f"Q{i}?", "answer": a}
         for i, a in enumerate(["red fox", "blue owl", "green elk", "pink yak", "gold emu", "grey cod"])]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run much faster on one thread, above all on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- quantisation

@pytest.mark.parametrize("bits,group,sym", [(8, None, True), (4, 64, False), (4, 64, True), (3, 50, False), (2, 16, True)])
def test_rtn_error_at_most_half_a_step_per_group(bits, group, sym):
    torch.manual_seed(bits)
    w = torch.randn(24, 200) * torch.rand(24, 1) * 3 + torch.randn(24, 1) * 0.5
    deq, scale = quantize_rtn(w, bits, group, sym)
    g = 200 if group is None else group
    per_col = scale.repeat_interleave(g, dim=1)[:, :200]  # the scale of each weight's group
    assert (w - deq).abs().le(per_col / 2 * (1 + 1e-5) + 1e-7).all()
    # at most 2^bits distinct levels in every group
    for r in range(3):
        for s in range(0, 200, g):
            assert deq[r, s:s + g].unique().numel() <= 2 ** bits


def test_rtn_hand_computed_and_idempotent():
    w = torch.tensor([[0.5, -1.0, 0.26, 0.0]])
    # symmetric 3 bits: qmax 3, s = 1/3; 0.5/s = 1.5 -> 2 (half to even), 0.26/s = 0.78 -> 1
    deq, s = quantize_rtn(w, 3, None, True)
    assert torch.allclose(deq, torch.tensor([[2 / 3, -1.0, 1 / 3, 0.0]])) and torch.allclose(s, torch.tensor([[1 / 3]]))
    # asymmetric 2 bits: s = 1.5/3 = 0.5, z = 2; 0.26/0.5 = 0.52 -> 1 -> 0.5
    deq, s = quantize_rtn(w, 2, None, False)
    assert torch.allclose(deq, torch.tensor([[0.5, -1.0, 0.5, 0.0]]))
    w = torch.randn(8, 128)
    once = quantize_rtn(w, 4, 32, True)[0]
    assert torch.allclose(quantize_rtn(once, 4, 32, True)[0], once, atol=1e-6)
    err8 = (quantize_rtn(w, 8, None, True)[0] - w).abs().mean()
    err4 = (quantize_rtn(w, 4, 64, False)[0] - w).abs().mean()
    assert err8 < err4 / 4


def test_quantize_model_touches_linear_weights_only(tiny):
    model, _ = tiny
    before = copy.deepcopy(model.state_dict())
    q, n = quantize_model(model, QuantConfig(bits=4, group_size=16, symmetric=True))
    assert n == 4 * 7  # q, k, v, o, gate, up, down per layer; lm_head skipped
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input model is untouched
    qs = q.state_dict()
    assert torch.equal(qs["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(qs["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    w = qs["model.layers.0.mlp.down_proj.weight"]
    assert not torch.equal(w, before["model.layers.0.mlp.down_proj.weight"])
    assert torch.allclose(quantize_rtn(w, 4, 16, True)[0], w, atol=1e-6)  # on the grid


def test_configs_validate_and_name_the_key():
    with pytest.raises(ConfigError, match="quant.bits"):
        QuantConfig(bits=1)
    with pytest.raises(ConfigError, match="relearn.fraction"):
        RelearnConfig(fraction=1.0)
    with pytest.raises(ConfigError, match="prompt.templates"):
        PromptConfig(templates=("roleplay",))
    with pytest.raises(ConfigError, match="attack.suite"):
        AttackSuiteConfig(suite=("quantize",))
    assert INT8.name == "int8-channel-sym" and INT4.name == "int4-g64-asym"


# ---------------------------------------------------------------- recovery and scoring

def test_recovery_definition():
    assert recovery(before=0.2, after=0.5, original=0.8) == pytest.approx(0.5)
    assert recovery(before=0.2, after=0.1, original=0.8) == pytest.approx(-1 / 6)
    assert math.isnan(recovery(before=0.8, after=0.9, original=0.8))  # nothing was unlearned


def test_score_examples_matches_answer_prob(tiny):
    model, tok = tiny
    ref = answer_prob(model, tok, FACTS, PLAIN)
    ours = score_examples(model, tok, [encode_with(tok, r["question"], r["answer"], PLAIN) for r in FACTS])
    assert torch.allclose(ref, ours, atol=1e-6)
    plain = encode_with(tok, "Q?", "ab", PLAIN)
    forced = encode_with(tok, "Q?", "ab", PLAIN, response_prefix="Sure")
    assert tok.decode(forced["input_ids"]).endswith("Answer: Sure ab</s>")
    assert [t for t in forced["labels"] if t != -100] == [t for t in plain["labels"] if t != -100]  # only the answer is scored


# ---------------------------------------------------------------- probing

def test_logit_lens_last_layer_is_the_models_output(tiny):
    model, tok = tiny
    model.eval()
    ids = torch.randint(4, 100, (2, 9))
    hs, logits = hidden_states(model, ids, torch.ones_like(ids))
    assert len(hs) == model.config.num_hidden_layers + 1
    lens = model.lm_head(model.model.norm(hs[-1]))
    assert torch.allclose(lens, logits, atol=1e-5)
    assert not torch.allclose(model.lm_head(model.model.norm(hs[1])), logits, atol=1e-3)
    stats = logit_lens(model, tok, FACTS, PLAIN)
    assert len(stats["answer_prob"]) == model.config.num_hidden_layers + 1
    assert stats["answer_prob"][-1] == pytest.approx(float(answer_prob(model, tok, FACTS, PLAIN).mean()), abs=1e-5)


def test_lens_stats_hand_computed():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 0.0], [0.0] * 4]])
    labels = torch.tensor([[-100, 3, 2]])  # position 0 predicts 3 (rank 1), position 1 predicts 2 (rank 1)
    rank, logp = lens_stats(logits, labels)
    assert rank.tolist() == [1, 1]
    assert logp[0] == pytest.approx(2.0 - math.log(sum(math.exp(x) for x in (0, 3, 1, 2))))


def test_distractors_keep_the_form_and_change_the_answer():
    from obliviate import make_facts

    facts = make_facts(3, 3, seed=1)
    wrong = distractors(facts, seed=0)
    for r, w in zip(facts, wrong):
        assert w != r["answer"] and w.startswith(r["person"])
    tofu = [{"question": "q", "answer": "a", "perturbed_answer": ["b", "c"]}, {"question": "q2", "answer": "d"}]
    assert distractors(tofu) == ["b", "a"]


def test_probe_accuracy_separable_vs_random():
    rng = np.random.default_rng(0)
    n, d = 20, 16
    x = rng.normal(size=(2 * n, d))
    y = np.r_[np.ones(n), np.zeros(n)]
    groups = np.r_[np.arange(n), np.arange(n)]
    sep = x.copy()
    sep[:n, 0] += 6.0
    assert probe_accuracy(sep, y, groups, 5, 1.0) == 1.0
    assert probe_accuracy(x, y, groups, 5, 1.0) < 0.8


# ---------------------------------------------------------------- prompts

def test_prompt_templates():
    cfg = PromptConfig()
    r = {"question": "Where was Ann born?", "answer": "Ann was born in Oslo."}
    assert apply_template("paraphrase", {**r, "paraphrased_question": "Ann's birthplace?"}, cfg) == ("Ann's birthplace?", "")
    assert apply_template("prefix-injection", r, cfg) == (r["question"], "Sure, here is the answer:")
    q, _ = apply_template("reminder", r, cfg)
    assert '"Ann was ..."' in q and q.endswith(r["question"])
    assert "Englisch" in apply_template("german", r, cfg)[0]


# ---------------------------------------------------------------- relearning

@pytest.fixture(scope="module")
def memorised():
    from obliviate.api import finetune
    from obliviate.testing import tiny_model_and_tokenizer

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = tiny_model_and_tokenizer(hidden_size=64, layers=2)
    finetune(model, tok, FACTS, save=False, max_steps=150, lr=3e-3, batch_size=6, warmup_steps=2, scheduler="constant",
             progress=False, template="plain")
    torch.set_num_threads(n)
    return model, tok


def test_split_forget_is_seeded_and_disjoint():
    from obliviate import make_facts

    a, b = split_forget(FACTS, RelearnConfig(fraction=0.5, seed=3))
    assert len(a) == 3 and len(b) == 3 and not {r["answer"] for r in a} & {r["answer"] for r in b}
    assert split_forget(FACTS, RelearnConfig(seed=3)) == (a, b)
    facts = make_facts(4, 3, seed=0)
    a, b = split_forget(facts, RelearnConfig(group_by="person"))
    assert not {r["person"] for r in a} & {r["person"] for r in b}


RELEARN = RelearnConfig(steps=15, lr=3e-4, batch_size=3, seed=0)


def test_relearning_a_model_that_never_forgot_changes_nothing(memorised):
    model, tok = memorised
    assert float(answer_prob(model, tok, FACTS, PLAIN).mean()) > 0.95
    r = relearn_attack(model, tok, model, FACTS, RELEARN, PLAIN)
    assert r.to_dict()["recovery"] is None
    assert abs(r.details["change"]) < 0.02


def test_relearning_recovers_facts_removed_by_weak_ga(memorised):
    from obliviate.api import unlearn

    original, tok = memorised
    model = copy.deepcopy(original)
    unlearn(model, tok, FACTS, method="ga", save=False, max_steps=8, lr=1e-3, batch_size=6, progress=False, template="plain")
    r = relearn_attack(model, tok, original, FACTS, RELEARN, PLAIN)
    assert r.original > 0.95 and r.before < 0.6  # GA did remove the held-out facts
    assert r.after > r.before + 0.2 and r.recovery > 0.4
    assert r.details["n_heldout"] == 3


# ---------------------------------------------------------------- suite, table, CLI

def test_suite_writes_table_and_cli(tiny, tmp_path):
    from obliviate.cli import main
    from obliviate.models import save_model

    model, tok = tiny
    original = copy.deepcopy(model)
    torch.nn.init.normal_(model.model.layers[0].mlp.down_proj.weight, std=0.5)
    cfg = AttackSuiteConfig(suite=("quant", "probe", "prompt"), prompt=PromptConfig(templates=("role-play", "french")))
    rows = run_attacks(model, tok, original, FACTS, cfg, PLAIN)
    names = [r.attack for r in rows]
    assert names == ["quant:int8-channel-sym", "quant:int4-g64-asym", "logit-lens", "linear-probe",
                     "prompt:role-play", "prompt:french", "prompt-worst"]
    assert rows[-1].after == max(r.after for r in rows[4:6])
    write_table(rows, tmp_path / "run")
    data = json.loads((tmp_path / "run" / "attacks.json").read_text())
    assert len(data["rows"]) == 7 and "| attack |" in (tmp_path / "run" / "attacks.md").read_text()
    save_model(model, tok, tmp_path / "u")
    save_model(original, tok, tmp_path / "o")
    (tmp_path / "f.json").write_text(json.dumps(FACTS))
    rc = main(["attack", "--model", str(tmp_path / "u"), "--original", str(tmp_path / "o"), "--forget", str(tmp_path / "f.json"),
               "--suite", "quant", "--set", "quant=[{bits: 4, group_size: 8}]", "--template", "plain", "--out", str(tmp_path / "cli")])
    assert rc == 0
    rows = json.loads((tmp_path / "cli" / "attacks.json").read_text())["rows"]
    assert [r["attack"] for r in rows] == ["quant:int4-g8-sym"] and rows[0]["before"] != rows[0]["after"]
    assert main(["attack", "--model", "x", "--original", "y", "--forget", "z", "--suite", "quant,relern", "--out", "o"]) == 2


def test_probe_folds_keep_reused_answer_text_on_one_side():
    """Swapped-name distractors reuse other items' true answers. With folds by item, a probe that
    reads only answer *content* scores below chance (0.2 here); grouping folds by template
    (``fold_groups``) brings a content-only probe back to chance, so probe accuracy above 0.5
    has to come from a truth signal."""
    import numpy as np

    from obliviate import make_facts
    from obliviate.attacks.probe import fold_groups

    recs = make_facts(6, 3, seed=1)[:9]
    wrong = distractors(recs)
    texts = [r["answer"].replace(r["person"], "") for r in recs] + [w.replace(r["person"], "") for w, r in zip(wrong, recs)]
    vocab = sorted(set(texts))
    content = np.array([[t == v for v in vocab] for t in texts], float)
    y = np.r_[np.ones(9), np.zeros(9)]
    g = fold_groups(recs)
    assert list(g) == [0, 1, 2] * 3  # three templates
    assert probe_accuracy(content, y, np.r_[np.arange(9), np.arange(9)], 5, 1.0) < 0.4
    assert probe_accuracy(content, y, np.r_[g, g], 5, 1.0) == 0.5
    tofu_like = [{"question": f"q{i}", "answer": f"a{i}", "perturbed_answer": [f"b{i}"]} for i in range(4)]
    assert list(fold_groups(tofu_like)) == [0, 1, 2, 3]
