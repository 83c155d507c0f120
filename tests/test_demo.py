"""The demo's plumbing on a tiny saved model (seconds): plant, unlearn with a method and with
SPUNGE around one, evaluate, and write a run directory per method plus the comparison report."""

from __future__ import annotations

import json


def test_demo_writes_runs_and_report(tmp_path, tiny, monkeypatch):
    from obliviate.demo import DemoConfig, run_demo

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    model, tok = tiny
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    cfg = DemoConfig(model=str(tmp_path / "tiny"), people=3, facts_per_person=2, forget_people=2, plant_steps=2,
                     steps=2, batch_size=2, methods=("ga", "spunge:npo"), out=str(tmp_path / "out"))
    rows = run_demo(cfg, progress=False)
    assert [r["method"] for r in rows] == ["planted (before)", "ga", "spunge:npo"]
    out = tmp_path / "out"
    for name, row in zip(("planted", "ga", "spunge_npo"), rows):
        demo = json.loads((out / name / "eval" / "demo.json").read_text())
        assert demo["summary"]["forget_prob"]["value"] == row["forget_prob"]
        assert json.loads((out / name / "summary.json").read_text())["forget_metric"] == "demo/forget_prob"
    assert json.loads((out / "demo_table.json").read_text()) == rows
    html = (out / "report.html").read_text()
    assert "spunge_npo" in html and "demo/kept_prob" in html
