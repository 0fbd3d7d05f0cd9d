"""Method registry: ``@register_method("name")`` on a Method subclass, timm-style."""

from __future__ import annotations

from collections.abc import Callable

from bench.errors import DabenchError
from bench.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def wrap(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise DabenchError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def method_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    _load_builtin()
    if name not in _REGISTRY:
        raise DabenchError(
            f"unknown method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _load_builtin() -> None:
    # Importing the modules runs their decorators; done lazily so that importing the
    # registry does not import every method (and torch) for `dabench data ...`.
    import bench.methods.causal
    import bench.methods.dan
    import bench.methods.dann
    import bench.methods.ddc
    import bench.methods.supervised  # noqa: F401
