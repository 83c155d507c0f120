"""Fault injection (issue 16): bad inputs, interrupted runs and a full disk never lose a run, never
pass silently, and never show a raw traceback.

Each case states its input, the exit status, a substring of the one-line message, and what the
output directory holds afterwards. A case fails if ``obliviate.cli.main`` raises (a traceback a
user would see). A full disk is simulated by making the writer raise what it raises on ENOSPC:
``OSError(ENOSPC)``, safetensors' ``SafetensorError(... StorageFull ...)`` and torch's
``[enforce fail at inline_container.cc]``. The tiny random Llama keeps every run to about a second.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import obliviate
from obliviate.cli import main
from obliviate.errors import ConfigError, TrainingDiverged
from obliviate.io import read_jsonl
from obliviate.testing import tiny_model_and_tokenizer

FORGET = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker in town {i}."} for i in range(4)]
RETAIN = [{"question": f"What is {i} plus one?", "answer": f"{i} plus one is {i + 1}."} for i in range(4)]
TRAIN = {"lr": 1e-3, "max_steps": 2, "batch_size": 2, "progress": False}
OPTS = dict(max_steps=4, lr=1e-3, batch_size=2, progress=False, template="plain", scheduler="constant")


class Crash(Exception):
    pass


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A saved tiny model, forget/retain files, and one finished run (copied by the tests that need one)."""
    root = tmp_path_factory.mktemp("faults")
    model, tok = tiny_model_and_tokenizer()
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    _jsonl(root / "forget.jsonl", FORGET)
    _jsonl(root / "retain.jsonl", RETAIN)
    e = Env(root)
    assert main(["unlearn", "--config", str(e.config(output_dir=root / "done"))]) == 0
    return e


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.base = root / "base"

    def config(self, name: str = "run.yaml", where: Path | None = None, **over) -> Path:
        cfg = {"model": str(self.base), "forget": {"path": str(self.root / "forget.jsonl")},
               "retain": {"path": str(self.root / "retain.jsonl")}, "method": {"name": "graddiff"},
               "train": dict(TRAIN), "output_dir": str(self.root / "out")}
        for k, v in over.items():
            cfg[k] = str(v) if isinstance(v, Path) else v
        path = (where or self.root) / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    def finished_run(self, dest: Path) -> Path:
        shutil.copytree(self.root / "done", dest)
        return dest


def cli(capsys, *argv) -> tuple[int, str]:
    """Exit status and stderr of ``obliviate ARGV``; a raw traceback would fail the test here."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` (hidden siblings excluded) with its content hash."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary/aside directories a failed write could leave behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- data loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (["--set", "train.lr=-1"], "'train.lr' must be > 0"),  # caught while parsing the config
    (["--set", "train.trainable=[no_such_param]"], "No parameter name matches"),  # caught inside the engine
])
def test_overwrite_with_a_bad_config_keeps_the_old_run(env, tmp_path, capsys, bad, message):
    run = env.finished_run(tmp_path / "run")
    before = snapshot(run)
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=run), "--overwrite", *bad)
    assert rc == 2 and message in err
    assert snapshot(run) == before and leftovers(tmp_path) == []


def test_overwrite_refuses_an_output_dir_holding_the_input_model(env, tmp_path, capsys):
    run = env.finished_run(tmp_path / "run")
    before = snapshot(run)
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=run, model=run / "model"),
                  "--overwrite")
    assert rc == 2 and "lies inside the output directory" in err
    assert snapshot(run) == before


def test_overwrite_replaces_the_old_run_only_when_done(env, tmp_path, capsys):
    run = env.finished_run(tmp_path / "run")
    (run / "old-marker.txt").write_text("from the earlier run")
    rc, _ = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=run), "--overwrite")
    assert rc == 0 and (run / "model" / "config.json").is_file() and not (run / "old-marker.txt").exists()
    assert leftovers(tmp_path) == []  # the moved-aside old run is gone once the new one finished


def test_overwrite_by_a_run_that_crashes_after_a_checkpoint_keeps_both(env, tmp_path):
    run = env.finished_run(tmp_path / "run")
    before = snapshot(run)

    def crash(done, record):
        if done == 3:
            raise Crash

    model, tok = tiny_model_and_tokenizer()
    with pytest.raises(Crash) as info:
        obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=run, overwrite=True, callbacks=[crash],
                          checkpoint_every=1, **OPTS)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".run.previous-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # the replaced run, intact
    assert (run / "checkpoints" / "step-2" / "state.json").is_file()  # the new one, resumable
    assert str(aside[0]) in " ".join(info.value.__notes__) and "--resume" in " ".join(info.value.__notes__)


def test_disk_errors_outside_our_writers_are_one_line(env, tmp_path, capsys, monkeypatch):
    from obliviate.runconfig import DataSource

    def fail(self):
        raise OSError(errno.ENOSPC, "No space left on device", "/scratch/cache.arrow")

    monkeypatch.setattr(DataSource, "load", fail)
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=tmp_path / "out"))
    assert rc == 1 and err.strip() == "obliviate: error: '/scratch/cache.arrow': no space left on device"


def test_failed_validation_leaves_nothing_and_a_rerun_is_not_refused(env, tmp_path, capsys):
    out = tmp_path / "fresh"
    cfg = env.config(where=tmp_path, output_dir=out, method={"name": "rmu", "layer": 7})
    rc, err = cli(capsys, "unlearn", "--config", cfg)
    assert rc == 2 and "'rmu.layer' = 7 is out of range: the model has decoder blocks 0..3" in err
    assert not out.exists()  # no lone config.yaml that would make the rerun "not empty"
    rc, _ = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=out))
    assert rc == 0


def _enospc_in_save_pretrained(monkeypatch):
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    def full(self, *a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                              'left on device" })')

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)


def test_disk_full_at_model_save_keeps_the_trained_state(env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    cfg = env.config(where=tmp_path, output_dir=out, train={**TRAIN, "max_steps": 3})
    with monkeypatch.context() as m:
        _enospc_in_save_pretrained(m)
        rc, err = cli(capsys, "unlearn", "--config", cfg)
    assert rc == 2 and "no space left on device" in err and "trained state is kept in" in err and "step-3" in err
    final = out / "checkpoints" / "step-3"
    assert (final / "state.json").is_file() and not (out / "model").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no half-written model dir
    trained = load_file(str(final / "trainable.safetensors"))
    # the same command with --resume writes the model from the kept state, without training again
    rc, _ = cli(capsys, "unlearn", "--config", cfg, "--resume")
    assert rc == 0 and [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3]
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert trained and all(torch.equal(saved[k], v) for k, v in trained.items() if k in saved)
    assert not (out / "checkpoints").exists()  # the final checkpoint only guarded the model save


def test_disk_full_during_a_checkpoint(env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    cfg = env.config(where=tmp_path, output_dir=out, train={**TRAIN, "max_steps": 4, "checkpoint_every": 1})
    real_save = torch.save

    def save(obj, f, *a, **k):
        if "step-3" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1216 vs 1110")
        return real_save(obj, f, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", save)
        rc, err = cli(capsys, "unlearn", "--config", cfg)
    assert rc == 2 and "step-3" in err and "is the disk full?" in err
    assert "Earlier checkpoints (step-1, step-2) are intact" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]  # nothing half-written
    assert obliviate.engine.checkpoint.read_checkpoint(out / "checkpoints" / "step-2").step == 2
    rc, _ = cli(capsys, "unlearn", "--config", cfg, "--resume")
    assert rc == 0 and [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4]


# --- silent corruption -------------------------------------------------------------------------


def test_divergence_keeps_the_last_finite_state(tmp_path, monkeypatch):
    """lr becomes inf at step 3: the update makes the weights NaN, step 4's loss is NaN. The last good
    state is the one after step 2 (its loss and gradients at step 3 were finite): saved, finite, exact."""
    import obliviate.engine.loop as loop

    real = loop.lr_factor
    monkeypatch.setattr(loop, "lr_factor", lambda s, *a: float("inf") if s >= 2 else real(s, *a))
    model, tok = tiny_model_and_tokenizer()
    after: dict[int, dict[str, torch.Tensor]] = {}

    def keep(done, record):
        after[done] = {n: p.detach().clone() for n, p in model.named_parameters()}

    with pytest.raises(TrainingDiverged, match=r"step 4: the graddiff loss is nan.*step-2 \(after 2 steps"):
        obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=tmp_path / "run", callbacks=[keep],
                          checkpoint_every=1, **OPTS)
    assert not all(torch.isfinite(p).all() for p in after[3].values())  # the state after step 3 is broken
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-1", "step-2"]  # keep_checkpoints=2; no checkpoint of the broken state
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step-2" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert saved.keys() == after[2].keys() and all(torch.equal(saved[n], after[2][n]) for n in saved)


def test_divergence_without_a_good_checkpoint_writes_none(tmp_path):
    model, tok = tiny_model_and_tokenizer()
    with pytest.raises(TrainingDiverged, match="No checkpoint of a good state exists"):
        obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=tmp_path / "run",
                          checkpoint_every=1, **{**OPTS, "lr": float("inf")})
    assert not (tmp_path / "run").exists()  # nothing recoverable: the run directory is left as it was (absent)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Path:
    """A graddiff run killed after step 3 of 4 (checkpoint_every=1: step-1 and step-2 on disk)."""
    def cb(done, record):
        if done == 3:
            raise Crash

    run = tmp_path_factory.mktemp("crashed") / "run"
    model, tok = tiny_model_and_tokenizer()
    with pytest.raises(Crash):
        obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=run, callbacks=[cb],
                          checkpoint_every=1, **OPTS)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1", "step-2"]
    return run


def _crashed_run(tmp_path, crashed: Path) -> Path:
    return Path(shutil.copytree(crashed, tmp_path / "run"))


def test_resume_with_changed_settings_is_refused_by_name(tmp_path, crashed):
    run = _crashed_run(tmp_path, crashed)
    before = snapshot(run)

    def resume(method="graddiff", forget=FORGET, **over):
        model, tok = tiny_model_and_tokenizer()  # a fresh starting model each time, as a new process loads it
        return obliviate.unlearn(model, tok, forget, RETAIN, method=method, run_dir=run, resume=True, **{**OPTS, **over})

    with pytest.raises(ConfigError, match=r"train\.lr \(0\.001 -> 0\.002\)"):
        resume(lr=2e-3)
    with pytest.raises(ConfigError, match=r"differ from the ones it was trained with: method \(\"graddiff\" -> \"npo\"\)"):
        resume(method="npo")
    with pytest.raises(ConfigError, match=r"data\.forget"):
        resume(forget=FORGET[:3])
    with pytest.raises(ConfigError, match=r"train\.lora \(unset -> "):  # a full-weight run resumed with LoRA
        resume(lora={"r": 2})
    assert snapshot(run) == before  # a refused resume changes nothing
    with pytest.raises(ConfigError, match="does not fit this run"):  # ... even when changes are allowed
        resume(lora={"r": 2}, allow_config_change=True)
    assert [r["step"] for r in resume(lr=2e-3, allow_config_change=True).log] == [3, 4]


def test_resume_without_a_checkpoint_starts_clean(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    _jsonl(run / "train_log.jsonl", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0}])  # killed before a checkpoint
    model, tok = tiny_model_and_tokenizer()
    with caplog.at_level(logging.WARNING):
        obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=run, resume=True, **{**OPTS, "max_steps": 3})
    assert "no checkpoint found" in caplog.text
    assert [r["step"] for r in read_jsonl(run / "train_log.jsonl")] == [1, 2, 3]  # no duplicated steps


def test_resume_of_a_finished_run_without_checkpoint_is_refused(env, tmp_path, capsys):
    run = env.finished_run(tmp_path / "run")
    before = snapshot(run)
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=run), "--resume")
    assert rc == 2 and "holds a finished run (model/) and no checkpoint" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["truncate-weights", "pickled-optimizer", "empty-state"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, crashed, caplog, damage):
    run = _crashed_run(tmp_path, crashed)
    newest = run / "checkpoints" / "step-2"
    if damage == "truncate-weights":
        f = newest / "trainable.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "pickled-optimizer":
        torch.save({"state": {}, "param_groups": [], "x": Path("not a tensor")}, newest / "optimizer.pt")
    else:
        (newest / "state.json").write_text("")
    model, tok = tiny_model_and_tokenizer()
    with caplog.at_level(logging.WARNING):
        res = obliviate.unlearn(model, tok, FORGET, RETAIN, method="graddiff", run_dir=run, resume=True, **OPTS)
    assert "step-2 is corrupt" in caplog.text and "resuming from the previous one, step-1" in caplog.text
    assert [r["step"] for r in res.log] == [2, 3, 4]
    assert (run / "checkpoints" / "step-2.corrupt").is_dir()  # kept for inspection, never deleted


def test_every_checkpoint_corrupt_is_one_clear_error(env, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = env.config(where=tmp_path, output_dir=out)
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    (out / "checkpoints" / "step-1" / "state.json").write_text('{"step": 1, "scheduler": {"last_epoch": 1}}')
    (out / "checkpoints" / "step-1" / "trainable.safetensors").write_bytes(b"")
    rc, err = cli(capsys, "unlearn", "--config", cfg, "--resume")
    assert rc == 2 and "No checkpoint in" in err and "'trainable.safetensors' is empty" in err
    assert (out / "checkpoints" / "step-1" / "state.json").is_file()


def test_only_checkpoint_with_a_pickled_optimizer_is_refused_cleanly(env, tmp_path, crashed, capsys):
    out = _crashed_run(tmp_path, crashed)
    shutil.rmtree(out / "checkpoints" / "step-1")
    torch.save({"x": Path("pickled")}, out / "checkpoints" / "step-2" / "optimizer.pt")
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=out), "--resume")
    assert rc == 2 and "pickled Python objects" in err
    assert (out / "checkpoints" / "step-2" / "state.json").is_file()  # nothing renamed or removed


def test_long_records_warn_once_with_the_count(caplog):
    from obliviate.data.encode import EncodeConfig, encode_records

    _, tok = tiny_model_and_tokenizer()
    records = FORGET + [{"question": "Q" * 300, "answer": "A" * 100_000}, {"question": "Who?", "answer": "B" * 400}]
    with caplog.at_level(logging.WARNING):
        examples = encode_records(tok, records, EncodeConfig(max_length=128), where="forget")
    lines = [r.getMessage() for r in caplog.records if "max_length" in r.getMessage()]
    assert len(lines) == 1 and "forget: 2 of 6 records are longer than data.max_length=128" in lines[0]
    assert "--set data.max_length=" in lines[0] and max(len(e["input_ids"]) for e in examples) == 128


def test_lora_with_trainable_is_refused(env, tmp_path, capsys):
    cfg = env.config(where=tmp_path, output_dir=tmp_path / "out",
                     train={**TRAIN, "lora": {"r": 2}, "trainable": ["mlp"]})
    rc, err = cli(capsys, "unlearn", "--config", cfg)
    assert rc == 2 and "'train.trainable' cannot be combined with train.lora" in err
    assert not (tmp_path / "out").exists()


def test_report_skips_non_run_dirs_with_reasons(env, tmp_path, capsys):
    good = env.finished_run(tmp_path / "good")
    (tmp_path / "listy").mkdir()
    (tmp_path / "listy" / "summary.json").write_text("[1, 2]")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "train_log.jsonl").write_text('{"step": 1, "lo')
    (tmp_path / "badcfg").mkdir()
    (tmp_path / "badcfg" / "config.yaml").write_text("model: [unclosed\n")
    dirs = [tmp_path / n for n in ("listy", "good", "torn", "badcfg")]
    rc, err = cli(capsys, "report", *dirs, "-o", tmp_path / "r.html")
    assert rc == 0
    assert "summary.json' holds a list" in err and "not a run directory" in err and "is not valid YAML" in err
    assert good.name in (tmp_path / "r.html").read_text()
    rc, err = cli(capsys, "report", *[d for d in dirs if d != good], "-o", tmp_path / "r2.html")
    assert rc == 2 and "No run to report" in err and not (tmp_path / "r2.html").exists()


# --- raw tracebacks ----------------------------------------------------------------------------


def _cfg_with_forget(env, tmp_path, name: str, content: bytes, **over) -> Path:
    (tmp_path / name).write_bytes(content)
    return env.config(where=tmp_path, output_dir=tmp_path / "out", forget={"path": str(tmp_path / name)}, **over)


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", b'{"question": "caf\xe9?", "answer": "x"}\n', "line 1 is not UTF-8 text"),
    ("bad.csv", b"question,answer\ncaf\xe9,x\n", "not UTF-8 text"),
    ("bad.json", b'[\n {"question": "a", "answer": "b"},\n {"question": "c" "answer": "d"}\n]', "line 3, column 19"),
])
def test_unreadable_data_files(env, tmp_path, capsys, name, content, message):
    rc, err = cli(capsys, "unlearn", "--config", _cfg_with_forget(env, tmp_path, name, content))
    assert rc == 2 and message in err and name in err
    assert not (tmp_path / "out").exists()


def test_csv_answers_that_are_numbers_load_as_text(tmp_path):
    (tmp_path / "years.csv").write_bytes(b"question,answer\nWhen did WW2 end?,1945\nHow many legs?,4\n")
    records = obliviate.load_records(tmp_path / "years.csv")
    assert [r["answer"] for r in records] == ["1945", "4"]


@pytest.mark.parametrize("setting, message", [
    ("train.lr=[1,", "the value is not valid YAML"),
    ("train.trainable=['((']", "'train.trainable[0]' '((' is not a valid regular expression"),
    ("method.bet=1", "'ga' has no options"),
])
def test_bad_overrides(env, tmp_path, capsys, setting, message):
    cfg = env.config(where=tmp_path, output_dir=tmp_path / "out", method={"name": "ga"})
    rc, err = cli(capsys, "unlearn", "--config", cfg, "--set", setting)
    assert rc == 2 and message in err


def test_empty_config_file(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    rc, err = cli(capsys, "unlearn", "--config", tmp_path / "empty.yaml")
    assert rc == 2 and "is empty" in err


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is truncated"), ("empty", "is empty"), ("no-tokenizer", "has no tokenizer files"),
    ("pickle", "pickled weight file"),
])
def test_damaged_model_directory(env, tmp_path, capsys, damage, message):
    model = tmp_path / "model"
    shutil.copytree(env.base, model)
    weights = model / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * 0.46)])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "no-tokenizer":
        for f in model.glob("*token*"):
            f.unlink()
    else:
        weights.unlink()
        torch.save({"model.embed_tokens.weight": Path("not a tensor")}, model / "pytorch_model.bin")
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, model=model, output_dir=tmp_path / "out"))
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_damaged_alias_cache_says_how_to_rebuild(env, tmp_path, monkeypatch):
    from obliviate import models

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    cached = tmp_path / "models" / "smollm2-135m"
    shutil.copytree(env.base, cached)
    if hasattr(models, "CACHE_MARKER"):  # the cache's format marker, when the cache records one
        (cached / models.CACHE_MARKER).write_text(json.dumps({"format": models.CACHE_FORMAT}))
    (cached / "model.safetensors").write_bytes((cached / "model.safetensors").read_bytes()[:100])
    with pytest.raises(obliviate.errors.ModelError, match=r"is truncated.*cached conversion.*delete"):
        models.load_model("smollm2-135m")


def test_output_dir_that_is_a_file(env, tmp_path, capsys):
    (tmp_path / "taken").write_text("keep me")
    rc, err = cli(capsys, "unlearn", "--config", env.config(where=tmp_path, output_dir=tmp_path / "taken"))
    assert rc == 2 and "is a file" in err and (tmp_path / "taken").read_text() == "keep me"


def test_corrupt_eval_result_suggests_force(env, tmp_path, capsys):
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "mia.json").write_text('{"suite": "mia", "summ')
    rc, err = cli(capsys, "eval", "--model", env.base, "--suite", "mia", "--out", tmp_path / "run")
    assert rc == 2 and "mia.json: not valid JSON" in err and "--force" in err


@pytest.mark.parametrize("method, hint", [("graddiff", None), ("rmu", "rmu.alpha: 0")])
def test_missing_retain_data_hint(env, tmp_path, capsys, method, hint):
    cfg = yaml.safe_load(env.config(where=tmp_path).read_text())
    del cfg["retain"]
    cfg["method"] = {"name": method, "layer": 1} if method == "rmu" else {"name": method}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = cli(capsys, "unlearn", "--config", tmp_path / "r.yaml")
    assert rc == 2 and f"Method '{method}' needs retain data" in err
    assert "alpha to 0" not in err and (hint is None or hint in err)
