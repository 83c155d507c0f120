"""LoRA for every method: base weights bit-identical, only adapters change; merged == adapter
logits; the disabled-adapter reference equals a separate frozen copy; NPO's cached reference
log-probs come from the base model; adapter-only and merged model/ dirs load back."""

import copy
import math
from pathlib import Path

import pytest
import torch

import obliviate
from obliviate.data import EncodeConfig, encode_records
from obliviate.data.encode import collate
from obliviate.engine.lora import LoraSettings, adapter_parameters, apply_lora
from obliviate.errors import ConfigError
from obliviate.methods import build, names
from obliviate.methods.base import Reference
from obliviate.methods.losses import sequence_logprob

FACTS = obliviate.make_facts(4, 2, seed=0)
FORGET, RETAIN = FACTS[:4], FACTS[4:]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
CFG = dict(max_steps=3, lr=1e-2, batch_size=2, progress=False, template="plain", max_length=96, lora=LORA)
# Representation methods steer a decoder block; the tiny model has 4 (0..3); adapt their trained module.
TINY = {"rmu": {"layer": 2, "lora": {**LORA, "target_modules": ["down_proj"]}},
        "falcon": {"layer": 2, "lora": {**LORA, "target_modules": ["down_proj"]}},
        # options without a default: a refusal file, PDU's retain-loss bound
        "dpo": {"refusals": str(Path(__file__).with_name("refusals.txt"))},
        "idknll": {"refusals": str(Path(__file__).with_name("refusals.txt"))},
        "pdu": {"epsilon": 1.0}}


def _batch(tok, recs=FORGET):
    return collate(encode_records(tok, recs, EncodeConfig(template="plain")), tok.pad_token_id)


def _logits(model, b):
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


@pytest.mark.parametrize("method", [m for m in names() if m != "tvn"])
def test_every_method_trains_adapters_only(tiny, method):
    model, tok = tiny
    base = {n: p.clone() for n, p in model.state_dict().items()}
    result = obliviate.unlearn(model, tok, FORGET, RETAIN, method=method, save=False, **{**CFG, **TINY.get(method, {})})
    peft_model = result.model
    assert all(math.isfinite(r["loss"]) for r in result.log)
    base_now = peft_model.get_base_model().state_dict()
    for n, t in base.items():  # the base layers keep their names under peft's `base_layer`
        key = n if n in base_now else n.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_now[key], t), f"base weight {n} changed"
    adapters = adapter_parameters(peft_model)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert adapters and trainable == set(adapters)
    assert any(p.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n), "the adapters must have trained"


def test_merged_equals_adapter_logits_and_saved_dirs_load(tiny, tmp_path):
    model, tok = tiny
    obliviate.save_model(model, tok, tmp_path / "base")
    model, tok = obliviate.load_model(tmp_path / "base")  # a base with a path, as adapter configs record
    b = _batch(tok)
    result = obliviate.unlearn(model, tok, FORGET, method="ga", run_dir=tmp_path / "adapter", merge_adapter=False, **CFG)
    trained = result.model.eval()
    adapter_logits = _logits(trained, b)
    merged = copy.deepcopy(trained).merge_and_unload()
    assert torch.allclose(_logits(merged, b), adapter_logits, atol=1e-5)
    assert (tmp_path / "adapter" / "model" / "adapter_config.json").is_file()
    reloaded, _ = obliviate.load_model(tmp_path / "adapter" / "model")
    assert torch.allclose(_logits(reloaded.eval(), b), adapter_logits, atol=1e-5)
    obliviate.save_model(trained, tok, tmp_path / "merged")  # merge_adapter=True (default)
    plain, _ = obliviate.load_model(tmp_path / "merged")
    assert not hasattr(plain, "peft_config")
    assert torch.allclose(_logits(plain.eval(), b), adapter_logits, atol=1e-5)
    base_logits = _logits(obliviate.load_model(tmp_path / "base")[0].eval(), b)
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-4), "the adapter changed the function"


def test_disabled_adapter_reference_equals_frozen_copy(tiny):
    model, tok = tiny
    frozen = copy.deepcopy(model).eval()
    b = _batch(tok)
    result = obliviate.unlearn(model, tok, FORGET, method="ga", save=False, **CFG)
    trained = result.model.eval()
    assert not torch.allclose(_logits(trained, b), _logits(frozen, b), atol=1e-4), "training changed the function"
    ref = Reference(trained, disable_adapters=True)
    assert torch.equal(ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, _logits(frozen, b))


def test_npo_reference_logprobs_come_from_the_base_model(tiny):
    model, tok = tiny
    frozen = copy.deepcopy(model).eval()
    method = build("npo", {"alpha": 0.0})
    seen = []

    class Spy:
        name, needs = "npo", method.needs

        def loss(self, m, batch, aux):
            seen.append((batch.forget["index"].clone(), aux.ref_forget_logprob.clone()))
            return method.loss(m, batch, aux)

    from obliviate.engine import TrainConfig, train

    enc = encode_records(tok, FORGET, EncodeConfig(template="plain"))
    train(model, tok, Spy(), enc, config=TrainConfig(max_steps=3, lr=1e-2, batch_size=2, progress=False,
                                                     lora=LoraSettings(**LORA)))
    want = sequence_logprob(_logits(frozen, collate(enc, tok.pad_token_id)), collate(enc, tok.pad_token_id)["labels"])
    for index, lp in seen:
        assert torch.allclose(lp, want[index], atol=1e-4)


def test_lora_settings_validation_and_bad_targets(tiny):
    model, _ = tiny
    with pytest.raises(ConfigError, match="train.lora.r"):
        LoraSettings(r=0)
    with pytest.raises(ConfigError, match="train.lora.target_modules.*q_proj"):
        apply_lora(model, LoraSettings(target_modules=("nonexistent_proj",)))
