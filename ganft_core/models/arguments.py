"""Typed architecture arguments: checking a JSON-ish dict against a frozen args dataclass.

Model arguments arrive from `model.json` files (users write them) and from the trainers. A wrong
name or type must be a `ModelError` naming the argument, never a TypeError from deep inside a
constructor, so every value is checked against the dataclass field's type before the net is built.
Supported field types: bool, int, float, str, Literal[...], tuple[int, ...], tuple[float, ...].
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from ganft_core.errors import ModelError

A = TypeVar("A")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` says (lists become tuples, ints become floats), or ModelError."""
    origin = get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ModelError(f"argument {name!r} must be true or false, got {value!r}", field=name)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ModelError(f"argument {name!r} must be an integer, got {value!r}", field=name)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ModelError(f"argument {name!r} must be a number, got {value!r}", field=name)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ModelError(f"argument {name!r} must be a string, got {value!r}", field=name)
    if origin is Literal:
        choices = get_args(hint)
        if isinstance(value, str) and value in choices:
            return value
        raise ModelError(f"argument {name!r} must be one of {list(choices)}, got {value!r}", field=name)
    if origin is tuple:
        item_hint, ellipsis = get_args(hint)
        assert ellipsis is Ellipsis, f"only tuple[T, ...] fields are supported ({name})"
        if not isinstance(value, (list, tuple)):
            raise ModelError(f"argument {name!r} must be a list, got {value!r}", field=name)
        return tuple(_coerce(f"{name}[{i}]", v, item_hint) for i, v in enumerate(value))
    raise AssertionError(f"unsupported argument type {hint!r} for {name}")


def parse_arguments(cls: type[A], values: Mapping[str, Any], *, architecture: str) -> A:
    """Build the frozen dataclass `cls` from `values`; unknown, missing or mistyped names are ModelErrors."""
    if not isinstance(values, Mapping):
        raise ModelError(f"arguments of {architecture!r} must be a JSON object", field="arguments")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ModelError(
            f"unknown argument {unknown[0]!r} for architecture {architecture!r}; known: {sorted(fields)}",
            field=unknown[0],
        )
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _coerce(name, values[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ModelError(f"architecture {architecture!r} needs the argument {name!r}", field=name)
    return cls(**kwargs)


def arguments_to_json(args: Any) -> dict[str, Any]:
    """The dataclass as plain JSON values (tuples become lists), defaults included."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# Value checks for `__post_init__` of the args dataclasses.


def require_positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ModelError(f"argument {name!r} must be positive, got {value}", field=name)


def require_all_positive(name: str, values: tuple[int, ...], *, allow_empty: bool = True) -> None:
    if not values and not allow_empty:
        raise ModelError(f"argument {name!r} must not be empty", field=name)
    for v in values:
        require_positive(name, v)


def require_range(name: str, value: float, low: float, high: float) -> None:
    """low <= value < high (dropout probabilities, noise levels)."""
    if not low <= value < high:
        raise ModelError(f"argument {name!r} must lie in [{low}, {high}), got {value}", field=name)


def require_shape(name: str, shape: tuple[int, ...]) -> None:
    """A per-example shape: (F,) for vectors or (C, H, W) for images, all positive."""
    if len(shape) not in (1, 3):
        raise ModelError(f"argument {name!r} must be [F] or [C, H, W], got {list(shape)}", field=name)
    require_all_positive(name, shape)


def require_power_of_two(name: str, value: int, low: int, high: int) -> None:
    if value < low or value > high or value & (value - 1):
        raise ModelError(f"argument {name!r} must be a power of two in {low}..{high}, got {value}", field=name)
