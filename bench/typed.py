"""Typed values from YAML for the frozen dataclasses a grid configures (model and training
settings, method hyper-parameters): one rule for which YAML value fits which field."""

from __future__ import annotations

from typing import Any

from bench.errors import DabenchError

_OPTIONAL_SUFFIX = " | None"


def type_name(annotation: Any) -> str:
    """``int``, ``tuple[float, ...]``, ``str | None``: the annotation as written."""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def coerce_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as the annotated type (an int is a valid float, a list a valid tuple; a
    bool is never a number); anything else is one error naming the expected type."""
    name = type_name(annotation)
    if name.endswith(_OPTIONAL_SUFFIX):
        if value is None:
            return None
        name = name.removesuffix(_OPTIONAL_SUFFIX)
    if name == "bool":
        if isinstance(value, bool):
            return value
    elif name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif name == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif name == "str":
        if isinstance(value, str):
            return value
    elif name.startswith("tuple"):
        if isinstance(value, list | tuple):
            items = _tuple_items(name, len(value))
            if items is None:
                return tuple(value)
            if len(items) == len(value):
                try:
                    pairs = zip(value, items, strict=True)
                    return tuple(coerce_value(v, t, where) for v, t in pairs)
                except DabenchError:
                    pass  # one error below, naming the whole expected type
    else:
        return value
    raise DabenchError(f"{where} must be {name}, got {value!r}")


def _tuple_items(name: str, length: int) -> list[str] | None:
    """The element types a ``tuple[...]`` annotation gives a value of ``length`` items (a
    fixed-arity annotation gives its own count), or ``None`` where it does not say (bare or
    nested tuples)."""
    inner = name[len("tuple[") : -1] if name.startswith("tuple[") else ""
    if not inner or "[" in inner:
        return None
    parts = [part.strip() for part in inner.split(",")]
    if len(parts) == 2 and parts[1] == "...":
        return [parts[0]] * length
    return parts


def check_non_negative(where: str, **values: float) -> None:
    """Hyper-parameter range check: each value >= 0, else one error naming it."""
    for name, value in values.items():
        if not value >= 0:
            raise DabenchError(f"{where}: {name} must be >= 0, got {value!r}")


def check_positive_int(where: str, **values: int) -> None:
    for name, value in values.items():
        if not value > 0:
            raise DabenchError(f"{where}: {name} must be a positive integer, got {value!r}")


def check_choice(where: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DabenchError(f"{where}: unknown {name} {value!r}; valid: {', '.join(choices)}")
