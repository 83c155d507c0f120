"""The methods of issue 17 (DPO/IdkDPO, IdkNLL, WGA, SatImp, CE-U, PDU) and the gradient-norm MIA.

Losses against values worked by hand on a tiny vocabulary; the gradient properties each paper
states; refusal sampling and the engine's alternate batch; every method trained on the tiny random
Llama (finite loss, trainable parameters changed, reference untouched), with LoRA, under
gradient accumulation, through SPUNGE and across a resume (PDU's dual variable).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import obliviate
from obliviate.data import EncodeConfig, encode_records
from obliviate.data.encode import encode_qa, with_alternates
from obliviate.data.refusals import load_refusals, pick_refusal
from obliviate.engine import TrainConfig, train
from obliviate.errors import ConfigError
from obliviate.eval import mia
from obliviate.methods import build
from obliviate.methods.base import Aux, Batch
from obliviate.methods.losses import (ceu_loss, dpo_loss, ga_loss, logit_margin_loss, satimp_loss, wga_loss)
from obliviate.testing import tiny_model_and_tokenizer

REFUSALS = str(Path(__file__).with_name("refusals.txt"))  # three refusals of our own, one as a JSON line
NEW = ["dpo", "idknll", "wga", "satimp", "ceu", "pdu"]
REQUIRED = {"dpo": {"refusals": REFUSALS}, "idknll": {"refusals": REFUSALS}, "pdu": {"epsilon": 1.0}}
FACTS = obliviate.make_facts(4, 2, seed=0)
FORGET, RETAIN = FACTS[:4], FACTS[4:]
CFG = dict(max_steps=3, lr=1e-3, batch_size=2, progress=False, template="plain", max_length=96)
LN2, LN3 = math.log(2), math.log(3)


class Bigram(torch.nn.Module):
    """A toy LM whose next-token logits depend only on the current token: logits[t] = table[x_t]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone().float())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _seq(ids: list[int], prompt: int = 1) -> dict[str, torch.Tensor]:
    """One right-padded-free sequence whose first ``prompt`` tokens carry no loss."""
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "labels": torch.tensor([[-100] * prompt + ids[prompt:]]), "index": torch.tensor([0])}


def _one_token(logits_row: list[float], target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, 2, V] logits whose position 0 predicts ``target`` (the one answer token)."""
    row = torch.tensor(logits_row)
    return torch.stack([row, torch.zeros_like(row)])[None], torch.tensor([[-100, target]])


# ---- losses by hand ----------------------------------------------------------------------------

def test_dpo_loss_by_hand():
    z = torch.zeros(2)
    assert dpo_loss(z, z, z, z, beta=0.1).item() == pytest.approx(20 * LN2)  # theta == ref: (2/beta) ln 2
    one = torch.ones(1)
    # margin (1 - 0) - (-1 - 0) = 2, beta 0.5: -(2/0.5) log sigmoid(1) = 4 ln(1 + e^-1)
    assert dpo_loss(one, 0 * one, -one, 0 * one, beta=0.5).item() == pytest.approx(4 * math.log1p(math.exp(-1)))


def test_weighted_ascent_losses_by_hand():
    logits, labels = _one_token([0.0, 0.0], 0)  # p(y) = 1/2
    assert wga_loss(logits, labels, beta=1.0).item() == pytest.approx(-LN2 / 2)
    assert satimp_loss(logits, labels, beta1=5.0, beta2=1.0).item() == pytest.approx(-LN2 / 64)
    logits, labels = _one_token([LN3, 0.0], 0)  # p(y) = 3/4: w = (3/4)^2 (1/4)
    assert satimp_loss(logits, labels, 2.0, 1.0).item() == pytest.approx(-(9 / 64) * math.log(4) + (9 / 64) * LN3)


def test_wga_with_beta_zero_is_ga_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[-100, 3, 1, 4, -100], [-100, -100, 2, 6, 0]])
    g_wga = torch.autograd.grad(wga_loss(logits, labels, 0.0), logits)[0]
    g_ga = torch.autograd.grad(ga_loss(logits, labels), logits)[0]
    assert wga_loss(logits, labels, 0.0).item() == pytest.approx(ga_loss(logits, labels).item())
    torch.testing.assert_close(g_wga, g_ga)
    # beta > 0 puts less weight on unlikely tokens: a different gradient
    assert not torch.allclose(torch.autograd.grad(wga_loss(logits, labels, 1.0), logits)[0], g_ga)


def test_ceu_loss_by_hand_and_first_answer_token_ignored():
    logits = torch.zeros(1, 3, 3)  # V = 3, uniform p
    labels = torch.tensor([[-100, 1, 0]])  # two answer tokens
    # each position: q puts 1/2 on the two other tokens, p = 1/3 everywhere: -(2 * 1/2 ln 1/3) = ln 3
    assert ceu_loss(logits, labels, ignore_first=0).item() == pytest.approx(LN3)
    # the first answer token carries no loss; the sum is divided by both answer tokens
    assert ceu_loss(logits, labels, ignore_first=1).item() == pytest.approx(LN3 / 2)
    assert ceu_loss(logits, labels, ignore_first=2).item() == 0.0


def test_ceu_gradient_on_the_true_logit_is_its_probability_and_target_excludes_it():
    torch.manual_seed(1)
    row = torch.randn(6)
    logits, labels = _one_token(row.tolist(), 2)
    logits.requires_grad_(True)
    g = torch.autograd.grad(ceu_loss(logits, labels, ignore_first=0), logits)[0][0, 0]
    p = F.softmax(row, -1)
    assert g[2].item() == pytest.approx(p[2].item(), rel=1e-5)  # d/dz_y = p_y - q_y with q_y = 0
    q = p.clone()
    q[2] = 0
    q /= q.sum()  # the target: the model's distribution renormalised without the true token
    torch.testing.assert_close(g, p - q)
    assert (g[torch.arange(6) != 2] <= 0).all()  # every other logit is pulled up (or left alone)


def test_logit_margin_loss_by_hand():
    logits, labels = _one_token([1.0, 2.0, 3.0], 0)
    assert logit_margin_loss(logits, labels).item() == pytest.approx(1.0)  # (3 - 2)^2
    both = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]]])
    assert logit_margin_loss(both, torch.tensor([[-100, 0, 1]])).item() == pytest.approx(0.5)  # (1 + 0) / 2
    # the prompt position's logits (here huge) carry no loss
    assert logit_margin_loss(torch.tensor([[[9.0, 0.0], [1.0, 3.0], [0.0, 0.0]]]),
                             torch.tensor([[-100, -100, 1]])).item() == pytest.approx(1.0)


# ---- the methods' losses on a bigram toy model --------------------------------------------------

def test_idknll_and_dpo_method_losses_by_hand():
    model = Bigram(torch.zeros(4, 4))  # every next-token distribution uniform over 4
    forget, refusal = _seq([0, 1, 2]), _seq([0, 3])
    idk = build("idknll", {"refusals": REFUSALS, "alpha": 0.0})
    out = idk.loss(model, Batch(forget=forget, alternate=refusal), Aux())
    assert out.loss.item() == pytest.approx(math.log(4))  # one refusal token at p = 1/4
    dpo = build("idkdpo", {"refusals": REFUSALS, "alpha": 0.0, "beta": 0.5})
    lp_r, lp_c = 2 * math.log(0.25), math.log(0.25)
    aux = Aux(ref_forget_logprob=torch.tensor([lp_r]), ref_alternate_logprob=torch.tensor([lp_c]))
    assert dpo.loss(model, Batch(forget=forget, alternate=refusal), aux).loss.item() == pytest.approx(4 * LN2)
    aux = Aux(ref_forget_logprob=torch.tensor([lp_r + 1]), ref_alternate_logprob=torch.tensor([lp_c - 1]))
    expect = 4 * math.log1p(math.exp(-1))  # margin (+1) - (-1) = 2
    assert dpo.loss(model, Batch(forget=forget, alternate=refusal), aux).loss.item() == pytest.approx(expect)


def test_idkdpo_with_identical_chosen_and_rejected_has_zero_gradient():
    torch.manual_seed(2)
    model = Bigram(torch.randn(5, 5))
    dpo = build("dpo", {"refusals": REFUSALS, "alpha": 0.0})
    seq = _seq([0, 4, 2, 1])
    ref = torch.tensor([-3.0])
    dpo.loss(model, Batch(forget=seq, alternate=seq), Aux(ref_forget_logprob=ref, ref_alternate_logprob=ref)).loss.backward()
    assert model.table.grad.abs().max().item() < 1e-7
    model.table.grad = None
    other = _seq([0, 3, 3, 1])
    dpo.loss(model, Batch(forget=seq, alternate=other), Aux(ref_forget_logprob=ref, ref_alternate_logprob=ref)).loss.backward()
    assert model.table.grad.abs().max().item() > 1e-3  # the test can fail


def test_pdu_loss_by_hand_and_epsilon_required():
    with pytest.raises(ConfigError, match="pdu.epsilon.*required"):
        build("pdu")
    with pytest.raises(ConfigError, match="refusals.*required.*idontknow"):
        build("idkdpo")
    row = torch.tensor([1.0, 2.0, 3.0, 6.0])
    model = Bigram(torch.stack([row, torch.zeros(4), torch.zeros(4), torch.zeros(4)]))
    pdu = build("pdu", {"epsilon": 0.5, "alpha": 2.0, "gamma": 1.0})
    out = pdu.loss(model, Batch(forget=_seq([0, 1]), retain=_seq([0, 3])), Aux())
    retain_nll = torch.logsumexp(row, 0).item() - 6.0
    assert out.metrics["logit_margin"] == pytest.approx(9.0)  # (6 - 3)^2
    assert out.loss.item() == pytest.approx(9.0 + 2.0 * (retain_nll - 0.5))


def test_pdu_dual_grows_above_epsilon_shrinks_below_with_warmup_and_interval():
    pdu = build("pdu", {"epsilon": 1.0, "alpha": 1.0, "dual_step_size": 0.5, "dual_warmup_steps": 1})
    pdu.on_step_end(1, {"retain_nll": 9.0})  # warm-up: no update
    assert pdu.dual == 1.0
    pdu.on_step_end(2, {"retain_nll": 3.0})
    assert pdu.dual == pytest.approx(2.0)  # 1 + 0.5 * (3 - 1)
    pdu.on_step_end(3, {"retain_nll": 0.0})
    assert pdu.dual == pytest.approx(1.5)  # shrinks while the bound holds
    pdu.on_step_end(4, {"retain_nll": -9.0})
    assert pdu.dual == 0.0  # never below 0
    every = build("pdu", {"epsilon": 1.0, "alpha": 1.0, "dual_every": 2})
    every.on_step_end(1, {"retain_nll": 2.0})
    assert every.dual == 1.0 and every.state_dict() == {"dual": 1.0, "pending": [2.0]}
    every.on_step_end(2, {"retain_nll": 4.0})
    assert every.dual == pytest.approx(3.0)  # 1 + mean(2, 4) - 1
    fresh = build("pdu", {"epsilon": 1.0})
    fresh.load_state_dict(every.state_dict())
    assert fresh.dual == every.dual


def test_pdu_dual_moves_with_the_retain_loss_in_training():
    duals = {}
    for eps in (0.0, 100.0):  # the tiny model's retain NLL is ~4.8: above 0, below 100
        model, tok = tiny_model_and_tokenizer()
        res = obliviate.unlearn(model, tok, FORGET, RETAIN, method="pdu", epsilon=eps, alpha=1.0, dual_step_size=0.01,
                                save=False, **CFG)
        duals[eps] = [r["dual"] for r in res.log]
    assert duals[0.0][0] == 1.0 and all(b > a for a, b in zip(duals[0.0], duals[0.0][1:]))
    assert all(b < a for a, b in zip(duals[100.0], duals[100.0][1:]))


# ---- refusals and the engine's alternate batch ---------------------------------------------------

def test_refusal_file_parsing_and_per_index_choice(tmp_path):
    refusals = load_refusals(REFUSALS)
    assert refusals == ("I don't know the answer to that.", "I have no information about that.",
                        "That is not something I can answer.")
    picks = [pick_refusal(refusals, 0, i) for i in range(30)]
    assert picks == [pick_refusal(refusals, 0, i) for i in range(30)]  # a function of (seed, index)
    assert len(set(picks)) == 3 and picks != [pick_refusal(refusals, 1, i) for i in range(30)]
    with pytest.raises(ConfigError, match="does not exist"):
        load_refusals(str(tmp_path / "missing.jsonl"))


def test_alternate_shares_the_prompt_and_encodes_like_encode_qa(tiny):
    _, tok = tiny
    cfg = EncodeConfig(template="plain", max_length=96)
    forget = encode_records(tok, FORGET, cfg)
    alt = with_alternates(tok, forget, lambda i: f"No idea {i}.", cfg)
    for i, (rec, ex) in enumerate(zip(FORGET, alt)):
        assert ex["alternate"]["index"] == ex["index"] == i and "alternate" not in forget[i]
        assert {k: ex["alternate"][k] for k in ("input_ids", "labels")} == encode_qa(tok, rec["question"], f"No idea {i}.", cfg)


def test_engine_provides_the_alternate_batch_only_when_declared(tiny):
    model, tok = tiny
    f, r = encode_records(tok, FORGET), encode_records(tok, RETAIN)
    seen = {}

    class Spy:
        def __init__(self, inner):
            self.inner, self.needs, self.name = inner, inner.needs, inner.name
            if hasattr(inner, "alternate_answer"):
                self.alternate_answer = inner.alternate_answer

        def loss(self, m, batch, aux):
            seen.update(alternate=batch.alternate, forget=batch.forget, ref_alt=aux.ref_alternate_logprob)
            return self.inner.loss(m, batch, aux)

    train(model, tok, Spy(build("ga")), f, None, TrainConfig(max_steps=1, progress=False))
    assert seen["alternate"] is None and seen["ref_alt"] is None
    train(model, tok, Spy(build("idknll", {"refusals": REFUSALS})), f, r, TrainConfig(max_steps=1, progress=False))
    a, fb = seen["alternate"], seen["forget"]
    assert torch.equal(a["index"], fb["index"]) and seen["ref_alt"] is None
    for row in range(len(fb["index"])):  # same prompt tokens, row by row
        n = int((fb["labels"][row] == -100).long().cumprod(0).sum())
        assert torch.equal(a["input_ids"][row, :n], fb["input_ids"][row, :n])
    train(model, tok, Spy(build("dpo", {"refusals": REFUSALS})), f, r, TrainConfig(max_steps=1, batch_size=2, progress=False))
    assert seen["ref_alt"] is not None and seen["ref_alt"].shape == (2,)


# ---- training on the tiny model ---------------------------------------------------------------

@pytest.mark.parametrize("method", NEW)
def test_new_method_trains(tiny, method):
    model, tok = tiny
    before = copy.deepcopy(model.state_dict())
    result = obliviate.unlearn(model, tok, FORGET, RETAIN, method=method, save=False, **REQUIRED.get(method, {}), **CFG)
    assert len(result.log) == 3 and all(math.isfinite(r["loss"]) for r in result.log)
    changed = {n for n, p in model.state_dict().items() if not torch.equal(p, before[n])}
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["dpo", "pdu"])
def test_reference_is_left_unchanged(tiny, method):
    model, tok = tiny
    ref = copy.deepcopy(model)
    ref_state = copy.deepcopy(ref.state_dict())
    obliviate.unlearn(model, tok, FORGET, RETAIN, method=method, retain_loss="kl", reference_model=ref, save=False,
                      **REQUIRED[method], **CFG)
    assert all(torch.equal(v, ref_state[k]) for k, v in ref.state_dict().items())
    assert any(not torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["idknll", "ceu", "pdu"])
def test_gradient_accumulation_takes_the_full_batch_step(method):
    """batch 2 x 2 accumulation steps == batch 4 x 1 (token means over the step, the alternate part
    included; PDU's dual from the step's averaged retain loss)."""
    start = tiny_model_and_tokenizer()[0].state_dict()
    runs = []
    for batch, accum in ((4, 1), (2, 2)):
        model, tok = tiny_model_and_tokenizer()
        res = obliviate.unlearn(model, tok, FORGET, RETAIN, method=method, save=False, max_grad_norm=None,
                                **REQUIRED.get(method, {}), **{**CFG, "max_steps": 2, "batch_size": batch,
                                                               "grad_accum": accum})
        runs.append((torch.cat([(model.state_dict()[k] - start[k]).flatten() for k in start]), res.log))
    (d1, log1), (d2, log2) = runs
    assert d1.norm() > 0 and ((d1 - d2).norm() / d1.norm()).item() < 1e-4
    if method == "pdu":
        assert [r["dual"] for r in log1] == pytest.approx([r["dual"] for r in log2], rel=1e-6)


@pytest.mark.parametrize("method", ["dpo", "pdu"])
def test_lora_trains_adapters_only(tiny, method):
    model, tok = tiny
    base = {n: p.clone() for n, p in model.state_dict().items()}
    res = obliviate.unlearn(model, tok, FORGET, RETAIN, method=method, save=False, lora={"r": 4, "alpha": 8},
                            **REQUIRED[method], **{**CFG, "lr": 1e-2})
    assert all(math.isfinite(r["loss"]) for r in res.log)
    base_now = res.model.get_base_model().state_dict()
    for n, t in base.items():
        key = n if n in base_now else n.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_now[key], t), n
    assert any(p.abs().sum() > 0 for n, p in res.model.named_parameters() if "lora_B" in n)


def test_pdu_resume_restores_the_dual_variable(tmp_path):
    opts = dict(max_steps=4, lr=1e-3, batch_size=2, checkpoint_every=1, progress=False, template="plain", seed=3,
                epsilon=4.0, dual_step_size=0.5)

    class Crash(Exception):
        pass

    def crash(done, record):
        if done == 3:  # step-2 is on disk (a checkpoint is written during the next step, once verified)
            raise Crash

    m1, tok = tiny_model_and_tokenizer()
    full = obliviate.unlearn(m1, tok, FORGET, RETAIN, method="pdu", run_dir=tmp_path / "a", **opts)
    m2, tok = tiny_model_and_tokenizer()
    with pytest.raises(Crash):
        obliviate.unlearn(m2, tok, FORGET, RETAIN, method="pdu", run_dir=tmp_path / "b", callbacks=[crash], **opts)
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-2" / "state.json").read_text())
    assert state["method_state"]["dual"] == full.log[2]["dual"]  # the dual after step 2, used in step 3
    m3, tok = tiny_model_and_tokenizer()
    res = obliviate.unlearn(m3, tok, FORGET, RETAIN, method="pdu", run_dir=tmp_path / "b", resume=True, **opts)
    steps = [r["step"] for r in res.log]
    assert steps and steps[0] > 1 and [r["dual"] for r in res.log] == [r["dual"] for r in full.log if r["step"] in steps]
    assert len({r["dual"] for r in full.log}) > 2  # the dual moved during the run
    for (n, a), (_, b) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.equal(a, b), n


def test_spunge_wraps_a_refusal_method(tmp_path):
    from obliviate.models import save_model
    from obliviate.spunge import parse_spunge_config, run_spunge

    model, tok = tiny_model_and_tokenizer()
    save_model(model, tok, tmp_path / "tiny")
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FORGET))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RETAIN))
    raw = {"model": str(tmp_path / "tiny"), "forget": {"path": str(tmp_path / "forget.jsonl")},
           "retain": {"path": str(tmp_path / "retain.jsonl")}, "method": {"name": "idknll", "refusals": REFUSALS},
           "train": {"max_steps": 2, "lr": 1e-3, "batch_size": 2, "progress": False}, "run_base": False,
           "split": {"by": "person"}, "merge": {"method": "ties", "density": 0.5}, "output_dir": str(tmp_path / "run")}
    report = run_spunge(parse_spunge_config(raw))
    res = report["results"]
    assert res["spunge"]["forget"]["all"] != res["original"]["forget"]["all"]


# ---- gradient-norm MIA -------------------------------------------------------------------------

def test_grad_norm_matches_a_plain_backward_and_restores_the_model(tiny):
    model, tok = tiny
    ex = encode_records(tok, FORGET[:1])[0]
    b = obliviate.data.collate([ex], tok.pad_token_id)
    model.eval()
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    from obliviate.methods.losses import nll

    grads = torch.autograd.grad(nll(logits, b["labels"]), list(model.parameters()))
    expect = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).item()
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    marker = torch.ones_like(list(model.parameters())[1])
    list(model.parameters())[1].grad = marker
    assert mia.grad_norm_scores(model, [ex], tok.pad_token_id) == pytest.approx([-expect], rel=1e-6)
    assert model.training and not frozen.requires_grad and list(model.parameters())[1].grad is marker


def test_grad_norm_attack_ranks_the_trained_examples_as_members(tiny):
    model, tok = tiny
    members, others = FACTS[:2], FACTS[4:6]
    obliviate.finetune(model, tok, members, max_steps=25, lr=5e-3, batch_size=2, save=False, progress=False,
                       template="plain", max_grad_norm=1.0)  # member scores about -1.2, others -1.4 to -2.2 (3 seeds)
    enc = lambda recs: encode_records(tok, recs, EncodeConfig(template="plain"))  # noqa: E731
    m, o = mia.grad_norm_scores(model, enc(members), 0), mia.grad_norm_scores(model, enc(others), 0)
    assert min(m) > max(o), (m, o)  # smaller gradients on the trained examples
    assert mia.auc(m, o) == 1.0
