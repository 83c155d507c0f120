"""Deliberate Imagination / UNDIAL: the loss by hand, its zero-gradient fixed point, the teacher
cache, focus weighting, training on a tiny model, and (slow) unlearning planted facts in SmolLM2
compared with gradient ascent under the same budget."""

import copy
import math

import pytest
import torch

import obliviate
from obliviate.engine import TrainConfig, train
from obliviate.data import EncodeConfig, encode_records
from obliviate.errors import ConfigError
from obliviate.methods import build
from obliviate.methods.base import Aux, Batch, Reference
from obliviate.methods.di import DI, DIConfig
from obliviate.methods.focus import VocabTable, focus_weights, token_focus
from obliviate.methods.losses import di_loss, di_targets

FACTS = obliviate.make_facts(4, 2, seed=0)
CFG = dict(max_steps=3, lr=1e-3, batch_size=2, progress=False, template="plain", max_length=96)


def test_di_loss_hand_computed_v2_and_masking():
    # one answer position (predicting token 0); the second position is padding and must not count
    teacher = torch.tensor([[[0.0, 0.0], [50.0, -50.0], [0.0, 0.0]]])
    student = torch.tensor([[[0.0, 0.0], [-50.0, 50.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 0, -100]])
    q, mask = di_targets(teacher, labels, gamma=math.log(3))
    assert torch.allclose(q[0, 0], torch.tensor([0.25, 0.75]))
    assert mask.tolist() == [[True, False]]
    assert di_loss(student, teacher, labels, gamma=math.log(3)).item() == pytest.approx(math.log(2), abs=1e-6)


def test_di_loss_hand_computed_v3_two_positions_and_weights():
    # position 0: teacher (ln2, 0, 0), true token 0, gamma ln2 -> q uniform; student (0, ln2, ln2) -> p = (1/5, 2/5, 2/5)
    # position 1: teacher (0, 0, 0), true token 2, gamma 0 -> q uniform; student uniform -> ln 3
    l2 = math.log(2)
    teacher = torch.tensor([[[l2, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    student = torch.tensor([[[0.0, l2, l2], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])
    labels = torch.tensor([[5, 0, 2]])  # label 0 is never a target (shift)
    pos0 = (math.log(5) + 2 * math.log(5 / 2)) / 3
    # gamma = ln2 also lowers position 1's true token: (0, 0, -ln2) -> q = (2/5, 2/5, 1/5); p uniform -> ln 3
    expected = (pos0 + math.log(3)) / 2
    assert di_loss(student, teacher, labels, gamma=l2).item() == pytest.approx(expected, abs=1e-6)
    w = torch.tensor([[3.0, 1.0]])
    assert di_loss(student, teacher, labels, gamma=l2, weights=w).item() == pytest.approx((3 * pos0 + math.log(3)) / 2, abs=1e-6)


def test_zero_gradient_when_gamma_zero_and_student_is_teacher():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 7, 2, -100, -100]])
    di_loss(logits, logits.detach(), labels, gamma=0.0).backward()
    assert logits.grad.abs().max() < 1e-7
    logits.grad = None
    di_loss(logits, logits.detach(), labels, gamma=3.0).backward()
    assert logits.grad.abs().max() > 1e-3  # any gamma > 0 pushes away from the teacher


def test_zero_gradient_through_a_model(tiny):
    model, tok = tiny
    enc = encode_records(tok, FACTS[:2], EncodeConfig(template="plain"))
    from obliviate.data.encode import collate

    b = collate(enc, tok.pad_token_id)
    method = DI(DIConfig(gamma=0.0))
    out = method.loss(model, Batch(forget=b), Aux(reference=Reference(copy.deepcopy(model))))
    out.loss.backward()
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) < 1e-6


def test_alias_and_config_validation():
    assert isinstance(build("undial"), DI) and build("undial", {"gamma": 10}).config.gamma == 10
    with pytest.raises(ConfigError, match="di.gamma"):
        DIConfig(gamma=-1)
    with pytest.raises(ConfigError, match="di.focus_coeff"):
        DIConfig(focus_coeff=0.5)
    assert DI(DIConfig()).needs.reference and not DI(DIConfig(teacher="x")).needs.reference
    assert DI(DIConfig(alpha=1.0)).needs.retain


def test_di_trains_tiny_and_leaves_teacher_unchanged(tiny):
    model, tok = tiny
    teacher = copy.deepcopy(model)
    t_state = copy.deepcopy(teacher.state_dict())
    before = copy.deepcopy(model.state_dict())
    result = obliviate.unlearn(model, tok, FACTS[:4], method="di", reference_model=teacher, save=False, gamma=10.0, **CFG)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["forget_nll"]) for r in result.log)
    assert all(not torch.equal(p, before[n]) for n, p in model.state_dict().items())
    assert all(torch.equal(p, t_state[n]) for n, p in teacher.state_dict().items())
    assert result.log[-1]["forget_nll"] > result.log[0]["forget_nll"]  # the true tokens lose probability


class _CountingReference(Reference):
    calls = 0

    def __call__(self, **inputs):
        type(self).calls += 1
        return super().__call__(**inputs)


@pytest.mark.parametrize("mode", ["full", "topk"])
def test_teacher_cache_matches_exact_and_skips_teacher(tiny, mode):
    model, tok = tiny
    from obliviate.data.encode import collate

    b = collate(encode_records(tok, FACTS[:3], EncodeConfig(template="plain")), tok.pad_token_id)
    ref = _CountingReference(copy.deepcopy(model))
    exact = DI(DIConfig()).loss(model, Batch(forget=b), Aux(reference=ref)).loss.item()
    # top-k with k = V keeps everything: only fp16 rounding separates it from the exact loss
    cached = DI(DIConfig(cache=mode, cache_top_k=128))
    _CountingReference.calls = 0
    first = cached.loss(model, Batch(forget=b), Aux(reference=ref))
    second = cached.loss(model, Batch(forget=b), Aux(reference=ref))
    assert _CountingReference.calls == 1, "the second pass over the same examples runs no teacher forward"
    assert first.loss.item() == pytest.approx(exact, rel=1e-3) and second.loss.item() == pytest.approx(exact, rel=1e-3)
    assert first.metrics["cache_tv_max"] < 1e-3
    # a different sequence under an index already cached is a miss, not a stale hit
    b2 = {**b, "input_ids": b["input_ids"].flip(0), "attention_mask": b["attention_mask"].flip(0), "labels": b["labels"].flip(0)}
    cached.loss(model, Batch(forget=b2), Aux(reference=ref))
    assert _CountingReference.calls == 2


def test_topk_cache_error_is_dropped_mass(tiny):
    model, tok = tiny
    from obliviate.data.encode import collate

    b = collate(encode_records(tok, FACTS[:2], EncodeConfig(template="plain")), tok.pad_token_id)
    ref = Reference(copy.deepcopy(model))
    q, mask = di_targets(ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"], 3.0)
    dropped = 1 - q[mask].topk(8, -1).values.sum(-1)
    m = DI(DIConfig(cache="topk", cache_top_k=8)).loss(model, Batch(forget=b), Aux(reference=ref)).metrics
    assert m["cache_tv_mean"] == pytest.approx(dropped.mean().item(), rel=1e-4)
    assert m["cache_tv_max"] == pytest.approx(dropped.max().item(), rel=1e-4)


def test_focus_marks_capitalised_words_and_numbers(tiny):
    _, tok = tiny  # character tokenizer: words span many tokens
    text = "The pet of Alinta Quennell was born in 1990 in Reykjavik."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    flags = token_focus(ids, VocabTable.from_tokenizer(tok))
    focus_text = "".join(c if f else "_" for c, f in zip(text, flags))
    assert focus_text == "___________Alinta_Quennell_____________1990____Reykjavik_"
    w = focus_weights(torch.tensor([ids]), torch.tensor([ids]), VocabTable.from_tokenizer(tok), 10.0)
    assert w.shape == (1, len(ids) - 1) and w[0, 10].item() == 10.0 and w[0, 9].item() == 1.0  # position 10 predicts 'A'


def test_teacher_from_path(tiny, tmp_path):
    model, tok = tiny
    teacher = copy.deepcopy(model)
    obliviate.save_model(teacher, tok, tmp_path / "teacher")
    result = obliviate.unlearn(model, tok, FACTS[:2], method="di", teacher=str(tmp_path / "teacher"), save=False, focus=True, **CFG)
    assert all(math.isfinite(r["loss"]) for r in result.log)
    from obliviate.testing import tiny_model_and_tokenizer

    small, _ = tiny_model_and_tokenizer()
    small.resize_token_embeddings(200)
    obliviate.save_model(small, tok, tmp_path / "other")
    with pytest.raises(ConfigError, match="vocabulary of 200"):
        obliviate.unlearn(copy.deepcopy(model), tok, FACTS[:2], method="di", teacher=str(tmp_path / "other"), save=False, **CFG)


@pytest.mark.slow
def test_di_unlearns_planted_facts_and_keeps_fluency_vs_ga(planted):
    """DI lowers the forgotten answers' probability while WikiText-2 perplexity rises by < 25%;
    GA runs under the same budget (steps, lr, batch) for comparison (printed, not asserted)."""
    from .conftest import data_dir
    from obliviate.eval import answer_logprobs, answer_prob

    path, facts = planted
    people = list(dict.fromkeys(f["person"] for f in facts))[:3]
    forget = [f for f in facts if f["person"] in people]
    lines = [ln.strip() for ln in (data_dir("wikitext2") / "valid.txt").read_text().splitlines() if len(ln.strip()) > 200]
    wiki = [{"text": ln} for ln in lines[:12]]

    def ppl(m, tok):
        total, n = answer_logprobs(m, tok, wiki, EncodeConfig(max_length=96), batch_size=12)
        return math.exp(-total.sum().item() / n.sum().item())

    budget = dict(max_steps=6, lr=5e-5, batch_size=len(forget), scheduler="constant", progress=False, save=False)
    out = {}
    for method, opts in (("di", {"gamma": 10.0, "cache": "full"}), ("ga", {})):
        model, tok = obliviate.load_model(path)
        if not out:
            out["before"] = (answer_prob(model, tok, forget).mean().item(), ppl(model, tok))
        result = obliviate.unlearn(model, tok, forget, method=method, **budget, **opts)
        out[method] = (answer_prob(result.model, tok, forget).mean().item(), ppl(result.model, tok))
    print("answer prob / wikitext-2 ppl:", {k: tuple(round(x, 4) for x in v) for k, v in out.items()})
    (p0, w0), (p_di, w_di) = out["before"], out["di"]
    assert p_di < 0.7 * p0, "DI must lower the forgotten answers' probability"
    assert w_di < 1.25 * w0, "DI must keep WikiText-2 perplexity within 25% of the start"
