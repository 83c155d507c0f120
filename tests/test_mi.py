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
    ksg = select_layer(model, encode_records(tok, forget), encode_records(tok, retain), tok.pad_token_id, n_samples=10,
                       estimator="ksg")
    assert rc == 0 and f"selected layer: {ksg.layer} by KSG (FALCON's default estimator" in out
    assert f"{sel.layer} by the reference estimator" in out and (tmp_path / "mi.png").stat().st_size > 1000
    assert main(["select-layer", "--model", str(tmp_path / "m"), "--forget", str(tmp_path / "f.jsonl"),
                 "--retain", str(tmp_path / "r.jsonl"), "--layers", "9"]) == 2  # out of range: user error


@pytest.mark.parametrize("d,rho", [(1, 0.0), (1, 0.6), (1, 0.9), (2, 0.6), (2, 0.9)])
def test_ksg_recovers_gaussian_mutual_information(d, rho):
    from obliviate.analysis.mi import ksg_mi

    # d independent pairs with correlation rho: I = -d/2 log(1 - rho^2). At n = 2000 KSG (k = 3) is
    # within ~0.05 nats for d <= 2 (it underestimates more as d grows: 0.73 vs 0.89 at d = 4, rho 0.6).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, d))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((2000, d))
    assert abs(ksg_mi(x, y) - (-d / 2 * np.log(1 - rho**2))) < 0.1


def test_ksg_estimator_is_comparable_across_layer_like_embeddings():
    """The same 3-D Gaussian pair (true I = 1.53 nats) embedded like different layers: other widths,
    scales (x0.01 .. x100) and random linear maps. The whitened fixed-dimension KSG gives the same
    value each time; the reference PCA-95% + KDE estimate swings by tens of nats."""
    rng = np.random.default_rng(0)
    d, rho, n = 3, 0.8, 300
    x = rng.standard_normal((n, d))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    ksg, ref = [], []
    for width, scale in ((8, 1.0), (64, 100.0), (576, 0.01)):
        f = scale * (x @ rng.standard_normal((d, width))) + 0.01 * scale * rng.standard_normal((n, width))
        r = scale * (y @ rng.standard_normal((d, width))) + 0.01 * scale * rng.standard_normal((n, width))
        ksg.append(mutual_information(f, r, estimator="ksg", components=3).mi)
        ref.append(mutual_information(f, r).mi)
    assert max(ksg) - min(ksg) < 0.15, ksg
    # KSG is biased low in 3-D at n = 300 (1.10-1.30 measured over seeds vs 1.53); what matters for
    # choosing a layer is that the bias is the same at every layer.
    assert all(0.9 < v < 1.6 for v in ksg), ksg
    assert max(ref) - min(ref) > 5, ref


def test_unknown_estimator_is_a_clear_error():
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown MI estimator 'kgs'"):
        mutual_information(np.zeros((5, 2)), np.zeros((5, 2)), estimator="kgs")
