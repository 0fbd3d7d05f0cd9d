"""The cluster path against a real two-node Ray cluster started with the ``ray`` CLI
(tests/ray_cluster.py): ``ray job submit`` end to end, trials placed by their resources,
refusals before any trial starts, and the faults a grid left running for days meets."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import write_grid
from ray_cluster import DABENCH, RAY, RayCluster, ray_cluster

from bench.grid import load_grid
from bench.paths import REPO_ROOT
from bench.runner import run_grid
from bench.store import ATTEMPTS, CHECKPOINT, is_complete, read_record, trial_dir, validate_record

pytestmark = pytest.mark.slow


def grid_file(directory: Path, name: str, **changes) -> Path:
    """The tiny grid over two seeds, with a small network (small checkpoints)."""
    small = {"model": {"backbone": "regnetx_002", "feature_stride": 16}, "seeds": [0, 1]}
    return write_grid(directory, name=name, **{**small, **changes})


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
    # The oracle must run where the worker_node resource is, source-only on the head.
    path = grid_file(
        tmp_path,
        "job",
        seeds=[0],
        resources={"cpu": 1, "methods": {
            "oracle": {"custom": {"worker_node": 1}},
            "source-only": {"custom": {"head_node": 1}},
        }},
    )  # fmt: skip
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
    assert "2 trials (0 skipped, 2 run, 0 failed)" in logs
    grid = load_grid(path)
    nodes = cluster.nodes()
    recs = records(results, grid)
    for record in recs:
        validate_record(record)
        assert record["status"] == "ok" and record["attempt"] == 1
        assert record["ray_node"] in nodes.values()
    by_method = {r["method"]: r["ray_node"] for r in recs}
    assert by_method == {"oracle": nodes["worker_node"], "source-only": nodes["head_node"]}
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


# A network whose checkpoints are small (0.24 M parameters), trained long enough to be
# interrupted half-way, with a checkpoint at least every 0.3 s.
LONG = {
    "model": {"backbone": "regnetx_002", "feature_stride": 16},
    "train": {"steps": 60, "eval_every": 20, "log_every": 10, "checkpoint_every_s": 0.3},
}
TRIAL_ACTOR = "ray::ImplicitFunc.train"  # the process of a running Tune function trial


def start_run(cluster: RayCluster, path: Path, results: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [DABENCH, "run", str(path), "--address", cluster.address, "--results", str(results),
         "--data", str(data), "--quiet", "--report", "none"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(run: subprocess.Popen) -> str:
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    return out


def trial_actors(cluster: RayCluster, node: str = "") -> list:
    """The processes running Tune trials now (on the ``head`` or ``worker`` node only)."""
    actors = []
    for proc in cluster.processes():
        try:
            if proc.name() == TRIAL_ACTOR and (
                not node or f"{cluster.root}/{node}/" in " ".join(proc.parent().cmdline())
            ):
                actors.append(proc)
        except Exception:  # gone meanwhile
            continue
    return actors


def wait_until(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def half_way(results: Path, grid) -> list[str]:
    """Trials with a checkpoint and no record: interrupted half-way if killed now."""
    return [
        t.trial_id
        for t in grid.trials
        if (trial_dir(results, t.trial_id) / CHECKPOINT).exists()
        and not (trial_dir(results, t.trial_id) / "record.json").exists()
    ]


def same_weights(a: Path, b: Path) -> bool:
    """Equal weights, to the last bit where this CPU's kernels allow (a tolerance far
    below any training step's change)."""
    x = torch.load(a, weights_only=True)
    y = torch.load(b, weights_only=True)
    return x.keys() == y.keys() and all(
        torch.allclose(x[k].float(), y[k].float(), rtol=1e-5, atol=1e-7) for k in x
    )


def test_a_killed_trial_process_is_retried_from_its_last_checkpoint(cluster, shared, tmp_path):
    path = grid_file(
        tmp_path, "worker-kill", methods=["source-only"], seeds=[0],
        train={**LONG["train"], "max_failures": 2}, model=LONG["model"],
    )  # fmt: skip
    grid = load_grid(path)
    (trial,) = grid.trials
    data = shared / "data"
    # the uninterrupted reference, in this process (no Ray): the same trial function
    reference = shared / "worker-kill-reference"
    run_grid(grid, reference, executor="local", data_root=data, progress=False, log=print)
    results = shared / "worker-kill"
    run = start_run(cluster, path, results, data)
    # the process title names the running function only once Tune has started it, which
    # on a fast machine can come after the first checkpoint: wait for both
    wait_until(
        lambda: half_way(results, grid) and trial_actors(cluster),
        what="the trial's first checkpoint and its process",
    )
    (actor,) = trial_actors(cluster)
    actor.send_signal(signal.SIGKILL)
    out = finish(run)
    assert "1 trials (0 skipped, 1 run, 0 failed)" in out
    record = read_record(trial_dir(results, trial.trial_id) / "record.json")
    ref = read_record(trial_dir(reference, trial.trial_id) / "record.json")
    assert record["status"] == "ok" and record["attempt"] == 2 and ref["attempt"] == 1
    assert record["timings"]["resumed"] is True and ref["timings"]["resumed"] is False
    assert 0 < record["timings"]["resumed_at_step"] < 60
    assert [e["step"] for e in record["curves"]["evaluations"]] == [20, 40, 60]
    assert same_weights(
        trial_dir(results, trial.trial_id) / "weights.pt",
        trial_dir(reference, trial.trial_id) / "weights.pt",
    )
    for split, metrics in ref["metrics"].items():
        got = record["metrics"][split]["overall"]
        for name, value in metrics["overall"].items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, name)


def test_a_killed_driver_is_resumed_by_running_again(cluster, shared, tmp_path):
    path = grid_file(tmp_path, "driver-kill", train=LONG["train"], model=LONG["model"])
    grid = load_grid(path)
    results = shared / "driver-kill"
    run = start_run(cluster, path, results, shared / "data")
    some_done = lambda: any(is_complete(results, t.trial_id) for t in grid.trials)  # noqa: E731
    wait_until(
        lambda: half_way(results, grid) and some_done(), what="a finished trial and one half-way"
    )
    run.send_signal(signal.SIGKILL)
    run.communicate()
    # Ray kills the trials of a driver that died: nothing of the run outlives it.
    wait_until(lambda: not trial_actors(cluster), timeout=60, what="the trials to stop")
    done = {
        t.trial_id: (trial_dir(results, t.trial_id) / "record.json").read_bytes()
        for t in grid.trials
        if is_complete(results, t.trial_id)
    }
    interrupted = set(half_way(results, grid))
    # begun but killed before its first checkpoint: starts again from step 0
    begun = {
        t.trial_id for t in grid.trials if (trial_dir(results, t.trial_id) / ATTEMPTS).exists()
    }
    assert done and interrupted
    out = finish(start_run(cluster, path, results, shared / "data"))
    assert f"4 trials ({len(done)} skipped, {4 - len(done)} run, 0 failed)" in out
    for t in grid.trials:
        directory = trial_dir(results, t.trial_id)
        record = read_record(directory / "record.json")
        assert record["status"] == "ok"
        if t.trial_id in done:  # not run again
            assert (directory / "record.json").read_bytes() == done[t.trial_id]
        elif t.trial_id in interrupted:  # continued, not restarted
            assert record["attempt"] == 2 and record["timings"]["resumed"] is True
            assert record["timings"]["resumed_at_step"] > 0
        else:
            assert record["attempt"] == 1 + (t.trial_id in begun)
            assert record["timings"]["resumed"] is False
    assert len(list(results.glob("*/record.json"))) == 4


def test_a_trial_killed_every_time_is_recorded_and_the_grid_finishes(cluster, shared, tmp_path):
    # The oracle runs on the worker node, the source-only trial on the head.
    path = grid_file(
        tmp_path, "given-up", seeds=[0], train=LONG["train"], model=LONG["model"],
        resources={"cpu": 1, "methods": {
            "oracle": {"custom": {"worker_node": 1}},
            "source-only": {"custom": {"head_node": 1}},
        }},
    )  # fmt: skip
    grid = load_grid(path)
    oracle = next(t for t in grid.trials if t.method == "oracle")
    attempts = trial_dir(shared / "given-up", oracle.trial_id) / ATTEMPTS
    run = start_run(cluster, path, shared / "given-up", shared / "data")
    for attempt in ("1", "2"):  # train.max_failures 1: one retry
        wait_until(
            lambda a=attempt: (
                attempts.exists() and attempts.read_text() == a and trial_actors(cluster, "worker")
            ),
            what=f"attempt {attempt}",
        )
        for actor in trial_actors(cluster, "worker"):
            actor.send_signal(signal.SIGKILL)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 1, out
    assert "2 trials (0 skipped, 2 run, 1 failed)" in out
    recs = {r["method"]: r for r in records(shared / "given-up", grid)}
    assert recs["source-only"]["status"] == "ok"
    failed = recs["oracle"]
    validate_record(failed)
    assert failed["status"] == "failed" and failed["attempt"] == 2
    assert failed["error"]["message"].startswith(
        "gave up after 2 attempt(s) (train.max_failures 1): "
    )
