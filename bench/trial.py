"""The nodes of a grid's DAG as plain functions, so Ray Tune runs them as trials and tests
and debugging run them in-process: a *stage run* (pre-training stages → a stored
artifact) and a *trial* (the evaluated stages → selection → a record)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.artifacts import WEIGHTS, ArtifactStore
from bench.atomic import atomic_path, file_lock
from bench.data.joints import get_joint_set
from bench.data.pairs import PairShards, pair_shards
from bench.data.provision import ensure_shards
from bench.data.views import Backgrounds, check_views, extra_cards
from bench.errors import DabenchError
from bench.grid import StageRunSpec, TrialSpec, _Node
from bench.methods.base import Method, build_method
from bench.methods.cards import load_method_card
from bench.methods.spec import MethodSpec, Stage, coerce_hparams, get_spec
from bench.metrics import METRICS_VERSION
from bench.provenance import versions
from bench.selection import RULES, get_rule
from bench.store import (
    ATTEMPTS,
    LOCK,
    RECORD_SCHEMA_ID,
    attempts,
    is_complete,
    read_record,
    trial_dir,
    write_predictions,
    write_trial,
)
from bench.trainer import CHECKPOINT, Trainer, TrainResult, seed_everything

FINAL_WEIGHTS = "weights.pt"
WORK_DIR = ".work"  # under the artifact store: checkpoints of stage runs in progress


@dataclass(frozen=True)
class Checkpoints:
    """A node's checkpoints beyond its work directory's: copies kept elsewhere (Ray Tune's,
    so that a retry on another machine resumes), and a hook told of each new one."""

    others: tuple[Path, ...] = ()
    on_write: Callable[[Path, dict[str, Any]], None] | None = None


def node_workdir(node: _Node, results: Path) -> Path:
    """Where a node keeps its checkpoint while it runs."""
    if isinstance(node, TrialSpec):
        return trial_dir(results, node.trial_id)
    return ArtifactStore(results).root / WORK_DIR / node.key


def node_method(node: _Node) -> tuple[type[MethodSpec], Any, list[Stage]]:
    """The method declaration of a node, its typed hyper-parameters and its stages."""
    spec = get_spec(load_method_card(node.method).adapter)
    hp = coerce_hparams(spec.Hparams, node.hparams, f"method {node.label}")
    return spec, hp, spec.checked_stages(hp)


def node_datasets(node: _Node) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """What a node reads beside its pair's shards: background images, the training shards
    of other datasets (a method's extra views) and the test shards it is also evaluated on."""
    _, _, plan = node_method(node)
    views = [v for stage in plan for v in stage.views.values()]
    backgrounds = any(isinstance(v, Backgrounds) for v in views)
    also = node.also_test if isinstance(node, TrialSpec) else ()
    return backgrounds, tuple(extra_cards(views)), also


def prepare_pair(
    node: _Node,
    data_root: Path | None,
    progress: bool = False,
    pairs: dict[tuple, PairShards] | None = None,
) -> PairShards:
    """The node's shards (synthetic ones generated if missing), with its views checked.
    ``pairs`` caches located pairs across the nodes of a grid (shard infos read once)."""
    _, _, plan = node_method(node)
    backgrounds, extras, also = node_datasets(node)
    key = (node.source, node.target, tuple(sorted(node.data.items())), backgrounds, extras, also)
    pairs = {} if pairs is None else pairs
    if key not in pairs:
        ensure_shards(
            node.source,
            node.target,
            node.data,
            data_root,
            backgrounds=backgrounds,
            extras=(*extras, *also),
            progress=progress,
        )
        pairs[key] = pair_shards(node.source, node.target, data_root, extras, also_test=also)
    pair = pairs[key]
    for stage in plan:
        if stage.name in node.stages:
            check_views(node.label, stage.views, pair)
    return pair


def load_start(
    method: Method, node: _Node, store: ArtifactStore, pair: PairShards
) -> tuple[dict[str, Path], dict[str, int]]:
    """Load the artifact the node starts from into ``method``. The method's own earlier
    stage: its whole state (the earlier stages' start hooks replayed first, so that the
    modules they made exist). Another method's (a warm start): every pose-network tensor
    whose name and shape match — the backbone must match entirely. Returns the
    artifact directories by stage (``stage`` for this method's, ``method:stage`` for all),
    for views and hooks that read data an earlier stage produced, and how many tensors of
    the pose network were loaded and how many start fresh (for the record)."""
    dirs: dict[str, Path] = {}
    for up in node.upstream:
        dirs[f"{up.method}:{up.stage}"] = store.path(up.key)
        if up.method == node.method:
            dirs[up.stage] = store.path(up.key)
    start = node.start
    if start is None:
        return dirs, {}
    store.check_fingerprints(start.key, pair.fingerprints())
    state = torch.load(store.path(start.key) / WEIGHTS, map_location="cpu", weights_only=True)
    if start.method == node.method:
        earlier = []
        for stage in method.stages():
            if stage.name in node.stages:
                break
            earlier.append(stage)
        for stage in earlier:
            method.on_stage_start(stage, _ReplayContext(dirs))
        method.load_state_dict(state)
        n = len(method.net.state_dict())
        return dirs, {"loaded_tensors": n, "fresh_tensors": 0}
    net = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    own = method.net.state_dict()
    loaded = {k: v for k, v in net.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k.startswith("backbone.") and k not in loaded]
    if missing:
        raise DabenchError(
            f"warm start from {start.method} ({start.key}): {len(missing)} backbone tensors "
            f"do not match (e.g. {missing[0]}); the methods must share the backbone"
        )
    method.net.load_state_dict(loaded, strict=False)
    return dirs, {"loaded_tensors": len(loaded), "fresh_tensors": len(own) - len(loaded)}


class _ReplayContext:
    def __init__(self, artifacts: Mapping[str, Path]) -> None:
        self.artifacts = artifacts
        self.resuming = True


def export_artifact(
    method: Method,
    stage: str,
    key: str,
    node: _Node,
    store: ArtifactStore,
    pair: PairShards,
    run_id: str,
    made: Mapping[str, Any] | None = None,
) -> bool:
    """Store ``method``'s state at the end of ``stage`` under ``key`` (once: False if it
    already exists). ``made``: how it was made (the stage's ``steps`` and the ``seconds``
    its run took), kept in ``artifact.json`` and copied into every record that uses it."""
    with store.lock(key):
        if store.exists(key):
            return False
        meta = {
            "method": node.method,
            "variant": node.variant,
            "stage": stage,
            "source": node.source,
            "target": node.target,
            "seed": node.seed,
            "run_id": run_id,
            "made_by": node.node_id,
            "fingerprints": pair.fingerprints(),
            **(made or {}),
        }
        with store.writing(key, meta) as tmp:
            torch.save(method.state_dict(), tmp / WEIGHTS)
            method.export_artifact(stage, tmp, pair)
    return True


def _train(
    node: _Node,
    results: Path,
    workdir: Path,
    pair: PairShards,
    *,
    evaluate: bool,
    exports: Mapping[str, str],
    run_id: str,
    progress: bool,
    log: Callable[[str], None],
    checkpoints: Checkpoints | None,
) -> tuple[Method, TrainResult, dict[str, int]]:
    """Build the node's method, load what it starts from, train its stages."""
    spec, hp, _ = node_method(node)
    cfg = node.train_config()
    if cfg.threads == 0:
        torch.set_num_threads(max(1, int(node.resources.get("cpu", 1))))
    # Seed before the networks are built: their initial weights are part of the result.
    seed_everything(node.seed, cfg.deterministic)
    jset = get_joint_set(pair.joint_set)
    method = build_method(spec, hp, node.model_config(), jset.num_joints, pair.root, jset)
    store = ArtifactStore(results)
    dirs, loaded = load_start(method, node, store, pair)
    since = [time.perf_counter()]

    def on_stage_end(stage: Stage) -> None:
        # seconds since the previous stage ended (or the run started, set-up included);
        # a resumed run counts from its restart
        made = {
            "steps": trainer.lengths[stage.name],
            "seconds": round(time.perf_counter() - since[0], 3),
        }
        if stage.name in exports:
            key = exports[stage.name]
            export_artifact(method, stage.name, key, node, store, pair, run_id, made)
        since[0] = time.perf_counter()

    trainer = Trainer(
        method,
        pair,
        cfg,
        node.seed,
        workdir,
        run=list(node.stages),
        artifacts=dirs,
        evaluate=evaluate,
        progress=progress,
        log=log,
        resume=True,
        run_id=node.node_id,
        on_stage_end=on_stage_end,
        on_checkpoint=checkpoints.on_write if checkpoints else None,
        other_checkpoints=checkpoints.others if checkpoints else (),
    )
    return method, trainer.fit(), loaded


def run_stage_run(
    spec: StageRunSpec,
    results: Path,
    *,
    data_root: Path | None = None,
    run_id: str = "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> bool:
    """Compute a stage run's artifact unless it exists; True if this call computed it."""
    log = log or (lambda msg: None)
    store = ArtifactStore(results)
    workdir = node_workdir(spec, results)
    if store.exists(spec.key):
        return False
    with file_lock(workdir.parent / f"{spec.key}.lock"):  # one process at a time, as trials
        if store.exists(spec.key):
            return False
        return _run_stage_run(spec, results, workdir, data_root, run_id, progress, log, checkpoints)


def _run_stage_run(
    spec: StageRunSpec,
    results: Path,
    workdir: Path,
    data_root: Path | None,
    run_id: str,
    progress: bool,
    log: Callable[[str], None],
    checkpoints: Checkpoints | None,
) -> bool:
    pair = prepare_pair(spec, data_root)
    _, result, _ = _train(
        spec,
        results,
        workdir,
        pair,
        evaluate=False,
        exports={spec.stages[-1]: spec.key},
        run_id=run_id,
        progress=progress,
        log=log,
        checkpoints=checkpoints,
    )
    if result.status != "ok":
        raise DabenchError(
            f"stage run {spec.label} {'/'.join(spec.stages)} ({spec.key}) {result.status} at "
            f"step {result.diverged_at}"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return True


def run_trial(
    spec: TrialSpec,
    results: Path,
    *,
    data_root: Path | None = None,
    run_id: str = "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial; write and return its record. A bad configuration
    (``DabenchError``) becomes a ``failed`` record; any other exception is recorded too
    and then re-raised, so that Ray's ``FailureConfig`` retries it."""
    results = Path(results)
    workdir = trial_dir(results, spec.trial_id)
    # One process at a time per trial: a retry waits for an attempt that is still running
    # (a killed driver's trials die moments after it), then finds the trial done or
    # resumes it from the checkpoint that attempt left.
    with file_lock(workdir / LOCK):
        if is_complete(results, spec.trial_id):
            return read_record(trial_dir(results, spec.trial_id) / "record.json")
        return _run_trial(spec, results, workdir, data_root, run_id, progress, log, checkpoints)


def _run_trial(
    spec: TrialSpec,
    results: Path,
    workdir: Path,
    data_root: Path | None,
    run_id: str,
    progress: bool,
    log: Callable[[str], None] | None,
    checkpoints: Checkpoints | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    log = log or (lambda msg: None)
    record = _base_record(spec, results)
    record["attempt"] = _count_attempt(workdir)
    predictions = None
    crash: BaseException | None = None
    try:
        pair = prepare_pair(spec, data_root)
        record["pair"]["joint_set"] = pair.joint_set
        record["data"]["fingerprints"] = pair.fingerprints()
        record["artifacts"] = _artifact_entries(spec, results, run_id)
        method, result, loaded = _train(
            spec,
            results,
            workdir,
            pair,
            evaluate=True,
            exports=spec.exports,
            run_id=run_id,
            progress=progress,
            log=log,
            checkpoints=checkpoints,
        )
        if loaded:
            record["artifacts"][-1].update(loaded)
        predictions = _fill_results(record, result, spec.selection)
        # The final pose network, for inspection (warm starts use stage artifacts).
        written = time.perf_counter()
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(workdir / FINAL_WEIGHTS) as tmp:
            torch.save(method.net.state_dict(), tmp)
        if predictions:
            write_predictions(results, spec.trial_id, predictions)
        predictions = None  # written
        # weights and predictions; the record itself (a few kB of JSON) comes last
        record["timings"]["write_seconds"] = time.perf_counter() - written
    except Exception as exc:
        record = _failed(record, exc)
        log(f"trial {spec.trial_id} failed: {type(exc).__name__}: {exc}")
        if not isinstance(exc, DabenchError):
            crash = exc
    record["timings"]["total_seconds"] = time.perf_counter() - started
    write_trial(results, record, predictions)
    if record["status"] != "failed" and not spec.train.get("keep_checkpoint", False):
        # Finished: the checkpoint and the stored evaluations only served resumption and
        # selection; they are the largest files by far.
        (workdir / CHECKPOINT).unlink(missing_ok=True)
        shutil.rmtree(workdir / "evaluations", ignore_errors=True)
    if crash is not None:
        raise crash
    return record


def _count_attempt(workdir: Path) -> int:
    """Count one more start of the trial in its directory (a start that is killed without
    a trace still counts) and return the count."""
    count = attempts(workdir) + 1
    workdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(workdir / ATTEMPTS) as tmp:
        tmp.write_text(str(count))
    return count


def _failed(record: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    record["status"] = "failed"
    record["error"] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return record


def failed_record(spec: TrialSpec, results: Path, exc: BaseException) -> dict[str, Any]:
    """The record of a trial that could not run at all (e.g. its start artifact failed)."""
    record = _failed(_base_record(spec, results), exc)
    record["timings"]["total_seconds"] = 0.0
    return record


def _artifact_entries(spec: TrialSpec, results: Path, run_id: str) -> list[dict[str, Any]]:
    """Every upstream artifact the trial uses, and whether this grid run computed it."""
    store = ArtifactStore(results)
    out = []
    for up in spec.upstream:
        meta = store.meta(up.key)
        out.append(
            {
                "key": up.key,
                "method": up.method,
                "stage": up.stage,
                "computed": bool(run_id) and meta.get("run_id") == run_id,
                **{k: meta[k] for k in ("steps", "seconds") if meta.get(k) is not None},
            }
        )
    return out


def _base_record(spec: TrialSpec, results: Path) -> dict[str, Any]:
    return {
        "schema": RECORD_SCHEMA_ID,
        "trial_id": spec.trial_id,
        "grid": spec.grid,
        "method": spec.method,
        "variant": spec.variant,
        "label": spec.label,
        "category": spec.category,
        "hparams": dict(spec.hparams),
        "pair": {"source": spec.source, "target": spec.target, "joint_set": ""},
        "seed": spec.seed,
        "selection": {"rule": spec.selection, "step": None},
        "spec": spec.to_dict(),
        "artifacts": [],
        "stages": {},
        "metrics": {},
        "metrics_by_rule": {},
        "metrics_version": METRICS_VERSION,
        "curves": {"losses": [], "evaluations": []},
        "timings": {},
        "peak_memory_mb": None,
        "device": None,
        "versions": versions(),
        "data": {"fingerprints": {}, **spec.data},
        "status": "failed",
        "error": None,
        "attempt": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "ray_node": _ray_node(),
    }


def _ray_node() -> str | None:
    """The Ray node a trial runs on (None outside Ray), to see where a grid's trials went."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _fill_results(record: dict[str, Any], result: TrainResult, rule: str) -> dict | None:
    record["status"] = result.status
    record["timings"].update(result.timings)
    record["peak_memory_mb"] = result.peak_memory_mb
    record["device"] = result.device
    record["stages"] = result.stage_steps
    record["curves"] = {
        "losses": result.losses,
        "evaluations": [
            {"step": e.step, "stage": e.stage, **e.overall()} for e in result.evaluations
        ],
    }
    if result.diverged_at is not None:
        record["diverged_at"] = result.diverged_at
    entries = [e.entry() for e in result.evaluations]
    for name, selection_rule in RULES.items():
        try:
            chosen = selection_rule.choose(entries)
        except DabenchError:
            continue
        if chosen is not None:
            record["metrics_by_rule"][name] = {
                "step": chosen["step"],
                "metrics": {s: m["overall"] for s, m in chosen["metrics"].items()},
            }
    chosen = get_rule(rule).choose(entries)
    if chosen is None:
        return None
    evaluation = result.evaluations[entries.index(chosen)]
    record["selection"]["step"] = evaluation.step
    record["metrics"] = evaluation.metrics
    return {**evaluation.predictions("target_test"), "step": np.array(evaluation.step)}
