"""Checkpoint/resume: an interrupted run resumed from its checkpoint ends with the same
weights as an uninterrupted run; NaN stops the run with a clear error naming the last good checkpoint."""

import pytest
import torch

import obliviate
from obliviate.errors import ConfigError, TrainingDiverged
from obliviate.testing import tiny_model_and_tokenizer

FACTS = obliviate.make_facts(4, 2, seed=0)
OPTS = dict(max_steps=8, lr=1e-3, batch_size=2, checkpoint_every=3, progress=False, template="plain", seed=5,
            warmup_steps=2, scheduler="cosine")


class Crash(Exception):
    pass


def _crash_at(step):
    def cb(done, record):
        if done == step:
            raise Crash

    return cb


@pytest.mark.parametrize("method", ["npo", "graddiff"])
def test_resume_matches_uninterrupted(tmp_path, method):
    m1, tok = tiny_model_and_tokenizer()
    obliviate.unlearn(m1, tok, FACTS[:4], FACTS[4:], method=method, run_dir=tmp_path / "a", **OPTS)

    m2, tok = tiny_model_and_tokenizer()
    with pytest.raises(Crash):
        obliviate.unlearn(m2, tok, FACTS[:4], FACTS[4:], method=method, run_dir=tmp_path / "b",
                          callbacks=[_crash_at(5)], **OPTS)
    assert (tmp_path / "b" / "checkpoints" / "step-3").is_dir()
    m3, tok = tiny_model_and_tokenizer()  # a fresh process would reload the starting model
    with pytest.raises(ConfigError, match="not empty"):
        obliviate.unlearn(m3, tok, FACTS[:4], FACTS[4:], method=method, run_dir=tmp_path / "b", **OPTS)
    res = obliviate.unlearn(m3, tok, FACTS[:4], FACTS[4:], method=method, run_dir=tmp_path / "b", resume=True, **OPTS)
    assert [r["step"] for r in res.log] == [4, 5, 6, 7, 8]
    for (n, a), (_, b) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.equal(a, b), n
    from obliviate.io import read_jsonl

    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "train_log.jsonl")] == list(range(1, 9))
    assert (tmp_path / "b" / "model" / "model.safetensors").is_file()


def test_nan_stops_and_keeps_checkpoint(tmp_path):
    model, tok = tiny_model_and_tokenizer()

    def poison(done, record):
        if done == 4:
            with torch.no_grad():
                model.model.embed_tokens.weight[:, 0] = float("nan")

    # the state after step 4 is the bad one (its loss is NaN): the last good state is step 3's, verified
    # by step 4's finite loss and written then (tests/test_faults.py checks its values)
    with pytest.raises(TrainingDiverged, match=r"step 5.*last good state is checkpoint .*step-3 \(after 3 steps"):
        obliviate.unlearn(model, tok, FACTS[:4], method="ga", run_dir=tmp_path, callbacks=[poison],
                          **{**OPTS, "checkpoint_every": 1})
    assert (tmp_path / "checkpoints" / "step-3" / "trainable.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "step-4").exists()
