"""CLI subcommands: each module has ``register(subparsers, name)`` (see ``obliviate/cli.py``)."""
