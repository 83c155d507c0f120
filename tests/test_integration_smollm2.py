"""Integration on the real SmolLM2-135M (loaded via its alias): plant facts, unlearn half of
them with NPO, and check the forgotten half's answer probability falls while the kept half's
stays high; the saved run loads back with plain transformers."""

import time

import pytest
import torch

import obliviate
from obliviate.eval import answer_prob

pytestmark = pytest.mark.slow


def test_alias_loads_fast_and_matches_gguf_shape(smollm2_path):
    t = time.time()
    model, tok = obliviate.load_model("smollm2-135m")
    assert time.time() - t < 10  # < 2 s on an idle machine; generous for a loaded CI box
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert tok.chat_template and tok.pad_token is not None


def test_npo_forgets_half_keeps_half(planted, tmp_path):
    path, facts = planted
    forget = [f for f in facts if f["person"] in {r["person"] for r in facts[:9]}]
    kept = [f for f in facts if f not in forget]
    model, tok = obliviate.load_model(path)
    p_f0, p_k0 = answer_prob(model, tok, forget).mean().item(), answer_prob(model, tok, kept).mean().item()
    assert p_f0 > 0.9 and p_k0 > 0.9, "the planted model should know the facts"
    res = obliviate.unlearn(model, tok, forget, kept, method="npo", lr=3e-5, max_steps=8, batch_size=3,
                            warmup_steps=0, scheduler="constant", run_dir=tmp_path / "run", progress=False)
    p_f1, p_k1 = answer_prob(model, tok, forget).mean().item(), answer_prob(model, tok, kept).mean().item()
    print(f"forget {p_f0:.3f} -> {p_f1:.3f}; kept {p_k0:.3f} -> {p_k1:.3f}")
    assert p_f1 < 0.5 * p_f0, (p_f0, p_f1)
    assert p_k1 > 0.8, (p_k0, p_k1)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.log)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-4)
