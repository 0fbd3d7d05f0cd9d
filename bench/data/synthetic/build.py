"""Write the shards of a synthetic card: checks first, then chunks (in parallel) → writer."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench.data.cards import DatasetCard, load_dataset_card
from bench.data.joints import get_joint_set
from bench.data.shards import ShardWriter, read_shard_info
from bench.data.synthetic.generate import (
    GENERATOR_VERSION,
    PRODUCER,
    SynthSpec,
    generate_chunk,
    split_chunks,
)
from bench.errors import DabenchError, ShardError, ShardMismatchError
from bench.paths import shard_root

_FIELDS = {
    "3d": ("masks", "cam_R", "cam_t", "seq", "frame", "view", "subject"),
    "2d": ("subject", "head_size"),
}
MIN_SIZE = 16


@dataclass(frozen=True)
class PlannedSplit:
    split: str
    num: int
    path: Path
    fingerprint: str
    exists: bool


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DabenchError(f"{name} must be a positive integer, got {value!r}")
    return value


def plan(
    card: DatasetCard,
    out_root: Path | None,
    n_train: int | None,
    n_test: int | None,
    size: int | None,
    seed: int | None,
    overwrite: bool,
) -> tuple[SynthSpec, int, int, list[PlannedSplit]]:
    """Validate everything and decide what to write, before a single byte is written."""
    spec = SynthSpec.from_card(card)
    d = spec.defaults
    n_train = _positive("--n-train", d["n_train"] if n_train is None else n_train)
    n_test = _positive("--n-test", d["n_test"] if n_test is None else n_test)
    size = _positive("--size", d["size"] if size is None else size)
    if size < MIN_SIZE:
        raise DabenchError(f"--size must be at least {MIN_SIZE} pixels, got {size}")
    seed = d["seed"] if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DabenchError(f"--seed must be a non-negative integer, got {seed!r}")
    out_dir = (out_root or shard_root()) / card.name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DabenchError(f"cannot create output directory {out_dir}: {exc.strerror}") from exc
    if not os.access(out_dir, os.W_OK):
        raise DabenchError(f"output directory {out_dir} is not writable")
    planned = []
    for split, num in (("train", n_train), ("test", n_test)):
        path = out_dir / f"{split}.h5"
        fp = spec.fingerprint(split, num, size, seed)
        exists = path.exists()
        if exists:
            try:
                stored = read_shard_info(path).fingerprint
            except ShardError as exc:
                if not overwrite:
                    raise DabenchError(
                        f"{path} exists but is not a valid shard ({exc}); pass --overwrite to "
                        "replace it"
                    ) from exc
                stored = None
            if stored == fp:
                continue
            if not overwrite:
                raise ShardMismatchError(
                    f"{path} exists with a different fingerprint (made with other sizes, seed "
                    "or generator settings); pass --overwrite to replace it"
                )
        planned.append(PlannedSplit(split, num, path, fp, exists))
    return spec, size, seed, planned


def _chunks(spec: SynthSpec, split: str, seed: int, size: int, count: int, workers: int):
    """Chunks in order; with workers > 1 a bounded window of them is generated ahead."""
    if workers <= 1 or count <= 2:
        for c in range(count):
            yield generate_chunk(spec, split, seed, c, size)
        return
    # Workers run numpy/scipy only (fork-safe), so fork where the platform has it: no
    # re-import of the parent's modules, and no dependence on the parent's __main__.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque = deque()
        nxt = 0
        while nxt < count or pending:
            while nxt < count and len(pending) < 2 * workers:
                pending.append(pool.submit(generate_chunk, spec, split, seed, nxt, size))
                nxt += 1
            yield pending.popleft().result()


def synthesize(
    card_names: str | list[str],
    out_root: Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    size: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Generate ``<out_root>/<card>/{train,test}.h5`` for one or more cards; returns the
    shard paths (train, test per card).

    Every card is checked before anything is written, so a refusal leaves no card half
    done. Shards that already exist with the same fingerprint are kept as they are; a
    shard with a different fingerprint is refused unless ``overwrite``.
    """
    names = [card_names] if isinstance(card_names, str) else list(card_names)
    cards = [load_dataset_card(name) for name in names]
    plans = [plan(c, out_root, n_train, n_test, size, seed, overwrite) for c in cards]
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    paths = []
    for card, (spec, size_, seed_, planned) in zip(cards, plans, strict=True):
        for p in planned:
            _write_split(card, spec, p, size_, seed_, workers, progress)
        out_dir = (out_root or shard_root()) / card.name
        paths += [out_dir / f"{s}.h5" for s in ("train", "test")]
    return paths


def _write_split(
    card: DatasetCard,
    spec: SynthSpec,
    p: PlannedSplit,
    size: int,
    seed: int,
    workers: int,
    progress: bool,
) -> None:
    num_joints = get_joint_set(card.joint_set).num_joints if card.has_joints else 0
    attrs = {
        "synthetic": json.dumps(
            {
                "n": p.num,
                "size": size,
                "seed": seed,
                "style": spec.style.name,
                "views": spec.views,
                "frames": spec.frames,
                "generator": GENERATOR_VERSION,
            },
            sort_keys=True,
        ),
        "split": p.split,
    }
    with (
        ShardWriter(
            p.path,
            dataset=card.name,
            joint_set=card.joint_set,
            root_joint=card.root_joint,
            image_size=(size, size),
            num_joints=num_joints,
            fingerprint=p.fingerprint,
            producer=PRODUCER,
            fields=_FIELDS[spec.labels] if spec.subject != "none" else (),
            attrs=attrs,
            expected_samples=p.num,
            overwrite=p.exists,
        ) as writer,
        tqdm(
            total=p.num,
            unit="img",
            desc=f"{card.name}/{p.split}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        written = 0
        count = split_chunks(spec, p.num, size)
        for chunk in _chunks(spec, p.split, seed, size, count, workers):
            take = min(len(chunk["images"]), p.num - written)
            writer.append({k: v[:take] for k, v in chunk.items()})
            written += take
            bar.update(take)
