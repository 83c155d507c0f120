"""Merge fault injection (issue 16): truncated, header-truncated and empty weight files are a
clear error naming the file (exit code 2, no output written), never zeros; an --out that is or
overlaps an input is refused even with --overwrite, and the input stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from obliviate.cli import main
from obliviate.errors import ModelError
from obliviate.merge.stio import SafetensorsFile


def _model_dir(path, seed):
    g = torch.Generator().manual_seed(seed)
    path.mkdir()
    save_file({"w": torch.randn(64, 32, generator=g), "b": torch.randn(32, generator=g)}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def _dirs(tmp_path):
    return _model_dir(tmp_path / "base", 0), _model_dir(tmp_path / "a", 1), _model_dir(tmp_path / "b", 2)


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _merge(capsys, *args):
    code = main(["merge", *map(str, args)])
    return code, capsys.readouterr().err


def test_truncated_weights_are_an_error_not_zeros(tmp_path, capsys):
    base, a, b = _dirs(tmp_path)
    f = a / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * 0.46)])
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", tmp_path / "out")
    assert code == 2
    assert str(f) in err and "truncated" in err and "ends at byte" in err
    assert not (tmp_path / "out").exists()


def test_header_truncated_and_empty_files(tmp_path, capsys):
    base, a, b = _dirs(tmp_path)
    f = b / "model.safetensors"
    (n,) = struct.unpack("<Q", f.read_bytes()[:8])
    f.write_bytes(f.read_bytes()[: 8 + n // 2])  # cut inside the JSON header
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", tmp_path / "out")
    assert code == 2 and str(f) in err and "header claims" in err
    f.write_bytes(b"")
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", tmp_path / "out")
    assert code == 2 and str(f) in err and "0 bytes" in err
    f.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", tmp_path / "out")
    assert code == 2 and str(f) in err and "not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_short_read_after_open_is_an_error(tmp_path):
    base, _, _ = _dirs(tmp_path)
    f = base / "model.safetensors"
    st = SafetensorsFile(f)  # header fine when opened ...
    f.write_bytes(f.read_bytes()[:-100])  # ... then the file shrinks
    with pytest.raises(ModelError, match="returned .* of its"):
        st.read("w")


def test_out_equal_to_or_overlapping_an_input_is_refused(tmp_path, capsys):
    base, a, b = _dirs(tmp_path)
    before = _digest(base), _digest(a)
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", base, "--overwrite")
    assert code == 2 and "is the base" in err
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", a, "--overwrite")
    assert code == 2 and "is input model 1" in err
    code, err = _merge(capsys, "--base", base, "--models", a, b, "--out", base / "merged", "--overwrite")
    assert code == 2 and "is inside the base" in err
    code, err = _merge(capsys, "--base", base / "model.safetensors", "--models", a / "model.safetensors",
                       "--out", tmp_path, "--overwrite")
    assert code == 2 and "contains the base" in err
    assert (_digest(base), _digest(a)) == before and not (base / "merged").exists()
    # a legitimate --overwrite replaces the old output only once the new one is complete
    out = tmp_path / "out"
    assert _merge(capsys, "--base", base, "--models", a, b, "--out", out)[0] == 0
    assert _merge(capsys, "--base", base, "--models", a, b, "--out", out, "--preset", "mergekit", "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left behind


def test_merge_help_documents_presets(capsys):
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    text = capsys.readouterr().out
    for word in ("--preset", "paper", "mergekit", "legacy", "--trim-scope", "--trim-count", "--sign-tie",
                 "--no-normalize", "seeded per"):
        assert word in text, word
