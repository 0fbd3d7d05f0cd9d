"""Dataset cards: one YAML file per dataset or synthetic domain in ``datasets/``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.joints import get_joint_set
from bench.errors import DabenchError
from bench.paths import dataset_cards_dir
from bench.yaml_files import read_card

KINDS = ("synthetic", "real", "images")
_REQUIRED = ("name", "kind", "description", "joint_set", "root_joint", "splits", "licence")
_OPTIONAL = (
    "units",
    "synthetic",
    "converter",
    "raw_layout",
    "provides",
    "notes",
    "reference",
    "paper_name",  # how the seed papers' tables name the dataset (reports print their numbers)
)


@dataclass(frozen=True)
class DatasetCard:
    """What a dataset is: its joints, units, splits, and how its shards are made."""

    name: str
    kind: str
    description: str
    joint_set: str
    root_joint: str
    splits: tuple[str, ...]
    licence: str
    path: Path
    units: Mapping[str, str] = field(default_factory=lambda: {"kp3d": "mm", "kp2d": "px"})
    synthetic: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_joints(self) -> bool:
        return self.joint_set != "none"


def _parse(path: Path) -> DatasetCard:
    raw = read_card(path, "dataset card", _REQUIRED, _OPTIONAL)
    if raw["kind"] not in KINDS:
        raise DabenchError(f"dataset card {path}: kind {raw['kind']!r} is not one of {KINDS}")
    if raw["joint_set"] != "none":
        jset = get_joint_set(raw["joint_set"])
        if raw["root_joint"] not in jset.joints:
            raise DabenchError(
                f"dataset card {path}: root_joint {raw['root_joint']!r} is not a joint of "
                f"{jset.name}"
            )
    if raw["kind"] == "synthetic" and not isinstance(raw.get("synthetic"), dict):
        raise DabenchError(f"dataset card {path}: a synthetic card needs a 'synthetic' section")
    if raw["kind"] == "synthetic" and raw.get("paper_name"):
        raise DabenchError(
            f"dataset card {path}: a synthetic dataset cannot carry a paper_name (no paper "
            "measured on it; reports would print a published number beside it)"
        )
    extra = {k: raw[k] for k in _OPTIONAL if k in raw and k not in ("units", "synthetic")}
    return DatasetCard(
        name=raw["name"],
        kind=raw["kind"],
        description=" ".join(str(raw["description"]).split()),
        joint_set=raw["joint_set"],
        root_joint=raw["root_joint"],
        splits=tuple(raw["splits"]),
        licence=" ".join(str(raw["licence"]).split()),
        path=path,
        units=raw.get("units", {"kp3d": "mm", "kp2d": "px"}),
        synthetic=raw.get("synthetic"),
        extra=extra,
    )


def list_dataset_cards(directory: Path | None = None) -> list[DatasetCard]:
    """Every card in the cards directory, sorted by name."""
    directory = directory or dataset_cards_dir()
    return [_parse(p) for p in sorted(directory.glob("*.yaml"))]


def load_dataset_card(name: str, directory: Path | None = None) -> DatasetCard:
    """The card called ``name``; an unknown name is an error listing the valid ones."""
    directory = directory or dataset_cards_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in directory.glob("*.yaml"))
        raise DabenchError(f"unknown dataset card {name!r}; valid cards: {', '.join(valid)}")
    return _parse(path)
