"""Synthetic generation throughput (targets: ≥2,000 img/s at 64×64, ≥500 img/s at 128×128 on
the 2-core machine) and reading real synthetic shards through a DataLoader (≥5,000/s).

Run for real with ``pytest tests/benchmarks --benchmark-enable``; each benchmark puts its
throughput in ``extra_info``. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import time

import pytest
from torch.utils.data import DataLoader

from bench.data.cards import load_dataset_card
from bench.data.shards import ShardDataset
from bench.data.synthetic.build import synthesize
from bench.data.synthetic.generate import SynthSpec, generate_chunk

CARDS = [
    "synth-hand-clean",
    "synth-hand-wild",
    "synth-body-clean",
    "synth-body-wild",
    "synth-hand-occluded",
    "synth-hand-style",
]


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("card", CARDS)
def test_generate_chunk_one_process(benchmark, card, size):
    spec = SynthSpec.from_card(load_dataset_card(card))
    counter = iter(range(10**6))
    out = benchmark.pedantic(
        lambda: generate_chunk(spec, "train", 0, next(counter), size), rounds=3, warmup_rounds=1
    )
    assert out["images"].shape == (spec.chunk_samples(size), size, size, 3)
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = (
            spec.chunk_samples(size) / benchmark.stats.stats.median
        )


@pytest.mark.parametrize(("size", "num"), [(64, 8000), (128, 2000)])
@pytest.mark.parametrize("card", ["synth-hand-wild", "synth-body-wild"])
def test_synthesize_to_shards(benchmark, tmp_path, card, size, num):
    """`dabench data synth` end to end: 2 generator processes, gzip writer, progress off."""
    if benchmark.disabled:
        num = 400
    rounds = iter(range(100))
    n_test = num // 4  # the cards' train/test ratio

    def run():
        synthesize(
            card,
            tmp_path / str(next(rounds)),
            n_train=num,
            n_test=n_test,
            size=size,
            workers=2,
            progress=False,
        )

    benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = (num + n_test) / benchmark.stats.stats.median


def test_read_real_shard_through_dataloader(benchmark, tmp_path):
    num = 400 if benchmark.disabled else 8000
    train, _ = synthesize(
        "synth-hand-wild", tmp_path, n_train=num, n_test=16, size=64, progress=False
    )
    dataset = ShardDataset(train)

    def one_pass() -> int:
        seen = 0
        for batch in DataLoader(dataset, batch_size=256, shuffle=True, num_workers=2):
            seen += len(batch["images"])
        return seen

    t0 = time.perf_counter()
    assert benchmark.pedantic(one_pass, rounds=3, warmup_rounds=0) == num
    assert time.perf_counter() > t0
    if not benchmark.disabled:
        benchmark.extra_info["samples_per_s"] = num / benchmark.stats.stats.median
