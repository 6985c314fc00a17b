"""One config engine for every command: typed dataclasses in, checked values and CLI flags out.

Every option of pixelplay (train.py's run options, each algorithm's hyperparameters, each eval
command's settings) is a field of a ``@dataclass`` with a type, a default, the range it may take
(`bounded`) and a one-line docstring under it, as in CleanRL's tyro ``Args``. This module turns
such a dataclass into argparse flags (`add_flags`) and turns a dict (flags, a ``--config`` file, a
run's ``config.json``, a checkpoint's saved config) into an instance (`build`), checking every
value against its field's type and range in one place, so that a bad value from any source is
one `ConfigError` line and never a traceback deep inside a run.

Why not tyro or jsonargparse: pixelplay layers values (defaults < the env's preset < a config
file < flags), picks the algorithm's flags after reading ``--algo``, keeps its flag names
(``--no-track``, ``--double-dqn``) and must check values that come from JSON files exactly as it
checks flags. Those libraries parse a command line into a dataclass; the layering and the file
checks would still be ours. The engine below is small enough to read in one sitting.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Iterable
from typing import Any

from pixelplay.envs.errors import PixelplayError


class ConfigError(PixelplayError):
    """A configuration value of the wrong type or out of range, or an unknown option."""


def bounded(default: Any, *, low: float | None = None, high: float | None = None,
            choices: Iterable[Any] | None = None) -> Any:
    """A dataclass field with its allowed range next to it: ``num_envs: int = bounded(8, low=1)``.

    ``low`` and ``high`` are inclusive; ``choices`` lists the allowed values.
    """
    metadata = {"low": low, "high": high, "choices": tuple(choices) if choices is not None else None}
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (CleanRL / tyro style), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each field's resolved type (the annotations are strings under ``from __future__``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(kind: Any) -> str:
    args = typing.get_args(kind)
    if _is_optional(kind):
        return f"{_type_name(next(a for a in args if a is not type(None)))} or null"
    if typing.get_origin(kind) in (tuple, list):
        return f"a list of {_type_name(args[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _is_optional(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def coerce(kind: Any, value: Any) -> Any:
    """``value`` as the field type ``kind``, or raise ``TypeError``: no silent conversions.

    JSON gives ints where floats are meant (``1`` for ``1.0``), which is accepted; a string where
    a number is meant, a number where a bool is meant, or a list for a string is not.
    """
    if _is_optional(kind):
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = typing.get_args(kind)[0]
        return tuple(coerce(item, v) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        value = float(value)
        if math.isnan(value):
            raise TypeError
        return value
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"unsupported field type {kind}")


def check_field(cls: type, name: str, value: Any, where: str = "") -> Any:
    """``value`` checked and converted for field ``name`` of ``cls``; `ConfigError` otherwise."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    kind = field_types(cls)[name]
    label = f"{where}{name}"
    try:
        value = coerce(kind, value)
    except TypeError:
        raise ConfigError(f"{label} must be {_type_name(kind)}, got {value!r}") from None
    low, high, choices = (field.metadata.get(k) for k in ("low", "high", "choices"))
    if value is None:
        return value
    if choices is not None and value not in choices:
        raise ConfigError(f"{label} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{label} must be at least {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{label} must be at most {high:g}, got {value!r}")
    return value


def build(cls: type, values: Any, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from a dict, every value checked (`check_field`).

    ``where`` prefixes messages (``"config.json: algo."``). Unknown keys are refused with the
    nearest known name; missing keys take the field's default.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('. ') or cls.__name__} must be a JSON object (a dict of options), "
                          f"got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}{unknown[0]}: no such option{hint}")
    checked = {name: check_field(cls, name, value, where) for name, value in values.items()}
    instance = cls(**checked)
    check = getattr(instance, "check", None)
    if callable(check):
        check()
    return instance


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _argparse_type(kind: Any):
    if _is_optional(kind):
        inner = _argparse_type(next(a for a in typing.get_args(kind) if a is not type(None)))
        return lambda text: None if text.lower() in ("none", "null") else inner(text)
    if kind in (int, float, str):
        def parse(text: str, kind=kind):
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {_type_name(kind)}, got {text!r}") from None
        parse.__name__ = kind.__name__  # argparse names the type in its message
        return parse
    if typing.get_origin(kind) in (tuple, list):
        item = _argparse_type(typing.get_args(kind)[0])
        return lambda text: tuple(item(part) for part in text.split(",") if part.strip())
    return _parse_bool


def add_flags(group: Any, cls: type, dest_prefix: str = "", skip: Iterable[str] = ()) -> None:
    """One flag per field of ``cls`` (``--field-name``), its docstring as the help line.

    Flags default to "not given" (``argparse.SUPPRESS``), so that values from presets and
    config files are only overridden by what is typed; the field's own default is shown once.
    Booleans get ``--flag`` / ``--no-flag``; a tuple field takes a comma-separated list.
    """
    docs = field_docs(cls)
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = kinds[field.name]
        kwargs: dict[str, Any] = {"dest": dest_prefix + field.name, "default": argparse.SUPPRESS}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(kind)
            kwargs["metavar"] = field.name.upper()
            if field.metadata.get("choices"):
                kwargs["metavar"] = "{" + ",".join(map(str, field.metadata["choices"])) + "}"
        help_text = docs.get(field.name, "")
        default = field.default
        if default is not dataclasses.MISSING and default not in ("", None, ()):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        group.add_argument(flag, help=help_text.replace("%", "%%"), **kwargs)


def split_namespace(namespace: argparse.Namespace, prefixes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Group parsed flags by destination prefix: ``{"run": {...}, "algo": {...}, "": {...}}``."""
    groups: dict[str, dict[str, Any]] = {prefix: {} for prefix in prefixes}
    groups.setdefault("", {})
    for key, value in vars(namespace).items():
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, {})[name] = value
    return groups
