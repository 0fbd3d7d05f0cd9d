"""Cross-dataset evaluation: a pair's ``also_test`` datasets are evaluated at every
evaluation and never trained on — 3D sets with the whole suite, 2D-only (MPII-like) sets
with the 2D metrics and PCKh — and the report gives them their own tables."""

from __future__ import annotations

import math

import pytest

from bench.cli import main
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.runner import run_grid

BODY = {"source": "synth-body-clean", "target": "synth-body-style"}
SMALL = {
    "data": {"n_train": 64, "n_test": 32, "size": 32},
    "model": {"backbone": "regnetx_002", "feature_stride": 16},
}


def quiet(msg: str) -> None:
    pass


def test_also_test_is_checked_and_only_changes_the_ids_of_trials_that_use_it(tiny_grid, capsys):
    plain = load_grid(tiny_grid(pairs=[BODY], methods=["source-only"], **SMALL))
    path = tiny_grid(
        pairs=[{**BODY, "also_test": ["synth-body-2d"]}], methods=["source-only"], **SMALL
    )
    also = load_grid(path)
    assert main(["grid", "show", str(path)]) == 0
    header, row = capsys.readouterr().out.splitlines()[-3::2]
    assert "also tested on" in header and row.rstrip(" |").endswith("synth-body-2d")
    (a,), (b,) = plain.trials, also.trials
    assert a.also_test == () and b.also_test == ("synth-body-2d",)
    assert a.trial_id != b.trial_id
    assert "also_test" not in a.identity()  # ids of grids without it are as they were
    assert type(b).from_dict(b.to_dict()) == b

    def refused(also_test, match):
        path = tiny_grid(pairs=[{**BODY, "also_test": also_test}], methods=["source-only"])
        with pytest.raises(DabenchError, match=match):
            load_grid(path)

    refused(["synth-hand-wild"], r"synth-hand-wild has joint set hand21, the pair h36m17")
    refused(["synth-body-style"], r"the pair's own target \(synth-body-style")
    refused(["synth-body-2d", "synth-body-2d"], "lists a dataset twice")
    refused("synth-body-2d", "must be a list of dataset card names")
    refused(["synth-body-nowhere"], "synth-body-nowhere")


@pytest.mark.slow
def test_trials_are_also_evaluated_on_datasets_they_never_saw(tmp_path, tiny_grid):
    data = tmp_path / "data"
    unseen = ["synth-body-2d", "synth-body-wild"]
    grid = load_grid(
        tiny_grid(
            pairs=[{**BODY, "also_test": unseen}],
            methods=["source-only"],
            train={"steps": 4, "eval_every": 2},
            **SMALL,
        )
    )
    results = tmp_path / "results"
    (record,) = run_grid(
        grid, results, executor="local", data_root=data, progress=False, log=quiet
    ).records
    assert record["status"] == "ok"
    metrics = record["metrics"]
    assert {"target_test", "test@synth-body-2d", "test@synth-body-wild"} <= set(metrics)
    two_d = metrics["test@synth-body-2d"]["overall"]
    assert two_d["mpjpe"] is None and two_d["pck3d_150"] is None  # no 3D labels
    assert 0.0 <= two_d["pckh_50"] <= 100.0 and math.isfinite(two_d["pck2d_005"])
    wild = metrics["test@synth-body-wild"]["overall"]
    assert math.isfinite(wild["mpjpe"]) and "pckh_50" not in wild
    assert record["data"]["fingerprints"].keys() >= {"test@synth-body-2d", "test@synth-body-wild"}
    # every evaluation of the curve, and the step chosen on the pair's own target
    assert all("test@synth-body-2d" in e for e in record["curves"]["evaluations"])
    assert record["metrics_by_rule"]["last"]["metrics"]["test@synth-body-wild"] == wild

    # The unseen sets change what is evaluated, not what is trained.
    plain = load_grid(
        tiny_grid(
            pairs=[BODY], methods=["source-only"], train={"steps": 4, "eval_every": 2}, **SMALL
        )
    )
    (ref,) = run_grid(
        plain, tmp_path / "plain", executor="local", data_root=data, progress=False, log=quiet
    ).records
    assert set(ref["metrics"]) == {"target_test", "source_val", "source_test"}
    for name, value in ref["metrics"]["target_test"]["overall"].items():
        if value is not None:
            got = metrics["target_test"]["overall"][name]
            assert got == pytest.approx(value, rel=1e-4, abs=1e-5), name

    assert main(["report", str(results), "--format", "md"]) == 0
    text = (results / "report" / "report.md").read_text()
    section = text.split("## Datasets never trained on", 1)[1].split("\n## ", 1)[0]
    two_d_table, wild_table = section.split("Test split of synth-body-wild")
    assert "Test split of synth-body-2d" in two_d_table and "PCKh@0.5" in two_d_table
    assert "MPJPE" not in two_d_table and "MPJPE" in wild_table
