"""A tiny real grid end to end: local executor and local Ray, resume, records, predictions,
report, failures and divergence."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cli import main
from bench.data.shards import ShardDataset
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.metrics import evaluate
from bench.runner import prepare, run_grid
from bench.store import (
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
    assert main(["report", str(results)]) == 0
    text = (results / "report.md").read_text()
    assert "Source only" in text and "Oracle" in text and "hand-clean → hand-wild" in text
    assert "Model selection: **last**" in text and "**" in text.split("|", 1)[1]


@pytest.mark.slow
def test_tiny_grid_through_local_ray(tmp_path, data_root, tiny_grid):
    grid = load_grid(tiny_grid())
    results = tmp_path / "results-ray"
    summary = run_grid(
        grid, results, executor="ray", data_root=data_root, progress=False, log=quiet
    )
    assert summary.ran == 2 and not summary.failed
    check_store(results, grid, data_root)


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
    assert main(["run", "nonexistent-grid", "--executor", "local"]) == 2
    assert "named grids: " in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse names the valid choices
        main(["run", str(path), "--executor", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no result store" in capsys.readouterr().err


def test_a_retried_trial_resumes_from_its_last_checkpoint(
    tmp_path, data_root, monkeypatch, tiny_grid
):
    from bench import trainer

    real = trainer.Trainer.evaluate

    def crash_at_last_evaluation(self, step):
        if step == 4:
            raise RuntimeError("node lost")
        return real(self, step)

    grid = load_grid(tiny_grid(methods=["source-only"]))
    results = tmp_path / "results"
    monkeypatch.setattr(trainer.Trainer, "evaluate", crash_at_last_evaluation)
    first = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    assert first["status"] == "failed"
    assert (trial_dir(results, first["trial_id"]) / "checkpoint.pt").exists()
    monkeypatch.undo()
    second = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    assert second["status"] == "ok" and second["timings"]["resumed"] is True
    assert [e["step"] for e in second["curves"]["evaluations"]] == [2, 4]
    assert not (trial_dir(results, second["trial_id"]) / "checkpoint.pt").exists()


def test_warm_started_trials_start_from_the_source_only_weights(tmp_path, data_root, tiny_grid):
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "ddc"],
            warm_start="source-only",
            train={"adapt_steps": 2},
        )
    )
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=quiet
    )
    by = {r["method"]: r for r in summary.records}
    assert by["source-only"]["status"] == by["ddc"]["status"] == "ok"
    init = by["ddc"]["init"]
    assert init["trial_id"] == by["source-only"]["trial_id"]
    assert init["loaded_tensors"] > 0
    assert [e["step"] for e in by["ddc"]["curves"]["evaluations"]] == [2]
    assert (trial_dir(results, init["trial_id"]) / "weights.pt").exists()
    text = (results / "report.md").read_text() if (results / "report.md").exists() else ""
    assert text == "" or "source-only weights" in text


def test_same_trial_twice_gives_identical_results(tmp_path, data_root, tiny_grid):
    grid = load_grid(tiny_grid(methods=["source-only"]))
    first = run_grid(
        grid, tmp_path / "a", executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    second = run_grid(
        grid, tmp_path / "b", executor="local", data_root=data_root, progress=False, log=quiet
    ).records[0]
    assert first["metrics"]["target_test"]["overall"] == second["metrics"]["target_test"]["overall"]
    a = read_predictions(tmp_path / "a", first["trial_id"])
    b = read_predictions(tmp_path / "b", second["trial_id"])
    np.testing.assert_array_equal(a["kp2d"], b["kp2d"])


def test_shards_made_with_other_data_settings_are_refused_not_reused(
    tmp_path, data_root, tiny_grid
):
    prepare(load_grid(tiny_grid(methods=["source-only"])).trials, data_root, quiet, False)
    other = load_grid(tiny_grid(methods=["source-only"], data={"n_train": 48}))
    with pytest.raises(DabenchError, match=r"different fingerprint.*n_train=48.*DABENCH_DATA"):
        run_grid(other, tmp_path / "results", executor="local", data_root=data_root, log=quiet)
    assert not (tmp_path / "results").exists()
