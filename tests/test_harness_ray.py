"""A tiny real grid end to end through local Ray: records as the local executor writes
them, stage runs in waves with per-node resources, live trackers, grids split into several
Tune runs. One Ray session serves the module (``run_grid`` uses a running session instead
of starting its own), which saves a Ray start and stop per test."""

from __future__ import annotations

import os

import pytest
import torch
from test_harness import check_store, quiet

from bench.grid import load_grid
from bench.runner import run_grid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")


def test_tiny_grid_through_local_ray(tmp_path, data_root, tiny_grid):
    grid = load_grid(tiny_grid())
    results = tmp_path / "results-ray"
    summary = run_grid(
        grid, results, executor="ray", data_root=data_root, progress=False, log=quiet
    )
    assert summary.ran == 2 and not summary.failed
    check_store(results, grid, data_root)
    # A stage run and the trial that starts from it, in two waves, each node with its own
    # resources: the warm start's source-only network comes from a stage run here.
    warm = load_grid(
        tiny_grid(
            methods=["ddc"],
            warm_start="source-only",
            train={"adapt_steps": 2},
            resources={"cpu": 1, "methods": {"ddc": {"cpu": 2}}},
        )
    )
    assert warm.trials[0].resources == {"cpu": 2, "gpu": 0}
    summary = run_grid(
        warm, results, executor="ray", data_root=data_root, progress=False, log=quiet
    )
    assert summary.stage_runs == 1 and not summary.failed
    (record,) = summary.records
    assert record["artifacts"][0]["computed"] is True and record["device"] == "cpu:2 threads"


def test_trackers_show_every_evaluation_while_the_grid_runs(tmp_path, data_root, tiny_grid):
    grid = load_grid(tiny_grid(methods=["source-only"]))
    results = tmp_path / "results"
    summary = run_grid(
        grid,
        results,
        executor="ray",
        data_root=data_root,
        progress=False,
        log=quiet,
        trackers=("tensorboard", "mlflow"),
    )
    (record,) = summary.records
    # TensorBoard: event files of the trial, with the evaluations' metrics
    (events,) = list((results / "_ray").rglob("events.out.tfevents.*"))
    assert b"target_test/mpjpe" in events.read_bytes() and b"train/pose" in events.read_bytes()
    # MLflow, in its default file store under the results: one value per evaluation, at
    # the training step it was made, equal to the record's curve
    (metric,) = list((results / "_mlruns").rglob("metrics/target_test/mpjpe"))
    logged = [line.split() for line in metric.read_text().splitlines()]
    assert [int(step) for _, _, step in logged] == [2, 4]
    curve = [e["target_test"]["mpjpe"] for e in record["curves"]["evaluations"]]
    assert [float(v) for _, v, _ in logged] == pytest.approx(curve)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quarter_gpu_trials_share_one_gpu_under_ray(tmp_path, data_root, tiny_grid):
    """Four trials asking for a quarter of a GPU each run at once on one GPU, in bf16."""
    grid = load_grid(
        tiny_grid(
            seeds=[0, 1],
            resources={"cpu": 1, "gpu": 0.25},
            train={"device": "cuda", "amp": "bf16"},
        )
    )
    summary = run_grid(
        grid, tmp_path / "results", executor="ray", data_root=data_root, progress=False, log=quiet
    )
    assert summary.ran == 4 and not summary.failed
    for record in summary.records:
        assert record["device"].startswith("cuda:") and record["peak_memory_mb"] > 0


def test_a_grid_larger_than_one_tune_run_runs_as_several(
    tmp_path, data_root, tiny_grid, monkeypatch
):
    """Tune runs hold at most TUNE_RUN_NODES nodes; a node whose start artifact an earlier
    run made starts from it."""
    from bench import runner

    monkeypatch.setattr(runner, "TUNE_RUN_NODES", 1)
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "ddc"], warm_start="source-only", train={"adapt_steps": 2}
        )
    )
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="ray", data_root=data_root, progress=False, log=quiet
    )
    assert summary.ran == 2 and not summary.failed
    ddc = next(r for r in summary.records if r["method"] == "ddc")
    assert ddc["artifacts"][0]["computed"] is True and ddc["artifacts"][0]["loaded_tensors"] > 0
    runs = sorted(p.name for p in (results / "_ray").iterdir())
    assert len(runs) == 2 and runs[0].endswith("-1") and runs[1].endswith("-2")
