"""The ``open-unlearning`` eval preset: each of its definitions against a hand-computed value or a
hand-built input, next to obliviate's default where the two differ (eval/metrics.py lists them)."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.data.encode import EncodeConfig, encode_records
from obliviate.eval import memorisation as mem
from obliviate.eval import mia
from obliviate.eval.attention import attention_inputs
from obliviate.eval.config import EvalConfig
from obliviate.eval.suites import ou_token_stats

SYSTEM = "You are a helpful assistant."


# ---- preset options ----------------------------------------------------------------------------
def test_preset_sets_every_definition_and_explicit_options_win():
    c = EvalConfig(preset="open-unlearning")
    assert (c.answer_end, c.attention_rule, c.definitions, c.ou) == ("chat_turn", "not_pad", "open-unlearning", True)
    assert c.encoding().answer_end == "chat_turn"
    d = EvalConfig(preset="open-unlearning", attention_rule="tokens", answer_end="eos", definitions="obliviate")
    assert (d.encoding().answer_end, d.attention_rule, d.ou) == ("eos", "tokens", False)
    assert EvalConfig().encoding().answer_end == "eos" and EncodeConfig().answer_end == "eos"


def test_bad_option_values_name_the_option():
    from obliviate.errors import ConfigError

    for kw in ({"attention_rule": "notpad"}, {"definitions": "ou"}, {"answer_end": "turn"}):
        with pytest.raises(ConfigError, match=next(iter(kw))):
            EvalConfig(**kw)


# ---- scored tokens: open-unlearning's preprocess_chat_instance ------------------------------------
def test_preset_encodes_a_tofu_item_as_open_unlearning(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    q = "What gender is author Basil Mahfouz Al-Kuwaiti?"
    a = "Author Basil Mahfouz Al-Kuwaiti is male."
    prompt = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(prompt + a + "<|im_end|>\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    eos = tok.eos_token_id
    assert full[-3:] == [eos, tok.convert_tokens_to_ids("Ċ"), eos]  # <|im_end|> \n <|im_end|>

    cfg = EvalConfig(preset="open-unlearning").encoding()
    ex = encode_records(tok, [{"question": q, "answer": a}], cfg)[0]
    assert ex["input_ids"] == full
    assert ex["labels"] == [-100] * len(p_ids) + full[len(p_ids):]
    # default: the same prompt, then the answer and one EOS
    ex0 = encode_records(tok, [{"question": q, "answer": a}], EncodeConfig(template="chat", system_prompt=SYSTEM))[0]
    assert ex0["input_ids"] == p_ids + tok(a, add_special_tokens=False)["input_ids"] + [eos]


def test_chat_turn_without_a_chat_template_is_answer_plus_eos(tiny):
    _, tok = tiny
    recs = [{"question": "Q?", "answer": "ab"}]
    assert encode_records(tok, recs, EncodeConfig(answer_end="chat_turn")) == encode_records(tok, recs, EncodeConfig())


# ---- attention: open-unlearning's mask and transformers' positions -------------------------------
def _with_inner_pads(tok):
    """Two sequences in which the pad id (= eos here, as SmolLM2) occurs inside the text."""
    e = tok.eos_token_id
    return [[2, 10, 11, e, 12, 13, e, 14, 15], [2, 20, e, 21, 22]]


def test_not_pad_scoring_equals_a_direct_call_with_their_mask(tiny):
    from obliviate.data.encode import collate

    model, tok = tiny
    model.eval()
    pad = tok.eos_token_id  # pad == eos, as SmolLM2
    seqs = _with_inner_pads(tok)
    for side in ("right", "left"):
        b = collate([{"input_ids": s} for s in seqs], pad, side=side)
        with torch.no_grad():
            for rule in ("not_pad", "tokens"):
                mask, pos = attention_inputs(b["input_ids"], b["attention_mask"], pad, rule)
                out = model(input_ids=b["input_ids"], attention_mask=mask, position_ids=pos).logits
                for i, s in enumerate(seqs):
                    ids = torch.tensor([s])
                    ref_mask = (ids != pad).long() if rule == "not_pad" else torch.ones_like(ids)
                    ref = model(input_ids=ids, attention_mask=ref_mask).logits[0]  # no position ids: arange
                    real = b["attention_mask"][i].bool()
                    torch.testing.assert_close(out[i][real], ref, atol=1e-5, rtol=1e-5)
        # the rule matters: hiding the inner pads changes the scores after them
        m1, p1 = attention_inputs(b["input_ids"], b["attention_mask"], pad, "not_pad")
        m2, p2 = attention_inputs(b["input_ids"], b["attention_mask"], pad, "tokens")
        with torch.no_grad():
            assert not torch.allclose(model(input_ids=b["input_ids"], attention_mask=m1, position_ids=p1).logits,
                                      model(input_ids=b["input_ids"], attention_mask=m2, position_ids=p2).logits)


def test_not_pad_generation_positions_equal_model_generate(tiny):
    """Prompt forward with generating=True, then steps at last position + 1 with mask 1, reproduce
    ``model.generate(ids, attention_mask=ids != pad)`` (open-unlearning's call) logit by logit."""
    from obliviate.data.encode import collate

    model, tok = tiny
    model.eval()
    pad = tok.eos_token_id
    prompts = _with_inner_pads(tok)
    b = collate([{"input_ids": s} for s in prompts], pad, side="left")
    ids = b["input_ids"]
    steps = 4
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=(ids != pad).long(), max_new_tokens=steps, do_sample=False,
                             pad_token_id=pad, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
        mask, pos = attention_inputs(ids, b["attention_mask"], pad, "not_pad", generating=True)
        assert pos[0].tolist() == [0, 1, 2, 0, 3, 4, 0, 5, 6]  # the masked eos tokens take no position
        seq = ids
        for t in range(steps):
            logits = model(input_ids=seq, attention_mask=mask, position_ids=pos).logits[:, -1]
            torch.testing.assert_close(logits, ref.logits[t], atol=1e-5, rtol=1e-5)
            nxt = logits.argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
            pos = torch.cat([pos, pos[:, -1:] + 1], 1)
        assert seq[:, ids.size(1):].tolist() == ref.sequences[:, ids.size(1):].tolist()


def test_evaluator_not_pad_scores_equal_a_direct_call(tiny):
    """Needs ``Evaluator(..., attention_rule=...)`` (eval/runner.py)."""
    from obliviate.eval.runner import Evaluator

    model, tok = tiny
    model.eval()
    e = tok.eos_token_id
    tok.pad_token = tok.eos_token  # pad == eos, as SmolLM2
    seqs = _with_inner_pads(tok)
    exs = [{"input_ids": s, "labels": [-100] * 3 + s[3:]} for s in seqs]
    got = {rule: Evaluator(model, tok, attention_rule=rule).score(exs) for rule in ("not_pad", "tokens")}
    for ex, st, st_tok in zip(exs, got["not_pad"], got["tokens"]):
        ids = torch.tensor([ex["input_ids"]])
        with torch.no_grad():
            lsm = model(input_ids=ids, attention_mask=(ids != e).long()).logits[0].log_softmax(-1)
        want = lsm[2:-1].gather(-1, ids[0, 3:, None])[:, 0]
        torch.testing.assert_close(st["logprobs"], want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(st["logprobs"], st_tok["logprobs"])


# ---- memorisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("match,default,ou", [
    ([1, 1, 1, 1], 1.0, 1.0),
    ([1, 0, 1, 1], 0.5, 0.5),       # k = 2 in both
    ([1, 1, 1, 0], 0.0, 0.25),      # last token wrong: k = 4 = |y| (default) vs the loop's k = 3
    ([0, 0, 0, 0], 0.0, 0.25),
    ([1], 1.0, 1.0),
    ([0], 0.0, 1.0),                # n = 1: the loop's only k is 0
])
def test_extraction_strength_hand_values(match, default, ou):
    m = torch.tensor(match, dtype=torch.bool)
    assert mem.extraction_strength(m) == pytest.approx(default)
    assert mem.extraction_strength(m, stop_before_last=True) == pytest.approx(ou)


def test_open_unlearning_memorisation_drops_the_last_scored_token():
    # scored tokens: 3 answer tokens then EOS; the EOS is predicted wrong
    stats = [{"match": torch.tensor([True, False, True, False]), "logprobs": torch.tensor([-1.0, -2.0, -3.0, -4.0])}]
    cut = ou_token_stats(stats)[0]
    assert cut["match"].tolist() == [True, False, True] and cut["logprobs"].tolist() == [-1.0, -2.0, -3.0]
    assert mem.exact_memorisation(stats[0]["match"]) == 0.5 and mem.exact_memorisation(cut["match"]) == pytest.approx(2 / 3)
    assert mem.extraction_strength(stats[0]["match"]) == 0.0
    assert mem.extraction_strength(cut["match"], stop_before_last=True) == pytest.approx(1 / 3)  # k = 2 of 3


# ---- MIA and privleak ----------------------------------------------------------------------------
def test_privleak_sign_conventions():
    assert mia.privleak(0.4675, 0.5) == pytest.approx(-6.5)
    assert mia.privleak(0.4675, 0.5, on_complement=True) == pytest.approx(6.5)
    # against a retain AUC of 0.6: MUSE (0.7 - 0.6) / 0.6; open-unlearning (0.3 - 0.4) / 0.4
    assert mia.privleak(0.7, 0.6) == pytest.approx(100 / 6)
    assert mia.privleak(0.7, 0.6, on_complement=True) == pytest.approx(-25.0)


def test_min_k_on_open_unlearning_tokens():
    lp = torch.tensor([-1.0, -5.0, -2.0, -0.5, -9.0])  # last = the EOS
    stats = [{"logprobs": lp, "mu": torch.zeros(5), "sigma": torch.ones(5)}]
    default = mia.attack_scores(stats, ["abc"], k=0.4)
    ou = mia.attack_scores(stats, ["abc"], k=0.4, min_k_stats=ou_token_stats(stats))
    assert default["min_k"][0] == pytest.approx((-9 - 5) / 2)  # floor(0.4 * 5) = 2 lowest
    assert ou["min_k"][0] == pytest.approx(-5.0)  # floor(0.4 * 4) = 1 lowest of the first four
    assert ou["min_k_plus_plus"][0] == pytest.approx(-5.0)
    assert ou["loss"] == default["loss"] == [pytest.approx(-17.5 / 5)]  # LOSS keeps every token


def test_grad_norm_per_tensor_mean_by_hand(tiny):
    from obliviate.methods.losses import token_logprobs

    model, tok = tiny
    ex = {"input_ids": [2, 10, 11, 12, 13, 1], "labels": [-100, -100, 11, 12, 13, 1]}
    got = mia.grad_norm_scores(model, [ex], pad_id=0, per_tensor_mean=True)[0]
    got_default = mia.grad_norm_scores(model, [ex], pad_id=0)[0]
    model.zero_grad()
    ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
    lp, m = token_logprobs(model(input_ids=ids).logits, labels)
    lp = lp[m.bool()]
    (-lp[:-1].mean()).backward()  # open-unlearning: without the last scored token
    norms = [p.grad.norm() for p in model.parameters()]
    assert got == pytest.approx(-float(torch.stack(norms).mean()), rel=1e-5)
    model.zero_grad()
    lp, m = token_logprobs(model(input_ids=ids).logits, labels)
    (-lp[m.bool()].mean()).backward()
    full = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    assert got_default == pytest.approx(-full, rel=1e-5)
    model.zero_grad()


def _direct_mean_nll(model, tok, cfg, question, answer):
    """open-unlearning's evaluate_probability on one item: model(ids, attention_mask=ids != pad)."""
    ex = encode_records(tok, [{"question": question, "answer": answer}], cfg)[0]
    ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor(ex["labels"])
    with torch.no_grad():
        lsm = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits[0, :-1].log_softmax(-1)
    keep = labels[1:] != -100
    return -float(lsm[keep].gather(-1, labels[1:][keep][:, None]).mean())


def test_evaluator_not_pad_shared_prompts_and_generation_equal_direct_calls(tiny):
    """The preset's path through ``Evaluator`` (perturbed answers sharing a prompt, greedy
    generation) against direct calls with open-unlearning's mask; end-of-turn-like pad tokens
    (``</s>`` = pad = eos here) inside questions and answers."""
    from obliviate.eval.runner import Evaluator

    model, tok = tiny
    model.eval()
    tok.pad_token = tok.eos_token
    cfg = EncodeConfig(max_length=128)
    recs = [{"question": "Who</s> is A?", "answer": "Al</s>ice.", "perturbed_answer": ["Bob.", "C</s>arl it is."]},
            {"question": "Why?", "answer": "Because.", "perturbed_answer": ["No</s>.", "Yes indeed."]}]
    ev = Evaluator(model, tok, encode=cfg, batch_size=3, attention_rule="not_pad")
    got = ev.options_nll(recs, "perturbed_answer")
    for i, r in enumerate(recs):
        for j, a in enumerate(r["perturbed_answer"]):
            assert float(got[i, j]) == pytest.approx(_direct_mean_nll(model, tok, cfg, r["question"], a), rel=1e-5)
        assert float(ev.mean_nll([r])[0]) == pytest.approx(_direct_mean_nll(model, tok, cfg, r["question"], r["answer"]), rel=1e-5)
    prompts = ev.prompts(recs)
    gens = ev.generate(prompts, 6)
    for p, g in zip(prompts, gens):
        ids = torch.tensor([p])
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), max_new_tokens=6,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        assert g == (ref[:ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref)
