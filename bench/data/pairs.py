"""A source→target pair of shards: located and validated once, the held-out
source-validation split, and the evaluation loader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from bench.data.cards import load_dataset_card
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset, ShardInfo, read_shard_info
from bench.data.views import extra_role
from bench.errors import DabenchError
from bench.paths import shard_root

# Unconstrained background images: generated for the synthetic benchmark, an ImageNet
# validation folder converted by the user for real pairs (Park et al. draw X_C from it).
SYNTH_BACKGROUNDS = "synth-backgrounds"
REAL_BACKGROUNDS = "imagenet-val-backgrounds"
DOMAINS = ("source", "target")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PairShards:
    """The shards of a source→target pair (plus background images when present), with
    what each holds, read and validated once."""

    source: str
    target: str
    source_train: Path
    source_test: Path
    target_train: Path
    target_test: Path
    backgrounds: Path | None
    joint_set: str
    root: int
    image_size: int
    infos: Mapping[str, ShardInfo] = field(default_factory=dict, repr=False, compare=False)
    # test splits of other datasets, evaluated and never trained on: card → shard
    also_test: Mapping[str, Path] = field(default_factory=dict, compare=False)

    def info(self, role: str) -> ShardInfo:
        return self.infos[role]

    def fingerprints(self) -> dict[str, str]:
        return {role: info.fingerprint for role, info in self.infos.items()}

    def path(self, domain: str, split: str) -> Path:
        """The shard of ``domain`` ("source" or "target") and ``split`` ("train" or "test")."""
        _check_choice("domain", domain, DOMAINS)
        _check_choice("split", split, SPLITS)
        return getattr(self, f"{domain}_{split}")

    def card(self, domain: str) -> str:
        """The dataset card of ``domain`` ("source" or "target")."""
        _check_choice("domain", domain, DOMAINS)
        return self.source if domain == "source" else self.target


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DabenchError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")


def _shard(card: str, split: str, root: Path) -> Path:
    path = root / card / f"{split}.h5"
    if not path.exists():
        kind = load_dataset_card(card).kind
        how = (
            f"generate it with `dabench data synth {card}`"
            if kind in ("synthetic", "images")
            else f"convert it with `dabench data convert {card} RAW_DIR`"
        )
        raise DabenchError(f"missing shard {path}; {how}")
    return path


def also_test_role(card: str) -> str:
    """The split name of another dataset's test split evaluated beside a pair."""
    return f"test@{card}"


def pair_shards(
    source: str,
    target: str,
    root: Path | None = None,
    extras: Sequence[str] = (),
    also_test: Sequence[str] = (),
) -> PairShards:
    """Locate and validate the four shards of a pair, the training shards of the other
    datasets ``extras`` a method reads beside it (:class:`~bench.data.views.Extra`) and the
    test shards of the datasets ``also_test`` it is evaluated on; joint sets and image sizes
    must agree."""
    root = root or shard_root()
    paths = {
        "source_train": _shard(source, "train", root),
        "source_test": _shard(source, "test", root),
        "target_train": _shard(target, "train", root),
        "target_test": _shard(target, "test", root),
    }
    infos = {role: read_shard_info(p) for role, p in paths.items()}
    for card in extras:
        infos[extra_role(card)] = read_shard_info(_shard(card, "train", root))
    tests = {card: _shard(card, "test", root) for card in also_test}
    for card, path in tests.items():
        infos[also_test_role(card)] = read_shard_info(path)
    joint_sets = {i.joint_set for i in infos.values()}
    if len(joint_sets) != 1:
        named = " and ".join([f"{source} → {target}", *extras, *also_test])
        raise DabenchError(
            f"{named}: joint sets do not match ({sorted(joint_sets)}); "
            "map them to a common joint set first"
        )
    sizes = {i.image_size for i in infos.values()}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise DabenchError(
            f"pair {source} → {target}: image sizes differ or are not square: {sorted(sizes)}"
        )
    jset = get_joint_set(next(iter(joint_sets)))
    background: Path | None = root / backgrounds_card(source, target) / "train.h5"
    if background.exists():
        infos["backgrounds"] = read_shard_info(background)
    else:
        background = None
    return PairShards(
        source=source,
        target=target,
        **paths,
        backgrounds=background,
        joint_set=jset.name,
        root=jset.root,
        image_size=next(iter(sizes))[0],
        infos=infos,
        also_test=tests,
    )


def backgrounds_card(source: str, target: str) -> str:
    """The background images a pair's methods draw on: the generated ones where both
    datasets are synthetic, the converted ImageNet validation images where either is real."""
    return REAL_BACKGROUNDS if any(map(_converted, (source, target))) else SYNTH_BACKGROUNDS


def _converted(card: str) -> bool:
    """Whether ``card`` is a dataset converted from a raw copy (shards without a card, as
    tests write them, count as generated)."""
    try:
        return load_dataset_card(card).synthetic is None
    except DabenchError:
        return False


def split_source_val(num: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of the source training shard: the last ``fraction`` is held out
    for source-validation model selection. Shards are sequence-major, so the held-out part
    is (nearly) whole sequences, never frames of a sequence that is trained on."""
    n_val = round(num * fraction)
    if fraction > 0 and n_val == 0:
        n_val = 1
    return np.arange(num - n_val), np.arange(num - n_val, num)


def eval_batches(
    path: Path, fields: tuple[str, ...], batch_size: int, indices: np.ndarray | None = None
) -> DataLoader:
    """The test (or validation) set in shard order, once."""
    dataset = ShardDataset(path, fields=fields, indices=indices)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)
