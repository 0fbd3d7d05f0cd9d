"""Shard throughput: writing, and a full shuffled pass through a standard DataLoader.

Run for real with ``pytest tests/benchmarks/test_bench_shards.py --benchmark-enable``;
``extra_info["samples_per_s"]`` holds the throughput of each benchmark.
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from bench.data.shards import ShardDataset, ShardWriter

N, K, SIZE, BATCH = 4096, 21, 64, 256


def render_like(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Images that compress like the synthetic renders: shaded ellipses ("limbs") on a flat
    background (even samples) or a smooth texture with sensor noise (odd samples)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    # a pool of noise fields keeps generation fast; every chunk is still compressed alone
    noise = rng.normal(0, 4, (16, SIZE, SIZE, 3)).astype(np.float32)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((n, SIZE, SIZE), np.uint8)
    for s in range(0, n, BATCH):  # blocks: big temporaries would make this memory-bound
        m = min(BATCH, n - s)
        fx, fy = (rng.uniform(0.05, 0.3, (m, 1, 1, 1)).astype(np.float32) for _ in range(2))
        phase = rng.uniform(0, 6.3, (m, 1, 1, 3)).astype(np.float32)
        texture = 128 + 60 * np.sin(xx[..., None] * fx + phase) * np.cos(yy[..., None] * fy)
        texture += noise[rng.integers(0, len(noise), m)]
        flat = rng.integers(0, 256, (m, 1, 1, 3)).astype(np.float32)
        background = np.where((np.arange(s, s + m) % 2 == 0)[:, None, None, None], flat, texture)
        mask = np.zeros((m, SIZE, SIZE), bool)
        shade = np.zeros((m, SIZE, SIZE), np.float32)
        for _ in range(6):  # drawn back to front, one colour per image
            cx, cy = (rng.uniform(10, SIZE - 10, (m, 1, 1)).astype(np.float32) for _ in "xy")
            ax = rng.uniform(3, 12, (m, 1, 1)).astype(np.float32)
            ay = rng.uniform(2, 6, (m, 1, 1)).astype(np.float32)
            d = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
            inside = d < 1
            shade = np.where(inside, 1 - 0.4 * d, shade)
            mask |= inside
        colour = rng.uniform(60, 230, (m, 1, 1, 3)).astype(np.float32)
        img = np.where(mask[..., None], colour * shade[..., None], background)
        images[s : s + m] = np.clip(img, 0, 255)
        masks[s : s + m] = mask
    focal = rng.uniform(80, 120, n).astype(np.float32)
    intrinsics = np.zeros((n, 3, 3), np.float32)
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
    intrinsics[:, :2, 2] = SIZE / 2 - 0.5
    intrinsics[:, 2, 2] = 1
    return {
        "images": images,
        "masks": masks,
        "kp2d": rng.uniform(0, SIZE - 1, (n, K, 2)).astype(np.float32),
        "kp3d": (rng.normal(0, 50, (n, K, 3)) + np.array([0, 0, 500])).astype(np.float32),
        "vis": rng.random((n, K)) > 0.1,
        "K": intrinsics,
        "seq": np.arange(n, dtype=np.int64) // 64,
        "frame": (np.arange(n) % 64).astype(np.int32),
    }


def write(path: Path, cols: dict[str, np.ndarray]) -> Path:
    with ShardWriter(
        path,
        dataset="bench-render-like",
        joint_set="hand21",
        root_joint="wrist",
        image_size=(SIZE, SIZE),
        num_joints=K,
        fingerprint="bench",
        producer="test_bench_shards",
        fields=("masks", "seq", "frame"),
        expected_samples=len(cols["images"]),
        overwrite=True,
    ) as w:
        for s in range(0, len(cols["images"]), BATCH):
            w.append({k: v[s : s + BATCH] for k, v in cols.items()})
    return path


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    return render_like(N)


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory, columns: dict[str, np.ndarray]) -> Path:
    return write(tmp_path_factory.mktemp("shards") / "train.h5", columns)


def timed(fn: Any, times: list[float]) -> Any:
    def run() -> None:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)

    return run


def test_bench_write(benchmark: Any, tmp_path: Path, columns: dict[str, np.ndarray]) -> None:
    times: list[float] = []
    path = tmp_path / "train.h5"
    benchmark.pedantic(timed(lambda: write(path, columns), times), rounds=3, iterations=1)
    benchmark.extra_info["samples_per_s"] = round(N / median(times))
    benchmark.extra_info["bytes_per_sample"] = round(path.stat().st_size / N)
    assert ShardDataset(path).info.num_samples == N


@pytest.mark.parametrize("workers", [0, 2])
def test_bench_dataloader_pass(benchmark: Any, shard: Path, workers: int) -> None:
    dataset = ShardDataset(shard)
    counts: list[int] = []

    def one_pass() -> None:
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
        seen = 0
        for batch in loader:
            assert batch["images"].shape[1:] == (SIZE, SIZE, 3)
            seen += len(batch["index"])
        counts.append(seen)

    times: list[float] = []
    benchmark.pedantic(timed(one_pass, times), rounds=3, iterations=1)
    assert counts and all(c == N for c in counts)
    benchmark.extra_info["samples_per_s"] = round(N / median(times))
