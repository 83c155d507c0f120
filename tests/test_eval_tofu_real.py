"""TOFU suite on the real TOFU files with SmolLM2-135M (small subsets so it stays fast)."""

import json

import pytest

from tests.conftest import data_dir


@pytest.mark.slow
def test_tofu_suite_on_real_files_with_smollm2(smollm2_path, tmp_path):
    import obliviate

    tofu = data_dir("tofu")
    model, tok = obliviate.load_model(smollm2_path)
    n = 4  # items per split; short generations (TOFU's default is 200 tokens) keep this under a minute
    res = obliviate.evaluate(model, tok, suites=["tofu"], run_dir=tmp_path, tofu_dir=str(tofu), max_items=n,
                             gen_max_length=72, batch_size=8, forget_split="forget01")
    tofu_res = res["tofu"]
    for name in ("forget", "retain", "real_authors", "world_facts"):
        assert len(tofu_res.items[f"{name}_prob"]) == n
        assert 0 < tofu_res.value(f"{name}_prob") < 1
        assert 0 < tofu_res.value(f"{name}_truth_ratio") <= 1
    assert 0 < tofu_res.value("model_utility") < 1
    for name in ("real_authors", "world_facts"):  # normalised over the options vs the raw Q_A_Prob
        raw, norm = tofu_res.items[f"{name}_prob_raw"], tofu_res.items[f"{name}_prob"]
        assert len(raw) == n and all(0 < r < 1 for r in raw) and raw != norm
    assert tofu_res.value("world_facts_rouge") > 0.1  # it answers some world facts (e.g. Canberra)
    assert tofu_res.value("forget_rouge") < 0.9  # ... but does not know the fictitious authors
    saved = json.loads((tmp_path / "eval" / "tofu.json").read_text())
    assert saved["summary"]["model_utility"]["higher_is_better"] is True
    assert saved["meta"]["timings"]["generate_items"] == 4 * n
