"""Reading the YAML files dabench is configured by — dataset cards, method cards, grids —
with one error format for all of them: ``<what> <path>: <problem>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.errors import DabenchError


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; unreadable YAML or another top-level type is
    one error naming the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DabenchError(f"{what} {path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DabenchError(f"{what} {path}: expected a mapping at the top level")
    return raw


def read_card(
    path: Path, what: str, required: Sequence[str], optional: Sequence[str]
) -> dict[str, Any]:
    """A card's mapping with its keys checked: every required key present, no unknown key,
    and ``name`` equal to the file name (cards are found by file name)."""
    raw = read_mapping(path, what)
    missing = [k for k in required if k not in raw]
    if missing:
        raise DabenchError(f"{what} {path}: missing key(s) {missing}")
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        raise DabenchError(
            f"{what} {path}: unknown key(s) {unknown}; valid keys: {sorted([*required, *optional])}"
        )
    if raw["name"] != Path(path).stem:
        raise DabenchError(f"{what} {path}: name {raw['name']!r} must match the file name")
    return raw
