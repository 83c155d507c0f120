"""Run by ``accelerate launch`` in tests/test_distributed.py: a few steps of a method on a tiny
Llama, then each rank saves its final weights as rank<k>.safetensors in the given directory."""

import os
import sys

from safetensors.torch import save_file


# options that make each method deterministic across ranks and quick on a 4-layer model
# FALCON's POV multiplies rounding noise by ~1e3 (strength 1000 inside a tanh): 1e-7 differences in
# the activations (another padding length) move it by 1e-4 in any run, distributed or not. Adam's
# first steps are ~sign(g) and turn that into +-lr in near-zero coordinates, so FALCON is compared
# with SGD, whose update is linear in the gradient.
OPTIONS = {"falcon": {"layer": 2, "optimizer": "sgd", "lr": 0.01}, "di": {"gamma": 3.0}}


def main(out: str, method: str, per_device_batch: int) -> None:
    import obliviate
    from obliviate.testing import tiny_model_and_tokenizer

    facts = obliviate.make_facts(4, 2, seed=0)
    model, tok = tiny_model_and_tokenizer()
    obliviate.unlearn(model, tok, facts[:4], facts[4:], method=method, save=False, max_steps=4,
                      batch_size=per_device_batch, progress=False, template="plain", max_grad_norm=None, **{"lr": 1e-3, **OPTIONS.get(method, {})})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{os.environ.get('RANK', '0')}.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
