"""The machine's calibration figure and the quickstart time it predicts."""

from __future__ import annotations

import pytest
import torch

from bench.calibration import QUICKSTART_COST, Calibration, calibrate
from bench.cli import main


def test_calibration_predicts_wall_time_from_a_cost():
    cal = Calibration(samples_per_s=200.0, low=180.0, high=210.0)
    assert cal.predict(60_000) == 300.0
    assert cal.predict() == QUICKSTART_COST / 200.0
    assert str(cal) == "200 samples/s (180–210)"


def test_calibrate_runs_one_thread_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    seen = []
    real = torch.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)

    torch.set_num_threads = spy
    try:
        cal = calibrate(rounds=2, steps=1, warmup=0)
    finally:
        torch.set_num_threads = real
    assert seen == [1, threads] and torch.get_num_threads() == threads
    assert 0 < cal.low <= cal.samples_per_s <= cal.high


def test_calibrate_command_prints_the_figure_and_the_prediction(capsys, monkeypatch):
    monkeypatch.setattr(
        "bench.calibration.calibrate", lambda rounds: Calibration(QUICKSTART_COST / 600, 1, 2)
    )
    assert main(["calibrate", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"calibration: {QUICKSTART_COST / 600:.0f} samples/s" in out
    assert "about 10 min here" in out


def test_the_quickstart_stays_within_its_budget():
    """Issue 10: the quickstart's measured cost (wall s × calibration figure) is at most
    66,000 now, and every method added to it later must keep it at most 99,000 (15 min on
    the slowest 2-core machine seen). QUICKSTART_COST is the last measured cost."""
    assert QUICKSTART_COST <= 99_000


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_calibrate_needs_a_positive_number_of_rounds(rounds, capsys):
    assert main(["calibrate", "--rounds", rounds]) == 2
    assert "--rounds must be a positive integer" in capsys.readouterr().err
