"""``dabench data convert CARD RAW_DIR``: annotations of every asked split read and checked
first, then per split the images read, cropped and written in order (both cores where the
work is CPU-bound), each shard appearing whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from bench.data.cards import load_dataset_card
from bench.data.convert.base import Converter, Item, get_converter
from bench.data.convert.crop import centre_square, mask_points, square_around
from bench.data.convert.raw import RawFiles
from bench.data.joints import get_joint_set, get_mapping
from bench.data.schema import NO_JOINTS
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
    # every split's annotations read, checked and counted first: a problem in any of them
    # stops before a byte is written. A converter's generator is not kept: it is read again
    # to write, so no split is ever held in memory.
    scans = []
    for split in asked:
        items = converter.items(raw, split)
        kept = items if isinstance(items, list) else None
        count, names = _scan(items, raw.root, f"{card.name}/{split} annotations", progress)
        if not count:
            raise DabenchError(f"{card.name}: split {split!r} of {raw.root} has no samples")
        scans.append((split, kept, count, names))
    read = raw.fingerprint()
    out_dir = (out_root or shard_root()) / card.name
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, kept, count, names in scans:
        path = out_dir / f"{split}.h5"
        fingerprint = _fingerprint(converter, read, split, names, size)
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
        items = kept if kept is not None else converter.items(RawFiles(card.name, raw.root), split)
        _write(
            converter,
            card,
            raw.root,
            split,
            items,
            count,
            path,
            fingerprint,
            size,
            workers,
            progress,
        )
    return paths


def _scan(items: Iterable[Item], root: Path, desc: str, progress: bool) -> tuple[int, str]:
    """How many samples, and a digest of every image's and mask's name and size (a video or
    annotation file shared by consecutive samples is looked up once). Reading Human3.6M's
    or SURREAL's annotations takes minutes, so a bar counts the samples and files read."""
    h = hashlib.sha256()
    sizes: dict[str, int] = {}
    count = files = 0
    with tqdm(unit="sample", desc=desc, disable=not progress) as bar:
        for item in items:
            count += 1
            bar.update()
            for name, frame in ((item.image, item.image_frame), (item.mask, item.mask_frame)):
                if name is None:
                    continue
                if name not in sizes:
                    if len(sizes) > 4:
                        sizes.clear()
                    try:
                        sizes[name] = (root / name).stat().st_size
                    except OSError as exc:
                        raise DabenchError(f"cannot read {root / name}: {exc.strerror}") from exc
                    files += 1
                    bar.set_postfix(files=files, refresh=False)
                h.update(f"{name}\0{frame}\0{sizes[name]}\0".encode())
    return count, h.hexdigest()


def _fingerprint(converter: Converter, read: str, split: str, names: str, size: int) -> str:
    """The annotations read (their bytes), every image's and mask's name and size, and the
    settings."""
    h = hashlib.sha256(read.encode())
    h.update(names.encode())
    settings = {"converter": converter.version, "split": split, "size": size}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return f"convert-{converter.card}-v{converter.version}:{h.hexdigest()}"


def _write(
    converter: Converter,
    card: Any,
    root: Path,
    split: str,
    items: Iterable[Item],
    count: int,
    path: Path,
    fingerprint: str,
    size: int,
    workers: int | None,
    progress: bool,
) -> None:
    joints = 0 if card.joint_set == NO_JOINTS else get_joint_set(card.joint_set).num_joints
    workers = workers or min(2, os.cpu_count() or 1)
    attrs = {"split": split, "converted": json.dumps({"size": size, "samples": count})}
    with (
        ShardWriter(
            path,
            dataset=card.name,
            joint_set=card.joint_set,
            root_joint=card.root_joint,
            image_size=(size, size),
            num_joints=joints,
            fingerprint=fingerprint,
            producer=f"{PRODUCER} {converter.card} v{converter.version}",
            fields=converter.fields_of(split),
            attrs=attrs,
            expected_samples=count,
            overwrite=path.exists(),
        ) as writer,
        tqdm(total=count, unit="img", desc=f"{card.name}/{split}", disable=not progress) as bar,
    ):
        stream = iter(items)
        chunks = iter(lambda: list(islice(stream, CHUNK)), [])
        jobs = ((chunk, root, size, converter, card.joint_set, split) for chunk in chunks)
        for batch in _batches(jobs, workers):
            writer.append(batch)
            bar.update(len(batch["images"]))


def _batches(jobs: Iterator[tuple], workers: int) -> Iterator[dict[str, np.ndarray]]:
    """The prepared chunks in order; at most two per worker in flight (Executor.map would
    submit, and so hold, every chunk of the split at once)."""
    if workers <= 1:
        yield from map(_prepare, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(_prepare, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _prepare(job: tuple) -> dict[str, np.ndarray]:
    """Read, crop and map one chunk of samples (in a worker process)."""
    items, root, size, converter, joint_set, split = job
    fields = converter.fields_of(split)
    if joint_set == NO_JOINTS:  # images only (background images)
        crops = []
        for item in items:
            image = converter.read_image(root, item)
            crops.append(centre_square(image.shape[:2], size).image(image))
        return {"images": np.asarray(crops, dtype=np.uint8)}
    mapping = get_mapping(converter.raw_joints, joint_set)
    out: dict[str, list] = {k: [] for k in ("images", "kp2d", "kp3d", "vis", "K", *fields)}
    for item in items:
        image = converter.read_image(root, item)
        decoded = converter.read_mask(root, item)
        fg = None if decoded is None else converter.mask_of(decoded).astype(np.uint8) * 255
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
