"""``obliviate report``: compare run directories in one self-contained HTML page (+ report.md)."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  obliviate report runs/ga runs/npo runs/falcon -o report.html
  obliviate report runs/* -o cmp.html --title "forget10, 50 steps"
  obliviate report runs/npo runs/simnpo -o r.html --forget-metric tofu/forget_quality --utility-metric tofu/model_utility

Reads each run's config.yaml, train_log.jsonl, eval/*.json, summary.json, and when present
spunge_table.json and attacks.json; sections whose inputs are missing are left out.
A Markdown summary (tables only) is written next to the HTML as report.md (see --markdown)."""


def register(sub, name: str) -> None:
    what = "compare runs in one self-contained HTML report (trade-off plot, curves, metrics, configs)"
    p = sub.add_parser(name, help=what, description=what, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `obliviate unlearn`")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--markdown", default=None, help="Markdown summary to write (default: report.md next to the HTML)")
    p.add_argument("--title", default="obliviate report", help="page title")
    p.add_argument("--forget-metric", default=None, help="x axis of the trade-off plot, e.g. tofu/forget_quality (default: from summary.json)")
    p.add_argument("--utility-metric", default=None, help="y axis of the trade-off plot, e.g. tofu/model_utility (default: from summary.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..report import build_report

    rep = build_report([Path(d) for d in args.run_dirs], Path(args.output), title=args.title,
                       forget_metric=args.forget_metric, utility_metric=args.utility_metric,
                       markdown=Path(args.markdown) if args.markdown else None)
    import sys

    for path, why in rep.skipped:
        print(f"obliviate: skipped '{path}': {why}", file=sys.stderr)
    print(f"report: {rep.html.resolve()} ({len(rep.runs)} runs, {len(rep.rows)} metrics"
          f"{f', {len(rep.skipped)} directories skipped' if rep.skipped else ''}); summary: {rep.markdown}")
    return 0
