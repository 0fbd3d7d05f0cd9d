"""One GPU shared by four quarter-GPU trials against the same four trials one at a time on
the whole GPU (Ray Tune, local Ray, bf16). Fractions only schedule — each trial must fit in
its share of memory — so the question is throughput: how much of the GPU one small-batch
trial leaves idle. Skipped without CUDA; run where a GPU is lent with
``pytest tests/benchmarks/test_bench_gpu_sharing.py -s --benchmark-enable`` and record the
figures in docs/benchmarks.md with the device name.
"""

from __future__ import annotations

import time

import pytest
import torch
import yaml

from bench.data.provision import ensure_shards
from bench.grid import load_grid
from bench.runner import run_grid


def grid_file(directory, gpu: float):
    grid = {
        "name": f"gpu-{gpu:g}",
        "methods": ["source-only", "oracle"],
        "pairs": [{"source": "synth-hand-clean", "target": "synth-hand-wild"}],
        "seeds": [0, 1],
        "data": {"n_train": 4000, "n_test": 500, "size": 128},
        "model": {"backbone": "resnet50"},
        "train": {
            "steps": 300,
            "batch_size": 32,
            "eval_every": 300,
            "device": "cuda",
            "amp": "bf16",
            "workers": 2,
        },
        "resources": {"cpu": 2, "gpu": gpu},
    }
    path = directory / f"gpu-{gpu:g}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return load_grid(path)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.benchmark(group="gpu-sharing")
def test_four_quarter_gpu_trials_against_one_full_gpu_trial(benchmark, tmp_path):
    data = tmp_path / "data"
    walls = {}
    grids = {gpu: grid_file(tmp_path, gpu) for gpu in (1.0, 0.25)}
    # The shards first, outside both walls: otherwise the first grid alone would pay for them.
    trial = grids[1.0].trials[0]
    ensure_shards(trial.source, trial.target, trial.data, data)

    def run_both():
        for gpu, grid in grids.items():
            started = time.perf_counter()
            summary = run_grid(
                grid, tmp_path / f"results-{gpu:g}", executor="ray", data_root=data,
                progress=False, log=lambda m: None,
            )  # fmt: skip
            walls[gpu] = time.perf_counter() - started
            assert summary.ran == 4 and not summary.failed

    benchmark.pedantic(run_both, rounds=1, iterations=1)
    text = (
        f"{torch.cuda.get_device_name()}: 4 trials one at a time on the whole GPU "
        f"{walls[1.0]:.0f} s; four quarter-GPU trials at once {walls[0.25]:.0f} s "
        f"(× {walls[1.0] / walls[0.25]:.2f} throughput; shards made beforehand)"
    )
    print("\n" + text)
    benchmark.extra_info["summary"] = text
