"""SPUNGE's unlearn step: one unlearning run per subset, all from the same base weights.

A ``SubsetJob`` is self-contained (base model directory, method, options, records) so it can run
in this process (``sequential``), in a fresh process per device (``local``), or as a Ray task
(``ray``; ``pip install 'obliviate[ray]'``). Each job writes an ordinary run directory
(``config.yaml``, ``train_log.jsonl``, ``checkpoints/``, ``model/``) and, last, ``done.json``
(atomically): a subset with ``done.json`` is skipped on resume; one without it resumes from its
newest checkpoint. A failed subset fails the run with its error; finished subsets stay done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from ..errors import ConfigError, ObliviateError
from ..io import write_json

Backend = Literal["sequential", "local", "ray"]
DONE = "done.json"


class SubsetFailed(ObliviateError):
    """One subset's unlearning run raised; the message carries its error."""


@dataclass(frozen=True)
class BackendConfig:
    """Where the per-subset runs execute (the ``backend:`` section)."""

    name: Backend = field(default="sequential", metadata={"help": "'sequential' (default), 'local' (one process per device) or 'ray'."})
    workers: int | None = field(default=None, metadata={"help": "local: parallel processes (default: number of GPUs, or 1)."})
    ray_address: str | None = field(default=None, metadata={"help": "ray: cluster address (None: start a local Ray instance)."})
    ray_num_cpus: int | None = field(default=None, metadata={"help": "ray: CPUs of a local instance (None: all)."})
    gpus_per_task: float = field(default=1.0, metadata={"help": "ray: GPUs per subset task when GPUs exist."})

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"'backend.workers' must be >= 1, got {self.workers}.")


@dataclass(frozen=True)
class SubsetJob:
    name: str
    model: str
    method: str
    options: dict[str, Any]
    forget: list[dict[str, Any]]
    retain: list[dict[str, Any]] | None
    out_dir: str
    dtype: str = "float32"


def is_done(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / DONE).is_file()


def run_job(job: SubsetJob) -> str:
    """Unlearn one subset from the base model; returns the saved model directory."""
    from ..api import unlearn
    from ..engine.checkpoint import list_checkpoints
    from ..models import load_model

    out = Path(job.out_dir)
    resume = bool(list_checkpoints(out / "checkpoints"))
    model, tok = load_model(job.model, dtype=job.dtype)
    result = unlearn(model, tok, job.forget, job.retain, method=job.method, run_dir=out, overwrite=not resume,
                     resume=resume, **job.options)
    last = result.log[-1] if result.log else {}
    write_json(out / DONE, {"subset": job.name, "records": len(job.forget), "steps": result.steps,
                            "final": {k: v for k, v in last.items() if isinstance(v, (int, float))}})
    return str(out / "model")


def _failed(name: str, err: BaseException) -> SubsetFailed:
    return SubsetFailed(f"Subset '{name}' failed: {type(err).__name__}: {err}. Finished subsets are kept; fix the "
                        f"cause and rerun with --resume to run only the unfinished ones.")


def run_jobs(jobs: Sequence[SubsetJob], backend: BackendConfig | None = None) -> dict[str, str]:
    """Run every unfinished job on ``backend``; returns name -> model directory for all jobs."""
    backend = backend or BackendConfig()
    todo = [j for j in jobs if not is_done(j.out_dir)]
    if todo:
        {"sequential": _sequential, "local": _local, "ray": _ray}[backend.name](todo, backend)
    return {j.name: str(Path(j.out_dir) / "model") for j in jobs}


def _sequential(jobs: Sequence[SubsetJob], backend: BackendConfig) -> None:
    for job in jobs:
        try:
            run_job(job)
        except Exception as e:
            raise _failed(job.name, e) from e


def _claim_device(queue, cpu_threads: int) -> None:
    """Worker initialiser: take one GPU (the only one this process sees), or, on a CPU-only
    machine, an equal share of the cores (n workers x all cores each would oversubscribe them)."""
    device = queue.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    else:
        import torch

        torch.set_num_threads(cpu_threads)


def _local(jobs: Sequence[SubsetJob], backend: BackendConfig) -> None:
    """A process pool with one worker per GPU (each sees only its own device), or ``workers`` CPU workers."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    gpus = torch.cuda.device_count()
    n = backend.workers or max(1, gpus)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for i in range(n):
        queue.put(i % gpus if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // n)
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_claim_device, initargs=(queue, threads)) as pool:
        futures = {job.name: pool.submit(run_job, job) for job in jobs}
        errors = {}
        for name, f in futures.items():
            try:
                f.result()
            except Exception as e:
                errors[name] = e
    if errors:
        name, err = next(iter(errors.items()))
        raise _failed(name, err) from err


def _ray(jobs: Sequence[SubsetJob], backend: BackendConfig) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend 'ray' needs Ray: pip install 'obliviate[ray]'.") from None
    if not ray.is_initialized():
        ray.init(address=backend.ray_address, num_cpus=backend.ray_num_cpus if backend.ray_address is None else None,
                 include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    gpus = backend.gpus_per_task if ray.cluster_resources().get("GPU", 0) > 0 else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1)(run_job)
    refs = {job.name: task.remote(job) for job in jobs}
    errors = {}
    for name, ref in refs.items():
        try:
            ray.get(ref)
        except Exception as e:
            errors[name] = getattr(e, "cause", None) or e
    if errors:
        name, err = next(iter(errors.items()))
        raise _failed(name, err) from err
