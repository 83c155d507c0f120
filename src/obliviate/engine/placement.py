"""Where a frozen model (reference, teacher) lives: next to the trained model, or in host memory."""

from __future__ import annotations

import torch


def place_frozen(module: torch.nn.Module, device, offload: bool) -> torch.nn.Module:
    """Freeze ``module`` (eval, no grad) and put it on ``device``; with ``offload`` its weights stay in
    CPU memory and each submodule is moved to ``device`` only for its own forward (accelerate's
    ``cpu_offload`` hooks), so the device never holds a second full model. Returns the module."""
    module.eval().requires_grad_(False)
    if not offload:
        return module.to(device)
    from accelerate import cpu_offload

    return cpu_offload(module.to("cpu"), execution_device=torch.device(device))
