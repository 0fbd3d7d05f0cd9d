"""What a method asks for, built from shards: a source→target pair, its data needs checked
before any compute, and the loaders that feed the trainer."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from bench.data.cards import load_dataset_card
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset, ShardInfo, read_shard_info
from bench.errors import DabenchError
from bench.paths import shard_root

LABELS = ("images", "kp2d", "kp3d", "vis", "K")


class DataNeed(enum.StrEnum):
    """What a method reads; the harness checks a pair provides it before any compute."""

    SOURCE_LABELS = "source_labels"  # labelled source training images
    TARGET_IMAGES = "target_images"  # unlabelled target training images
    TARGET_LABELS = "target_labels"  # labelled target training images (oracle only)
    SOURCE_MASKS = "source_masks"
    TARGET_MASKS = "target_masks"
    TARGET_FRAME_PAIRS = "target_frame_pairs"  # frames of one sequence at a stride
    TARGET_MULTI_VIEW = "target_multi_view"  # synchronised calibrated views
    BACKGROUNDS = "backgrounds"  # unconstrained images without the subject


BACKGROUNDS_CARD = "synth-backgrounds"


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

    def info(self, role: str) -> ShardInfo:
        return self.infos[role]

    def fingerprints(self) -> dict[str, str]:
        return {role: info.fingerprint for role, info in self.infos.items()}


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


def pair_shards(source: str, target: str, root: Path | None = None) -> PairShards:
    """Locate and validate the four shards of a pair; joint sets and image sizes must agree."""
    root = root or shard_root()
    paths = {
        "source_train": _shard(source, "train", root),
        "source_test": _shard(source, "test", root),
        "target_train": _shard(target, "train", root),
        "target_test": _shard(target, "test", root),
    }
    infos = {role: read_shard_info(p) for role, p in paths.items()}
    joint_sets = {i.joint_set for i in infos.values()}
    if len(joint_sets) != 1:
        raise DabenchError(
            f"pair {source} → {target}: joint sets do not match ({sorted(joint_sets)}); "
            "map both to a common joint set first"
        )
    sizes = {i.image_size for i in infos.values()}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise DabenchError(
            f"pair {source} → {target}: image sizes differ or are not square: {sorted(sizes)}"
        )
    jset = get_joint_set(next(iter(joint_sets)))
    background: Path | None = root / BACKGROUNDS_CARD / "train.h5"
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
    )


# need -> (shard role, fields it must hold)
_NEED_FIELDS: dict[DataNeed, tuple[str, tuple[str, ...]]] = {
    DataNeed.SOURCE_LABELS: ("source_train", LABELS),
    DataNeed.TARGET_IMAGES: ("target_train", ("images",)),
    DataNeed.TARGET_LABELS: ("target_train", LABELS),
    DataNeed.SOURCE_MASKS: ("source_train", ("masks",)),
    DataNeed.TARGET_MASKS: ("target_train", ("masks",)),
    DataNeed.TARGET_FRAME_PAIRS: ("target_train", ("seq", "frame")),
    DataNeed.TARGET_MULTI_VIEW: ("target_train", ("seq", "frame", "view", "cam_R", "cam_t")),
}


def check_needs(method: str, needs: Iterable[DataNeed], pair: PairShards) -> None:
    """One clear error, before any compute, when the pair cannot feed the method."""
    problems = []
    for need in sorted(needs):
        if need is DataNeed.BACKGROUNDS:
            if pair.backgrounds is None:
                problems.append(
                    f"{need.value}: no background images (run `dabench data synth "
                    f"{BACKGROUNDS_CARD}`)"
                )
            continue
        role, fields = _NEED_FIELDS[need]
        present = set(pair.info(role).fields)
        missing = [f for f in fields if f not in present]
        if missing:
            card = pair.source if role.startswith("source") else pair.target
            problems.append(f"{need.value}: {card} has no {', '.join(missing)}")
    if problems:
        raise DabenchError(
            f"method {method} cannot run on {pair.source} → {pair.target}: " + "; ".join(problems)
        )


def role_fields(needs: Iterable[DataNeed]) -> dict[str, tuple[str, ...]]:
    """Which fields each batch role ("source", "target", "backgrounds") carries."""
    needs = set(needs)
    roles: dict[str, list[str]] = {}
    if DataNeed.SOURCE_LABELS in needs:
        roles.setdefault("source", []).extend(LABELS)
    if DataNeed.SOURCE_MASKS in needs:
        roles.setdefault("source", ["images"]).append("masks")
    if DataNeed.TARGET_LABELS in needs:
        roles.setdefault("target", []).extend(LABELS)
    if DataNeed.TARGET_IMAGES in needs:
        roles.setdefault("target", []).append("images")
    if DataNeed.TARGET_MASKS in needs:
        roles.setdefault("target", ["images"]).append("masks")
    if DataNeed.BACKGROUNDS in needs:
        roles["backgrounds"] = ["images"]
    return {role: tuple(dict.fromkeys(fields)) for role, fields in roles.items()}


def split_source_val(num: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of the source training shard: the last ``fraction`` is held out
    for source-validation model selection. Shards are sequence-major, so the held-out part
    is (nearly) whole sequences, never frames of a sequence that is trained on."""
    n_val = round(num * fraction)
    if fraction > 0 and n_val == 0:
        n_val = 1
    return np.arange(num - n_val), np.arange(num - n_val, num)


def infinite_batches(
    path: Path,
    fields: tuple[str, ...],
    batch_size: int,
    seed: int,
    indices: np.ndarray | None = None,
    workers: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches forever (a new permutation per epoch, seeded), dropping the last
    incomplete batch so every step sees the same batch size."""
    dataset = ShardDataset(path, fields=fields, indices=indices)
    if len(dataset) < batch_size:
        raise DabenchError(
            f"{path} has {len(dataset)} usable samples, fewer than the batch size {batch_size}"
        )
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=gen),
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker,
    )
    while True:
        yield from loader


def eval_batches(
    path: Path, fields: tuple[str, ...], batch_size: int, indices: np.ndarray | None = None
) -> DataLoader:
    """The test (or validation) set in shard order, once."""
    dataset = ShardDataset(path, fields=fields, indices=indices)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - libraries draw from the global RNG
