"""FALCON's combined gradient with FSDP2-sharded parameters (``torch.distributed.fsdp.fully_shard``)
on CPU/gloo, through the engine's own helpers. Run by tests/test_distributed.py twice: under
``torch.distributed.run`` with 2 processes (each holds half the batch and a shard of every
parameter), and in-process unsharded on the whole batch; both save the full combined gradients."""

import sys

import torch
from dist_worker import OPTIONS
from safetensors.torch import save_file

LAYER = 2


def combined_gradients(out_file: str) -> None:
    import torch.distributed as dist

    import obliviate
    from obliviate.data.encode import EncodeConfig, collate, encode_records
    from obliviate.engine.loop import _accumulate_objectives, _apply_combined, select_trainable
    from obliviate.engine.sharding import is_sharded
    from obliviate.methods import FALCON, FALCONConfig
    from obliviate.methods.base import Aux, Batch, Reference
    from obliviate.methods.tokens import StepTokens, step_tokens
    from obliviate.methods.representation import decoder_blocks
    from obliviate.testing import tiny_model_and_tokenizer

    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    model, tok = tiny_model_and_tokenizer()
    frozen, _ = tiny_model_and_tokenizer()
    frozen.eval().requires_grad_(False)
    method = FALCON(FALCONConfig(layer=LAYER))
    select_trainable(model, method.needs.trainable)
    with torch.no_grad():  # move away from the frozen model, so the retain gradient is not 0
        g = torch.Generator().manual_seed(3)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for block in decoder_blocks(model):
            fully_shard(block)
        fully_shard(model)
    facts = obliviate.make_facts(4, 2, seed=0)
    cfg = EncodeConfig(template="plain")
    forget, retain = encode_records(tok, facts[:4], cfg), encode_records(tok, facts[4:8], cfg)
    per = 4 // world  # rank r holds rows [r*per, (r+1)*per) of the global batch of 4, padded on its own
    pad = tok.pad_token_id
    batch = Batch(forget=collate(forget[rank * per:(rank + 1) * per], pad), retain=collate(retain[rank * per:(rank + 1) * per], pad))
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = any(is_sharded(p) for p in params)
    assert sharded == (world > 1)
    obj: dict = {}
    parts = {"forget": batch.forget, "retain": batch.retain}
    totals = StepTokens.totals([parts])  # what the engine does: token counts of the whole step
    if world > 1:
        dist.all_reduce(totals)
    with step_tokens(StepTokens.for_micro_batch(parts, totals, world, 1)):
        out = method.loss(model, batch, Aux(reference=Reference(frozen)))
        _accumulate_objectives(out.objectives, params, 1, obj,
                               backward=(lambda loss, **kw: loss.backward(**kw)) if sharded else None)
    _apply_combined(obj, params, method.combiner, world, sharded)
    grads = {n: (p.grad.full_tensor() if sharded else p.grad).detach().contiguous()
             for n, p in model.named_parameters() if p.requires_grad}
    if rank == 0:
        save_file(grads, out_file)




def train_run(out: str, method: str, steps: int, resume: bool = False) -> None:
    """A whole ``obliviate.unlearn`` run with a run directory on a model sharded by ``fully_shard``
    (under torchrun) or unsharded (one process): checkpoints, resume and the saved model."""
    import torch.distributed as dist

    import obliviate
    from obliviate.methods.representation import decoder_blocks
    from obliviate.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    frozen, _ = tiny_model_and_tokenizer()
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for block in decoder_blocks(model):
            fully_shard(block)
        fully_shard(model)
    facts = obliviate.make_facts(4, 2, seed=0)
    opts = TRAIN_OPTIONS[method]
    obliviate.unlearn(model, tok, facts[:4], facts[4:], method=method, run_dir=out, resume=resume, overwrite=not resume,
                      max_steps=steps, batch_size=4 // world, progress=False, template="plain", checkpoint_every=2,
                      reference_model=frozen, **opts)


# FALCON as in the DDP test (SGD: its POV amplifies rounding noise, see dist_worker.OPTIONS)
TRAIN_OPTIONS = {"falcon": {**OPTIONS["falcon"], "max_grad_norm": None}, "npo": {"lr": 1e-3, "max_grad_norm": 1.0}}


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if sys.argv[1] == "gradients":
        combined_gradients(sys.argv[2])
    else:  # train OUT METHOD STEPS [resume]
        train_run(sys.argv[2], sys.argv[3], int(sys.argv[4]), resume=len(sys.argv) > 5)
    # Every rank finishes its collectives (and rank 0 its file) before the group goes: tearing
    # gloo down while the other rank is still inside one aborted a worker ("terminate called
    # without an active exception", seen once in a CI-like run).
    dist.barrier()
    dist.destroy_process_group()
