"""Wall time and peak memory of one block of work (one bench row).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` (reset at the start). On Linux CPU it is
the process's peak resident set (``VmHWM``), reset at the start by writing 5 to
``/proc/self/clear_refs``; where that is not possible the peak is the process's lifetime
``ru_maxrss`` and the result says so (``peak_memory_scope: "process"``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def measure() -> Iterator[dict]:
    """Yield a dict filled on exit with ``seconds``, ``peak_memory_mb`` and ``peak_memory_scope``."""
    import torch

    out: dict = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        scope = "cuda"
    else:
        scope = "block" if _reset_hwm() and _vm_hwm_mb() is not None else "process"
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = round(time.perf_counter() - t0, 1)
        if cuda:
            out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        elif scope == "block":
            out["peak_memory_mb"] = round(_vm_hwm_mb() or 0.0, 1)
        else:
            import resource

            out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["peak_memory_scope"] = scope
