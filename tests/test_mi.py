"""Mutual-information layer selection (analysis/mi.py) and the select-layer command."""

import json

import numpy as np
import pytest

from obliviate.analysis import kde_entropy, mutual_information, select_from_states, select_layer


def test_kde_entropy_of_standard_normal():
    x = np.random.default_rng(0).standard_normal(2000)
    assert abs(kde_entropy(x) - 0.5 * np.log(2 * np.pi * np.e)) < 0.05  # 1.419 nats


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.8, 0.9])
def test_mi_tracks_gaussian_closed_form(rho):
    # Tolerance 0.07 nats: at n = 1000 the resubstitution KDE over-estimates each log-density by
    # the point's own kernel, more in 2-D (joint) than 1-D, which biases I up by ~0.02-0.05
    # (measured over seeds); a wrong formula (e.g. a sign or a missing term) is off by >> 0.1.
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(1000)
    est = mutual_information(x[:, None], y[:, None]).mi
    assert abs(est - (-0.5 * np.log(1 - rho**2))) < 0.07, est


def test_select_from_states_finds_planted_layer():
    # 6 layers, d = 16 (> 10: the PCA path runs); retain depends on forget except at layer 4.
    rng = np.random.default_rng(0)
    n, d = 120, 16
    fs, rs = [], []
    for layer in range(6):
        f = rng.standard_normal((n, d))
        r = rng.standard_normal((n, d)) if layer == 4 else f @ rng.standard_normal((d, d)) * 0.5 + 0.1 * rng.standard_normal((n, d))
        fs.append(f)
        rs.append(r)
    sel = select_from_states(fs, rs)
    assert sel.layer == 4, sel.mi
    assert min(sel.mi.values()) == sel.mi[4]


def test_select_layer_on_tiny_model_and_cli(tiny, tmp_path, capsys):
    from obliviate.cli import main
    from obliviate.data.encode import encode_records
    from obliviate.models import save_model

    model, tok = tiny
    forget = [{"question": f"Q{i} XZ?", "answer": f"A{i * 7} JK"} for i in range(12)]
    retain = [{"question": f"what is {w}?", "answer": f"it is {w}"} for w in "abcdefghijkl"]
    sel = select_layer(model, encode_records(tok, forget), encode_records(tok, retain), tok.pad_token_id, n_samples=10)
    assert sel.layers == (0, 1, 2, 3) and sel.layer in sel.layers and all(np.isfinite(list(sel.mi.values())))
    save_model(model, tok, tmp_path / "m")
    for name, rows in (("f.jsonl", forget), ("r.jsonl", retain)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["select-layer", "--model", str(tmp_path / "m"), "--forget", str(tmp_path / "f.jsonl"),
               "--retain", str(tmp_path / "r.jsonl"), "--samples", "10", "--out", str(tmp_path / "mi.png")])
    out = capsys.readouterr().out
    assert rc == 0 and f"selected layer: {sel.layer}" in out and (tmp_path / "mi.png").stat().st_size > 1000
    assert main(["select-layer", "--model", str(tmp_path / "m"), "--forget", str(tmp_path / "f.jsonl"),
                 "--retain", str(tmp_path / "r.jsonl"), "--layers", "9"]) == 2  # out of range: user error
