"""``obliviate report`` on hand-written run directories: content, colouring direction, embedded
images, no external assets, tolerance of missing pieces, and a render in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.errors import DataError
from obliviate.report import build_report
from obliviate.report.table import mark

# Run A forgets better (lower forget_prob) but keeps less utility than run B.
RUNS = {
    "npo_a": {"forget_prob": 0.0412, "model_utility": 0.3187, "forget_quality": 0.0123, "ppl": 31.25},
    "ga_b": {"forget_prob": 0.2875, "model_utility": 0.4561, "forget_quality": 0.4444, "ppl": 18.5},
}
HIB = {"forget_prob": False, "model_utility": True, "forget_quality": True, "ppl": False}


def make_run(root: Path, name: str, values: dict, steps: int = 12, extra: dict | None = None) -> Path:
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.yaml").write_text(f"model: smollm2-135m\nmethod:\n  name: {name.split('_')[0]}\ntrain:\n  lr: 1.0e-05\n")
    log = [{"step": s, "loss": 3.0 - 0.1 * s, "forget_loss": 1.0 + 0.2 * s} for s in range(1, steps + 1)]
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 13, "lo')  # torn line
    tofu = {k: {"value": values[k], "higher_is_better": HIB[k], "description": f"{k} desc"}
            for k in ("forget_prob", "model_utility", "forget_quality")}
    (d / "eval" / "tofu.json").write_text(json.dumps({"suite": "tofu", "model": name, "summary": tofu, "items": {}, "meta": {}}))
    ppl = {"ppl": {"value": values["ppl"], "higher_is_better": False, "description": "WikiText-2 perplexity"}}
    (d / "eval" / "general.json").write_text(json.dumps({"suite": "general", "model": name, "summary": ppl, "items": {}, "meta": {}}))
    summary = {"method": name.split("_")[0], "forget_metric": {"name": "forget_prob", **tofu["forget_prob"]},
               "utility_metric": "model_utility"}
    (d / "summary.json").write_text(json.dumps(summary))
    for fname, data in (extra or {}).items():
        (d / fname).write_text(json.dumps(data))
    return d


@pytest.fixture
def two_runs(tmp_path):
    return [make_run(tmp_path / "runs", n, v) for n, v in RUNS.items()]


def _row_cells(html: str, key: str) -> list[tuple[str, str]]:
    """(class, text) of the value cells in the metrics-table row of ``key``."""
    row = re.search(rf'<tr><td class="name"[^>]*>{re.escape(key)} .*?</tr>', html)
    assert row, f"no row for {key}"
    return re.findall(r'<td(?: class="(\w*)")?>([^<]*)</td>', row.group(0).split("</span></td>", 1)[1])


def test_mark_follows_direction_and_ties():
    assert mark([1.0, 3.0, 2.0], True) == ["worst", "best", ""]
    assert mark([1.0, 3.0, 2.0], False) == ["best", "worst", ""]
    assert mark([1.0, 1.0, 0.5], True) == ["best", "best", "worst"]
    assert mark([None, 2.0, 1.0], True) == ["", "best", "worst"]
    assert mark([2.0, 2.0], True) == ["", ""]  # nothing to tell apart
    assert mark([1.0, 2.0], None) == ["", ""]  # no direction, no colour


def test_report_content_and_colouring(two_runs, tmp_path):
    out = tmp_path / "out" / "report.html"
    rep = build_report(two_runs, out)
    html = out.read_text()
    assert rep.markdown == out.with_name("report.md") and rep.markdown.is_file()
    for vals in RUNS.values():
        for v in vals.values():
            assert f"{v:.4g}" in html
    # lower is better: A's 0.0412 best, B's 0.2875 worst; higher is better: B's utility best.
    assert _row_cells(html, "tofu/forget_prob") == [("best", "0.0412"), ("worst", "0.2875")]
    assert _row_cells(html, "tofu/model_utility") == [("worst", "0.3187"), ("best", "0.4561")]
    assert _row_cells(html, "general/ppl") == [("worst", "31.25"), ("best", "18.5")]
    assert "Training curves" in html and "name: npo" in html and "name: ga" in html
    # Trade-off axes come from summary.json (a metric dict and a metric name).
    assert "<td class=\"name\">forget_prob</td><td>0.0412</td><td class=\"name\">tofu/model_utility</td><td>0.3187</td>" in html
    md = rep.markdown.read_text()
    assert "| tofu/forget_prob ↓ | **0.0412** | _0.2875_ |" in md


def test_report_is_self_contained(two_runs, tmp_path):
    out = tmp_path / "report.html"
    build_report(two_runs, out)
    html = out.read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 2  # trade-off scatter + training curves
    assert all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)
    assert not re.search(r"https?://|<script|<link|@import|url\(", html)
    assert re.findall(r'(?:src|href)="([^"]*)"', html) == ["data:image/png;base64," + u for u in uris]


def test_optional_sections_and_missing_inputs(tmp_path):
    spunge = {"attributes": {"asian": {"toxicity": 0.21, "mmlu": 0.4}, "women": {"toxicity": {"value": 0.11}, "mmlu": 0.39}}}
    attacks = {"relearn": {"forget_prob": {"before": 0.04, "after": 0.61, "recovery_pct": 55.5}}}
    a = make_run(tmp_path, "spunge_npo", RUNS["npo_a"], extra={"spunge_table.json": spunge, "attacks.json": attacks})
    bare = tmp_path / "bare"
    bare.mkdir()  # a run that wrote only its config: its name appears, with no values
    (bare / "config.yaml").write_text("method: ga\n")
    html_path = tmp_path / "r.html"
    build_report([a, bare], html_path)
    html = html_path.read_text()
    assert "SPUNGE: per-attribute results" in html and "<td class=\"name\">women</td><td>0.11</td>" in html
    assert "Attacks (knowledge recovery)" in html and "<td>55.5</td>" in html and "relearn" in html
    assert html.count("data:image/png;base64,") == 3  # trade-off, curves, attribute bars
    assert "<td>-</td>" in html  # the bare run has no value for the metrics


def test_report_without_any_results(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("method: ga\n")
    build_report([bare], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "data:image" not in html and "Training curves" not in html and "No eval/*.json results" in html


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_report([tmp_path / "nope"], tmp_path / "r.html")
    d = make_run(tmp_path, "npo_x", RUNS["npo_a"])
    (d / "eval" / "tofu.json").write_text("{not json")
    with pytest.raises(DataError, match=r"tofu\.json"):
        build_report([d], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["report", *map(str, two_runs), "-o", str(out), "--title", "forget01 cmp",
                 "--forget-metric", "forget_quality", "--utility-metric", "general/ppl"]) == 0
    assert "2 runs" in capsys.readouterr().out
    html = out.read_text()
    assert "<title>forget01 cmp</title>" in html and (tmp_path / "report.md").is_file()
    assert '<td class="name">tofu/forget_quality</td><td>0.0123</td><td class="name">general/ppl</td>' in html


CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(two_runs, tmp_path):
    from PIL import Image

    out = tmp_path / "report.html"
    build_report(two_runs, out)
    png = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,2000", out.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert png.is_file(), "Chromium wrote no screenshot"
    colours = {c for _, c in Image.open(png).convert("RGB").getcolors(1 << 24)}
    assert (0xC8, 0xEF, 0xC8) in colours and (0xF6, 0xC9, 0xC9) in colours  # best/worst cells styled
    assert (31, 119, 180) in colours  # tab10 blue: the embedded plots were decoded and drawn


def test_reads_what_the_eval_writer_writes(tmp_path):
    results = pytest.importorskip("obliviate.eval.results")
    run = tmp_path / "run"
    res = results.SuiteResult(suite="tofu", model="m")
    res.add("forget_prob", 0.125, higher_is_better=False, description="p")
    res.add("model_utility", float("nan"), higher_is_better=True)
    res.save(run)
    build_report([run], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "tofu/forget_prob" in html and "<td>0.125</td>" in html
    assert "<td>nan</td>" in html  # a NaN metric is shown, not silently dropped


def _suite_run(root: Path, name: str, suite: str, metrics: dict, log: list[dict] | None = None) -> Path:
    d = root / name
    (d / "eval").mkdir(parents=True)
    summary = {k: {"value": v, "higher_is_better": False, "description": f"{k} desc"} for k, v in metrics.items()}
    (d / "eval" / f"{suite}.json").write_text(json.dumps({"suite": suite, "model": name, "summary": summary, "items": {}, "meta": {}}))
    if log:
        (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return d


def test_mark_by_distance_from_a_target():
    assert mark([0.23, 0.52, 0.81], False, target=0.5) == ["", "best", "worst"]  # 0.23 is over-unlearning, not best
    assert mark([0.25, 0.75], True, target=0.5) == ["", ""]  # equally far: nothing to tell apart
    assert mark([-60.0, 5.0, None], False, target=0.0) == ["worst", "best", ""]


def test_mia_auc_and_privleak_are_coloured_by_distance_from_their_ideal(tmp_path):
    values = {"over": (0.23, -60.0), "ideal": (0.52, 5.0), "leaky": (0.81, 40.0)}
    dirs = [_suite_run(tmp_path, n, "mia", {"auc_loss": a, "privleak": p}) for n, (a, p) in values.items()]
    rep = build_report(dirs, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert _row_cells(html, "mia/auc_loss") == [("", "0.23"), ("best", "0.52"), ("worst", "0.81")]
    assert _row_cells(html, "mia/privleak") == [("worst", "-60"), ("best", "5"), ("", "40")]
    assert "closest to 0.5 is best" in html and "closest to 0 is best" in html
    assert "by distance from 0.5" in html  # the legend says so
    assert re.search(r'title="auc_loss desc Coloured by distance from 0\.5', html)  # and the tooltip
    assert "| mia/auc_loss ↔ 0.5 | 0.23 | **0.52** | _0.81_ |" in rep.markdown.read_text()


def test_training_curves_keep_every_run_readable(tmp_path):
    """RMU's loss in the hundreds gets its own axis, so NPO's (below 1) is not a flat line; a shared
    quantity whose runs differ by more than 10x goes on a log scale."""
    from obliviate.report.plots import curves_figure
    from obliviate.report.runs import read_run

    def log(loss, gnorm):
        return [{"step": s, "loss": loss(s), "grad_norm": gnorm, "lr": 1e-5} for s in range(1, 21)]

    runs = [read_run(_suite_run(tmp_path, "rmu", "demo", {"x": 1.0}, log(lambda s: 400.0 - 10 * s, 60.0))),
            read_run(_suite_run(tmp_path, "npo", "demo", {"x": 2.0}, log(lambda s: 0.7 - 0.01 * s, 2.0)))]
    fig = curves_figure(runs)
    axes = {ax.get_title(): ax for ax in fig.get_axes() if ax.get_visible()}
    assert {"loss: rmu", "loss: npo"} <= set(axes)
    lo, hi = axes["loss: npo"].get_ylim()
    assert hi - lo < 0.5  # NPO's axis spans its own 0.5..0.69, not RMU's 200..390
    assert axes["grad_norm (log scale)"].get_yscale() == "log"
    assert axes["lr"].get_yscale() == "linear"
