"""Every shipped config under configs/ parses and validates; CLI config handling (--dry-run, --set,
"did you mean"). No model is loaded: --dry-run stops after validation.

SPUNGE configs (configs/spunge_*.yaml) are validated by the SPUNGE tests; configs whose method is
not registered yet are skipped with a message naming it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from obliviate.cli import main
from obliviate.config import apply_overrides, load_yaml
from obliviate.errors import ConfigError
from obliviate.methods import METHODS
from obliviate.runconfig import parse_run_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("spunge_"))
NPO = ROOT / "configs" / "npo.yaml"


def _method_name(raw: dict) -> str:
    m = raw.get("method", "npo")
    return m if isinstance(m, str) else m.get("name", "")


def _raw(path: Path) -> dict:
    raw = load_yaml(path)
    if path.name.startswith("finetune"):
        raw["method"] = {"name": "sft"}  # what `obliviate finetune` does
    return raw


def test_configs_are_shipped():
    assert len(CONFIGS) >= 6, f"expected shipped configs under {ROOT / 'configs'}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path: Path):
    raw = _raw(path)
    name = _method_name(raw)
    if name != "sft" and name not in METHODS:
        pytest.skip(f"{path.name}: method '{name}' is not registered yet")
    cfg = parse_run_config(raw)
    assert cfg.output_dir.startswith("runs/"), f"{path.name}: output_dir should be under runs/"
    for src in (cfg.forget, cfg.retain):
        if src is not None and src.benchmark == "tofu" and src.path and (ROOT / src.path).is_dir():
            assert (ROOT / src.path / f"{src.split}.json").is_file(), f"{path.name}: no TOFU split {src.split}"


def test_every_registered_method_has_a_config():
    shipped = {_method_name(load_yaml(p)) for p in CONFIGS}
    missing = [n for n in METHODS.names() if n not in shipped]
    assert not missing, f"no configs/<name>.yaml for registered methods: {missing}"


def test_unknown_key_suggests_the_right_one():
    raw = apply_overrides(load_yaml(NPO), ["train.lrr=1e-5"])
    with pytest.raises(ConfigError, match=r"train\.lrr.*Did you mean 'lr'"):
        parse_run_config(raw)
    raw = apply_overrides(load_yaml(NPO), ["method.betta=0.2"])
    with pytest.raises(ConfigError, match="Did you mean 'beta'"):
        parse_run_config(raw)


def test_unknown_method_suggests_the_right_one():
    with pytest.raises(ConfigError, match="Did you mean 'npo'"):
        parse_run_config(apply_overrides(load_yaml(NPO), ["method.name=npoo"]))


def test_dry_run_prints_resolved_config(capsys):
    assert main(["unlearn", "--config", str(NPO), "--dry-run"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["method"] == {"name": "npo", "beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"}
    assert out["train"]["lr"] == pytest.approx(1e-5)
    assert out["train"]["max_steps"] == 50
    assert out["train"]["optimizer"] == "adamw"  # a default filled in: the config is resolved
    assert out["forget"]["split"] == "forget01"


def test_set_overrides_on_the_cli(capsys):
    argv = ["unlearn", "--config", str(NPO), "--dry-run", "--set", "train.lr=2e-5", "--set", "method.beta=0.25",
            "--set", "data.max_length=128", "--set", "output_dir=runs/other"]
    assert main(argv) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["lr"] == pytest.approx(2e-5)
    assert out["method"]["beta"] == pytest.approx(0.25)
    assert out["data"]["max_length"] == 128
    assert out["output_dir"] == "runs/other"


def test_finetune_dry_run_uses_sft(capsys):
    assert main(["finetune", "--config", str(ROOT / "configs" / "finetune_tofu.yaml"), "--dry-run"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["method"] == {"name": "sft"}
    assert out["forget"]["split"] == "full"


def test_cli_reports_bad_key_as_one_line(capsys):
    assert main(["unlearn", "--config", str(NPO), "--dry-run", "--set", "train.lrr=1e-5"]) == 2
    err = capsys.readouterr().err
    assert "obliviate: error:" in err and "Did you mean 'lr'" in err and "Traceback" not in err
