"""The ``obliviate`` command line.

Each subcommand lives in ``obliviate/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; add one to ``COMMANDS`` below.

The error boundary (``main``): user errors (``ObliviateError``) print as one clear line plus what
was kept/restored (exit status 2); a failed read or write of a file (``OSError``: disk full,
permissions, a missing path) prints the path and the reason (exit status 1); ``-v`` shows the
traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import ObliviateError
from .io import io_failure

COMMANDS = {
    "demo": "demo",
    "finetune": "train",
    "unlearn": "train",
    "eval": "eval",
    "report": "report",
    "methods": "info",
    "models": "info",
    "attack": "attack",
    "select-layer": "select_layer",
    "merge": "merge",
    "spunge": "spunge",
    "bench": "bench",
    "judge": "judge",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="obliviate", description="Machine unlearning for LLMs.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"obliviate.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("obliviate.commands"):
                continue  # a command not written yet
            raise
        mod.register(sub, name)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import warnings

        warnings.filterwarnings("ignore")
        try:
            import transformers

            transformers.logging.set_verbosity_error()
        except ImportError:
            pass
    try:
        return int(args.func(args) or 0)
    except ObliviateError as e:
        if args.verbose:
            raise
        print(f"obliviate: error: {_with_notes(str(e), e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.verbose:
            raise
        where = f"'{e.filename}': " if getattr(e, "filename", None) else ""
        print(f"obliviate: error: {_with_notes(where + (io_failure(e) or str(e)), e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(_with_notes("obliviate: interrupted (resume with --resume)", e), file=sys.stderr)
        return 130
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Tear down the process group of an ``accelerate launch``/``torchrun`` run while the interpreter is
    whole. Left to interpreter exit, gloo's teardown on a rank that finished first (the others write
    and evaluate alone) aborted that rank once in CI ("terminate called without an active exception").
    Local on every backend: no rank waits for another here, so one rank's failure cannot hang the rest."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for commands that did not
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _with_notes(message: str, e: BaseException) -> str:
    """One line: the message and any notes added on the way out (``run_directory``)."""
    return " ".join([message.strip(), *getattr(e, "__notes__", [])]).replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
