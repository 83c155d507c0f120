"""Saved model directories are exactly what ``save_pretrained`` writes (issue 18): canonical tensor
names (a tied embedding as ``model.embed_tokens.weight``), ``architectures``, ``tie_word_embeddings``
and ``generation_config.json``, for converted (GGUF), trained, LoRA-merged and merged models, and
old converted caches are detected and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from obliviate.errors import ModelError
from obliviate.models import CACHE_FORMAT, CACHE_MARKER, _cache_format, resolve_alias, save_model
from obliviate.testing import tiny_tokenizer


def tied_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True,
                      pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def keys(path: Path) -> list[str]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return sorted(f.keys())


def reference(model, tmp_path: Path) -> Path:
    ref = tmp_path / "reference"
    model.save_pretrained(ref, safe_serialization=True)
    return ref


def same_files(a: Path, b: Path) -> None:
    """Same tensor names, config and generation config (the paths in them aside)."""
    assert keys(a) == keys(b)
    ca, cb = json.loads((a / "config.json").read_text()), json.loads((b / "config.json").read_text())
    assert ca == cb
    assert ca["architectures"] == ["LlamaForCausalLM"]
    ga, gb = json.loads((a / "generation_config.json").read_text()), json.loads((b / "generation_config.json").read_text())
    assert ga == gb


def test_gguf_loaded_model_saves_like_save_pretrained(tmp_path):
    """A model carrying transformers' GGUF quantizer (which makes save_pretrained refuse) is saved
    with the same files as save_pretrained of the same model without it; the model is left as it was."""
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    model = tied_llama()
    ref = reference(model, tmp_path)
    quantizer = GgufHfQuantizer(GgufConfig())
    model.hf_quantizer = quantizer
    model.config.quantization_config = quantizer.quantization_config
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    out = save_model(model, tiny_tokenizer(), tmp_path / "out")
    same_files(out, ref)
    assert "model.embed_tokens.weight" in keys(out) and "lm_head.weight" not in keys(out)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert model.hf_quantizer is quantizer and model.config.quantization_config is quantizer.quantization_config


def test_lora_merged_model_has_canonical_names(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tied_llama()
    ref = reference(base, tmp_path)
    peft_model = get_peft_model(tied_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.nn.init.normal_(peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight)
    out = save_model(peft_model, tiny_tokenizer(), tmp_path / "merged")
    same_files(out, ref)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert not torch.equal(q, base.model.layers[0].self_attn.q_proj.weight.detach())  # the adapter was merged in


def test_merged_directory_loads_everywhere(tmp_path):
    """A linear merge of two saved models: AutoModelForCausalLM loads it (tied, no missing keys) and
    a plain safetensors reader finds the canonical names, with the hand-computed mean."""
    from transformers import AutoModelForCausalLM

    from obliviate.merge import MergeConfig, merge_files

    tok = tiny_tokenizer()
    base_model = tied_llama(0)
    base = save_model(base_model, tok, tmp_path / "base")
    variants = [tied_llama(1), tied_llama(2)]
    dirs = [save_model(m, tok, tmp_path / f"m{i}") for i, m in enumerate(variants)]
    merged = merge_files(base, dirs, tmp_path / "merged", MergeConfig(method="linear"))
    ref = reference(base_model, tmp_path)
    same_files(merged, ref)

    model, info = AutoModelForCausalLM.from_pretrained(merged, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    expected = (variants[0].model.embed_tokens.weight + variants[1].model.embed_tokens.weight).detach() / 2
    with safe_open(str(merged / "model.safetensors"), "pt") as f:
        embed = f.get_tensor("model.embed_tokens.weight")
    torch.testing.assert_close(embed, expected)
    torch.testing.assert_close(model.lm_head.weight.detach(), expected)


def test_old_alias_cache_is_rebuilt(tmp_path, monkeypatch):
    """A converted directory without the format marker (the first converter's output) is rebuilt
    from the GGUF file; a current one is returned as is."""
    import obliviate.models as models

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    target = tmp_path / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    assert _cache_format(target) is None
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    assert _cache_format(target) == 1

    def no_gguf(alias):
        raise ModelError("rebuild attempted")

    monkeypatch.setattr(models, "_gguf_path", no_gguf)
    with pytest.raises(ModelError, match="rebuild attempted"):
        resolve_alias("smollm2-135m")
    (target / CACHE_MARKER).write_text(json.dumps({"format": CACHE_FORMAT}))
    assert resolve_alias("smollm2-135m") == target


def test_converted_alias_is_canonical(smollm2_path):
    """The converted SmolLM2 (GGUF) holds what save_pretrained writes for LlamaForCausalLM."""
    names = keys(smollm2_path)
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert (smollm2_path / "generation_config.json").is_file()
    assert _cache_format(smollm2_path) == CACHE_FORMAT
