"""The result store: one JSON record per trial plus its predictions, written atomically;
``load(DIR)`` turns a store into a pandas DataFrame.

Layout: ``<results>/<trial_id>/record.json`` and ``predictions.npz`` (target-test ``kp2d``
px and ``kp3d`` mm camera frame, in shard order, of the selected checkpoint). The record is
written last, so its presence with status ``ok``/``diverged`` marks a finished trial.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd

from bench.atomic import atomic_path
from bench.config import CATEGORIES
from bench.errors import DabenchError
from bench.selection import SELECTION_RULES

RECORD_SCHEMA_ID = "dabench.record/2"
# A trial's resumable state in its directory, until the trial finishes (bench.trainer).
CHECKPOINT = "checkpoint.pt"
# In a trial's directory: held by the process that runs the trial (bench.atomic.file_lock).
LOCK = ".lock"
ATTEMPTS = "attempts"  # in a trial's directory: how many times it was started


def attempts(directory: Path) -> int:
    """How many times the trial in ``directory`` was started (0: never, or unreadable)."""
    try:
        return int((Path(directory) / ATTEMPTS).read_text())
    except (OSError, ValueError):
        return 0


STATUSES = ("ok", "failed", "diverged")
FINISHED = ("ok", "diverged")

_METRIC_BLOCK = {
    "type": "object",
    "required": ["overall", "per_group", "per_joint"],
    "properties": {
        "overall": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "per_group": {"type": "object"},
        "per_joint": {"type": "object"},
    },
}

RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": [
        "schema",
        "trial_id",
        "grid",
        "method",
        "variant",
        "label",
        "category",
        "hparams",
        "pair",
        "seed",
        "selection",
        "spec",
        "artifacts",
        "stages",
        "metrics",
        "metrics_by_rule",
        "metrics_version",
        "curves",
        "timings",
        "peak_memory_mb",
        "device",
        "versions",
        "data",
        "status",
        "error",
        "attempt",
        "created",
    ],
    "properties": {
        "schema": {"const": RECORD_SCHEMA_ID},
        "trial_id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
        "grid": {"type": "string"},
        "method": {"type": "string"},
        "variant": {"type": ["string", "null"]},
        "label": {"type": "string"},
        "category": {"enum": list(CATEGORIES)},
        "hparams": {"type": "object"},
        "pair": {
            "type": "object",
            "required": ["source", "target", "joint_set"],
            "properties": {
                "source": {"type": "string"},
                "target": {"type": "string"},
                "joint_set": {"type": "string"},
            },
        },
        "seed": {"type": "integer"},
        "selection": {
            "type": "object",
            "required": ["rule", "step"],
            "properties": {
                "rule": {"enum": list(SELECTION_RULES)},
                "step": {"type": ["integer", "null"]},
            },
        },
        "spec": {"type": "object"},
        "artifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "method", "stage", "computed"],
                "properties": {
                    "key": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                    "method": {"type": "string"},
                    "stage": {"type": "string"},
                    "computed": {"type": "boolean"},
                    "steps": {"type": "integer", "minimum": 0},
                    "seconds": {"type": "number", "minimum": 0},
                    "loaded_tensors": {"type": "integer", "minimum": 0},
                    "fresh_tensors": {"type": "integer", "minimum": 0},
                },
            },
        },
        "stages": {"type": "object", "additionalProperties": {"type": "integer"}},
        "metrics": {"type": "object", "additionalProperties": _METRIC_BLOCK},
        "metrics_by_rule": {"type": "object"},
        "metrics_version": {"type": "string"},
        "curves": {
            "type": "object",
            "required": ["losses", "evaluations"],
            "properties": {"losses": {"type": "array"}, "evaluations": {"type": "array"}},
        },
        "timings": {"type": "object"},
        "peak_memory_mb": {"type": ["number", "null"]},
        "device": {"type": ["string", "null"]},
        "versions": {"type": "object", "required": ["dabench", "torch", "timm", "ray"]},
        "data": {"type": "object", "required": ["fingerprints"]},
        "status": {"enum": list(STATUSES)},
        "error": {"type": ["object", "null"]},
        "attempt": {"type": "integer", "minimum": 1},
        "created": {"type": "string"},
    },
}


def trial_dir(results: Path, trial_id: str) -> Path:
    return Path(results) / trial_id


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise DabenchError naming the first schema violation."""
    try:
        jsonschema.validate(record, RECORD_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise DabenchError(f"invalid trial record at {where}: {exc.message}") from exc


def write_trial(
    results: Path, record: Mapping[str, Any], predictions: Mapping[str, np.ndarray] | None
) -> Path:
    """Write predictions, then the record (validated), each atomically. Non-finite
    numbers (a diverged trial's errors) are stored as null."""
    record = _finite(record)
    validate_record(record)
    directory = trial_dir(results, record["trial_id"])
    if predictions:
        write_predictions(results, record["trial_id"], predictions)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False, default=_jsonable)
    with atomic_path(directory / "record.json") as tmp:
        tmp.write_text(text)
    return directory / "record.json"


def write_predictions(results: Path, trial_id: str, predictions: Mapping[str, np.ndarray]) -> None:
    """A trial's per-sample predictions, atomically (before its record: a record on disk
    means the trial is complete)."""
    directory = trial_dir(results, trial_id)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "predictions.npz") as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in predictions.items()})


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DabenchError(f"cannot read trial record {path}: {exc}") from exc


def read_predictions(results: Path, trial_id: str) -> dict[str, np.ndarray]:
    path = trial_dir(results, trial_id) / "predictions.npz"
    if not path.exists():
        raise DabenchError(f"no predictions for trial {trial_id} in {results}")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def is_complete(results: Path, trial_id: str) -> bool:
    """A finished record (``ok`` or ``diverged``); failed trials run again."""
    path = trial_dir(results, trial_id) / "record.json"
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") in FINISHED
    except DabenchError:
        return False


def records(results: Path) -> list[dict[str, Any]]:
    results = Path(results)
    if not results.is_dir():
        raise DabenchError(f"no result store at {results}")
    return [read_record(p) for p in sorted(results.glob("*/record.json"))]


def load(results: Path | str) -> pd.DataFrame:
    """One row per trial: ids, method, pair, seed, status, and every overall metric of every
    split under the record's selection rule as ``<split>/<metric>`` columns, plus the same
    under each rule as ``<rule>:<split>/<metric>``."""
    return frame(records(Path(results)))


def method_notes(rec: Mapping[str, Any]) -> str:
    """What the method's declaration says a report must note about this record's row
    (:meth:`bench.methods.spec.MethodSpec.notes`); "" for a method no longer registered."""
    from bench.methods.spec import get_spec

    try:
        spec = get_spec(rec["method"])
    except DabenchError:
        return ""
    return spec.notes(rec.get("hparams") or {})


def method_data(rec: Mapping[str, Any]) -> str:
    """Which data of which domain the record's method read (its stages' views, e.g.
    "source: images, pose labels; target: images, masks"); "" for a method no longer
    registered or hyper-parameters it no longer accepts."""
    from bench.methods.spec import coerce_hparams, get_spec

    try:
        spec = get_spec(rec["method"])
        hp = coerce_hparams(spec.Hparams, rec.get("hparams") or {}, rec["method"])
        return spec.data_text(hp)
    except DabenchError:
        return ""


def network_text(model: Mapping[str, Any]) -> str:
    """A record's pose network in a few words: backbone (patch size and blocks of a ViT,
    the stride a CNN is cut at), input size and head."""
    parts = [str(model.get("backbone", "?"))]
    if model.get("patch_size"):
        parts.append(f"patch {model['patch_size']}")
    if model.get("vit_depth"):
        parts.append(f"{model['vit_depth']} blocks")
    if model.get("feature_stride") and not model.get("patch_size"):  # a CNN's cut
        parts.append(f"cut at stride {model['feature_stride']}")
    if model.get("img_size"):
        parts.append(f"{model['img_size']} px")
    head = f", {model['head']} head" if model.get("head") else ""
    return f"{parts[0]} ({', '.join(parts[1:])}){head}" if len(parts) > 1 else parts[0] + head


def own_artifacts(rec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The upstream artifacts made by the trial's own method's earlier stages (its
    pre-training, a segmenter), not another method's network it starts from."""
    return [a for a in rec.get("artifacts") or [] if a.get("method") == rec["method"]]


def stage_steps_text(rec: Mapping[str, Any]) -> str:
    """The steps of every stage of the trial's method: those stored artifacts of its own
    method made (pre-training shared between variants) and those the trial ran."""
    own = [(a["stage"], a["steps"]) for a in own_artifacts(rec) if "steps" in a]
    # records store stages as a key-sorted mapping: order them as they ran (the losses log)
    ran = [e.get("stage") for e in (rec.get("curves") or {}).get("losses", [])]
    stages = sorted(
        (rec.get("stages") or {}).items(),
        key=lambda kv: ran.index(kv[0]) if kv[0] in ran else len(ran),
    )
    return ", ".join(f"{k} {v}" for k, v in [*own, *stages])


def frame(recs: list[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`load` of records already read."""
    rows = []
    for rec in recs:
        start = (rec.get("artifacts") or [{}])[-1]  # what the trial's first stage loaded
        row = {
            "trial_id": rec["trial_id"],
            "grid": rec["grid"],
            "method": rec["method"],
            "variant": rec["variant"],
            "label": rec["label"],
            "category": rec["category"],
            "source": rec["pair"]["source"],
            "target": rec["pair"]["target"],
            "pair": f"{rec['pair']['source']} → {rec['pair']['target']}",
            "seed": rec["seed"],
            "status": rec["status"],
            "selection": rec["selection"]["rule"],
            "selected_step": rec["selection"]["step"],
            "train_seconds": rec["timings"].get("train_seconds"),
            "warm_start": next(
                (a["method"] for a in rec.get("artifacts", []) if a["method"] != rec["method"]),
                None,
            ),
            "start_stage": start.get("stage") if start.get("method") == rec["method"] else None,
            "start_loaded": start.get("loaded_tensors"),
            "start_fresh": start.get("fresh_tensors"),
            "steps": rec["spec"]["train"]["steps"],
            "head": rec["spec"].get("model", {}).get("head"),
            "network": network_text(rec["spec"].get("model", {})),
            "notes": method_notes(rec),
            "data": method_data(rec),
            "stage_steps": stage_steps_text(rec),
            "total_seconds": rec["timings"].get("total_seconds"),
            # (key, seconds) of the stored earlier stages of the trial's own method
            "own_artifacts": [
                (a["key"], a["seconds"]) for a in own_artifacts(rec) if "seconds" in a
            ],
            "device": rec["device"],
            "metrics_version": rec["metrics_version"],
        }
        for split, block in rec["metrics"].items():
            for name, value in block["overall"].items():
                row[f"{split}/{name}"] = value
        for rule, block in rec["metrics_by_rule"].items():
            for split, overall in block.get("metrics", {}).items():
                for name, value in overall.items():
                    row[f"{rule}:{split}/{name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)
