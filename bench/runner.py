"""Execute a grid's trial specs: skip finished ones, prepare data and check every trial's
data needs before any compute, then run the rest as Ray Tune trials (local Ray or a
cluster) or in-process."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.views import DataNeed, PairShards, check_needs, pair_shards
from bench.errors import DabenchError
from bench.grid import Grid, TrialSpec
from bench.paths import shard_root
from bench.store import is_complete, read_record, trial_dir
from bench.trial import ensure_shards, method_class, run_trial

EXECUTORS = ("ray", "local")


@dataclass(frozen=True)
class RunSummary:
    total: int
    skipped: int
    ran: int
    records: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]


def prepare(
    trials: list[TrialSpec], data_root: Path, log: Callable[[str], None], progress: bool = True
) -> None:
    """Generate missing synthetic shards once, in the driver, and check that every pair
    can feed its method — all before the first trial starts."""
    pairs: dict[tuple, PairShards] = {}
    for spec in trials:
        cls, hparams = method_class(spec)
        needs = cls.data_needs(hparams)
        key = (
            spec.source,
            spec.target,
            tuple(sorted(spec.data.items())),
            DataNeed.BACKGROUNDS in needs,
        )
        if key not in pairs:
            ensure_shards(
                spec, data_root, progress=progress, backgrounds=DataNeed.BACKGROUNDS in needs
            )
            pairs[key] = pair_shards(spec.source, spec.target, data_root)
        check_needs(spec.label, needs, pairs[key])


def run_grid(
    grid: Grid,
    results: Path,
    *,
    executor: str = "ray",
    address: str | None = None,
    data_root: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    if executor not in EXECUTORS:
        raise DabenchError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    results = Path(results).resolve()
    data_root = Path(data_root or shard_root()).resolve()
    pending = [t for t in grid.trials if not is_complete(results, t.trial_id)]
    skipped = len(grid.trials) - len(pending)
    log(
        f"grid {grid.name}: {len(grid.trials)} trials, {skipped} already complete, "
        f"{len(pending)} to run ({executor}) → {results}"
    )
    if pending:
        prepare(pending, data_root, log, progress)
        results.mkdir(parents=True, exist_ok=True)
        # Warm-started trials need the weights of the trial they start from: two waves.
        waves = [[t for t in pending if not t.init], [t for t in pending if t.init]]
        done = 0
        for wave in waves:
            if not wave:
                continue
            if executor == "local":
                for spec in wave:
                    done += 1
                    log(
                        f"[{done}/{len(pending)}] {spec.label} {spec.source} → {spec.target} "
                        f"seed {spec.seed}"
                    )
                    record = run_trial(
                        spec, results, data_root=data_root, progress=progress, log=log
                    )
                    log(_summary_line(record))
            else:
                _run_ray(
                    grid, wave, results, data_root, address, log, offset=done, total=len(pending)
                )
                done += len(wave)
    records = []
    for spec in grid.trials:
        path = trial_dir(results, spec.trial_id) / "record.json"
        if not path.exists():
            raise DabenchError(
                f"trial {spec.trial_id} ({spec.label}) produced no record; see "
                f"the Ray logs under {results / '_ray'}"
            )
        records.append(read_record(path))
    return RunSummary(total=len(grid.trials), skipped=skipped, ran=len(pending), records=records)


def _summary_line(record: dict[str, Any]) -> str:
    head = (
        f"  {record['label']} {record['pair']['source']} → {record['pair']['target']} "
        f"seed {record['seed']}: {record['status']}"
    )
    if record["status"] == "failed":
        return f"{head} ({record['error']['type']}: {record['error']['message']})"
    overall = record["metrics"].get("target_test", {}).get("overall", {})
    if overall:
        head += (
            f", target MPJPE {_fmt(overall.get('mpjpe'))} mm, "
            f"PCK@0.05 {_fmt(overall.get('pck2d_005'))}%"
        )
    return head


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _tune_trial(config: dict[str, Any]) -> None:
    """The Ray Tune trainable: run one trial spec and report its outcome."""
    from ray import tune

    spec = TrialSpec.from_dict(config["spec"])
    record = run_trial(
        spec, Path(config["results"]), data_root=Path(config["data_root"]), progress=False
    )
    overall = record["metrics"].get("target_test", {}).get("overall", {})
    tune.report({"status": record["status"], "target_mpjpe": overall.get("mpjpe") or -1.0})


def _run_ray(
    grid: Grid,
    pending: list[TrialSpec],
    results: Path,
    data_root: Path,
    address: str | None,
    log: Callable[[str], None],
    offset: int = 0,
    total: int | None = None,
) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self) -> None:
            self.done = offset

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            spec = TrialSpec.from_dict(trial.config["spec"])
            path = trial_dir(results, spec.trial_id) / "record.json"
            line = _summary_line(read_record(path)) if path.exists() else f"  {spec.label}: ?"
            log(f"[{self.done}/{total or len(pending)}]{line}")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.on_trial_complete(iteration, trials, trial)

    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": "ERROR",
            "log_to_driver": False,
        }
        if address:
            kwargs["address"] = address
        ray.init(**kwargs)
        started_here = True
    resources = {k: v for k, v in pending[0].resources.items() if v}
    trainable = tune.with_resources(_tune_trial, resources)
    tuner = tune.Tuner(
        trainable,
        param_space={
            "spec": tune.grid_search([t.to_dict() for t in pending]),
            "results": str(results),
            "data_root": str(data_root),
        },
        run_config=tune.RunConfig(
            name=f"{grid.name}-{offset}",
            storage_path=str(results / "_ray"),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
            callbacks=[_Progress()],
        ),
    )
    try:
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
