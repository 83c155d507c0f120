"""``obliviate bench tofu`` end to end on a tiny model and a TOFU-shaped folder (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from obliviate.bench import BenchTofuConfig, run_bench_tofu
from obliviate.bench.defaults import DATA_OPTIONS, METHOD_OPTIONS
from obliviate.cli import main
from obliviate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORDS = "red blue green black white grey pink gold".split()


def _qa(tag: str, i: int) -> dict:
    return {"question": f"{tag} q{i}?", "answer": f"{WORDS[i % 8]} {WORDS[(3 * i) % 8]}",
            "paraphrased_answer": f"{WORDS[i % 8]} it is", "perturbed_answer": [f"no {WORDS[i % 8]}", f"bad {i}"]}


@pytest.fixture
def mini_tofu(tmp_path) -> Path:
    """4 authors x 20 records in ``full``; forget01 = authors 2 and 3 (the last ones, as in TOFU)."""
    d = tmp_path / "tofu"
    d.mkdir()
    full = [_qa(f"a{a}", i) for a in range(4) for i in range(20)]
    forget = full[40:]
    sets = {"full": full, "forget01": forget, "forget01_perturbed": forget,
            "holdout01": [_qa("h", i) for i in range(40)], "retain_perturbed": full[:40],
            "real_authors_perturbed": [_qa("ra", i) for i in range(4)],
            "world_facts_perturbed": [_qa("wf", i) for i in range(4)]}
    for name, recs in sets.items():
        (d / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "idontknow.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ("no idea", "not sure")))
    return d


@pytest.fixture
def tiny_dir(tmp_path, tiny) -> Path:
    from obliviate.models import save_model

    model, tok = tiny
    return save_model(model, tok, tmp_path / "tiny_model")


def _cfg(mini_tofu, tiny_dir, out, **kw) -> BenchTofuConfig:
    base = dict(tofu_dir=str(mini_tofu), model=str(tiny_dir), authors=1, methods=("ga", "npo", "spunge:ga"),
                out=str(out), recipe_overrides={"epochs": 1.0, "grad_accum": 1, "lr": 1e-3}, steps=2, batch_size=4,
                eval_items=4, gen_max_length=24, max_length=48)
    return BenchTofuConfig(**{**base, **kw})


def test_bench_tofu_end_to_end_resume_and_force(mini_tofu, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(mini_tofu, tiny_dir, tmp_path / "bench")
    rows = run_bench_tofu(cfg, progress=False)
    by = {r["row"]: r for r in rows}
    assert list(by) == ["retain", "target", "ga", "npo", "spunge:ga"]
    # The target was trained on authors 0 + forget authors 2, 3; the retain model on author 0 only.
    data = Path(cfg.out) / "data"
    assert len((data / "full.json").read_text().splitlines()) == 60
    assert len((data / "retain_perturbed.json").read_text().splitlines()) == 4
    assert by["retain"]["forget_quality"] == pytest.approx(1.0) and by["retain"]["privleak"] == pytest.approx(0.0)
    for r in rows:
        assert 0 <= r["forget_quality"] <= 1 and 0 <= r["model_utility"] <= 1 and 0 <= r["forget_prob"] <= 1
        assert r["extraction_strength"] is not None and r["peak_memory_mb"] > 0
    # The target memorised the forget authors better than the retain model, which never saw them.
    assert by["target"]["forget_prob"] > by["retain"]["forget_prob"]
    assert by["ga"]["steps"] == 2 and by["spunge:ga"]["steps"] == 4  # SPUNGE: 2 author subsets x 2 steps
    assert by["ga"]["forget_prob"] < by["target"]["forget_prob"]  # gradient ascent lowered it
    board = json.loads((Path(cfg.out) / "leaderboard.json").read_text())
    assert [r["row"] for r in board["rows"]] == list(by)
    md = (Path(cfg.out) / "leaderboard.md").read_text()
    assert "| spunge:ga |" in md and "forget quality" in md
    html = (Path(cfg.out) / "report.html").read_text()
    assert "target" in html and "retain" in html and "data:image/png;base64" in html

    # Re-run: cached target/retain models and finished rows are reused, nothing trains.
    import obliviate.api as api
    import obliviate.planted as planted

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(planted, "finetune", boom)
    monkeypatch.setattr(api, "train", boom)
    again = run_bench_tofu(cfg, progress=False)
    assert [r["forget_prob"] for r in again] == [r["forget_prob"] for r in rows]

    # A row whose completion mark is gone is re-run; --force re-runs them all.
    (Path(cfg.out) / "npo" / "bench_row.json").unlink()
    with pytest.raises(AssertionError, match="trained again"):
        run_bench_tofu(cfg, progress=False)
    with pytest.raises(ConfigError, match="steps differ"):
        run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "bench", steps=3), progress=False)


def test_bench_cached_target_shared_across_bench_dirs(mini_tofu, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    rows = run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b1", methods=("idknll", "pdu")), progress=False)
    assert [r["row"] for r in rows] == ["retain", "target", "idknll", "pdu"]
    cfg = yaml.safe_load((tmp_path / "b1" / "pdu" / "config.yaml").read_text())
    assert cfg["pdu"]["epsilon"] > 0.1  # the target's retain NLL + 0.1
    idk = yaml.safe_load((tmp_path / "b1" / "idknll" / "config.yaml").read_text())
    assert idk["idknll"]["refusals"] == str(mini_tofu / "idontknow.jsonl")
    import obliviate.planted as planted

    monkeypatch.setattr(planted, "finetune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-trained")))
    first = {r["row"]: r for r in json.loads((tmp_path / "b1" / "leaderboard.json").read_text())["rows"]}
    import obliviate.eval.api as eval_api

    real_evaluate, evaluated = eval_api.evaluate, []

    def counting(model, tok, **kw):
        evaluated.append(kw["model_name"])
        return real_evaluate(model, tok, **kw)

    monkeypatch.setattr(eval_api, "evaluate", counting)
    rows = run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b2", methods=("npo",)), progress=False)
    assert [r["row"] for r in rows] == ["retain", "target", "npo"]
    assert len(list((tmp_path / "cache" / "bench_tofu_target").iterdir())) == 1
    # The reference rows' evaluations came from the cache (same models, data, settings and code):
    # only the method was evaluated, the values are b1's, and the copied paths point into b2.
    assert evaluated == ["npo"]
    for r in rows[:2]:
        assert r["eval_cached"] and r["forget_prob"] == first[r["row"]]["forget_prob"]
        assert r["forget_quality"] == first[r["row"]]["forget_quality"]
    tofu = json.loads((tmp_path / "b2" / "target" / "eval" / "tofu.json").read_text())
    assert tofu["meta"]["retain_result"] == str(tmp_path / "b2" / "retain")
    # Other eval settings are another key: evaluated afresh.
    rows = run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b3", methods=("ga",), gen_max_length=20), progress=False)
    assert evaluated[1:] == ["retain", "target", "ga"] and not any(r.get("eval_cached") for r in rows)
    # A bench.json written before a setting existed reads it as its default: the rows are reused.
    marker = tmp_path / "b2" / "bench.json"
    old = json.loads(marker.read_text())
    del old["row_config"]["mia_grad_norm"]
    marker.write_text(json.dumps(old))
    assert [r["row"] for r in run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b2", methods=("npo",)),
                                             progress=False)] == ["retain", "target", "npo"]
    assert evaluated[4:] == []


def test_bench_errors_before_any_training(mini_tofu, tiny_dir, tmp_path, monkeypatch, capsys):
    import obliviate.planted as planted

    monkeypatch.setattr(planted, "finetune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    with pytest.raises(ConfigError, match="Unknown method 'npoo'. Did you mean 'npo'"):
        _cfg(mini_tofu, tiny_dir, tmp_path / "b", methods=("ga", "npoo"))
    with pytest.raises(ConfigError, match="not a model directory"):
        run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b", target=str(tmp_path / "nope")), progress=False)
    (mini_tofu / "idontknow.jsonl").unlink()
    with pytest.raises(ConfigError, match="'dpo' needs refusal answers"):
        run_bench_tofu(_cfg(mini_tofu, tiny_dir, tmp_path / "b0", methods=("ga", "dpo")), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bench directory"):
        run_bench_tofu(_cfg(mini_tofu, tiny_dir, foreign), progress=False)
    assert (foreign / "keep.txt").read_text() == "mine"
    code = main(["bench", "tofu", "--tofu-dir", str(mini_tofu), "--methods", "ga,spunge:nop", "--out", str(tmp_path / "c")])
    assert code == 2 and "Unknown method 'nop'" in capsys.readouterr().err


def test_cli_dry_run_quick_and_yaml(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text("tofu_dir: /data/tofu\nsteps: 10\nmethods: [ga, npo, rmu]\n")
    assert main(["bench", "tofu", "--config", str(tmp_path / "b.yaml"), "--steps", "6", "--quick", "--dry-run"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["steps"] == 3 and cfg["methods"] == ["ga", "npo"] and cfg["tofu_dir"] == "/data/tofu"
    assert cfg["eval_items"] == 40


def test_bench_method_options_equal_shipped_configs():
    """The bench runs each method with its shipped config's method section and learning rate."""
    for name, opts in METHOD_OPTIONS.items():
        shipped = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        method = {k: v for k, v in shipped["method"].items() if k != "name"}
        method = {k: v for k, v in method.items() if k not in DATA_OPTIONS.get(name, ())}  # filled from the data
        expected = {**method, "lr": shipped["train"]["lr"]}
        if "scheduler" in shipped["train"]:
            expected["scheduler"] = shipped["train"]["scheduler"]
        assert opts == expected, name


def test_bench_muse_on_hub_layout_fixture(tiny_dir, tmp_path, monkeypatch, capsys):
    from tests.test_muse import write_hub_layout

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    data = write_hub_layout(tmp_path / "MUSE-News")
    out = tmp_path / "bench_muse"
    code = main(["bench", "muse", "--data", str(data), "--model", str(tiny_dir), "--methods", "ga,npo", "--steps", "2",
                 "--out", str(out), "--config", str(_muse_yaml(tmp_path))])
    assert code == 0, capsys.readouterr().err
    board = json.loads((out / "leaderboard.json").read_text())
    by = {r["row"]: r for r in board["rows"]}
    assert list(by) == ["retain", "target", "ga", "npo"]
    assert by["retain"]["privleak"] == pytest.approx(0.0)
    for r in board["rows"]:
        for k in ("verbmem_f", "knowmem_f", "knowmem_r"):
            assert 0.0 <= r[k] <= 1.0
    # The target learned the forget texts (which the retain model never saw): lower Min-K% AUC (MUSE direction).
    from obliviate.eval.results import load_suite

    assert load_suite(out / "target", "muse").value("auc_min_k") < load_suite(out / "retain", "muse").value("auc_min_k")
    assert "| ga |" in (out / "leaderboard.md").read_text() and (out / "report.html").is_file()
    with pytest.raises(ConfigError, match="no attribute to split by"):
        from obliviate.bench import BenchMuseConfig

        BenchMuseConfig(methods=("spunge:npo",))


def _muse_yaml(tmp_path) -> Path:
    p = tmp_path / "muse.yaml"
    p.write_text(yaml.safe_dump({"recipe_overrides": {"epochs": 3.0, "grad_accum": 1, "lr": 3e-3, "batch_size": 2},
                                 "batch_size": 2, "max_length": 32, "eval_max_length": 32}))
    return p


def test_bench_lr_scale_rule():
    """TOFU-rate methods are scaled by recipe lr / 1e-5 (cpu recipe: 50); RMU and FALCON keep their
    papers' rates; a given --target means factor 1; an explicit lr_scale wins."""
    from obliviate.bench import BenchTofuConfig
    from obliviate.bench.defaults import method_options

    cfg = BenchTofuConfig(tofu_dir="/data/tofu")
    assert cfg.unlearn_lr_scale() == pytest.approx(5e-4 / 1e-5)
    assert BenchTofuConfig(tofu_dir="/d", recipe="tofu").unlearn_lr_scale() == 1.0
    assert BenchTofuConfig(tofu_dir="/d", target="/some/model").unlearn_lr_scale() == 1.0
    assert BenchTofuConfig(tofu_dir="/d", target="/m", lr_scale=3.0).unlearn_lr_scale() == 3.0
    assert method_options("npo", 50.0)["lr"] == pytest.approx(5e-4)
    assert method_options("rmu", 50.0)["lr"] == METHOD_OPTIONS["rmu"]["lr"]
    assert method_options("falcon", 50.0)["lr"] == METHOD_OPTIONS["falcon"]["lr"]
    assert method_options("npo")["lr"] == METHOD_OPTIONS["npo"]["lr"]
    with pytest.raises(ConfigError, match="lr_scale"):
        BenchTofuConfig(tofu_dir="/d", lr_scale=0.0)
