"""A tiny real grid end to end: local executor, resume, records, predictions, report,
failures and divergence (local Ray: tests/test_harness_ray.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bench.artifacts import WEIGHTS, ArtifactStore
from bench.atomic import file_lock
from bench.cli import main
from bench.data.shards import ShardDataset
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.metrics import evaluate
from bench.runner import prepare, run_grid
from bench.store import (
    CHECKPOINT,
    LOCK,
    is_complete,
    load,
    read_predictions,
    read_record,
    trial_dir,
    validate_record,
)


@pytest.fixture
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")


def quiet(msg: str) -> None:
    pass


def check_store(results, grid, data_root):
    for spec in grid.trials:
        record = read_record(trial_dir(results, spec.trial_id) / "record.json")
        validate_record(record)
        assert record["status"] == "ok", record["error"]
        assert record["trial_id"] == spec.trial_id and record["label"] == spec.label
        assert [e["step"] for e in record["curves"]["evaluations"]] == [2, 4]
        assert record["selection"] == {"rule": "last", "step": 4}
        assert set(record["metrics"]) == {"target_test", "source_val", "source_test"}
        assert {"mpjpe", "pa_mpjpe", "pck2d_005"} <= set(
            record["metrics"]["target_test"]["overall"]
        )
        assert set(record["data"]["fingerprints"]) >= {"source_train", "target_test"}
        assert record["versions"]["torch"] and record["timings"]["train_seconds"] > 0
        # The stored predictions reproduce the record's metrics.
        pred = read_predictions(results, spec.trial_id)
        shard = ShardDataset(data_root / spec.target / "test.h5")
        gt = shard.__getitems__(list(range(len(shard))))
        gt2d = np.stack([g["kp2d"].numpy() for g in gt])
        gt3d = np.stack([g["kp3d"].numpy() for g in gt])
        vis = np.stack([g["vis"].numpy() for g in gt])
        report = evaluate(pred["kp2d"], gt2d, pred["kp3d"], gt3d, vis, "hand21", 32)
        for name, value in record["metrics"]["target_test"]["overall"].items():
            if value is not None:
                assert report.overall[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_tiny_grid_local_executor_resume_and_report(tmp_path, data_root, capsys, tiny_grid):
    grid = load_grid(tiny_grid())
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert (summary.total, summary.skipped, summary.ran) == (2, 0, 2)
    check_store(results, grid, data_root)
    # Re-running finishes only what is missing: nothing.
    again = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert (again.skipped, again.ran) == (2, 0)
    df = load(results)
    assert len(df) == 2 and set(df["category"]) == {"source-only", "oracle"}
    assert "last:target_test/mpjpe" in df and "target-oracle:target_test/mpjpe" in df
    assert main(["report", str(results), "--format", "md"]) == 0
    text = (results / "report" / "report.md").read_text()
    assert "Source only" in text and "Oracle" in text and "hand-clean → hand-wild" in text
    assert "Model selection: last" in text and "**" in text.split("|", 1)[1]
    methods = text.split("## Methods", 1)[1].split("## Trials")[0]
    assert "| Source only" in methods and "| faithful" in methods
    assert "- faithful: the method as published" in methods and "- adapted:" not in methods
    assert "| random initialisation" in methods


def test_failed_trial_is_recorded_and_retried(tmp_path, data_root, monkeypatch, tiny_grid):
    from bench import trainer

    def broken(self):
        raise RuntimeError("out of cheese")

    grid = load_grid(tiny_grid(methods=["source-only"]))
    results = tmp_path / "results"
    monkeypatch.setattr(trainer.Trainer, "fit", broken)
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    record = summary.records[0]
    assert record["status"] == "failed" and record["error"]["message"] == "out of cheese"
    assert "RuntimeError" in record["error"]["traceback"]
    validate_record(record)
    assert not is_complete(results, grid.trials[0].trial_id)
    monkeypatch.undo()
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert summary.ran == 1 and summary.records[0]["status"] == "ok"
    assert summary.records[0]["attempt"] == 2  # the second attempt at this trial


def test_crashes_are_re_raised_for_ray_to_retry_bad_configurations_are_not(
    tmp_path, data_root, monkeypatch, tiny_grid
):
    from bench import trainer
    from bench.trial import run_trial

    spec = load_grid(tiny_grid(methods=["source-only"])).trials[0]
    results = tmp_path / "results"

    def crash(self):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(trainer.Trainer, "fit", crash)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        run_trial(spec, results, data_root=data_root, progress=False)
    record = read_record(trial_dir(results, spec.trial_id) / "record.json")
    assert record["status"] == "failed" and record["attempt"] == 1

    def bad(self):
        raise DabenchError("a bad setting")

    monkeypatch.setattr(trainer.Trainer, "fit", bad)
    record = run_trial(spec, results, data_root=data_root, progress=False)  # no raise
    assert record["status"] == "failed" and record["attempt"] == 2
    assert record["error"]["message"] == "a bad setting"


def test_non_finite_loss_marks_the_trial_diverged(tmp_path, data_root, tiny_grid):
    grid = load_grid(
        tiny_grid(
            methods=["source-only"],
            hparams={"source-only": {"pose_weight": float("nan")}},
        )
    )
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    record = summary.records[0]
    assert record["status"] == "diverged" and record["diverged_at"] == 2
    validate_record(record)
    assert is_complete(results, grid.trials[0].trial_id)  # diverged is a result, not a retry


def test_cli_grid_show_and_run_errors(tmp_path, capsys, tiny_grid):
    path = tiny_grid()
    assert main(["grid", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 trials" in out and "source-only" in out and "oracle" in out
    path = tiny_grid(methods=["source-only", "ddc"], warm_start="source-only")
    assert main(["grid", "show", str(path)]) == 0
    out = capsys.readouterr().out
    grid = load_grid(path)
    # the stage runs, with their keys, come before the trials
    assert out.index("Stage runs") < out.index(grid.stage_runs[0].key) < out.index("Trials:")
    assert main(["run", "nonexistent-grid", "--executor", "local"]) == 2
    assert "named grids: " in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse names the valid choices
        main(["run", str(path), "--executor", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no result store" in capsys.readouterr().err
    # a misspelt report format is refused before the grid runs, not after
    assert main(["run", str(path), "--report", "md,htm", "--results", str(tmp_path / "r")]) == 2
    assert "unknown format(s) ['htm']; valid: md, tex, csv, or none" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_retried_trial_resumes_from_its_last_checkpoint(
    tmp_path, data_root, monkeypatch, tiny_grid
):
    from bench import evaluation

    real = evaluation.Evaluator.__call__

    def crash_at_last_evaluation(self, method, step, stage):
        if step == 4:
            raise RuntimeError("node lost")
        return real(self, method, step, stage)

    grid = load_grid(tiny_grid(methods=["source-only"]))
    results = tmp_path / "results"
    monkeypatch.setattr(evaluation.Evaluator, "__call__", crash_at_last_evaluation)
    first = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    assert first["status"] == "failed"
    assert (trial_dir(results, first["trial_id"]) / "checkpoint.pt").exists()
    monkeypatch.undo()
    second = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    # the interrupted evaluation at step 4 is redone from the step-2 checkpoint
    assert second["status"] == "ok" and second["timings"]["resumed"] is True
    assert second["timings"]["resumed_at_step"] == 2 and second["attempt"] == 2
    assert [e["step"] for e in second["curves"]["evaluations"]] == [2, 4]
    assert not (trial_dir(results, second["trial_id"]) / "checkpoint.pt").exists()


def test_warm_started_trials_start_from_the_source_only_artifact(tmp_path, data_root, tiny_grid):
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "oracle", "ddc", "dann"],
            warm_start="source-only",
            train={"adapt_steps": 2},
        )
    )
    (artifact,) = grid.stage_runs  # one source-only network, made by the source-only trial
    by_label = {t.label: t for t in grid.trials}
    assert artifact.exported_by == by_label["source-only"].trial_id
    assert by_label["source-only"].exports == {"train": artifact.key}
    assert by_label["ddc"].start.key == by_label["dann"].start.key == artifact.key
    assert by_label["oracle"].start is None  # the oracle does not opt into warm starts
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert summary.stage_runs == 0  # the trial made it; no separate stage run
    by = {r["method"]: r for r in summary.records}
    assert all(r["status"] == "ok" for r in by.values())
    loaded = {}
    for name in ("ddc", "dann"):
        (used,) = by[name]["artifacts"]
        fresh = used.pop("fresh_tensors")
        loaded[name] = used.pop("loaded_tensors")
        assert loaded[name] > 0 and fresh == 0  # the whole network loads
        assert used.pop("steps") == by["source-only"]["stages"]["train"]
        assert used.pop("seconds") > 0
        assert used == {
            "key": artifact.key,
            "method": "source-only",
            "stage": "train",
            "computed": True,
        }
        assert [e["step"] for e in by[name]["curves"]["evaluations"]] == [2]
    assert by["source-only"]["artifacts"] == []
    assert main(["report", str(results), "--format", "md"]) == 0
    methods = (results / "report" / "report.md").read_text().split("## Methods", 1)[1]
    assert (
        "| source-only network with a 2.5d head of the same pair and seed "
        f"({loaded['ddc']} tensors loaded, 0 fresh)" in methods
    )
    # A grid without the source-only rows computes the same artifact as a stage run; here
    # it exists already, so nothing is computed and the DDC result is reused.
    alone = load_grid(
        tiny_grid(methods=["ddc"], warm_start="source-only", train={"adapt_steps": 2})
    )
    assert [s.key for s in alone.stage_runs] == [artifact.key]
    assert alone.stage_runs[0].exported_by is None
    again = run_grid(
        alone, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert (again.ran, again.stage_runs) == (0, 0)
    # In a fresh store it is computed once, as a stage run, and gives the same network:
    # evaluation never changes what is trained.
    fresh = run_grid(
        alone, tmp_path / "fresh", executor="local", data_root=data_root, progress=False, log=quiet
    )
    assert fresh.stage_runs == 1
    (record,) = fresh.records
    assert record["artifacts"][0]["computed"] is True
    assert record["metrics"]["target_test"]["overall"]["mpjpe"] == pytest.approx(
        by["ddc"]["metrics"]["target_test"]["overall"]["mpjpe"], rel=1e-4
    )


def test_damaged_records_checkpoints_and_artifacts_are_redone_never_trusted(
    tmp_path, data_root, tiny_grid
):
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "ddc"], warm_start="source-only", train={"adapt_steps": 2}
        )
    )
    (artifact,) = grid.stage_runs
    ddc = next(t for t in grid.trials if t.method == "ddc")
    results = tmp_path / "results"
    first = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    before = next(r for r in first.records if r["method"] == "ddc")
    store = ArtifactStore(results)
    assert store.verify(artifact.key) == ""
    # A record cut short, a checkpoint of garbage, one byte of the artifact's weights changed.
    record = trial_dir(results, ddc.trial_id) / "record.json"
    record.write_text(record.read_text()[:100])
    (trial_dir(results, ddc.trial_id) / CHECKPOINT).write_bytes(b"PK\x03\x04 not a checkpoint")
    weights = store.path(artifact.key) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "state.pt differs from what was written" in store.verify(artifact.key)
    lines = []
    again = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=lines.append
    )
    assert any(f"stage artifact {artifact.key} is damaged" in line for line in lines)
    assert len(list((results / "_artifacts").glob(f".damaged-{artifact.key}-*"))) == 1
    assert (again.skipped, again.ran, again.stage_runs) == (1, 1, 1)
    assert store.verify(artifact.key) == ""
    after = next(r for r in again.records if r["method"] == "ddc")
    assert after["status"] == "ok" and after["timings"]["resumed"] is False
    assert after["metrics"]["target_test"]["overall"]["mpjpe"] == pytest.approx(
        before["metrics"]["target_test"]["overall"]["mpjpe"], rel=1e-4
    )


def test_same_trial_twice_gives_the_same_results(tmp_path, data_root, tiny_grid):
    grid = load_grid(tiny_grid(methods=["source-only"]))
    first = run_grid(
        grid, tmp_path / "a", executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    second = run_grid(
        grid, tmp_path / "b", executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    # Two runs build two instances of the network, whose outputs may differ in the last
    # bits on some CPUs (oneDNN picks kernels by memory alignment): equal to rounding.
    a_metrics = first["metrics"]["target_test"]["overall"]
    b_metrics = second["metrics"]["target_test"]["overall"]
    assert a_metrics == pytest.approx(b_metrics, rel=1e-4, abs=1e-6)
    a = read_predictions(tmp_path / "a", first["trial_id"])
    b = read_predictions(tmp_path / "b", second["trial_id"])
    np.testing.assert_allclose(a["kp2d"], b["kp2d"], rtol=0, atol=1e-3)


def test_shards_made_with_other_data_settings_are_refused_not_reused(
    tmp_path, data_root, tiny_grid
):
    prepare(list(load_grid(tiny_grid(methods=["source-only"])).trials), data_root, False)
    other = load_grid(tiny_grid(methods=["source-only"], data={"n_train": 48}))
    with pytest.raises(DabenchError, match=r"different fingerprint.*n_train=48.*DABENCH_DATA"):
        run_grid(other, tmp_path / "results", executor="local", data_root=data_root, log=quiet)
    assert not (tmp_path / "results").exists()


def test_report_names_the_head_each_adapted_row_started_with():
    """A method whose card fixes another head starts from a source-only network trained
    with that head; the caption and the Methods table say so."""
    import pandas as pd

    from bench.report.tables import caption, methods_table

    rows = [
        ("source-only", "source-only", None, 1400, "2.5d", None, None),
        ("ddc", "domain-adaptation", "source-only", 150, "2.5d", 284, 0),
        ("causal-interventions", "domain-adaptation", "source-only", 150, "volumetric", 290, 0),
    ]
    df = pd.DataFrame(
        [
            {
                "label": label,
                "category": category,
                "warm_start": warm,
                "steps": steps,
                "head": head,
                "start_loaded": loaded,
                "start_fresh": fresh,
                "source": "synth-hand-clean",
                "target": "synth-hand-wild",
                "seed": 0,
            }
            for label, category, warm, steps, head, loaded, fresh in rows
        ]
    )
    text = caption(df, "last")
    assert "(same seed; each trained with the row's own head, 2.5d or volumetric: see" in text
    starts = dict(zip(methods_table(df)["Method"], methods_table(df)["Starts from"], strict=True))
    causal = next(v for k, v in starts.items() if k.startswith("Causal"))
    assert causal == (
        "source-only network with a volumetric head of the same pair and seed "
        "(290 tensors loaded, 0 fresh)"
    )
    assert starts["Source only"] == "random initialisation"


def test_ray_releases_each_node_once_its_start_artifacts_are_made(tmp_path, tiny_grid):
    """One Tune run covers the DAG: a node waits only for the nodes that make what it
    starts from, not for a whole level; a node whose producer failed is dropped."""
    from bench.runner import _Dependencies, schedule

    grid = load_grid(
        tiny_grid(
            methods=["source-only", "oracle", "ddc", "dan"],
            warm_start="source-only",
            train={"adapt_steps": 2},
        )
    )
    nodes = [n for wave in schedule(grid, tmp_path / "results") for n in wave]
    by_label = {n.label: n for n in nodes}
    deps = _Dependencies(nodes, release=lambda node: True)
    first, second = deps.next(), deps.next()
    assert {first.label, second.label} == {"source-only", "oracle"}
    assert deps.next() is None  # DDC and DAN wait for the source-only network
    deps.finish(by_label["source-only"].node_id)
    assert {deps.next().label, deps.next().label} == {"ddc", "dan"}  # the oracle still runs
    assert deps.exhausted and deps.next() is None

    dropped = []

    def release(node) -> bool:  # the source-only trial failed: its artifact is missing
        if node.label in ("ddc", "dan"):
            dropped.append(node.label)
            return False
        return True

    deps = _Dependencies(nodes, release)
    assert deps.next().label == "source-only"
    deps.finish(by_label["source-only"].node_id)
    assert deps.next().label == "oracle"
    assert deps.next() is None and sorted(dropped) == ["dan", "ddc"] and deps.exhausted


def test_workers_get_the_most_work_on_the_longest_chain_first(tmp_path):
    """The quickstart's 600-step trials (source-only, which four adapters wait on, and the
    oracle) are offered first, then the chains of the multi-stage methods (a MIM segmenter
    before the pre-training and fine-tuning it unlocks), the adapters, and the short tails
    last; the order stays topological (a node comes after every node making what it starts
    from)."""
    from bench.runner import _produces, critical_first, node_work, schedule

    nodes = critical_first(schedule(load_grid("quickstart"), tmp_path / "results"))
    first = [(n.method, getattr(n, "stages", None)) for n in nodes[:4]]
    assert first == [("source-only", ("train",))] * 2 + [("oracle", ("train",))] * 2
    order = [(n.method, getattr(n, "stages", None)) for n in nodes]
    assert order.index(("mim-fcr-ar", ("segment",))) < order.index(("ddc", ("train",)))
    # the short tails last: geometric fine-tuning (both pairs), Mask as Supervision's trial
    # (its stage 3, body pair only)
    assert sorted(order[-3:]) == sorted(
        [("geometric-reconstruction", ("finetune",))] * 2 + [("mask-as-supervision", ("stage3",))]
    )
    # work: steps × views; the adapters' 75 steps read source and target
    works = {(n.method, n.stages): node_work(n) for n in nodes}
    assert works[("source-only", ("train",))] == 600 and works[("ddc", ("train",))] == 150
    made: set[str] = set()
    for n in nodes:
        assert all(u.key in made for u in n.upstream), n.label
        made |= _produces(n)
    assert len(nodes) == 32


def test_grid_status_and_clean_say_what_stands_and_remove_what_must_be_redone(
    tmp_path, data_root, monkeypatch, capsys, tiny_grid
):
    from bench import trainer
    from bench.status import grid_status

    path = tiny_grid()
    grid = load_grid(path)
    results = tmp_path / "results"
    oracle, source_only = sorted(grid.trials, key=lambda t: t.label)
    assert (oracle.label, source_only.label) == ("oracle", "source-only")
    assert [s.state for s in grid_status(grid, results)] == ["missing", "missing"]

    real = trainer.Trainer.fit

    def oracle_breaks(self):
        if self.method.name == "oracle":
            raise RuntimeError("out of cheese")
        return real(self)

    monkeypatch.setattr(trainer.Trainer, "fit", oracle_breaks)
    run_grid(grid, results, executor="local", data_root=data_root, progress=False, log=quiet)
    states = {s.label: (s.state, s.message) for s in grid_status(grid, results)}
    assert states == {"source-only": ("ok", ""), "oracle": ("failed", "out of cheese")}
    # a checkpoint without a record: interrupted, or running while a process holds its lock
    (trial_dir(results, oracle.trial_id) / "record.json").unlink()
    (trial_dir(results, oracle.trial_id) / "checkpoint.pt").write_bytes(b"")
    assert {s.label: s.state for s in grid_status(grid, results)}["oracle"] == "interrupted"
    with file_lock(trial_dir(results, oracle.trial_id) / LOCK):
        assert {s.label: s.state for s in grid_status(grid, results)}["oracle"] == "running"

    run_grid(grid, results, executor="local", data_root=data_root, progress=False, log=quiet)
    capsys.readouterr()
    assert main(["grid", "status", str(path), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "out of cheese" in out and "2 trials — 1 ok, 0 diverged, 1 failed" in out
    assert main(["grid", "clean", str(path), "--results", str(results), "--failed"]) == 0
    assert f"removed {oracle.trial_id} (oracle" in capsys.readouterr().out
    assert not trial_dir(results, oracle.trial_id).exists()
    states = {s.label: s.state for s in grid_status(grid, results)}
    assert states == {"source-only": "ok", "oracle": "missing"}
    assert main(["grid", "clean", str(path), "--results", str(results)]) == 2


def test_a_trial_whose_start_could_not_be_made_fails_with_the_reason(
    tmp_path, data_root, tiny_grid
):
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "ddc"],
            warm_start="source-only",
            hparams={"source-only": {"pose_weight": float("nan")}},  # diverges: no artifact
            train={"adapt_steps": 2},
        )
    )
    lines: list[str] = []
    summary = run_grid(
        grid,
        tmp_path / "r",
        executor="local",
        data_root=data_root,
        progress=False,
        log=lines.append,
    )
    by_label = {r["label"]: r for r in summary.records}
    assert by_label["source-only"]["status"] == "diverged"
    assert by_label["ddc"]["status"] == "failed"
    assert "could not be made" in by_label["ddc"]["error"]["message"]
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("[2/2]")  # counted as done


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, data_root, tiny_grid):
    """Ray's agents outlive a driver killed with SIGKILL unless dabench's reaper stops them;
    and a run that ends normally leaves nothing either."""
    import signal
    import subprocess
    import sys

    import psutil

    path = tiny_grid(
        model={"backbone": "regnetx_002", "feature_stride": 16},
        train={"steps": 400, "eval_every": 200, "checkpoint_every_s": 0.3},
    )
    results = tmp_path / "results"
    dabench = str(Path(sys.executable).with_name("dabench"))
    run = subprocess.Popen(
        [dabench, "run", str(path), "--results", str(results), "--data", str(data_root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(results.glob(f"*/{CHECKPOINT}")):
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.1)
    spawned = psutil.Process(run.pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in spawned)
    run.send_signal(signal.SIGKILL)
    run.wait()
    _, alive = psutil.wait_procs(spawned, timeout=60)
    assert not alive, [p.name() for p in alive]


def test_tracker_mistakes_are_refused_before_anything_runs(tmp_path, tiny_grid):
    grid = load_grid(tiny_grid())
    with pytest.raises(DabenchError, match=r"unknown tracker\(s\) \['wandb'\]; valid: tensorb"):
        run_grid(grid, tmp_path / "r", executor="ray", trackers=("wandb",))
    with pytest.raises(DabenchError, match="needs the ray executor"):
        run_grid(grid, tmp_path / "r", executor="local", trackers=("mlflow",))
    assert not (tmp_path / "r").exists()
