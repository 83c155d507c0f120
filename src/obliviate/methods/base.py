"""The method contract: what an unlearning method declares and computes.

A method is a small object with a ``needs`` declaration and a ``loss(model, batch, aux)``. The
engine (``obliviate.engine``) owns the loop, optimizer, device, precision and checkpoints, and
provides exactly what ``needs`` declares: a frozen reference model only if ``reference`` is set,
cached reference log-probs only if ``reference_forget_logprob`` is set, a retain batch only if
``retain`` is set, a second answer per forget example only if ``alternate`` is set. Methods never
subclass the engine.

A method that wants its objectives' gradients combined by something other than a plain sum
(FALCON's projection) returns them separately in ``LossOutput.objectives`` and sets
``combiner`` (see ``obliviate.engine.combine``).

Optional hooks, each found with ``hasattr`` and called only if present: ``alternate_answer(index)``
(the text of forget example ``index``'s alternate answer; required with ``Needs.alternate``),
``on_step_end(step, logged)`` (after each optimizer step, with the step's logged values averaged
over micro-steps and processes, so every process sees the same numbers), and
``state_dict()``/``load_state_dict(state)`` (JSON-serialisable method state, e.g. PDU's dual
variable, saved in every checkpoint and restored on resume). Besides these: ``attach_tokenizer``,
``set_frozen_offload``, ``prepare`` and ``finalize`` (see ``engine/loop.py``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Needs:
    """What a method's loss reads; the engine provides this and nothing more."""

    retain: bool = False
    """A retain batch paired with every forget batch (the retain loader cycles)."""
    reference: bool = False
    """A frozen copy of the starting model (with LoRA: the base model, adapters disabled)."""
    reference_forget_logprob: bool = False
    """log pi_ref(y|x) of each forget sequence (and of its alternate answer, with ``alternate``);
    computed once before training and cached."""
    alternate: bool = False
    """A second answer to each forget prompt (``Batch.alternate``, row i pairs with ``batch.forget``
    row i): the method's ``alternate_answer(index)``, e.g. a refusal for IdkDPO/IdkNLL."""
    trainable: tuple[str, ...] = ()
    """Regexes over parameter names selecting the trainable parameters; () means all."""


@dataclass
class Batch:
    """One step's data: right-padded tensors (``input_ids``, ``attention_mask``, ``labels``, ``index``)."""

    forget: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor] | None = None
    alternate: dict[str, torch.Tensor] | None = None
    """Same prompts as ``forget``, each with its alternate answer (only with ``Needs.alternate``)."""


class Reference:
    """A frozen model to compare against: a separate module, or the trained peft model with
    its adapters disabled (no second copy of the weights)."""

    def __init__(self, module: torch.nn.Module, disable_adapters: bool = False):
        self.module = module
        self.disable_adapters = disable_adapters

    @contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """Context in which ``self.module`` computes the reference function (no grad)."""
        with torch.no_grad():
            if self.disable_adapters:
                inner = getattr(self.module, "module", self.module)  # unwrap DDP
                with inner.disable_adapter():
                    yield inner
            else:
                yield self.module

    def __call__(self, **inputs: torch.Tensor) -> Any:
        with self.active() as m:
            return m(**inputs)


@dataclass
class Aux:
    """Extra inputs the engine provides, as declared in ``Needs``."""

    step: int = 0
    reference: Reference | None = None
    ref_forget_logprob: torch.Tensor | None = None
    """[B] cached log pi_ref(y|x) for ``batch.forget`` (same order)."""
    ref_alternate_logprob: torch.Tensor | None = None
    """[B] cached log pi_ref(y'|x) for ``batch.alternate`` (``reference_forget_logprob`` + ``alternate``)."""


@dataclass
class LossOutput:
    """A method's result for one batch.

    ``loss`` is the scalar to minimise. Methods with a gradient combiner instead put each
    objective in ``objectives`` (name -> scalar) and may leave ``loss`` as their weighted sum for
    logging. ``metrics`` are floats for the log (e.g. ``forget_nll``).
    """

    loss: torch.Tensor
    objectives: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]
    needs: Needs

    def loss(self, model: torch.nn.Module, batch: Batch, aux: Aux) -> LossOutput: ...


def forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    """Run ``model`` on a batch dict (ignoring ``labels``/``index``, so HF does not compute its own loss)."""
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)
