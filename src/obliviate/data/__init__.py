"""Data: records (QA/text) from files or lists, tokenisation, TOFU, and the demo's fact generator."""

from .encode import EncodeConfig, collate, encode_records
from .facts import make_facts
from .records import load_records, validate_records
from .tofu import load_tofu

__all__ = ["EncodeConfig", "collate", "encode_records", "load_records", "validate_records", "load_tofu", "make_facts"]
