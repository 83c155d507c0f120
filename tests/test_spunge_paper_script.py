"""benchmarks/spunge_paper.py: the task-vector diagnostics on hand-made task vectors, the ToxiGen group
names, and the script end to end in --tiny mode (a tiny random Llama; about 30 s on a busy CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
import torch

from tests.conftest import ROOT, data_dir

# two task vectors of 4 entries; TIES at density 0.25 (paper preset: int(0.25*4)+1 = 2 kept, ties included)
# keeps |tau_1| >= 2 -> entries 1, 3 and |tau_2| >= 2 -> entries 0, 1
TAU1, TAU2 = [1.0, -2.0, 0.0, 3.0], [2.0, 2.0, -1.0, 0.0]
MASKS = [[False, True, False, True], [True, True, False, False]]
# trimmed: [0, -2, 0, 3] and [2, 2, 0, 0]; sum [2, 0, 0, 3]: elected signs [+, none, none, +]
EXPECTED = {
    "norm": [math.sqrt(14), 3.0],
    "kept_trim": [13 / 14, 8 / 9],  # |trimmed|^2 / |tau|^2
    "kept_ties": [9 / 14, 4 / 9],  # tau_1 keeps the 3 (entry 1's sum is 0); tau_2 keeps entry 0's 2
    "sign_agreement": [[1.0, 0.5], [0.5, 1.0]],  # both non-zero at entries 0 (agree) and 1 (disagree)
    "topk_overlap": [[1.0, 0.5], [0.5, 1.0]],  # kept sets {1, 3} and {0, 1}
    "cosine": [[1.0, -2 / (3 * math.sqrt(14))], [-2 / (3 * math.sqrt(14)), 1.0]],
}


def _check(stats):
    for key, want in EXPECTED.items():
        assert torch.tensor(stats[key], dtype=torch.float64) == pytest.approx(torch.tensor(want, dtype=torch.float64)), key


def test_tensor_sums_by_hand():
    from obliviate.spunge.diagnose import summarise, tensor_sums

    sums = tensor_sums([torch.tensor(TAU1), torch.tensor(TAU2)], [torch.tensor(m) for m in MASKS])
    _check(summarise(sums))


def test_task_vector_stats_reads_models_with_the_merge_trim(tmp_path, monkeypatch):
    """From safetensors files, the tensor split in two (model-scope trim spans both) and in
    1-entry chunks: the same statistics as by hand."""
    from safetensors.torch import save_file

    from obliviate.merge import MergeConfig
    from obliviate.spunge import diagnose

    def save(name, values):
        t = torch.tensor(values)
        save_file({"a": t[:2].clone(), "b": t[2:].clone(), "step": torch.tensor([3])}, tmp_path / f"{name}.safetensors")
        return tmp_path / f"{name}.safetensors"

    base = save("base", [0.5, 0.5, 0.5, 0.5])
    models = [save("m1", [v + 0.5 for v in TAU1]), save("m2", [v + 0.5 for v in TAU2])]
    monkeypatch.setattr(diagnose, "CHUNK", 1)
    _check(diagnose.task_vector_stats(base, models, MergeConfig(density=0.25)))
    with pytest.raises(Exception, match="at least two"):
        diagnose.task_vector_stats(base, models[:1], MergeConfig(density=0.25))


def test_every_annotated_group_has_hate_prompts():
    from obliviate.spunge import load_toxigen
    from obliviate.spunge.sources import toxigen_prompt_group

    folder = data_dir("toxigen")
    groups = {r["target_group"] for r in load_toxigen(str(folder))}
    assert toxigen_prompt_group("mental_dis") == "mental_disability"
    missing = [g for g in groups if not (folder / "prompts" / f"hate_{toxigen_prompt_group(g)}_1k.txt").is_file()]
    assert not missing


def test_tiny_run_end_to_end_and_resume(tmp_path, monkeypatch):
    data = data_dir("toxigen").parent
    spec = importlib.util.spec_from_file_location("spunge_paper", ROOT / "benchmarks" / "spunge_paper.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "spunge_paper", script)  # its dataclass resolves annotations through it
    spec.loader.exec_module(script)
    args = ["--tiny", "--out", str(tmp_path / "run"), "--data", str(data)]
    results = script.main(args)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["methods"]) == {"tvn", "rmu", "npo"}
    assert saved["base_steps"] == 4
    for method, r in results["methods"].items():
        assert r["training"]["a"]["black"]["steps"] == 4 and r["training"]["b"]["black"]["steps"] == 2
        assert r["training"]["b"]["unsplit"]["steps"] == 4
        for label in ("base", "spunge_a", "spunge_b"):
            tox = r["models"][label]["toxicity"]
            assert set(tox["greedy"]) == {"all", "black", "mental_dis"}
            assert all(0 <= v["toxic_frac"] <= 1 and 0 <= v["mean_score"] <= 1 for m in tox.values() for v in m.values())
            assert r["models"][label]["wikitext_ppl"] > 1
        chosen = r["merge"]["a"]["chosen"]
        assert chosen["density"] in (0.2, 0.5) and chosen["lam"] == 1.0
        tv = r["diagnostics"]["task_vectors"]
        assert all(0 <= k2 <= k1 <= 1 + 1e-9 for k1, k2 in zip(tv["kept_trim"], tv["kept_ties"]))
        sweep = r["diagnostics"]["lambda_sweep"]  # the chosen lambda (1) is the SPUNGE (a) model itself
        assert [w["lam"] for w in sweep] == [1.0, 2.0] and sweep[0]["toxicity"] == r["models"]["spunge_a"]["toxicity"]
        scaled = r["diagnostics"]["base_scaled"]  # the control: lambda 1 is the base run itself
        assert [w["lam"] for w in scaled] == [1.0, 2.0] and scaled[0]["toxicity"] == r["models"]["base"]["toxicity"]
    # rmu trains 3 down_proj matrices only: TIES's model-scope trim keeps all of those deltas
    assert results["methods"]["rmu"]["diagnostics"]["task_vectors"]["kept_trim"] == pytest.approx([1.0, 1.0])
    md = (tmp_path / "run" / "tables.md").read_text()
    assert "| tvn | black | greedy |" in md and "sign agreement" in md and "Control: the base run's delta" in md
    done = next((tmp_path / "run").glob("tvn-*/paper/subsets/black/done.json"))
    stamp = done.stat().st_mtime_ns
    again = script.main(args)  # resumes: nothing is retrained, every evaluation is read back
    assert done.stat().st_mtime_ns == stamp
    assert again["methods"]["npo"]["models"]["spunge_a"]["toxicity"] == results["methods"]["npo"]["models"]["spunge_a"]["toxicity"]
