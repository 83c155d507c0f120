"""SPUNGE as the paper runs it (Kadhe et al. 2024, arXiv 2406.11780, Sec. 4.1): ToxiGen split by target group,
base methods TVN and RMU (and NPO, for continuity with benchmarks/RESULTS.md), toxicity of generations.

    .venv/bin/python benchmarks/spunge_paper.py                       # the default run (SmolLM2)
    .venv/bin/python benchmarks/spunge_paper.py --methods tvn rmu --groups black women --steps 24
    .venv/bin/python benchmarks/spunge_paper.py --estimate            # time each stage on SmolLM2 (~2 min)
    .venv/bin/python benchmarks/spunge_paper.py --tiny                # end to end on a tiny random Llama

For each base method (``configs/<method>.yaml``: its method, train and data sections; ``--set``
changes one value, e.g. ``--set rmu.method.c_scale=5``):

- forget: ToxiGen's human-annotated statements with label ``hate`` and ``toxicity_human >=
  --min-toxicity`` of the ``--groups`` (annotation names; ``mental_dis`` is ``mental_disability``
  in the prompt files), the first ``--per-group`` of each; retain: ``neutral`` statements below it.
- base: the method on all forget data for ``--steps`` steps (rounded to a multiple of the number of
  groups) with the config's settings; it is the unsplit run of protocol (b).
- (a) paper protocol: every group's subset unlearned with the base run's settings and step count,
  TIES merge with density and lambda chosen by ``auto_merge`` (``obliviate.spunge.auto``) on a
  validation split: lowest forget likelihood whose retain likelihood stays within 10% of the original.
- (b) equal total steps: every subset gets steps / n_groups (today's protocol); merged with TIES
  density 0.2, lambda 1 as today (``--merge-b auto``: chosen like (a)).
- evaluation of the original, base, SPUNGE (a) and (b) models: ``gentox`` (greedy and sampled
  continuations of ``--gentox-per-group`` hate prompts of each chosen group, toxic fraction and
  mean P(toxic) from the judge), ``mcq`` (MMLU subjects) and ``ppl`` (WikiText-2).
- diagnostics, when SPUNGE (a) is not less toxic than the base (or ``--diagnose always``): statistics
  of the per-group task vectors (``obliviate.spunge.diagnose``: sign agreement, top-k overlap,
  cosine, L2 mass TIES keeps after trim and after trim + sign election), the final training losses
  of every run, the toxicity of the (a) merge at ``--diag-lams``, and the control: the base run's
  own delta scaled by the same lambdas (is a gain of a larger lambda the merge's or the scaling's?).

Everything goes under ``--out`` (default runs/spunge_paper): training runs are keyed by their
settings and resumed (finished subsets are skipped), evaluations are keyed by their settings and
reused. ``results.json`` holds every number; the Markdown tables are printed and written to ``tables.md``.
Evaluation is on CPU or the first GPU, whichever ``load_model`` gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OBLIVIATE_DATA_DIR", ROOT.parent / "shared" / "data"))
MODES = ("greedy", "sampled")
LABELS = {"base": "base", "spunge_a": "SPUNGE (a)", "spunge_b": "SPUNGE (b)"}


@dataclass(frozen=True)
class Settings:
    """One benchmark run (the command-line options)."""

    model: str = "smollm2-135m"
    methods: tuple[str, ...] = ("tvn", "rmu", "npo")
    groups: tuple[str, ...] = ("black", "jewish", "mental_dis", "women")
    per_group: int = 24
    min_toxicity: float = 3.0
    retain_n: int = 200
    steps: int = 16
    densities: tuple[float, ...] = (0.2, 0.5)
    lams: tuple[float, ...] = (1.0, 2.0)
    merge_b: str = "fixed"
    val_n: int = 32
    gentox_per_group: int = 8
    gentox_new_tokens: int = 32
    rtp: bool = False
    judge: str = "tfidf"
    mmlu_subjects: tuple[str, ...] = ("high_school_geography", "marketing", "nutrition", "sociology", "world_religions")
    mmlu_items: int = 10
    ppl_tokens: int = 2048
    ppl_window: int = 512
    fluency_prompts: int = 1
    diagnose: str = "auto"
    diag_lams: tuple[float, ...] = (1.0, 2.0, 4.0)
    set: tuple[str, ...] = ()
    out: str = "runs/spunge_paper"
    data: str = str(DATA)
    tiny: bool = False

    def __post_init__(self):
        from obliviate.errors import ConfigError

        if self.diagnose not in ("auto", "always", "never"):
            raise ConfigError(f"--diagnose must be auto, always or never, got {self.diagnose!r}.")
        if self.merge_b not in ("fixed", "auto"):
            raise ConfigError(f"--merge-b must be fixed (TIES density 0.2, lambda 1, as benchmarks/RESULTS.md) or auto, got {self.merge_b!r}.")
        if len(self.groups) < 2:
            raise ConfigError(f"--groups needs at least two groups (SPUNGE with one subset is the base method), got {list(self.groups)}.")
        if min(self.per_group, self.steps, self.gentox_per_group, self.mmlu_items - 1, self.retain_n) < 1:
            raise ConfigError("--per-group, --steps, --gentox-per-group and --retain-n must be >= 1, --mmlu-items >= 2.")


TINY = dict(model="tiny", groups=("black", "mental_dis"), per_group=6, retain_n=8, steps=4, densities=(0.2, 0.5), lams=(1.0,), merge_b="auto",
            val_n=8, gentox_per_group=2, gentox_new_tokens=6, mmlu_subjects=("marketing",), mmlu_items=2, ppl_tokens=128,
            ppl_window=64, fluency_prompts=1, diagnose="always", diag_lams=(1.0, 2.0))
TINY_OPTIONS = {"method": {"rmu": {"layer": 2}}, "train": {"batch_size": 2, "warmup_steps": 0}, "data": {"max_length": 48}}


# ---- data ------------------------------------------------------------------------------------
def prepare_data(s: Settings, out: Path) -> dict[str, Any]:
    """forget.jsonl / retain.jsonl, a ToxiGen folder holding only the chosen groups' hate prompts
    (links; ``gentox`` reads every ``prompts/hate_*_1k.txt`` of the folder it is given), and the
    judge's training file (a 400-row slice in ``--tiny`` mode)."""
    from obliviate.errors import DataError
    from obliviate.spunge import load_toxigen
    from obliviate.spunge.sources import toxigen_prompt_group

    toxigen = Path(s.data) / "toxigen"
    rows = load_toxigen(str(toxigen))
    present = sorted({r["target_group"] for r in rows})
    forget, counts = [], {}
    for g in s.groups:
        if g not in present:
            raise DataError(f"--groups: '{g}' is not a target_group of {toxigen}/annotated_train.csv; groups: {present}.")
        keep = [r for r in rows if r["target_group"] == g and r["label"] == "hate" and float(r["toxicity_human"]) >= s.min_toxicity]
        counts[g] = len(keep[: s.per_group])
        forget += [{"text": r["text"], "target_group": g} for r in keep[: s.per_group]]
    retain = [{"text": r["text"], "target_group": r["target_group"]} for r in rows
              if r["label"] == "neutral" and float(r["toxicity_human"]) < s.min_toxicity][: s.retain_n]
    d = out / "data"
    d.mkdir(parents=True, exist_ok=True)
    for name, records in (("forget", forget), ("retain", retain)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    prompts = d / "toxigen" / "prompts"
    shutil.rmtree(prompts, ignore_errors=True)
    prompts.mkdir(parents=True)
    for g in s.groups:
        src = toxigen / "prompts" / f"hate_{toxigen_prompt_group(g)}_1k.txt"
        if not src.is_file():
            raise DataError(f"group '{g}' has no hate prompts ({src}); choose groups with both annotations and prompts.")
        (prompts / src.name).symlink_to(src.resolve())
    judge_data, wikitext = toxigen / "annotated_train.csv", Path(s.data) / "wikitext2" / "test.txt"
    if s.tiny:  # a 400-row judge and 60 lines of WikiText (the whole file is tokenised before --ppl-tokens applies)
        import pandas as pd

        judge_data, wikitext_slice = d / "judge_slice.csv", d / "wikitext_slice.txt"
        pd.read_csv(toxigen / "annotated_train.csv", keep_default_na=False).iloc[::22].to_csv(judge_data, index=False)
        wikitext_slice.write_text("\n".join(wikitext.read_text(encoding="utf-8").splitlines()[:60]), encoding="utf-8")
        wikitext = wikitext_slice
    return {"forget": str(d / "forget.jsonl"), "retain": str(d / "retain.jsonl"), "toxigen": str(d / "toxigen"),
            "judge_data": str(judge_data), "wikitext": str(wikitext), "forget_per_group": counts, "retain_n": len(retain)}


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def method_options(s: Settings, method: str) -> dict[str, dict[str, Any]]:
    """The method/train/data sections of configs/<method>.yaml, with --tiny's and --set's changes."""
    import yaml

    from obliviate.errors import ConfigError, did_you_mean

    path = ROOT / "configs" / f"{method}.yaml"
    if not path.is_file():
        raise ConfigError(f"--methods: no shipped config {path}.{did_you_mean(method, ['tvn', 'rmu', 'npo'])}")
    raw = yaml.safe_load(path.read_text())
    sections = {k: dict(raw.get(k) or {}) for k in ("method", "train", "data")}
    sections["method"].pop("name", None)
    if s.tiny:
        for k, v in TINY_OPTIONS.items():
            sections[k].update(v.get(method, {}) if k == "method" else v)
    for item in s.set:
        path, _, value = item.partition("=")
        parts = path.split(".")
        if len(parts) != 3 or parts[1] not in sections or not value:
            raise ConfigError(f"--set {item!r}: expected METHOD.SECTION.KEY=VALUE with SECTION method, train or data "
                              f"(e.g. rmu.method.c_scale=5).")
        if parts[0] == method:
            sections[parts[1]][parts[2]] = yaml.safe_load(value)
    return sections


# ---- training: two SPUNGE pipelines per method -----------------------------------------------
def spunge_run(s: Settings, files: dict, model: str, method: str, opts: dict, per_subset: int, run_base: bool, auto: bool,
               out: Path) -> dict:
    """``run_spunge`` for one protocol (resumed if unfinished, read back if finished); ``auto``: merge
    chosen by ``auto_merge``, else TIES density 0.2, lambda 1 (today's protocol in benchmarks/RESULTS.md)."""
    from obliviate.spunge import parse_spunge_config, run_spunge

    if not (out / "report.json").is_file():
        n = s.val_n
        merge = {"auto_merge": {"densities": list(s.densities), "lams": list(s.lams), "forget_n": n, "retain_n": n}} if auto else {}
        cfg = parse_spunge_config({
            "model": model, "forget": {"path": files["forget"]}, "retain": {"path": files["retain"]},
            "method": {"name": method, **opts["method"]}, "train": {**opts["train"], "max_steps": per_subset},
            "data": opts["data"], "split": {"by": "target_group", "values": list(s.groups)},
            "merge": {"method": "ties", "density": 0.2, "lam": 1.0}, **merge, "run_base": run_base, "output_dir": str(out)})
        run_spunge(cfg, resume=out.is_dir() and any(out.iterdir()))
    report = json.loads((out / "report.json").read_text())
    merge = json.loads((out / "merge.json").read_text())
    auto = out / "auto_merge.json"
    report["auto_merge"] = json.loads(auto.read_text()) if auto.is_file() else {"chosen": {"density": merge["density"], "lam": merge["lam"]}}
    return report


def final_losses(run: Path, groups) -> dict[str, dict]:
    """Each finished run's step count and last logged metrics (per-subset convergence)."""
    from obliviate.spunge.pipeline import subset_dir

    dirs = {g: subset_dir(run, g) for g in groups} | ({"unsplit": run / "unsplit"} if (run / "unsplit").is_dir() else {})
    out = {}
    for name, d in dirs.items():
        done = json.loads((d / "done.json").read_text())
        out[name] = {"steps": done["steps"], **{k: round(v, 4) for k, v in done["final"].items() if "loss" in k or "nll" in k}}
    return out


# ---- evaluation ------------------------------------------------------------------------------
def eval_options(s: Settings, files: dict) -> tuple[dict, dict]:
    tox = dict(toxigen=files["toxigen"], rtp=str(Path(s.data) / "realtoxicityprompts") if s.rtp else None, judge=s.judge,
               judge_data=files["judge_data"], gentox_per_group=s.gentox_per_group, gentox_new_tokens=s.gentox_new_tokens)
    util = dict(mmlu_dir=str(Path(s.data) / "mmlu"), mmlu_subjects=s.mmlu_subjects, max_items=s.mmlu_items,
                wikitext=files["wikitext"], ppl_max_tokens=s.ppl_tokens, ppl_max_length=s.ppl_window,
                ppl_stride=s.ppl_window // 2, fluency_prompts=s.fluency_prompts, fluency_new_tokens=32)
    return tox, util


def evaluate_model(path: Path, eval_dir: Path, s: Settings, files: dict, utility: bool = True) -> dict[str, Any]:
    """gentox (+ mcq and ppl) of the model at ``path``; results cached in ``eval_dir/eval/``."""
    import obliviate
    from obliviate.eval.results import load_suite, suite_path
    from obliviate.spunge.sources import toxigen_prompt_group

    tox_opts, util_opts = eval_options(s, files)
    suites = ["gentox"] + (["mcq", "ppl"] if utility else [])
    t0 = time.time()
    if all(suite_path(eval_dir, n).is_file() for n in suites):
        res = {n: load_suite(eval_dir, n) for n in suites}
    else:
        model, tok = obliviate.load_model(str(path))
        res = obliviate.evaluate(model, tok, ["gentox"], run_dir=eval_dir, model_name=str(path), **tox_opts)
        if utility:
            res.update(obliviate.evaluate(model, tok, ["mcq", "ppl"], run_dir=eval_dir, model_name=str(path), **util_opts))
        del model
    g = res["gentox"]
    keys = {"all": ""} | {grp: f"_toxigen_{toxigen_prompt_group(grp)}" for grp in s.groups}
    out: dict[str, Any] = {"toxicity": {m: {k: {"toxic_frac": g.value(f"{m}_toxic_frac{suf}"), "mean_score": g.value(f"{m}_mean_score{suf}")}
                                           for k, suf in keys.items()} for m in MODES},
                           "judge": g.meta["judge"], "eval_s": round(time.time() - t0, 1)}
    if utility:
        out["mmlu_acc"] = res["mcq"].value("acc")
        out["wikitext_ppl"] = res["ppl"].value("wikitext_ppl")
    return out


def toxicity(metrics: dict) -> float:
    """Overall mean P(toxic), averaged over greedy and sampled continuations."""
    return sum(metrics["toxicity"][m]["all"]["mean_score"] for m in MODES) / len(MODES)


# ---- diagnostics -----------------------------------------------------------------------------
def _scaled_toxicity(s: Settings, files: dict, base: Path, models: list[Path], merge, target: Path,
                     eval_dir: Path) -> dict[str, Any]:
    """Toxicity of ``base`` + the TIES merge ``merge`` of ``models``' deltas, evaluated once (cached
    in ``eval_dir``); the merged model itself is not kept (a full model per setting)."""
    from obliviate.eval.results import suite_path
    from obliviate.merge import merge_files

    if not suite_path(eval_dir, "gentox").is_file():
        merge_files(base, models, target, merge)
    m = evaluate_model(target, eval_dir, s, files, utility=False)
    shutil.rmtree(target, ignore_errors=True)
    return m["toxicity"]


def diagnose(s: Settings, files: dict, paper: Path, chosen: dict, merged: dict, eval_root: Path,
             base_run: Path, base_metrics: dict) -> dict[str, Any]:
    """Task-vector statistics of the (a) subsets, and the (a) merge's toxicity at --diag-lams (the
    chosen lambda's row is the evaluated SPUNGE (a) model, ``merged``). The control, changing one
    thing: the base run's own delta scaled by the same lambdas (original + lambda * (base - original),
    no trim; for TVN that is TVN at ``lam`` = lambda; lambda 1 is the base run, ``base_metrics``), so
    a gain of the merge at a larger lambda can be told apart from a gain of scaling alone."""
    from obliviate.merge import MergeConfig
    from obliviate.spunge.diagnose import task_vector_stats
    from obliviate.spunge.pipeline import subset_dir

    models = [subset_dir(paper, g) / "model" for g in s.groups]
    t0 = time.time()
    stats = task_vector_stats(paper / "base", models, MergeConfig(density=chosen["density"]))
    stats["seconds"] = round(time.time() - t0, 1)
    sweep = [{"lam": chosen["lam"], "density": chosen["density"], "toxicity": merged["toxicity"]}]
    sweep += [{"lam": lam, "density": chosen["density"],
               "toxicity": _scaled_toxicity(s, files, paper / "base", models, MergeConfig(density=chosen["density"], lam=lam),
                                            paper.parent / "diag" / f"lam_{lam:g}", eval_root / f"lam_{lam:g}")}
              for lam in s.diag_lams if lam != chosen["lam"]]
    sweep.sort(key=lambda w: w["lam"])
    scaled = [{"lam": 1.0, "toxicity": base_metrics["toxicity"]}]
    scaled += [{"lam": lam,
                "toxicity": _scaled_toxicity(s, files, paper / "base", [base_run], MergeConfig(density=1.0, lam=lam),
                                             paper.parent / "diag" / f"base_lam_{lam:g}", eval_root / f"base_lam_{lam:g}")}
               for lam in s.diag_lams if lam != 1.0]
    return {"task_vectors": stats, "lambda_sweep": sweep, "base_scaled": scaled}


# ---- the run ---------------------------------------------------------------------------------
def base_model(s: Settings, out: Path) -> str:
    """The model alias/path; in --tiny mode a tiny random Llama saved under the run dir."""
    if not s.tiny:
        return s.model
    from obliviate.models import save_model
    from obliviate.testing import tiny_model_and_tokenizer

    path = out / "tiny_model"
    if not (path / "config.json").is_file():
        save_model(*tiny_model_and_tokenizer(), path)
    return str(path)


def run(s: Settings) -> dict[str, Any]:
    t_start = time.time()
    out = Path(s.out)
    files = prepare_data(s, out)
    model = base_model(s, out)
    n = len(s.groups)
    per_subset_b = max(1, round(s.steps / n))
    steps = per_subset_b * n  # the base run: (b)'s unsplit run, so (b) is exactly equal in total steps
    tox_opts, util_opts = eval_options(s, files)
    eval_root = out / "evals" / _key([model, tox_opts, util_opts])
    results: dict[str, Any] = {"settings": dataclasses.asdict(s), "data": files, "base_steps": steps, "methods": {}}
    original = None
    for method in s.methods:
        t0 = time.time()
        opts = method_options(s, method)
        key = _key([model, files["forget_per_group"], files["retain_n"], s.min_toxicity, s.densities, s.lams, s.val_n, opts, steps,
                    s.merge_b])
        mdir = out / f"{method}-{key}"
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "settings.json").write_text(json.dumps({"method": method, "options": opts, "groups": s.groups, "steps": steps}, indent=1))
        print(f"[{method}] training in {mdir} ({steps} base steps; (a) {steps} per subset; (b) {per_subset_b} per subset)", flush=True)
        equal = spunge_run(s, files, model, method, opts, per_subset_b, True, s.merge_b == "auto", mdir / "equal")
        paper = spunge_run(s, files, model, method, opts, steps, False, True, mdir / "paper")
        t_train = time.time() - t0
        if original is None:
            original = evaluate_model(mdir / "equal" / "base", eval_root / "original", s, files)
            results["original"] = original
        paths = {"base": mdir / "equal" / "unsplit" / "model", "spunge_a": mdir / "paper" / "merged",
                 "spunge_b": mdir / "equal" / "merged"}
        models = {label: evaluate_model(p, eval_root / mdir.name / label, s, files) for label, p in paths.items()}
        forget_ll = {"original": equal["results"]["original"]["forget"], "base": equal["results"]["base"]["forget"],
                     "spunge_a": paper["results"]["spunge"]["forget"], "spunge_b": equal["results"]["spunge"]["forget"]}
        r = {"run_dir": str(mdir), "options": opts, "models": models, "forget_loglik": forget_ll,
             "merge": {"a": paper["auto_merge"], "b": equal["auto_merge"]},
             "training": {"a": final_losses(mdir / "paper", s.groups), "b": final_losses(mdir / "equal", s.groups)},
             "amplifies": toxicity(models["spunge_a"]) < toxicity(models["base"])}
        if s.diagnose == "always" or (s.diagnose == "auto" and not r["amplifies"]):
            print(f"[{method}] diagnostics", flush=True)
            r["diagnostics"] = diagnose(s, files, mdir / "paper", paper["auto_merge"]["chosen"], models["spunge_a"],
                                        eval_root / mdir.name, paths["base"], models["base"])
        r["seconds"] = {"train": round(t_train, 1), "total": round(time.time() - t0, 1)}
        results["methods"][method] = r
    results["seconds"] = round(time.time() - t_start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = tables(results, s)
    (out / "tables.md").write_text(md)
    print(md)
    print(f"results: {out / 'results.json'}  tables: {out / 'tables.md'}  ({results['seconds']:.0f} s)")
    return results


# ---- Markdown --------------------------------------------------------------------------------
def _cell(t: dict) -> str:
    return f"{t['toxic_frac']:.3f} ({t['mean_score']:.3f})"


def tables(results: dict, s: Settings) -> str:
    o = results["original"]
    judge = o["judge"]
    lines = [f"Judge: {judge['name']} (held-out AUC {judge.get('heldout_auc', float('nan')):.3f}). Cells: toxic fraction "
             f"(mean P(toxic)) of continuations of {s.gentox_per_group} ToxiGen hate prompts per group; lower is better. "
             f"Base: {results['base_steps']} steps on all {sum(results['data']['forget_per_group'].values())} statements; "
             f"(a) {results['base_steps']} steps per group; (b) {results['base_steps'] // len(s.groups)} per group.", "",
             "| method | model | greedy | sampled | hate loglik | MMLU acc | WikiText ppl |", "|---|---|---|---|---|---|---|"]

    def row(method, label, m, ll):
        return (f"| {method} | {label} | {_cell(m['toxicity']['greedy']['all'])} | {_cell(m['toxicity']['sampled']['all'])} | "
                f"{ll:.3f} | {m['mmlu_acc']:.3f} | {m['wikitext_ppl']:.2f} |")

    first = next(iter(results["methods"].values()))
    lines.append(row("-", "original", o, first["forget_loglik"]["original"]["all"]))
    for method, r in results["methods"].items():
        lines += [row(method, LABELS[k], r["models"][k], r["forget_loglik"][k]["all"]) for k in LABELS]
    lines += ["", "Per group (toxic fraction (mean P(toxic))):", "",
              "| method | group | mode | original | base | SPUNGE (a) | SPUNGE (b) |", "|---|---|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        for g in s.groups:
            for mode in MODES:
                cells = [_cell(o["toxicity"][mode][g])] + [_cell(r["models"][k]["toxicity"][mode][g]) for k in LABELS]
                lines.append(f"| {method} | {g} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Merge chosen by auto_merge (validation: mean token probability of hateful / neutral statements):", "",
              "| method | protocol | density | lambda | val forget (original) | val retain (original) |", "|---|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        for p, a in r["merge"].items():
            c, orig = a["chosen"], a.get("original")
            val = (f"{c['forget']:.4f} ({orig['forget']:.4f}) | {c['retain']:.4f} ({orig['retain']:.4f})" if orig else
                   "fixed (not chosen) | -")
            lines.append(f"| {method} | ({p}) | {c['density']:g} | {c['lam']:g} | {val} |")
    lines += ["", "Final training loss per run (convergence):", "", "| method | protocol | run | steps | final |", "|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        for p, runs in r["training"].items():
            for name, f in runs.items():
                rest = ", ".join(f"{k} {v:g}" for k, v in f.items() if k != "steps")
                lines.append(f"| {method} | ({p}) | {name} | {f['steps']} | {rest} |")
    diag = {m: r["diagnostics"] for m, r in results["methods"].items() if "diagnostics" in r}
    if diag:
        lines += ["", "Diagnostics of the (a) subsets' task vectors (delta = subset model - original):", "",
                  "| method | group | norm | mass kept by trim | by trim + sign election |", "|---|---|---|---|---|"]
        for method, d in diag.items():
            tv = d["task_vectors"]
            lines += [f"| {method} | {g} | {tv['norm'][i]:.4g} | {tv['kept_trim'][i]:.3f} | {tv['kept_ties'][i]:.3f} |"
                      for i, g in enumerate(s.groups)]
        lines += ["", "| method | pair | sign agreement | top-k overlap | cosine |", "|---|---|---|---|---|"]
        for method, d in diag.items():
            tv = d["task_vectors"]
            for i in range(len(s.groups)):
                for j in range(i + 1, len(s.groups)):
                    lines.append(f"| {method} | {s.groups[i]} / {s.groups[j]} | {tv['sign_agreement'][i][j]:.3f} | "
                                 f"{tv['topk_overlap'][i][j]:.3f} | {tv['cosine'][i][j]:.3f} |")
        lines += ["", "| method | density | lambda | greedy | sampled |", "|---|---|---|---|---|"]
        for method, d in diag.items():
            lines += [f"| {method} | {w['density']:g} | {w['lam']:g} | {_cell(w['toxicity']['greedy']['all'])} | "
                      f"{_cell(w['toxicity']['sampled']['all'])} |" for w in d["lambda_sweep"]]
        lines += ["", "Control: the base run's delta scaled by lambda (no merge, no trim):", "",
                  "| method | lambda | greedy | sampled |", "|---|---|---|---|"]
        for method, d in diag.items():
            lines += [f"| {method} | {w['lam']:g} | {_cell(w['toxicity']['greedy']['all'])} | "
                      f"{_cell(w['toxicity']['sampled']['all'])} |" for w in d["base_scaled"]]
    return "\n".join(lines) + "\n"


# ---- --estimate: unit costs on the real model -> a time per stage of the full run ------------
class Clock:
    """Wall and process-CPU seconds of a block (CPU: all threads of this process)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def probe(s: Settings) -> tuple[str, dict[str, Clock]]:
    """Time one unit of each stage on ``s.model``: steps 2-3 of a 3-step run per method, a model load
    and save, a merge of 2 models (per model), scoring a record, one generation batch (2 groups x 2
    prompts, greedy + sampled) and a small utility evaluation. The judge is trained (cached) first."""
    import tempfile

    import torch

    import obliviate
    from obliviate.eval import answer_prob
    from obliviate.merge import MergeConfig, merge_files

    unit: dict[str, Clock] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = prepare_data(s, tmp)
        forget, retain = obliviate.load_records(files["forget"]), obliviate.load_records(files["retain"])
        path = base_model(s, tmp)
        with Clock() as unit["load"]:
            model, tok = obliviate.load_model(path)
        with Clock() as unit["save"]:
            obliviate.save_model(model, tok, tmp / "m0")
        for method in s.methods:
            opts = method_options(s, method)
            m, _ = obliviate.load_model(str(tmp / "m0"))
            with Clock() as c:
                res = obliviate.unlearn(m, tok, forget, retain, method=method,
                                        **{**opts["method"], **opts["train"], **opts["data"], "progress": False, "max_steps": 3})
            step = unit[f"step_{method}"] = Clock()  # steps 2-3 (the first includes setup); CPU in the same proportion
            step.wall = (res.log[-1]["elapsed_s"] - res.log[0]["elapsed_s"]) / 2
            step.cpu = c.cpu * step.wall / c.wall
            del m, res
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 1e-4)
        obliviate.save_model(model, tok, tmp / "m1")
        with Clock() as unit["merge_per_model"]:
            merge_files(tmp / "m0", [tmp / "m1", tmp / "m1"], tmp / "merged", MergeConfig())
        with Clock() as unit["score_record"]:
            answer_prob(model, tok, forget[:16] + retain[:16])
        small = dataclasses.replace(s, groups=s.groups[:2], gentox_per_group=2, mmlu_items=4, mmlu_subjects=s.mmlu_subjects[:1],
                                    ppl_tokens=1024, ppl_window=min(512, s.ppl_window), fluency_prompts=1)
        small_files = prepare_data(small, tmp / "small")
        if s.judge == "tfidf":  # trained once and cached: not part of any stage
            from obliviate.eval.judge import load_judge

            load_judge("tfidf", data=small_files["judge_data"])
        with Clock() as unit["gentox_4prompts"]:
            evaluate_model(tmp / "m1", tmp / "eval", small, small_files, utility=False)
        with Clock() as unit["utility_small"]:  # 4 MMLU items, 1024 WikiText tokens, 1 fluency prompt (gentox reused)
            evaluate_model(tmp / "m1", tmp / "eval", small, small_files)
    for c, count in ((unit["merge_per_model"], 2), (unit["score_record"], 32)):
        c.wall, c.cpu = c.wall / count, c.cpu / count
    return path, unit


def stage_seconds(s: Settings, u: dict[str, float]) -> dict[str, float]:
    """The full run's seconds per stage from unit costs ``u`` (``probe``'s, on one basis). Merge time is
    linear in the number of models (benchmarks/RESULTS.md: k=2 8.7 s, k=4 13.5 s, k=8 28.3 s);
    generation in batches of 16 prompts and in new tokens."""
    n = len(s.groups)
    per_b = max(1, round(s.steps / n))
    steps = per_b * n
    io, merge = u["load"] + u["save"], u["merge_per_model"] * n
    batches = math.ceil(n * s.gentox_per_group * (1 + 7 / n * s.rtp) / 16)  # generation runs 16 prompts a batch
    ev = (u["load"] + (u["gentox_4prompts"] - u["load"]) * batches * s.gentox_new_tokens / 32
          + (u["utility_small"] - u["load"]) * (s.mmlu_items * len(s.mmlu_subjects) / 4 + s.ppl_tokens / 1024) / 2)
    validation = u["load"] + 2 * s.val_n * u["score_record"]
    cands = len(s.densities) * len(s.lams)
    records = n * s.per_group + min(100, s.retain_n)
    stages = {f"train {m}": (n * steps + n * per_b + steps) * u[f"step_{m}"] + (2 * n + 3) * io for m in s.methods}
    stages["auto merge"] = len(s.methods) * (1 + (s.merge_b == "auto")) * (cands * (merge + validation) + validation)
    stages["final merges + spunge reports"] = len(s.methods) * (2 * merge + 5 * (u["load"] + records * u["score_record"]))
    stages["evaluation"] = (1 + 3 * len(s.methods)) * ev
    sweep = len(s.diag_lams) - 1
    stages["diagnostics (if run for every method)"] = len(s.methods) * (3 * merge + sweep * (
        merge + u["load"] + (u["gentox_4prompts"] - u["load"]) * batches))
    return stages


def estimate(s: Settings) -> dict[str, Any]:
    """``probe`` then ``stage_seconds``, printed on two bases: wall seconds (inflated by waiting on a
    machine shared with other jobs) and process-CPU seconds (closer to an idle machine's wall time)."""
    import torch

    path, unit = probe(s)
    print(f"unit costs on {path} ({torch.get_num_threads()} threads), wall / CPU s: "
          + ", ".join(f"{k} {c.wall:.2f}/{c.cpu:.2f}" for k, c in unit.items()))
    out: dict[str, Any] = {"unit": {k: {"wall_s": round(c.wall, 3), "cpu_s": round(c.cpu, 3)} for k, c in unit.items()}, "stages_min": {}}
    for basis in ("wall", "cpu"):
        stages = stage_seconds(s, {k: getattr(c, basis) for k, c in unit.items()})
        out["stages_min"][basis] = {k: round(v / 60, 1) for k, v in stages.items()}
    print("| stage | minutes (wall basis, this machine now) | minutes (CPU basis) |\n|---|---|---|")
    for k in out["stages_min"]["wall"]:
        print(f"| {k} | {out['stages_min']['wall'][k]} | {out['stages_min']['cpu'][k]} |")
    totals = {b: round(sum(v.values()), 1) for b, v in out["stages_min"].items()}
    print(f"| total | {totals['wall']} | {totals['cpu']} |")
    out["total_min"] = totals
    return out


def parse_args(argv=None) -> tuple[Settings, bool]:
    d = Settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(d, f.name)
        if isinstance(default, bool):
            ap.add_argument(flag, action="store_true")
        elif isinstance(default, tuple):
            kind = float if f.name in ("densities", "lams", "diag_lams") else str
            ap.add_argument(flag, nargs="+", type=kind, default=default)
        else:
            ap.add_argument(flag, type=type(default), default=default)
    ap.add_argument("--estimate", action="store_true", help="Time each stage on --model and print the estimate; no run.")
    args = vars(ap.parse_args(argv))
    est = args.pop("estimate")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    if args["tiny"]:
        args.update({k: v for k, v in TINY.items() if args[k] == getattr(d, k)})
        args["out"] = args["out"] if args["out"] != d.out else "runs/spunge_paper_tiny"
    return Settings(**args), est


def main(argv=None) -> dict[str, Any]:
    import torch

    s, est = parse_args(argv)
    threads = torch.get_num_threads()
    if s.tiny:  # a 32-wide model: one thread avoids waiting on busy cores for every small op
        torch.set_num_threads(1)
    try:
        return estimate(s) if est else run(s)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
