"""The bench loop shared by every benchmark: models, rows, resume, leaderboard, report.

A benchmark (``tofu.py``, ``muse.py``) turns its config into a ``Plan``: the data (forget set,
the methods' retain set, the target and retain models' training sets), how to evaluate a model
(suites and an ``EvalConfig`` given the retain row's directory) and the leaderboard columns.
``run_plan`` then:

1. owns ``out`` (``bench.json``): a foreign non-empty folder is refused, and so is reusing rows
   made with other settings (the differing keys are named; ``force`` re-runs everything);
2. makes (or takes) the retain and target models, cached by (model, data, recipe);
3. evaluates the retain row first (the reference of forget quality and privleak), then the
   target (both evaluations cached too: ``reference_key``), then every method run from the
   target with the bench's fixed settings;
4. writes ``leaderboard.json``, ``leaderboard.md``, ``report.html`` and ``report.md``.

A row is finished when ``<out>/<row>/bench_row.json`` exists; a re-run skips finished rows and
restarts unfinished ones from scratch. Wall time and peak memory come from ``measure.py``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..io import path_digest, update_summary, write_json, write_text
from .defaults import DATA_OPTIONS, PDU_EPSILON_MARGIN, method_options
from .measure import measure

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything ``run_plan`` needs; built by a benchmark from its config."""

    title: str
    out: Path
    model: str
    methods: tuple[str, ...]
    forget: list[dict[str, Any]]
    retain: list[dict[str, Any]]
    """The methods' retain data."""
    target_train: list[dict[str, Any]]
    retain_train: list[dict[str, Any]]
    finetune_options: Callable[[int], dict[str, Any]]
    """Fine-tuning options of the target/retain model for a training set of N records."""
    suites: tuple[str, ...]
    eval_config: Callable[[Path | None], Any]
    """The ``EvalConfig`` of a row, given the retain row's directory (None for the retain row itself)."""
    columns: tuple[tuple[str, str, str], ...]
    """(leaderboard key, suite/metric, header)."""
    config: dict[str, Any]
    method_settings: dict[str, Any]
    """steps, batch_size, max_length, seed, keep_models, lr_scale."""
    target: str | None = None
    retain_model: str | None = None
    split_by: str | None = None
    """The attribute SPUNGE splits the forget set by."""
    refusals: str | None = None
    """Refusal answers for IdkDPO / IdkNLL (TOFU's idontknow.jsonl)."""
    self_reference: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None
    """Fills the retain row's reference-relative metrics (e.g. forget quality of the retain model vs itself)."""
    cache_kind: str = "bench"
    forget_metric: str = ""
    utility_metric: str = ""
    notes: list[str] = field(default_factory=list)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def check_model_dirs(**dirs: str | None) -> None:
    for key, d in dirs.items():
        if d is not None and not (Path(d) / "config.json").is_file() and not (Path(d) / "adapter_config.json").is_file():
            raise ConfigError(f"--{key.replace('_', '-')} '{d}' is not a model directory (no config.json); give a "
                              f"Hugging Face model folder or leave it out to fine-tune one here.")


def prepare_out(out: Path, row_config: dict[str, Any], config: dict[str, Any], force: bool,
                defaults: dict[str, Any] | None = None) -> None:
    """Own ``out``: refuse a foreign non-empty folder; refuse reusing rows made with other settings.
    A key missing from an older ``bench.json`` counts as its default (``defaults``): the setting did
    not exist yet, and its default is what those rows were made with."""
    marker = out / "bench.json"
    if out.is_file():
        raise ConfigError(f"--out '{out}' is a file; give a directory.")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ConfigError(f"--out '{out}' is not empty and is not a bench directory (no bench.json); choose another.")
    if marker.is_file() and not force:
        try:
            old = json.loads(marker.read_text()).get("row_config", {})
        except ValueError:
            raise ConfigError(f"'{marker}' is corrupt; pass --force to re-run every row.") from None
        defaults = defaults or {}
        diff = sorted(k for k in row_config if json.dumps(old.get(k, defaults.get(k)), default=str)
                      != json.dumps(row_config[k], default=str))
        if diff:
            raise ConfigError(f"'{out}' holds rows made with other settings ({', '.join(diff)} differ); pass --force to "
                              f"re-run every row, or choose another --out.")
    if force and out.is_dir():
        for child in out.iterdir():
            if (child / "bench_row.json").is_file() or (child / "summary.json").is_file():
                shutil.rmtree(child)
    write_json(marker, {"row_config": row_config, "config": config})


def _done(run_dir: Path) -> dict[str, Any] | None:
    p = run_dir / "bench_row.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except ValueError:
        log.warning("%s is corrupt; re-running that row", p)
        return None


def _finish_row(plan: Plan, run_dir: Path, name: str, model, tok, ecfg, stats: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``model`` into ``run_dir`` and write its ``bench_row.json`` (the row's completion mark)."""
    from ..eval.api import evaluate

    with measure() as ev_stats:
        results = evaluate(model, tok, suites=plan.suites, run_dir=run_dir, config=ecfg, model_name=name, force=True)
    values = {s: {k: m.value for k, m in r.summary.items()} for s, r in results.items()}
    row: dict[str, Any] = {"row": name}
    for key, path, _ in plan.columns:
        suite, metric = path.split("/")
        row[key] = values.get(suite, {}).get(metric)
    row.update(steps=stats.get("steps"), seconds=stats.get("seconds"), peak_memory_mb=stats.get("peak_memory_mb"),
               eval_seconds=ev_stats["seconds"])
    update_summary(run_dir, method=name, forget_metric=plan.forget_metric, utility_metric=plan.utility_metric, bench=row)
    write_json(run_dir / "bench_row.json", row)
    return row


# ---- the reference rows' evaluations, cached -------------------------------------------------
# The retain and target rows depend only on their model, the eval data and settings, and the code;
# evaluating them is a fixed ~2 x 2-5 min of every bench run on CPU. They are cached under
# ``$OBLIVIATE_CACHE/<cache_kind>_rows/<key>`` (a copy of the row's folder) and restored into a new
# bench directory, so a bench with cached models pays only for its methods.

@lru_cache(maxsize=1)
def _source_digest() -> str:
    """A digest of obliviate's own source: any code change invalidates the cached evaluations."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def reference_key(plan: Plan, label: str, model_dir: Path, ecfg, retain_key: str | None) -> str:
    """The cache key of a reference row: its model's fingerprint, the eval settings with the bench's
    own paths replaced by what they hold (the eval data's bytes, the retain row's key), the suites,
    the leaderboard columns and the code."""
    import hashlib
    from dataclasses import asdict

    from ..planted import model_fingerprint

    settings = asdict(ecfg)
    retain_dir = str(plan.out / "retain")
    for k, v in settings.items():
        if isinstance(v, str) and (v == retain_dir or v.startswith(retain_dir + "/")):
            settings[k] = ["retain row", retain_key]
        elif isinstance(v, str) and v and Path(v).expanduser().exists():
            settings[k] = ["contents", path_digest(Path(v).expanduser())]
    blob = [label, model_fingerprint(str(model_dir)), settings, plan.suites, plan.columns, _source_digest()]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _reference_dir(plan: Plan, key: str) -> Path:
    from ..models import cache_dir

    return cache_dir() / f"{plan.cache_kind}_rows" / key


def _relocate(value: Any, old: str, new: str) -> Any:
    """``value`` with every string that is a path under ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old):]
    return value


def store_reference(plan: Plan, key: str, run_dir: Path) -> None:
    """Copy a finished reference row into the cache (atomically; a failure only costs the cache)."""
    from ..io import atomic_path

    target = _reference_dir(plan, key)
    if (target / "bench_row.json").is_file():
        return
    try:
        with atomic_path(target, is_dir=True) as tmp:
            shutil.copytree(run_dir, tmp)
            write_json(tmp / "cache.json", {"out": str(plan.out)})
    except Exception as e:  # noqa: BLE001 - the cache is an optimisation
        log.warning("bench: could not cache the %s row's evaluation (%s)", run_dir.name, e)


def restore_reference(plan: Plan, key: str, run_dir: Path, stats: dict[str, Any]) -> dict[str, Any] | None:
    """Restore a cached reference row into ``run_dir``; return its row, or None on a cache miss."""
    src = _reference_dir(plan, key)
    try:
        old_out = json.loads((src / "cache.json").read_text())["out"]
        row = json.loads((src / "bench_row.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    tmp = run_dir.with_name(f".{run_dir.name}.restore")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("cache.json"))
    for f in tmp.rglob("*.json"):
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue
        write_json(f, _relocate(data, old_out, str(plan.out)))
    row = {**json.loads((tmp / "bench_row.json").read_text()), "seconds": stats["seconds"],
           "peak_memory_mb": stats["peak_memory_mb"], "eval_cached": key}
    write_json(tmp / "bench_row.json", row)
    tmp.rename(run_dir)
    log.warning("bench: %s row's evaluation restored from the cache (%s)", run_dir.name, src)
    return row


def _model_dir(plan: Plan, given: str | None, records, kind: str, progress: bool) -> Path:
    if given is not None:
        return Path(given)
    from ..planted import finetuned_model

    options = {**plan.finetune_options(len(records)), "max_length": plan.method_settings["max_length"]}
    return finetuned_model(plan.model, records, options, kind=f"{plan.cache_kind}_{kind}", progress=progress)


def _base(name: str) -> str:
    from ..methods import METHODS

    return METHODS.canonical(name.split(":", 1)[1] if name.startswith("spunge:") else name)


def check_data_options(plan: Plan) -> None:
    """Refuse, before any training, a method whose data-dependent settings the bench cannot fill."""
    for name in plan.methods:
        if "refusals" in DATA_OPTIONS.get(_base(name), ()) and plan.refusals is None:
            raise ConfigError(f"'{name}' needs refusal answers: the bench reads idontknow.jsonl from the TOFU folder "
                              f"(--tofu-dir); it is not there. Add it or drop '{name}' from --methods.")


def data_options(plan: Plan, base: str, model, tok) -> dict[str, Any]:
    """The settings of ``base`` that depend on the bench's data (``defaults.DATA_OPTIONS``)."""
    out: dict[str, Any] = {}
    needs = DATA_OPTIONS.get(base, ())
    if "refusals" in needs:
        out["refusals"] = plan.refusals
    if "epsilon" in needs:
        from ..eval.qa import answer_logprobs

        total, n = answer_logprobs(model, tok, plan.retain[:64])
        nll = float(-(total.sum() / n.sum().clamp_min(1)))
        out["epsilon"] = round(nll + PDU_EPSILON_MARGIN, 4)
        log.warning("bench: pdu epsilon = target's retain NLL %.4f + %.1f = %.4f", nll, PDU_EPSILON_MARGIN, out["epsilon"])
    return out


def _unlearn(plan: Plan, name: str, model, tok, run_dir: Path, progress: bool):
    """Run one method (or ``spunge:<method>``) from the loaded target; return (model, optimizer steps)."""
    from ..api import unlearn

    s = plan.method_settings
    base = _base(name)
    opts = {**method_options(base, s.get("lr_scale", 1.0)), **data_options(plan, base, model, tok), "max_steps": s["steps"],
            "batch_size": s["batch_size"], "seed": s["seed"], "max_length": s["max_length"], "progress": progress}
    if name.startswith("spunge:"):
        from ..demo import spunge_in_memory
        from ..spunge.split import SplitConfig, split_records

        n = len(split_records(plan.forget, SplitConfig(by=plan.split_by)))
        # The paper's protocol: every subset gets the base run's own settings (``steps`` each).
        model = spunge_in_memory(model, tok, plan.forget, plan.retain, base,
                                 {**opts, "max_steps": s["steps"] * n, "run_dir": run_dir}, split_by=plan.split_by)
        if s["keep_models"]:
            from ..models import save_model

            save_model(model, tok, run_dir / "model")
        return model, s["steps"] * n
    result = unlearn(model, tok, plan.forget, plan.retain, method=base, run_dir=run_dir, save=s["keep_models"], **opts)
    return result.model, result.steps


def run_bench(cfg, row_keys: tuple[str, ...], build: Callable[[Any], Plan], force: bool = False,
              progress: bool = True) -> list[dict[str, Any]]:
    """Check the model directories, own ``cfg.out`` (``row_keys`` define a finished row), build the
    plan (which may write data into ``cfg.out``) and run it; return the leaderboard rows."""
    from dataclasses import MISSING, asdict, fields

    check_model_dirs(target=cfg.target, retain_model=cfg.retain_model)
    defaults = {f.name: f.default for f in fields(cfg) if f.default is not MISSING}
    prepare_out(Path(cfg.out), {k: getattr(cfg, k) for k in row_keys}, asdict(cfg), force, defaults)
    return run_plan(build(cfg), progress)


def run_plan(plan: Plan, progress: bool = True) -> list[dict[str, Any]]:
    """Run a plan in its prepared ``out`` (finished rows are reused); return the leaderboard rows."""
    from ..models import load_model

    out = plan.out
    check_data_options(plan)
    rows: list[dict[str, Any]] = []
    dirs: list[Path] = []
    model_dirs: dict[str, Path] = {}
    ref_keys: dict[str, str] = {}
    for label, given, records in (("retain", plan.retain_model, plan.retain_train),
                                  ("target", plan.target, plan.target_train)):
        with measure() as st:
            model_dirs[label] = _model_dir(plan, given, records, label, progress)
        stats = {"seconds": None if given else st["seconds"], "peak_memory_mb": st["peak_memory_mb"]}
        run_dir = out / label
        ecfg = plan.eval_config(None if label == "retain" else out / "retain")
        ref_keys[label] = reference_key(plan, label, model_dirs[label], ecfg, ref_keys.get("retain"))
        row = _done(run_dir)
        if row is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            row = restore_reference(plan, ref_keys[label], run_dir, stats)
        if row is None:
            model, tok = load_model(str(model_dirs[label]))
            run_dir.mkdir(parents=True, exist_ok=True)
            update_summary(run_dir, model=str(model_dirs[label]))
            row = _finish_row(plan, run_dir, label, model, tok, ecfg, stats)
            if label == "retain" and plan.self_reference is not None:
                row = plan.self_reference(run_dir, row)
                write_json(run_dir / "bench_row.json", row)
            store_reference(plan, ref_keys[label], run_dir)
        rows.append(row)
        dirs.append(run_dir)
        print(_line(plan, row))
    ecfg = plan.eval_config(out / "retain")
    for name in plan.methods:
        run_dir = out / safe_name(name)
        row = _done(run_dir)
        if row is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished row of this bench: start it afresh
            model, tok = load_model(str(model_dirs["target"]))
            with measure() as st:
                model, steps = _unlearn(plan, name, model, tok, run_dir, progress)
            row = _finish_row(plan, run_dir, name, model, tok, ecfg, {**st, "steps": steps})
        rows.append(row)
        dirs.append(run_dir)
        print(_line(plan, row))
    write_leaderboard(plan, rows, model_dirs["target"], model_dirs["retain"])
    from ..report import build_report

    build_report(dirs, out / "report.html", title=plan.title, forget_metric=plan.forget_metric,
                 utility_metric=plan.utility_metric, markdown=out / "report.md")
    return rows


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _line(plan: Plan, row: dict[str, Any]) -> str:
    return f"{row['row']:>14s}: " + ", ".join(f"{k} {fmt(row.get(k))}" for k, _, _ in plan.columns) + \
        f", {fmt(row.get('seconds'), 1)} s"


def write_leaderboard(plan: Plan, rows: list[dict[str, Any]], target: Path, retain: Path) -> None:
    """``leaderboard.json`` (rows + settings) and ``leaderboard.md`` (one table)."""
    write_json(plan.out / "leaderboard.json", {"rows": rows, "target": str(target), "retain_model": str(retain),
                                               "config": plan.config, "columns": [c[0] for c in plan.columns]})
    head = ["row"] + [h for _, _, h in plan.columns] + ["steps", "seconds", "peak memory (MB)"]
    lines = [f"# {plan.title}", "", f"Target: `{target}`; retain model: `{retain}`.", *plan.notes, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["row"]] + [fmt(r.get(k)) for k, _, _ in plan.columns] + \
                [fmt(r.get("steps")), fmt(r.get("seconds"), 1), fmt(r.get("peak_memory_mb"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    write_text(plan.out / "leaderboard.md", "\n".join(lines) + "\n")
