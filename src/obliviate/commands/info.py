"""``obliviate methods`` and ``obliviate models``: list what is available."""

from __future__ import annotations

import argparse


def register(sub, name: str) -> None:
    if name == "methods":
        p = sub.add_parser("methods", help="list unlearning methods and their options",
                           description="List the registered unlearning methods with their options.\n\nExample: obliviate methods",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=run_methods)
    else:
        p = sub.add_parser("models", help="list built-in model aliases",
                           description="List built-in model aliases (usable wherever a model path is).\n\nExample: obliviate models",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=run_models)


def run_methods(args) -> int:
    import dataclasses

    from ..methods import METHODS

    for name in METHODS.names():
        spec = METHODS.get(name)
        print(f"{name:10s} {spec.summary}")
        for f in dataclasses.fields(spec.config):
            print(f"    {f.name} = {f.default!r}  {f.metadata.get('help', '')}")
    return 0


def run_models(args) -> int:
    from ..models import ALIASES, cache_dir

    for name, a in ALIASES.items():
        cached = (cache_dir() / "models" / name / "config.json").is_file()
        print(f"{name:14s} {a.description}  [{'cached' if cached else 'converted on first use'}; needs: {a.pip}]")
    return 0
