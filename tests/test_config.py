"""Config validation: unknown keys, wrong types, out-of-range values name the key."""

import pytest

from obliviate.config import apply_overrides, from_dict
from obliviate.engine import TrainConfig
from obliviate.errors import ConfigError
from obliviate.methods import build, names
from obliviate.runconfig import parse_run_config


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"train\.lrr.*Did you mean 'lr'"):
        from_dict(TrainConfig, {"lrr": 1e-5}, where="train")


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size.*integer"):
        from_dict(TrainConfig, {"batch_size": "four"}, where="train")


def test_out_of_range_names_key():
    with pytest.raises(ConfigError, match=r"train\.lr"):
        from_dict(TrainConfig, {"lr": -1.0}, where="train")
    with pytest.raises(ConfigError, match=r"npo\.beta"):
        build("npo", {"beta": 0})


def test_yaml_scientific_string_accepted():
    assert from_dict(TrainConfig, {"lr": "5e-5"}).lr == 5e-5


def test_literal_choice_error():
    with pytest.raises(ConfigError, match=r"scheduler.*Did you mean 'cosine'"):
        from_dict(TrainConfig, {"scheduler": "cosin"}, where="train")


def test_unknown_method_did_you_mean():
    with pytest.raises(ConfigError, match=r"Unknown method 'npoo'.*Did you mean 'npo'"):
        build("npoo")
    assert {"ga", "graddiff", "npo", "simnpo"} <= set(names())


def test_run_config_and_overrides():
    raw = {"model": "m", "forget": {"path": "f.jsonl"}, "output_dir": "out", "method": "npo"}
    raw = apply_overrides(raw, ["train.lr=2e-5", "method.beta=0.3", "train.max_steps=7"])
    cfg = parse_run_config(raw)
    assert cfg.train.lr == 2e-5 and cfg.train.max_steps == 7 and cfg.method == {"name": "npo", "beta": 0.3}
    with pytest.raises(ConfigError, match=r"npo\.betta.*Did you mean 'beta'"):
        parse_run_config({**raw, "method": {"name": "npo", "betta": 1}})
    with pytest.raises(ConfigError, match=r"Unknown config key 'retian'.*Did you mean 'retain'"):
        parse_run_config({**raw, "retian": {"path": "r.jsonl"}})
