"""``dabench data convert CARD RAW_DIR``: annotations of every asked split read and checked
first, then per split the images read, cropped and written in order (both cores where the
work is CPU-bound), each shard appearing whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from bench.data.cards import load_dataset_card
from bench.data.convert.base import Converter, Item, get_converter
from bench.data.convert.crop import mask_points, square_around
from bench.data.convert.raw import RawFiles, decode_image
from bench.data.joints import get_joint_set, get_mapping
from bench.data.shards import ShardWriter, read_shard_info
from bench.errors import DabenchError, ShardError
from bench.paths import shard_root

PRODUCER = "bench.data.convert"
DEFAULT_SIZE = 256
CHUNK = 64  # samples per work unit


def convert(
    card_name: str,
    raw_dir: Path,
    out_root: Path | None = None,
    *,
    splits: Sequence[str] | None = None,
    size: int = DEFAULT_SIZE,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Convert the raw copy of ``card_name`` under ``raw_dir`` into
    ``<out_root>/<card>/<split>.h5``; returns the shard paths. A shard that exists with the
    same fingerprint is kept; with another, refused unless ``overwrite``."""
    card = load_dataset_card(card_name)
    converter = get_converter(card.name)
    asked = list(splits or converter.splits)
    bad = [s for s in asked if s not in converter.splits]
    if bad:
        raise DabenchError(f"{card.name}: unknown split(s) {bad}; valid: {list(converter.splits)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise DabenchError(f"--size must be an integer of at least 16 pixels, got {size!r}")
    raw = RawFiles(card.name, Path(raw_dir))
    # every split's annotations first: a problem in any of them stops before a byte is written
    planned = [(split, converter.items(raw, split)) for split in asked]
    for split, items in planned:
        if not items:
            raise DabenchError(f"{card.name}: split {split!r} of {raw.root} has no samples")
    out_dir = (out_root or shard_root()) / card.name
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, items in planned:
        path = out_dir / f"{split}.h5"
        fingerprint = _fingerprint(converter, raw, split, items, size)
        paths.append(path)
        if path.exists():
            try:
                stored = read_shard_info(path).fingerprint
            except ShardError:
                stored = None
            if stored == fingerprint:
                continue
            if not overwrite:
                raise DabenchError(
                    f"{path} exists and was made from other raw files or settings; pass "
                    "--overwrite to replace it"
                )
        _write(converter, card, raw.root, split, items, path, fingerprint, size, workers, progress)
    return paths


def _fingerprint(
    converter: Converter, raw: RawFiles, split: str, items: list[Item], size: int
) -> str:
    """The annotations read (their bytes), every image's and mask's name and size, and the
    settings."""
    h = hashlib.sha256(raw.fingerprint().encode())
    for item in items:
        for name in (item.image, item.mask) if item.mask else (item.image,):
            h.update(f"{name}\0{(raw.root / name).stat().st_size}\0".encode())
    settings = {"converter": converter.version, "split": split, "size": size}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return f"convert-{converter.card}-v{converter.version}:{h.hexdigest()}"


def _write(
    converter: Converter,
    card: Any,
    root: Path,
    split: str,
    items: list[Item],
    path: Path,
    fingerprint: str,
    size: int,
    workers: int | None,
    progress: bool,
) -> None:
    jset = get_joint_set(card.joint_set)
    workers = workers or min(2, os.cpu_count() or 1)
    attrs = {"split": split, "converted": json.dumps({"size": size, "samples": len(items)})}
    with (
        ShardWriter(
            path,
            dataset=card.name,
            joint_set=card.joint_set,
            root_joint=card.root_joint,
            image_size=(size, size),
            num_joints=jset.num_joints,
            fingerprint=fingerprint,
            producer=f"{PRODUCER} {converter.card} v{converter.version}",
            fields=converter.fields_of(split),
            attrs=attrs,
            expected_samples=len(items),
            overwrite=path.exists(),
        ) as writer,
        tqdm(
            total=len(items), unit="img", desc=f"{card.name}/{split}", disable=not progress
        ) as bar,
    ):
        jobs = [
            (items[i : i + CHUNK], root, size, converter, card.joint_set, split)
            for i in range(0, len(items), CHUNK)
        ]
        for batch in _batches(jobs, workers):
            writer.append(batch)
            bar.update(len(batch["images"]))


def _batches(jobs: list[tuple], workers: int) -> Iterator[dict[str, np.ndarray]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_prepare, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_prepare, jobs)  # in order


def _prepare(job: tuple) -> dict[str, np.ndarray]:
    """Read, crop and map one chunk of samples (in a worker process)."""
    items, root, size, converter, joint_set, split = job
    fields = converter.fields_of(split)
    mapping = get_mapping(converter.raw_joints, joint_set)
    out: dict[str, list] = {k: [] for k in ("images", "kp2d", "kp3d", "vis", "K", *fields)}
    for item in items:
        image = decode_image(_read(root, item.image), str(root / item.image))
        fg = None
        if item.mask is not None:
            decoded = decode_image(_read(root, item.mask), str(root / item.mask))
            fg = converter.mask_of(decoded).astype(np.uint8) * 255
        if converter.crop_from == "mask":
            if fg is None:
                raise DabenchError(f"{converter.card}: {item.image} has no mask to crop around")
            crop = square_around(mask_points(fg), np.ones(2, bool), size)
        else:
            crop = square_around(item.kp2d, item.vis, size)
        out["images"].append(crop.image(image))
        out["kp2d"].append(mapping.apply(crop.points(item.kp2d)))
        out["vis"].append(mapping.apply_vis(item.vis))
        if item.kp3d is not None and item.K is not None:
            out["kp3d"].append(mapping.apply(item.kp3d))
            out["K"].append(crop.intrinsics(item.K))
        else:
            # 2D-only: no 3D, and the crop's nominal pinhole (focal = side, centred) so that
            # every shard keeps one schema
            out["kp3d"].append(np.full((mapping.num_target_joints, 3), np.nan))
            c = (size - 1) / 2
            out["K"].append(np.array([[size, 0.0, c], [0.0, size, c], [0.0, 0.0, 1.0]]))
        if "masks" in fields:
            if fg is None:
                raise DabenchError(f"{converter.card}: {item.image} has no mask")
            out["masks"].append((crop.image(fg, Image.Resampling.NEAREST) > 127).astype(np.uint8))
        if "head_size" in fields:
            out["head_size"].append(crop.lengths(item.head_size or np.nan))
        for name in ("subject", "seq", "frame", "view", "cam_R", "cam_t"):
            if name in fields:
                out[name].append(getattr(item, name))
    dtypes = {
        "images": np.uint8,
        "masks": np.uint8,
        "vis": bool,
        "subject": np.int32,
        "seq": np.int64,
        "frame": np.int32,
        "view": np.int16,
    }
    return {k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in out.items()}


def _read(root: Path, relative: str) -> bytes:
    try:
        return (root / relative).read_bytes()
    except OSError as exc:
        raise DabenchError(f"cannot read {root / relative}: {exc.strerror}") from exc
