"""The Evaluator's fast paths (issue 19: prefix trees, head on scored positions only, continuous
batching) against direct per-sequence model calls on a tiny random Llama, for both attention rules."""

import math

import pytest
import torch

from obliviate.eval.attention import attention_inputs
from obliviate.eval.prefix import build_tree, tree_mask
from obliviate.eval import runner
from obliviate.eval.runner import Evaluator, node_stats

RULES = ("tokens", "not_pad")


def _rule_inputs(ids, pad, rule, generating=False):
    t = torch.tensor([ids])
    return attention_inputs(t, torch.ones_like(t), pad, rule, generating)


@torch.no_grad()
def direct_stats(model, ex, pad, rule):
    """Stats of one unpadded sequence from one plain forward (the definition the runner must meet)."""
    ids = ex["input_ids"]
    mask, pos = _rule_inputs(ids, pad, rule)
    lsm = model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=pos).logits[0].float().log_softmax(-1)
    ts = [t for t in range(1, len(ids)) if ex["labels"][t] != -100]
    rows, tgt = lsm[[t - 1 for t in ts]], torch.tensor([ids[t] for t in ts])
    p = rows.exp()
    mu = (p * rows).sum(-1)
    return {"logprobs": rows.gather(-1, tgt[:, None])[:, 0], "match": rows.argmax(-1) == tgt, "mu": mu,
            "sigma": (p * (rows - mu[:, None]) ** 2).sum(-1).sqrt()}


@torch.no_grad()
def direct_greedy(model, prompt, budget, pad, rule, stop):
    """Greedy decoding without a cache: the whole sequence re-run every step."""
    mask, pos = _rule_inputs(prompt, pad, rule, generating=True)
    seq, out = torch.tensor([prompt]), []
    while len(out) < budget:
        t = int(model(input_ids=seq, attention_mask=mask, position_ids=pos).logits[0, -1].argmax())
        if t in stop:
            break
        out.append(t)
        seq = torch.cat([seq, torch.tensor([[t]])], 1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    return out


def _examples(tok):
    """Prompts shared by several answers (some answers sharing their first words), other prompts in the
    same batch, eos inside prompts (hidden by ``not_pad`` when pad == eos) and two plain texts."""
    e = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    out = []
    for q, answers in (("Who is A?", ["a poet", "a poet from Rome", "a painter", "nobody"]),
                       ("Where?", ["Rome", "Paris"]), ("Why not?", ["because"])):
        p = ids("<s>") + ids("sys") + [e] + ids(q)
        out += [{"input_ids": p + ids(a) + [e], "labels": [-100] * len(p) + ids(a) + [e]} for a in answers]
    for text in ("the quick brown fox", "the quick red fox jumps"):
        t = ids(text)
        out.append({"input_ids": t, "labels": [-100] + t[1:]})
    return out


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_scores_equal_direct_forwards(tiny, rule, batch_size):
    model, tok = tiny
    model.eval()
    tok.pad_token = tok.eos_token  # pad == eos, as SmolLM2: not_pad hides the inner eos tokens
    exs = _examples(tok)
    ev = Evaluator(model, tok, batch_size=batch_size, attention_rule=rule)
    got = ev.score(exs)
    for ex, st in zip(exs, got):
        want = direct_stats(model, ex, tok.pad_token_id, rule)
        for key in ("logprobs", "mu", "sigma"):
            torch.testing.assert_close(st[key], want[key], atol=1e-5, rtol=1e-5)
        assert torch.equal(st["match"], want["match"])
    # the four answers of "Who is A?" share the prompt and "a p": far fewer nodes than tokens
    assert ev.timings["score_nodes"] < sum(len(ex["input_ids"]) for ex in exs)
    ev.score(exs[::-1])
    assert ev.timings["score_items"] == len(exs)  # memoised


def test_rules_differ_so_the_test_above_can_fail(tiny):
    model, tok = tiny
    tok.pad_token = tok.eos_token
    exs = _examples(tok)[:1]
    a, b = (Evaluator(model, tok, attention_rule=r).score(exs)[0]["logprobs"] for r in RULES)
    assert not torch.allclose(a, b)


def test_tree_packing_by_hand():
    seqs = [[5, 6, 7], [5, 6, 8, 9], [5, 4]]
    tree = build_tree([(s, [1] * len(s), list(range(len(s)))) for s in seqs])
    assert tree.ids == [5, 6, 7, 8, 9, 4] and tree.parent == [-1, 0, 1, 1, 3, 0]
    assert tree.paths == [[0, 1, 2], [0, 1, 3, 4], [0, 5]]
    assert tree.pos == [0, 1, 2, 2, 3, 1]
    allow = tree_mask([tree], 7, torch.float32)[0, 0] == 0
    want = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0],
                         [1, 1, 0, 1, 1, 0, 0], [1, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(allow, want)
    # a hidden key (mask 0) is seen by no one, itself included; a different mask is a different node
    hidden = build_tree([([5, 6], [1, 0], [0, 1]), ([5, 6], [1, 1], [0, 1])])
    assert len(hidden) == 3
    assert (tree_mask([hidden], 3, torch.float32)[0, 0] == 0).tolist() == [[True, False, False], [True, False, False],
                                                                           [True, False, True]]


def test_node_stats_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    lse, top, mu, sigma = node_stats(logits)
    mu0 = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    sd0 = math.sqrt(0.25 * (math.log(0.25) - mu0) ** 2 + 0.75 * (math.log(0.75) - mu0) ** 2)
    assert lse.tolist() == pytest.approx([math.log(4.0), 2.0 + math.log(2.0)], abs=1e-6)
    assert top.tolist()[0] == 1
    assert mu.tolist() == pytest.approx([mu0, math.log(0.5)], abs=1e-6)
    assert sigma.tolist() == pytest.approx([sd0, 0.0], abs=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_greedy_equals_direct_decoding_with_stops_and_budgets(tiny, rule, monkeypatch):
    model, tok = tiny
    model.eval()
    tok.pad_token = tok.eos_token
    e = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [ids(q) + [e] + ids(">") for q in ("What is x?", "Q?", "Who wrote the thing that", "Why", "a", "bb bb")]
    # a second stop token that some continuations reach early and others never: mixed lengths
    free = [direct_greedy(model, p, 12, e, rule, {e}) for p in prompts]
    stop_tok = free[0][3]
    model.generation_config.eos_token_id = [e, stop_tok]
    budgets = [12, 3, 9, 12, 1, 7]
    want = [direct_greedy(model, p, b, e, rule, {e, stop_tok}) for p, b in zip(prompts, budgets)]
    assert len({len(w) for w in want}) > 2 and any(len(w) < b for w, b in zip(want, budgets))
    monkeypatch.setattr(runner, "DECODE_SLOTS", 1)
    for batch_size in (1, 2, 16):  # 1, 2: rows leave and new prompts are merged into the running cache
        ev = Evaluator(model, tok, batch_size=batch_size, attention_rule=rule)
        assert ev.generate(prompts, budgets) == want
    # memoised per prompt: a shorter budget reuses the longer continuation, no new decoding
    n = ev.timings["generate_items"]
    assert ev.generate(prompts[:1], 2) == [want[0][:2]] and ev.timings["generate_items"] == n


def test_next_token_logprobs_equal_direct(tiny):
    model, tok = tiny
    model.eval()
    ctx = [tok(s, add_special_tokens=False)["input_ids"] for s in ("abc", "hello there", "x")]
    got = Evaluator(model, tok, batch_size=2).next_token_logprobs(ctx, [5, 7, 9])
    for c, row in zip(ctx, got):
        with torch.no_grad():
            lsm = model(input_ids=torch.tensor([c])).logits[0, -1].float().log_softmax(-1)
        torch.testing.assert_close(row.float(), lsm[[5, 7, 9]], atol=1e-5, rtol=1e-5)


def test_sequence_without_scored_tokens_gives_empty_stats(tiny):
    model, tok = tiny
    st = Evaluator(model, tok).score([{"input_ids": [5, 6, 7], "labels": [-100] * 3}])[0]
    assert all(v.numel() == 0 for v in st.values()) and st["match"].dtype == torch.bool


def test_cache_append_in_place_equals_concatenation():
    """``decode._append`` (the RoomyLayer's step) must equal ``torch.cat`` and reuse its buffer while it has room."""
    from obliviate.eval import decode as dec

    torch.manual_seed(0)
    k0 = torch.randn(2, 3, 5, 4)
    a = dec._append(k0, torch.randn(2, 3, 1, 4))  # a tensor set from outside: copied into a new buffer
    assert a._base is not None and a._base.size(2) == 6 + dec.ROOM and a.data_ptr() != k0.data_ptr()
    want = torch.cat([k0, a[:, :, 5:]], 2)
    new = torch.randn(2, 3, 2, 4)
    b = dec._append(a, new)
    assert b.data_ptr() == a.data_ptr()  # written in place
    torch.testing.assert_close(b, torch.cat([want, new], 2), rtol=0, atol=0)
    c = dec._append(b[[1, 0]], new)  # reordered rows (a cache after dropping rows): not the buffer's front
    assert c.data_ptr() != b.data_ptr()
    torch.testing.assert_close(c, torch.cat([b[[1, 0]], new], 2), rtol=0, atol=0)
    full = b._base[:, :, :b._base.size(2) - 1]  # one free slot left: two new ones need a new buffer
    d = dec._append(full, new)
    assert d.data_ptr() != full.data_ptr() and d.size(2) == full.size(2) + 2
    # the buffer's spare slots were never written (``new_empty``): compare bits, garbage NaNs included
    assert torch.equal(d[:, :, :full.size(2)].contiguous().view(torch.int32), full.contiguous().view(torch.int32))


@pytest.mark.parametrize("room,drop_at", [(1, 0.25), (3, 0.9), (64, 0.01)])
def test_greedy_with_in_place_cache_and_lazy_row_dropping(tiny, monkeypatch, room, drop_at):
    """Tiny buffers (a new one every step or every few), finished rows dropped early or late and prompts
    admitted into a running batch: the same continuations as uncached decoding."""
    from obliviate.eval import decode as dec

    model, tok = tiny
    model.eval()
    tok.pad_token = tok.eos_token
    e = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [ids(q) + [e] + ids(">") for q in ("What is x?", "Q?", "Who wrote it", "Why", "a", "bb bb", "c c", "dd")]
    budgets = [10, 2, 7, 10, 1, 5, 9, 3]
    want = [direct_greedy(model, p, b, e, "tokens", {e}) for p, b in zip(prompts, budgets)]
    monkeypatch.setattr(dec, "ROOM", room)
    monkeypatch.setattr(dec, "DROP_AT", drop_at)
    monkeypatch.setattr(runner, "DECODE_SLOTS", 1)
    kinds = set()
    step = Evaluator.step

    def spy(self, tokens, cache, mask, last):
        kinds.add(type(cache.layers[0]).__name__)
        return step(self, tokens, cache, mask, last)

    monkeypatch.setattr(Evaluator, "step", spy)
    seen = []
    for batch_size in (3, 16):  # 3 rows: prompts wait and join the running batch; 16: all start together
        ev = Evaluator(model, tok, batch_size=batch_size)
        seen.append(ev.generate(prompts, budgets))
    assert seen == [want, want]
    assert kinds == {"RoomyLayer"}  # every step appended in place


@pytest.mark.parametrize("rule", RULES)
def test_a_prefix_every_sequence_shares_runs_once_with_the_same_results(tiny, rule, monkeypatch):
    """A chat turn every prompt starts with (an eos inside it, hidden by ``not_pad``) is run once as a
    cached prefix, for scoring and for generation, and changes no score or generated token."""
    model, tok = tiny
    model.eval()
    tok.pad_token = tok.eos_token
    e = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    head = ids("<s>") + ids("system: be brief") + [e] + ids("user: ")
    prompts = [head + ids(q) for q in ("Who is A?", "Tell me where.", "Or why not?", "And when did B write C?")]
    exs = [{"input_ids": p + ids(a) + [e], "labels": [-100] * len(p) + ids(a) + [e]}
           for p in prompts for a in ("a poet", "a poet from Rome", "nobody")]
    widths = []
    body = Evaluator._body
    monkeypatch.setattr(Evaluator, "_body", lambda self, ids, *a, **k: widths.append(ids.size(1)) or body(self, ids, *a, **k))
    ev = Evaluator(model, tok, batch_size=16, attention_rule=rule)
    for ex, st in zip(exs, ev.score(exs)):
        want = direct_stats(model, ex, e, rule)
        for key in ("logprobs", "mu", "sigma"):
            torch.testing.assert_close(st[key], want[key], atol=1e-5, rtol=1e-5)
        assert torch.equal(st["match"], want["match"])
    assert widths[0] == len(head) and ev._prefix_kv  # the shared turn ran alone, once
    assert max(widths[1:]) < max(len(ex["input_ids"]) for ex in exs)  # ... and not again in the trees
    widths.clear()
    want = [direct_greedy(model, p, 8, e, rule, {e}) for p in prompts]
    monkeypatch.setattr(runner, "DECODE_SLOTS", 1)
    assert Evaluator(model, tok, batch_size=2, attention_rule=rule).generate(prompts, 8) == want
    assert widths[0] == len(head)  # generation's prompt forward starts after the shared turn too
    assert widths[1] == max(map(len, sorted(prompts, key=len)[:2])) - len(head)  # the two shortest come first
    # the prompt forward's logits and last positions, against one plain forward per prompt
    logits, _, _, last = Evaluator(model, tok, attention_rule=rule).prefill(prompts)
    for p, lg, lp in zip(prompts, logits, last.tolist()):
        mask, pos = _rule_inputs(p, e, rule, generating=True)
        with torch.no_grad():
            want = model(input_ids=torch.tensor([p]), attention_mask=mask, position_ids=pos).logits[0, -1]
        torch.testing.assert_close(lg, want, atol=1e-5, rtol=1e-5)
        assert lp == int(pos[0, -1])
