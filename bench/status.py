"""Where a grid stands in a result store: each trial done, diverged, failed (with its
message), running (a process holds its lock now), interrupted (a checkpoint but no record,
and nobody running it: the next run resumes it) or missing; and the clean-up of what must
be redone."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.atomic import is_locked
from bench.errors import DabenchError
from bench.grid import Grid
from bench.store import CHECKPOINT, LOCK, read_record, trial_dir

STATES = ("ok", "diverged", "failed", "running", "interrupted", "missing")


@dataclass(frozen=True)
class TrialStatus:
    trial_id: str
    label: str
    source: str
    target: str
    seed: int
    state: str  # one of STATES
    message: str = ""  # a failed trial's error, or why a record could not be read


def grid_status(grid: Grid, results: Path) -> list[TrialStatus]:
    """The state of every trial of ``grid`` in ``results``, in grid order."""
    out = []
    for spec in grid.trials:
        directory = trial_dir(results, spec.trial_id)
        state, message = "missing", ""
        if (directory / "record.json").exists():
            try:
                record = read_record(directory / "record.json")
                state = record["status"]
                if state == "failed":
                    message = (record.get("error") or {}).get("message", "")
            except (DabenchError, KeyError) as exc:
                state, message = "failed", f"unreadable record: {exc}"
        if state in ("failed", "missing") and is_locked(directory / LOCK):
            state, message = "running", ""  # a retry, or the first attempt
        elif state == "missing" and (directory / CHECKPOINT).exists():
            state = "interrupted"
        out.append(
            TrialStatus(
                spec.trial_id, spec.label, spec.source, spec.target, spec.seed, state, message
            )
        )
    return out


def clean_failed(grid: Grid, results: Path) -> list[TrialStatus]:
    """Remove the directories of ``grid``'s failed trials (their record, and a checkpoint
    a crash left), so that the next run redoes them from step 0; returns what was removed."""
    removed = [s for s in grid_status(grid, results) if s.state == "failed"]
    for status in removed:
        shutil.rmtree(trial_dir(results, status.trial_id))
    return removed
