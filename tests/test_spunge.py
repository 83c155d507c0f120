"""SPUNGE: split errors, TVN's negation, the pipeline on a tiny model, resume, and the Ray backend."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from obliviate import make_facts
from obliviate.errors import ConfigError, DataError
from obliviate.spunge import SplitConfig, SubsetFailed, parse_spunge_config, run_spunge, split_records
from obliviate.spunge import runner as runner_mod

RECS = [{"question": f"q{i}", "answer": f"a{i}", "g": g} for i, g in enumerate("aabbbc")]


def test_split_by_field_min_size_and_values():
    s = split_records(RECS, SplitConfig(by="g", min_size=2))
    assert {k: len(v) for k, v in s.items()} == {"a": 2, "b": 3, "other": 1}
    s = split_records(RECS, SplitConfig(by="g", values=("a", "c")))
    assert [r["question"] for r in s["c"]] == ["q5"]
    s = split_records(RECS, SplitConfig(function="tests.test_spunge:_parity"))
    assert {k: len(v) for k, v in s.items()} == {"even": 3, "odd": 3}


def _parity(record):
    return "even" if int(record["question"][1:]) % 2 == 0 else "odd"


def test_split_errors_name_the_problem():
    with pytest.raises(DataError, match=r"2 of 6 .*records 1, 4"):
        split_records([dict(r) if i not in (1, 4) else {"question": "q", "answer": "a"} for i, r in enumerate(RECS)],
                      SplitConfig(by="g"))
    with pytest.raises(DataError, match="only value is 'b'.*no-op|just the base method"):
        split_records(RECS, SplitConfig(by="g", values=("b",)))
    with pytest.raises(DataError, match=r"\['z'\] do not occur"):
        split_records(RECS, SplitConfig(by="g", values=("z",)))
    with pytest.raises(DataError, match="only value is 'other'"):
        split_records(RECS, SplitConfig(by="g", min_size=10))
    with pytest.raises(ConfigError, match="exactly one"):
        SplitConfig(by="g", kmeans=3)
    with pytest.raises(ConfigError, match="embedding_model"):
        SplitConfig(kmeans=3)


def test_tvn_negates_the_finetuning_task_vector(tiny):
    from obliviate.api import finetune, unlearn
    from obliviate.testing import tiny_model_and_tokenizer

    facts = make_facts(2, 2, seed=0)
    theta0 = {k: v.clone() for k, v in tiny[0].state_dict().items()}
    opts = dict(max_steps=3, lr=1e-2, batch_size=2, seed=0, progress=False, save=False)
    sft_model, tok = tiny_model_and_tokenizer()
    finetune(sft_model, tok, facts, **opts)
    unlearn(tiny[0], tiny[1], facts, method="tvn", lam=0.5, **opts)
    moved = 0
    for k, v in tiny[0].state_dict().items():
        expect = theta0[k] - 0.5 * (sft_model.state_dict()[k] - theta0[k])
        torch.testing.assert_close(v, expect, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(v, theta0[k]))
    assert moved > 0


@pytest.fixture
def spunge_setup(tmp_path):
    from obliviate.models import save_model
    from obliviate.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    save_model(model, tok, tmp_path / "tiny")
    facts = make_facts(4, 2, seed=0)
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in facts[:4]))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in facts[4:]))
    raw = {"model": str(tmp_path / "tiny"), "forget": {"path": str(tmp_path / "forget.jsonl")},
           "retain": {"path": str(tmp_path / "retain.jsonl")}, "method": {"name": "graddiff"},
           "train": {"max_steps": 2, "lr": 1e-3, "batch_size": 2, "progress": False},
           "split": {"by": "person"}, "merge": {"method": "ties", "density": 0.5},
           "output_dir": str(tmp_path / "run")}
    return raw, tmp_path


def test_pipeline_failure_then_resume_skips_finished(spunge_setup, monkeypatch):
    raw, tmp = spunge_setup
    people = list(dict.fromkeys(r["person"] for r in make_facts(4, 2, seed=0)[:4]))
    real = runner_mod.run_job

    def flaky(job):
        if job.name == people[1]:
            raise RuntimeError("out of memory on the device")
        return real(job)

    monkeypatch.setattr(runner_mod, "run_job", flaky)
    with pytest.raises(SubsetFailed, match=f"Subset '{people[1]}' failed: RuntimeError: out of memory"):
        run_spunge(parse_spunge_config({**raw, "overrides": {people[0]: {"lr": 2e-3}}}))
    assert runner_mod.is_done(tmp / "run" / "subsets" / people[0].replace(" ", "_"))
    with pytest.raises(ConfigError, match="overrides.*nobody"):
        run_spunge(parse_spunge_config({**raw, "overrides": {"nobody": {"lr": 1.0}}}), resume=True)
    ran = []
    monkeypatch.setattr(runner_mod, "run_job", lambda job: (ran.append(job.name), real(job))[1])
    report = run_spunge(parse_spunge_config(raw), resume=True)
    assert ran == [people[1], "unsplit"]  # the finished subset is skipped
    unsplit = json.loads((tmp / "run" / "unsplit" / "done.json").read_text())
    assert unsplit["steps"] == 4  # same total budget as the two subsets
    res = report["results"]
    assert set(res) == {"original", "base", "spunge"}
    assert set(res["spunge"]["forget"]) == {"all", *people}
    assert (tmp / "run" / "report.md").read_text().count("| forget |") == 3
    assert res["spunge"]["forget"]["all"] != res["original"]["forget"]["all"]  # the merge moved the model
    # what `obliviate report` reads: per-person bars, headline metrics, and the page itself
    table = json.loads((tmp / "run" / "spunge_table.json").read_text())
    assert table == {p: {m: res[m]["forget"][p] for m in res} for p in people}
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["forget_metric"] == "spunge/forget_spunge" and summary["method"] == "spunge:graddiff"
    assert people[0] in (tmp / "run" / "report.html").read_text()


def test_auto_merge_reports_its_choice(spunge_setup):
    raw, tmp = spunge_setup
    cfg = parse_spunge_config({**raw, "run_base": False, "auto_merge": {"densities": [0.2, 1.0], "lams": [1.0]}})
    report = run_spunge(cfg)
    chosen = json.loads((tmp / "run" / "auto_merge.json").read_text())
    assert len(chosen["candidates"]) == 2
    assert report["merge"]["density"] == chosen["chosen"]["density"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'obliviate[ray]')")
def test_ray_backend_runs_two_subsets_on_cpu(spunge_setup):
    import ray

    raw, tmp = spunge_setup
    cfg = parse_spunge_config({**raw, "run_base": False, "backend": {"name": "ray", "ray_num_cpus": 2}})
    try:
        report = run_spunge(cfg)
    finally:
        ray.shutdown()
    subsets = json.loads((tmp / "run" / "split.json").read_text())
    assert len(subsets) == 2
    for d in (tmp / "run" / "subsets").iterdir():
        assert (d / "done.json").is_file() and (d / "model" / "model.safetensors").is_file()
    assert "spunge" in report["results"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not thrash a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["spunge_tofu_forget10.yaml", "spunge_toxigen.yaml"])
def test_shipped_configs_parse_and_split(name):
    from pathlib import Path

    from tests.conftest import data_dir

    from obliviate.config import load_yaml

    root = Path(__file__).resolve().parents[1]
    raw = load_yaml(root / "configs" / name)
    bench = "tofu" if "tofu" in name else "toxigen"
    folder = str(data_dir(bench))
    for key in ("forget", "retain"):
        raw[key]["path"] = folder
    for es in raw.get("eval_sets", []):
        es["source"]["path"] = folder
    cfg = parse_spunge_config(raw)
    subsets = split_records(cfg.forget.load(), cfg.split)
    assert len(subsets) >= 2 and all(len(v) >= cfg.split.min_size for v in subsets.values())
