"""`obliviate unlearn --config` end to end on a tiny saved model: the run directory has everything
issue 6 lists (config.yaml, train_log.jsonl, eval/*.json, summary.json, model/, report.html), and a
second run into the same directory is refused without touching it."""

from __future__ import annotations

import json

import yaml

from obliviate.cli import main
from obliviate.io import read_jsonl


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_unlearn_cli_writes_full_run_dir(tmp_path, tiny, capsys):
    model, tok = tiny
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    forget = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker in town {i}."} for i in range(6)]
    retain = [{"question": f"What is {i} plus one?", "answer": f"{i} plus one is {i + 1}."} for i in range(6)]
    holdout = [{"question": f"Who is visitor {i}?", "answer": f"Visitor {i} is a potter from a far city."} for i in range(6)]
    for name, recs in (("forget", forget), ("retain", retain), ("holdout", holdout)):
        _write_jsonl(tmp_path / f"{name}.jsonl", recs)
    run = tmp_path / "run"
    cfg = {
        "model": str(tmp_path / "base"),
        "forget": {"path": str(tmp_path / "forget.jsonl")},
        "retain": {"path": str(tmp_path / "retain.jsonl")},
        "method": {"name": "graddiff"},
        "train": {"lr": 1e-3, "max_steps": 3, "batch_size": 3},
        "output_dir": str(run),
        "eval": {"suites": ["mia"], "config": {"mia_forget": str(tmp_path / "forget.jsonl"),
                                               "mia_holdout": str(tmp_path / "holdout.jsonl")},
                 "forget_metric": "mia/auc_loss"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["unlearn", "--config", str(tmp_path / "run.yaml")]) == 0

    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["name"] == "graddiff"
    assert [r["step"] for r in read_jsonl(run / "train_log.jsonl") if "step" in r][-1] == 3
    assert (run / "model" / "config.json").is_file()
    mia = json.loads((run / "eval" / "mia.json").read_text())
    assert 0.0 <= mia["summary"]["auc_loss"]["value"] <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "graddiff" and summary["steps"] == 3
    assert summary["eval"]["mia"]["auc_loss"] == mia["summary"]["auc_loss"]["value"]
    html = (run / "report.html").read_text()
    assert "graddiff" in html and "auc_loss" in html

    # the same output_dir again: refused with a one-line error, nothing touched
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["unlearn", "--config", str(tmp_path / "run.yaml")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_every_command_help_renders():
    """argparse formats help lazily: a stray '%' in a help text only fails when a user asks for --help."""
    import argparse

    from obliviate.cli import build_parser

    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    parsers = list(walk(build_parser()))
    assert len(parsers) > 10
    for p in parsers:
        assert p.format_help()
