"""Typed configs: validation of plain dicts (from YAML/CLI) into frozen dataclasses.

``from_dict(cls, data, where="train")`` checks every key against the dataclass fields
(unknown keys get a "did you mean"), every value against the field's type annotation
(``int``, ``float``, ``bool``, ``str``, ``Literal``, ``X | None``, ``tuple[...]``, nested
dataclasses), then calls the constructor so ``__post_init__`` validates ranges. Errors name
the dotted key, e.g. ``train.lr``. ``apply_overrides`` implements ``--set a.b=value``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from .errors import ConfigError, did_you_mean

C = TypeVar("C")


def field_docs(cls: type) -> dict[str, str]:
    """Field -> help text, from ``metadata={"help": ...}`` on each dataclass field."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        real = [a for a in args if a is not type(None)]
        if len(real) == 1 and len(errors) == 1:  # Optional[X]: X's own message, plus "or null"
            raise ConfigError(errors[0] + " null (unset) is also accepted.") from None
        raise ConfigError(f"'{key}': {value!r} is not a valid {_type_name(tp)}.")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"'{key}': {value!r} is not one of {list(choices)}.{did_you_mean(str(value), [str(c) for c in choices])}"
            )
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}': expected a list, got {value!r}.")
        args = get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping, got {value!r}.")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping of {tp.__name__} fields, got {value!r}.")
        return from_dict(tp, value, where=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}': expected true/false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}': expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}': expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}': expected a string, got {value!r}.")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise ConfigError(f"'{key}': expected a path, got {value!r}.")
    return value


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
    """Build the dataclass ``cls`` from ``data``, validating keys and types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        key = f"{where}.{k}" if where else str(k)
        if k not in names:
            if not names:
                raise ConfigError(f"Unknown config key '{key}': '{where or cls.__name__}' has no options.")
            raise ConfigError(
                f"Unknown config key '{key}'.{did_you_mean(k, names)} Valid keys: {', '.join(names)}."
            )
        kwargs[k] = _coerce(v, hints[k], key)
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        keys = ", ".join(f"'{where}.{k}'" if where else f"'{k}'" for k in required)
        docs = field_docs(cls)
        hints_text = "; ".join(f"{k}: {docs[k]}" for k in required if docs.get(k))
        raise ConfigError(f"Missing required config key{'s' if len(required) > 1 else ''} {keys}"
                          f"{' (' + hints_text + ')' if hints_text else ''}.")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if where and not str(e).startswith(f"'{where}"):
            raise ConfigError(f"In '{where}': {e}") from None
        raise
    except TypeError as e:  # a missing required field
        raise ConfigError(f"In '{where or cls.__name__}': {e}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-safe dict (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; clear errors for missing/invalid files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file '{p}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file '{p}' is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file '{p}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{p}' must hold a mapping of keys to values, got {type(data).__name__}.")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a nested dict copy."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected key=value, e.g. --set train.lr=1e-5.")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set '{item}': the value is not valid YAML ({problem}). Quote a string that holds "
                              f"YAML characters, e.g. --set '{key}=\"{raw}\"'.") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if isinstance(node.get(p), str):  # `method: npo` is shorthand for `method: {name: npo}`
                node[p] = {"name": node[p]}
            elif not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(to_dict(data), sort_keys=False)
