"""One trial: data → method → trainer → selection → record. A plain function, so Ray Tune
runs it as a trial and tests and debugging run it in-process."""

from __future__ import annotations

import datetime as dt
import fcntl
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import __version__
from bench.atomic import atomic_path
from bench.data.cards import load_dataset_card
from bench.data.joints import get_joint_set
from bench.data.views import DataNeed, check_needs, pair_shards
from bench.errors import DabenchError, ShardMismatchError
from bench.grid import SELECTION_RULES, TrialSpec
from bench.methods.base import coerce_hparams
from bench.methods.cards import load_method_card
from bench.methods.registry import get_method_class
from bench.metrics import METRICS_VERSION
from bench.paths import REPO_ROOT, shard_root
from bench.store import RECORD_SCHEMA_ID, read_record, write_trial
from bench.trainer import Evaluation, Trainer, TrainResult, seed_everything

# Lower is better for the metric each selection rule minimises.
_SELECTION_METRIC = {
    "source-val": ("source_val", "mpjpe"),
    "target-oracle": ("target_test", "mpjpe"),
}


@contextmanager
def _lock(path: Path):
    """An exclusive file lock, so concurrent trials do not generate the same shard twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_shards(
    spec: TrialSpec, root: Path | None = None, progress: bool = False, backgrounds: bool = False
) -> None:
    """Generate the pair's synthetic shards (and the background images, if the method
    needs them) when they are missing. Shards made with the grid's settings are kept;
    shards made with other settings are an error, never silently used. Real datasets must
    be converted by the user; their absence is an error raised by :func:`pair_shards`."""
    from bench.data.synthetic.build import synthesize
    from bench.data.views import BACKGROUNDS_CARD

    root = root or shard_root()
    cards = [spec.source, spec.target] + ([BACKGROUNDS_CARD] if backgrounds else [])
    data = spec.data
    for card_name in cards:
        if load_dataset_card(card_name).synthetic is None:
            continue
        with _lock(root / ".locks" / f"{card_name}.lock"):
            try:
                synthesize(
                    card_name,
                    root,
                    n_train=data["n_train"],
                    n_test=data["n_test"],
                    size=data["size"],
                    seed=data["seed"],
                    progress=progress,
                )
            except ShardMismatchError as exc:
                raise ShardMismatchError(
                    f"{exc}. The grid asks for n_train={data['n_train']}, "
                    f"n_test={data['n_test']}, size={data['size']}, seed={data['seed']}: "
                    f"keep grids with other data settings in another data root "
                    f"($DABENCH_DATA), or regenerate with `dabench data synth {card_name} "
                    "--overwrite` and those settings"
                ) from exc


def select(evaluations: list[Evaluation], rule: str) -> Evaluation | None:
    """The evaluation a named model-selection rule picks (None if nothing was evaluated).

    ``last``: the final evaluation. ``source-val``: lowest MPJPE on the held-out part of
    the source training split (no target labels used). ``target-oracle``: lowest MPJPE on
    the target test split itself — an upper bound, labelled as such in every table."""
    if rule not in SELECTION_RULES:
        raise DabenchError(f"unknown selection rule {rule!r}; valid: {SELECTION_RULES}")
    usable = [e for e in evaluations if np.isfinite(e.reports["target_test"].overall["mpjpe"])]
    if not usable:
        return evaluations[-1] if evaluations else None
    if rule == "last":
        return evaluations[-1]
    split, metric = _SELECTION_METRIC[rule]
    if split not in usable[0].reports:
        raise DabenchError(
            f"selection rule {rule!r} needs the {split} split, which was not "
            "evaluated (train.source_val_fraction is 0?)"
        )
    return min(usable, key=lambda e: e.reports[split].overall[metric])


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_state() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""
    try:
        sha = _git("rev-parse", "HEAD")
        return sha, _git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, Any]:
    import ray
    import timm

    sha, dirty = _git_state()
    return {
        "dabench": __version__,
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


WEIGHTS = "weights.pt"


def _save_weights(method, path: Path) -> None:
    """The final pose-network weights: what warm-started trials start from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(method.net.state_dict(), tmp)


def warm_start(method, path: Path) -> dict[str, int]:
    """Load a finished trial's pose-network weights into ``method.net``: every tensor whose
    name and shape match (the backbone always; the head when both trials use the same
    head). Returns counts for the record."""
    if not path.exists():
        raise DabenchError(
            f"warm start needs {path}, the weights of trial {path.parent.name}, which has not "
            "finished (it must run first, and succeed)"
        )
    status = read_record(path.parent / "record.json").get("status")
    if status != "ok":
        raise DabenchError(
            f"warm start from trial {path.parent.name}, whose status is {status!r}, not 'ok'"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    own = method.net.state_dict()
    loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    backbone = [k for k in own if k.startswith("backbone.")]
    missing = [k for k in backbone if k not in loaded]
    if missing:
        raise DabenchError(
            f"warm start from {path}: {len(missing)} backbone tensors do not match (e.g. "
            f"{missing[0]}); the trials must share the backbone"
        )
    method.net.load_state_dict(loaded, strict=False)
    return {"loaded_tensors": len(loaded), "fresh_tensors": len(own) - len(loaded)}


def method_class(spec: TrialSpec) -> tuple[type, Any]:
    """The adapter class of a trial and its typed hyper-parameters."""
    cls = get_method_class(load_method_card(spec.method).adapter)
    return cls, coerce_hparams(cls.Hparams, spec.hparams, f"method {spec.label}")


def run_trial(
    spec: TrialSpec,
    results: Path,
    *,
    data_root: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial; write and return its record. A failure inside the
    trial becomes a ``failed`` record with its traceback, never a crash of the grid."""
    started = time.perf_counter()
    log = log or (lambda msg: None)
    workdir = Path(results) / spec.trial_id
    record: dict[str, Any] = _base_record(spec)
    predictions = None
    try:
        train_cfg = spec.train_config()
        if train_cfg.threads == 0:
            torch.set_num_threads(max(1, int(spec.resources.get("cpu", 1))))
        cls, hparams = method_class(spec)
        needs = cls.data_needs(hparams)
        ensure_shards(spec, data_root, backgrounds=DataNeed.BACKGROUNDS in needs)
        pair = pair_shards(spec.source, spec.target, data_root)
        record["pair"]["joint_set"] = pair.joint_set
        record["data"]["fingerprints"] = pair.fingerprints()
        check_needs(spec.label, needs, pair)
        # Seed before the networks are built: their initial weights are part of the result.
        seed_everything(spec.seed, train_cfg.deterministic)
        method = cls(
            hparams, spec.model_config(), get_joint_set(pair.joint_set).num_joints, pair.root
        )
        if spec.init:
            record["init"] = {
                "trial_id": spec.init,
                **warm_start(method, Path(results) / spec.init / WEIGHTS),
            }
        trainer = Trainer(
            method,
            pair,
            train_cfg,
            spec.seed,
            workdir,
            progress=progress,
            log=log,
            resume=True,
            run_id=spec.trial_id,
        )
        result = trainer.fit()
        predictions = _fill_results(record, result, spec.selection)
        _save_weights(method, workdir / WEIGHTS)
    except Exception as exc:
        record["status"] = "failed"
        record["error"] = {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
        log(f"trial {spec.trial_id} failed: {type(exc).__name__}: {exc}")
    record["timings"]["total_seconds"] = time.perf_counter() - started
    write_trial(results, record, predictions)
    checkpoint = workdir / "checkpoint.pt"
    if record["status"] != "failed" and not spec.train.get("keep_checkpoint", False):
        # Finished: the checkpoint only served resumption; it is the largest file by far.
        checkpoint.unlink(missing_ok=True)
    return record


def _base_record(spec: TrialSpec) -> dict[str, Any]:
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
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }


def _fill_results(record: dict[str, Any], result: TrainResult, rule: str) -> dict | None:
    record["status"] = result.status
    record["timings"].update(result.timings)
    record["peak_memory_mb"] = result.peak_memory_mb
    record["device"] = result.device
    record["curves"] = {
        "losses": result.losses,
        "evaluations": [{"step": e.step, **e.overall()} for e in result.evaluations],
    }
    if result.diverged_at is not None:
        record["diverged_at"] = result.diverged_at
    for name in SELECTION_RULES:
        try:
            chosen = select(result.evaluations, name)
        except DabenchError:
            continue
        if chosen is not None:
            record["metrics_by_rule"][name] = {"step": chosen.step, "metrics": chosen.overall()}
    chosen = select(result.evaluations, rule)
    if chosen is None:
        return None
    record["selection"]["step"] = chosen.step
    record["metrics"] = {split: rep.to_dict() for split, rep in chosen.reports.items()}
    return {**chosen.predictions, "step": np.array(chosen.step)}
