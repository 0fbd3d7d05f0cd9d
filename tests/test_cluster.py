"""The cluster path against a real two-node Ray cluster started with the ``ray`` CLI
(tests/ray_cluster.py): ``ray job submit`` end to end, trials placed by their resources,
refusals before any trial starts, and the faults a grid left running for days meets."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from bench.grid import load_grid
from bench.paths import REPO_ROOT
from bench.store import CHECKPOINT, read_record, trial_dir, validate_record
from tests.ray_cluster import DABENCH, RAY, RayCluster, ray_cluster

pytestmark = pytest.mark.slow

HANDS = {"source": "synth-hand-clean", "target": "synth-hand-wild"}


def grid_file(directory: Path, name: str, **changes) -> Path:
    grid = {
        "name": name,
        "methods": ["source-only", "oracle"],
        "pairs": [HANDS],
        "seeds": [0, 1],
        "data": {"n_train": 96, "n_test": 40, "size": 32},
        "model": {"backbone": "resnet18"},
        "train": {
            "steps": 4,
            "batch_size": 8,
            "eval_every": 2,
            "warmup_steps": 1,
            "eval_batch_size": 32,
            "log_every": 2,
        },
    }
    for key, value in changes.items():
        base = grid.get(key)
        grid[key] = {**base, **value} if isinstance(base, dict) else value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="module")
def cluster():
    # A short root: Ray's Unix sockets live under it and their paths are capped at 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="dbrc-", dir="/tmp"))
    try:
        with ray_cluster(root) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Storage both nodes see (on one machine, any directory), shards made once."""
    return tmp_path_factory.mktemp("shared")


def submit(cluster: RayCluster, *entrypoint: str) -> tuple[subprocess.CompletedProcess, str]:
    job = f"dabench-test-{uuid.uuid4().hex[:8]}"
    out = cluster.run(
        RAY, "job", "submit", "--address", cluster.dashboard,
        "--runtime-env", str(REPO_ROOT / "runtime_env.yaml"),
        "--working-dir", str(REPO_ROOT), "--submission-id", job, "--", *entrypoint,
        cwd=REPO_ROOT,
    )  # fmt: skip
    return out, job


def records(results: Path, grid) -> list[dict]:
    return [read_record(trial_dir(results, t.trial_id) / "record.json") for t in grid.trials]


def test_a_grid_submitted_as_a_ray_job_runs_over_both_nodes(cluster, shared, tmp_path):
    # The oracle must run where the worker_node resource is; the rest anywhere.
    path = grid_file(
        tmp_path,
        "job",
        resources={"cpu": 1, "methods": {"oracle": {"custom": {"worker_node": 1}}}},
    )
    results = shared / "job-results"
    out, job = submit(
        cluster, "dabench", "run", str(path), "--address", "auto", "--results",
        str(results), "--data", str(shared / "data"), "--quiet",
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert f"Job '{job}' succeeded" in log
    status = cluster.run(RAY, "job", "status", "--address", cluster.dashboard, job)
    assert f"Job '{job}' succeeded" in status.stdout
    logs = cluster.run(RAY, "job", "logs", "--address", cluster.dashboard, job).stdout
    assert "4 trials (0 skipped, 4 run, 0 failed)" in logs
    grid = load_grid(path)
    nodes = cluster.nodes()
    recs = records(results, grid)
    for record in recs:
        validate_record(record)
        assert record["status"] == "ok" and record["attempt"] == 1
        assert record["ray_node"] in nodes.values()
    assert {r["ray_node"] for r in recs if r["method"] == "oracle"} == {nodes["worker_node"]}
    # Two one-CPU nodes: the first two trials start together, one on each.
    assert {r["ray_node"] for r in recs} == set(nodes.values())
    # Tune's copies of the finished trials' checkpoints are gone with the trials' own.
    assert not list((results / "_ray").rglob("checkpoint_*"))
    assert not list(results.glob("*/" + CHECKPOINT))


def test_results_inside_the_jobs_copy_of_the_checkout_are_refused(cluster, shared, tmp_path):
    path = grid_file(tmp_path, "inside")
    out, job = submit(
        cluster, "dabench", "run", str(path), "--address", "auto", "--results",
        "relative-results", "--data", str(shared / "data"), "--quiet",
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode != 0 and f"Job '{job}' failed" in log
    assert "temporary copy of its working directory" in log and "--results" in log
    assert "grid inside" in log and "[1/" not in log  # refused before any trial


def test_a_trial_no_node_can_hold_is_refused_before_anything_runs(cluster, shared, tmp_path):
    path = grid_file(tmp_path, "tpu", resources={"cpu": 1, "custom": {"tpu_node": 1}})
    results = shared / "tpu-results"
    out = cluster.run(
        DABENCH, "run", str(path), "--address", cluster.address, "--results", str(results),
        "--data", str(shared / "data"), "--quiet",
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    refusal = "asks for CPU 1, tpu_node 1 per trial, which no node of the cluster has"
    assert refusal in out.stderr
    assert "head_node 1" in out.stderr and "worker_node 1" in out.stderr
    assert not results.exists()  # nothing written
    # More CPUs than any one node has (two in all, one per node).
    cpus = grid_file(tmp_path, "cpus", resources={"cpu": 2})
    out = cluster.run(
        DABENCH, "run", str(cpus), "--address", cluster.address, "--results", str(results),
        "--data", str(shared / "data"), "--quiet",
    )  # fmt: skip
    assert out.returncode == 2 and "asks for CPU 2 per trial" in out.stderr
