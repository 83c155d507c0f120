"""Evaluation uses the prompt encoding the model was trained with, or the one asked for (issue 18):
a run's data.template/system_prompt/max_length reach its evaluation, the CLI flags and Python
options reach the Evaluator, presets fill only unset options, and the open-unlearning preset's
prompt is the chat template with its system prompt, token for token."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from obliviate.data.encode import IGNORE, EncodeConfig, encode_records, prompt_ids
from obliviate.errors import ConfigError
from obliviate.eval import api as eval_api
from obliviate.eval.config import EvalConfig, run_encoding
from obliviate.eval.presets import PRESETS
from obliviate.eval.runner import Evaluator

CUSTOM = "Q> {question}\nA>"
QA = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker."} for i in range(4)]
HOLDOUT = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a pilot."} for i in range(4, 8)]
TOFU_Q = "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?"


@pytest.fixture
def spy(monkeypatch):
    """Every Evaluator that ``obliviate.evaluate`` builds."""
    made: list[Evaluator] = []

    class Spy(Evaluator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(eval_api, "Evaluator", Spy)
    return made


def mia_files(tmp_path):
    f, h = tmp_path / "forget.jsonl", tmp_path / "holdout.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in QA))
    h.write_text("".join(json.dumps(r) + "\n" for r in HOLDOUT))
    return str(f), str(h)


def trained_prompt(tok, cfg: EncodeConfig, rec) -> list[int]:
    """The prompt tokens training saw: the leading label -100 part of the training example."""
    ex = encode_records(tok, [rec], cfg)[0]
    n = next(i for i, lab in enumerate(ex["labels"]) if lab != IGNORE)
    return ex["input_ids"][:n]


def test_run_with_custom_template_is_evaluated_with_its_prompts(tiny, tmp_path, spy):
    import obliviate

    model, tok = tiny
    train_enc = EncodeConfig(template=CUSTOM, max_length=48)
    run = tmp_path / "run"
    obliviate.unlearn(model, tok, QA, method="ga", max_steps=1, batch_size=2, template=CUSTOM, max_length=48,
                      run_dir=run, progress=False)
    forget, holdout = mia_files(tmp_path)
    obliviate.evaluate(model, tok, suites=["mia"], run_dir=run, mia_forget=forget, mia_holdout=holdout)
    (ev,) = spy
    assert ev.encode_cfg == train_enc
    expected = [trained_prompt(tok, train_enc, r) for r in QA]
    assert ev.prompts(QA) == expected
    assert expected[0][:3] == tok("Q> ", add_special_tokens=True)["input_ids"][:3]  # the custom template, not the default
    assert expected != [prompt_ids(tok, r["question"], EncodeConfig()) for r in QA]
    # scored sequences are exactly the training sequences
    assert [e["input_ids"] for e in ev.encode(QA)] == [e["input_ids"] for e in encode_records(tok, QA, train_enc)]
    meta = json.loads((run / "eval" / "mia.json").read_text())["meta"]["encoding"]
    assert meta["template"] == CUSTOM and meta["max_length"] == 48 and meta["train_encoding_from"] == str(run / "config.yaml")


def test_eval_options_override_the_run_and_reach_the_evaluator(tiny, tmp_path, spy):
    import obliviate

    model, tok = tiny
    run = tmp_path / "run"
    obliviate.unlearn(model, tok, QA, method="ga", max_steps=1, batch_size=2, template=CUSTOM, run_dir=run,
                      progress=False)
    forget, holdout = mia_files(tmp_path)
    obliviate.evaluate(model, tok, suites=["mia"], run_dir=run, mia_forget=forget, mia_holdout=holdout,
                       template="plain", max_length=40, force=True)
    assert spy[0].encode_cfg == EncodeConfig(template="plain", max_length=40)


def test_cli_flags_reach_the_evaluator(tiny, tmp_path, spy):
    from obliviate.cli import main
    from obliviate.models import save_model

    model, tok = tiny
    model_dir = save_model(model, tok, tmp_path / "m")
    forget, holdout = mia_files(tmp_path)
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(model_dir), "--suite", "mia", "--mia-forget", forget, "--mia-holdout", holdout,
               "--out", str(out), "--template", CUSTOM, "--system-prompt", "Be brief.", "--max-length", "33",
               "--gen-max-new-tokens", "7"])
    assert rc == 0
    assert spy[0].encode_cfg == EncodeConfig(template=CUSTOM, system_prompt="Be brief.", max_length=33)
    meta = json.loads((out / "eval" / "mia.json").read_text())["meta"]["encoding"]
    assert (meta["template"], meta["system_prompt"], meta["max_length"], meta["gen_max_new_tokens"]) == (
        CUSTOM, "Be brief.", 33, 7)
    assert meta["train_encoding_from"] is None  # a plain model directory: no run config


def test_run_encoding_finds_the_run_config_of_a_model_dir(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "ga", "data": {"template": CUSTOM, "max_length": 99}}))
    enc, where = run_encoding(run / "model")
    assert enc == EncodeConfig(template=CUSTOM, max_length=99) and where == str(run / "config.yaml")
    assert run_encoding(tmp_path / "nowhere", None) is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("data: {path: x}\n")  # not a run config
    assert run_encoding(tmp_path / "other") is None


def chat_tokenizer():
    """The tiny character tokenizer with ChatML specials and a hand-set ChatML chat template."""
    from obliviate.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def test_open_unlearning_preset_prompt_is_the_chat_template_with_its_system_prompt(tiny):
    model, _ = tiny
    tok = chat_tokenizer()
    start, end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])

    def text(s: str) -> list[int]:
        return tok(s, add_special_tokens=False)["input_ids"]

    expected = ([start] + text("system\nYou are a helpful assistant.") + [end] + text("\n")
                + [start] + text("user\n" + TOFU_Q) + [end] + text("\n") + [start] + text("assistant\n"))
    cfg = EvalConfig(preset="open-unlearning")
    ev = Evaluator(model, tok, encode=cfg.encoding(EncodeConfig(template=CUSTOM)))  # the preset beats the run
    assert ev.prompts([{"question": TOFU_Q}]) == [expected]
    assert cfg.gen_max_new_tokens == 200 and cfg.max_length == 512
    # explicit options beat the preset: no system prompt at all
    bare = Evaluator(model, tok, encode=EvalConfig(preset="open-unlearning", system_prompt="").encoding())
    assert bare.prompts([{"question": TOFU_Q}]) == [expected[len(text("system\nYou are a helpful assistant.")) + 3:]]


def test_generation_budget_new_tokens_vs_prompt_plus_answer(tiny):
    model, tok = tiny
    ev = Evaluator(model, tok, encode=EncodeConfig(template="plain"))
    recs = QA[:2]
    n_prompt = [len(p) for p in ev.prompts(recs)]
    asked = []
    generate = ev.generate
    ev.generate = lambda prompts, budgets: asked.append(list(budgets)) or generate(prompts, budgets)
    ev.generate_text(recs, max_length=40)
    assert asked[-1] == [40 - n for n in n_prompt]  # TOFU: prompt + answer <= 40
    ev.generate_text(recs, max_length=40, max_new_tokens=5)
    assert asked[-1] == [5, 5]  # open-unlearning: new tokens only
    assert all(len(g) <= 5 for g in generate(ev.prompts(recs), [5, 5]))


def test_presets_set_only_unset_options():
    defaults = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    for preset in PRESETS.values():
        for key in preset.options:
            assert key in defaults and defaults[key] is None, f"preset {preset.name} sets {key}, which has a default"
    assert EvalConfig(preset="open-unlearning", max_length=300).max_length == 300
    with pytest.raises(ConfigError, match="Did you mean 'open-unlearning'"):
        EvalConfig(preset="open_unlearning")
    with pytest.raises(ConfigError, match="template"):
        EvalConfig(template="no placeholder")


def test_demo_evaluates_each_method_with_its_training_encoding():
    from obliviate.demo import _encoding

    assert _encoding({"lr": 1e-5, "template": CUSTOM, "max_length": 64, "beta": 0.1}) == EncodeConfig(template=CUSTOM, max_length=64)
    assert _encoding({"lr": 1e-5}) == EncodeConfig()
