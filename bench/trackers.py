"""Live curves of a grid's trials in an experiment tracker, through Ray Tune's logger
callbacks: every checkpoint a node writes is reported to Tune with its step, latest losses
and (at evaluations) every split's overall metrics, and a tracker turned on here shows them
while the grid runs. The records stay the results; trackers are for watching."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.errors import DabenchError

TRACKERS = ("tensorboard", "mlflow")
MLRUNS = "_mlruns"  # under the results directory: MLflow's default local file store


def check_trackers(names: tuple[str, ...], executor: str) -> None:
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise DabenchError(f"unknown tracker(s) {unknown}; valid: {', '.join(TRACKERS)}")
    if names and executor != "ray":
        raise DabenchError(
            f"--tracker {' '.join(names)} needs the ray executor: the curves reach the "
            "trackers through Ray Tune"
        )
    for name in names:
        try:
            __import__({"tensorboard": "tensorboardX", "mlflow": "mlflow"}[name])
        except ImportError as exc:
            raise DabenchError(
                f"--tracker {name} needs {exc.name}, which is not installed; "
                + ("pip install -e '.[mlflow]'" if name == "mlflow" else "pip install tensorboardX")
            ) from exc


def callbacks(names: tuple[str, ...], results: Path, grid: str) -> list[Any]:
    """Tune logger callbacks for ``names``. TensorBoard event files go beside Tune's trial
    directories under ``<results>/_ray``; MLflow runs to ``$MLFLOW_TRACKING_URI`` or else a
    file store in ``<results>/_mlruns``, one experiment per grid, one run per node."""
    out: list[Any] = []
    if "tensorboard" in names:
        from ray.tune.logger import TBXLoggerCallback

        out.append(TBXLoggerCallback())
    if "mlflow" in names:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(results) / MLRUNS).as_uri()
            # MLflow 3 keeps its file store in maintenance and wants this to use it; a file
            # store needs no server or database package, which suits a results directory.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        out.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=grid))
    return out
