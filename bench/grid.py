"""Grid YAML → a validated list of trial specs with stable ids. Every mistake in a grid
is found here, with the valid choices named, before anything runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.cards import load_dataset_card
from bench.errors import DabenchError
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import TrainConfig
from bench.typed import coerce_value
from bench.yaml_files import read_mapping

GRIDS_DIR = Path(__file__).parent / "grids"
SELECTION_RULES = ("last", "source-val", "target-oracle")
_KEYS = (
    "name",
    "description",
    "methods",
    "pairs",
    "seeds",
    "data",
    "model",
    "train",
    "hparams",
    "resources",
    "selection",
    "warm_start",
)
# Categories a warm start applies to: methods that adapt a source-trained model.
WARM_STARTED = ("domain-adaptation", "domain-generalisation")
_DATA_KEYS = ("n_train", "n_test", "size", "seed")
# Root-relative depth range per joint set (mm mapped to [-0.5, 0.5]): hands span ~0.2 m,
# bodies ~1 m either side of the pelvis (Sun et al. use 2 m for bodies).
DEPTH_RANGE_MM = {"hand21": 400.0}
DEFAULT_DEPTH_RANGE_MM = 2000.0
# Train settings that do not change what is learned; excluded from the trial id.
_NON_SEMANTIC_TRAIN = (
    "threads",
    "workers",
    "log_every",
    "device",
    "eval_batch_size",
    "keep_checkpoint",
)


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs; its id hashes everything that determines the result."""

    grid: str
    method: str
    variant: str | None
    category: str
    hparams: Mapping[str, Any]
    source: str
    target: str
    seed: int
    data: Mapping[str, int]
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    selection: str
    resources: Mapping[str, float]
    init: str | None = None  # trial id whose final weights this trial starts from

    @property
    def label(self) -> str:
        return self.method + (f"/{self.variant}" if self.variant else "")

    def identity(self) -> dict[str, Any]:
        train = {k: v for k, v in self.train.items() if k not in _NON_SEMANTIC_TRAIN}
        return {
            "method": self.method,
            "variant": self.variant,
            "hparams": dict(self.hparams),
            "source": self.source,
            "target": self.target,
            "seed": self.seed,
            "data": dict(self.data),
            "model": dict(self.model),
            "train": train,
            "init": self.init,
        }

    @property
    def trial_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialSpec:
        return cls(**d)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train)


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    path: Path
    trials: tuple[TrialSpec, ...]
    selection: str


def named_grids() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def load_grid(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Grid:
    """A named grid shipped with dabench, or a path to a grid YAML; validated and expanded."""
    path = Path(name_or_path)
    if not path.is_file():
        named = GRIDS_DIR / f"{name_or_path}.yaml"
        if not named.is_file():
            raise DabenchError(
                f"no grid {str(name_or_path)!r}: not a file and not a named grid; named grids: "
                f"{', '.join(named_grids())}"
            )
        path = named
    raw = {**read_mapping(path, "grid"), **(overrides or {})}
    return expand(raw, path)


def _mapping(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise DabenchError(f"{where}: '{key}' must be a mapping, got {value!r}")
    return dict(value)


def _dataclass_overrides(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise DabenchError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    return {k: coerce_value(v, fields[k].type, f"{where}: {k!r}") for k, v in values.items()}


def _warm_start(
    trials: list[TrialSpec], entry: str, train: TrainConfig, where: str
) -> list[TrialSpec]:
    """Domain-adaptation trials start from the final weights of the ``entry`` trial (e.g.
    source-only) of the same pair and seed, and train ``train.adapt_steps`` more steps:
    the shared pre-training is computed once per pair and seed, as RegDA and UniFrame
    pre-train on the source before adapting."""
    method, _, variant = entry.partition("/")
    inits = {
        (t.source, t.target, t.seed): t
        for t in trials
        if t.method == method and t.variant == (variant or None)
    }
    if not inits:
        raise DabenchError(
            f"{where}: warm_start {entry!r} is not one of the grid's methods; add it to "
            "'methods' (its trials provide the starting weights)"
        )
    steps = train.adapt_steps or train.steps
    out = []
    for t in trials:
        if t.category not in WARM_STARTED:
            out.append(t)
            continue
        init = inits[(t.source, t.target, t.seed)]
        adapted = {**t.train, "steps": steps, "eval_every": min(train.eval_every, steps)}
        out.append(dataclasses.replace(t, init=init.trial_id, train=adapted))
    return out


def expand(raw: Mapping[str, Any], path: Path) -> Grid:
    where = f"grid {path}"
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise DabenchError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(_KEYS)}")
    name = str(raw.get("name") or path.stem)
    methods = raw.get("methods") or []
    pairs = raw.get("pairs") or []
    seeds = raw.get("seeds", [0])
    if not isinstance(methods, list) or not methods:
        raise DabenchError(f"{where}: 'methods' must be a non-empty list (the grid is empty)")
    if not isinstance(pairs, list) or not pairs:
        raise DabenchError(f"{where}: 'pairs' must be a non-empty list (the grid is empty)")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise DabenchError(f"{where}: 'seeds' must be a non-empty list of integers")
    selection = raw.get("selection", "last")
    if selection not in SELECTION_RULES:
        raise DabenchError(
            f"{where}: selection {selection!r} is not one of {', '.join(SELECTION_RULES)}"
        )
    data = {"n_train": 4000, "n_test": 1000, "size": 64, "seed": 0}
    given = _mapping(raw, "data", where)
    bad = sorted(set(given) - set(_DATA_KEYS))
    if bad:
        raise DabenchError(f"{where}: unknown data key(s) {bad}; valid keys: {list(_DATA_KEYS)}")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DabenchError(f"{where}: data.{key} must be a non-negative integer, got {value!r}")
    data.update(given)
    model = _dataclass_overrides(
        ModelConfig, _mapping(raw, "model", f"{where}: model"), f"{where}: model"
    )
    train = _dataclass_overrides(
        TrainConfig, _mapping(raw, "train", f"{where}: train"), f"{where}: train"
    )
    train_cfg = TrainConfig(**train)  # validates values (amp, device, positive counts)
    resources = _mapping(raw, "resources", where) or {"cpu": 1, "gpu": 0}
    bad = sorted(set(resources) - {"cpu", "gpu"})
    if bad:
        raise DabenchError(f"{where}: unknown resource(s) {bad}; valid: cpu, gpu")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DabenchError(f"{where}: resources.{key} must be a non-negative number")
    if resources.get("cpu", 1) <= 0:
        raise DabenchError(f"{where}: resources.cpu must be positive")
    hparams = _mapping(raw, "hparams", where)
    method_names = {str(m).partition("/")[0] for m in methods}
    stray = sorted(set(hparams) - method_names)
    if stray:
        raise DabenchError(
            f"{where}: hparams given for {stray}, which the grid does not run; methods: "
            f"{sorted(method_names)}"
        )
    resolved = [resolve_method(str(m), hparams.get(str(m).partition("/")[0])) for m in methods]
    checked_pairs = []
    for pair in pairs:
        if not isinstance(pair, dict) or set(pair) != {"source", "target"}:
            raise DabenchError(
                f"{where}: each pair needs exactly 'source' and 'target', got {pair!r}"
            )
        src, tgt = load_dataset_card(pair["source"]), load_dataset_card(pair["target"])
        if src.joint_set != tgt.joint_set:
            raise DabenchError(
                f"{where}: pair {src.name} → {tgt.name} has different joint sets "
                f"({src.joint_set} vs {tgt.joint_set})"
            )
        if not src.has_joints:
            raise DabenchError(f"{where}: {src.name} has no joints and cannot be a pair member")
        checked_pairs.append((src, tgt))
    trials = []
    for r in resolved:
        for src, tgt in checked_pairs:
            pair_model = {
                "img_size": data["size"],
                "depth_range_mm": DEPTH_RANGE_MM.get(src.joint_set, DEFAULT_DEPTH_RANGE_MM),
            }
            pair_model.update(model)
            pair_model.update(
                _dataclass_overrides(ModelConfig, r.card.model, f"method card {r.card.name}: model")
            )
            model_cfg = dataclasses.asdict(ModelConfig(**pair_model))
            for seed in seeds:
                trials.append(
                    TrialSpec(
                        grid=name,
                        method=r.card.name,
                        variant=r.variant,
                        category=r.card.category,
                        hparams=r.hparams_dict(),
                        source=src.name,
                        target=tgt.name,
                        seed=seed,
                        data=dict(data),
                        model=model_cfg,
                        train=dataclasses.asdict(train_cfg),
                        selection=selection,
                        resources=dict(resources),
                    )
                )
    warm_start = raw.get("warm_start")
    if warm_start is not None:
        trials = _warm_start(trials, str(warm_start), train_cfg, where)
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):
        raise DabenchError(f"{where}: the grid lists the same trial twice (duplicate entries)")
    return Grid(
        name=name,
        description=str(raw.get("description", "")),
        path=path,
        trials=tuple(trials),
        selection=selection,
    )
