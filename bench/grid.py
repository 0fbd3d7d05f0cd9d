"""Grid YAML → a validated DAG of stage runs and trials with stable ids. Every mistake in
a grid is found here, with the valid choices named, before anything runs. Torch-free:
`dabench grid show` and reports parse grids without importing a network library.

A trial trains a method's evaluated stages on one pair and seed. What a trial starts from
is a content-addressed artifact (:mod:`bench.artifacts`): the output of the method's own
pre-training stages (each a stage run, shared by every variant that agrees on what that
stage reads), or with ``warm_start: source-only`` the source-only network of the same
pair and seed, for methods that opt into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.artifacts import artifact_key
from bench.config import EVALUATION_TRAIN, NON_SEMANTIC_TRAIN, ModelConfig, TrainConfig
from bench.data.cards import load_dataset_card
from bench.errors import DabenchError
from bench.methods.cards import ResolvedMethod, resolve_method
from bench.methods.spec import Share, Stage, split_label
from bench.selection import SELECTION_RULES
from bench.typed import coerce_value
from bench.yaml_files import read_mapping

GRIDS_DIR = Path(__file__).parent / "grids"
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
    "report",
)
# What a grid may ask of its report (bench.report); stored with the results by the runner.
REPORT_KEYS = ("reference", "paper_pairs", "complementarity")
_DATA_KEYS = ("n_train", "n_test", "size", "seed")
_RESOURCE_KEYS = ("cpu", "gpu", "custom")
# Root-relative depth range per joint set (mm mapped to [-0.5, 0.5]): hands span ~0.2 m,
# bodies ~1 m either side of the pelvis (Sun et al. use 2 m for bodies).
DEPTH_RANGE_MM = {"hand21": 400.0}
DEFAULT_DEPTH_RANGE_MM = 2000.0


# What a warm-started trial trains with instead of steps and lr; a node's resolved "steps"
# and "lr" already say what it used, so these two enter no id or key themselves.
ADAPT_TRAIN = ("adapt_steps", "adapt_lr")


def _semantic_train(train: Mapping[str, Any], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in NON_SEMANTIC_TRAIN and k not in drop}


@dataclass(frozen=True)
class Upstream:
    """An artifact a node starts from: its key, and which method's stage made it."""

    key: str
    method: str
    stage: str


@dataclass(frozen=True)
class _Node:
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
    resources: Mapping[str, Any]
    # the artifacts this node starts from, nearest last (what the record lists)
    upstream: tuple[Upstream, ...] = ()
    # the stages it trains, in order
    stages: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.method + (f"/{self.variant}" if self.variant else "")

    @property
    def start(self) -> Upstream | None:
        return self.upstream[-1] if self.upstream else None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        d = dict(d)
        d["upstream"] = tuple(Upstream(**u) for u in d.get("upstream", ()))
        d["stages"] = tuple(d.get("stages", ()))
        if "also_test" in d:
            d["also_test"] = tuple(d["also_test"])
        return cls(**d)

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train)


@dataclass(frozen=True)
class StageRunSpec(_Node):
    """A run of one or more consecutive stages of a method whose output other nodes start
    from; nothing is evaluated. ``key`` is its artifact's key."""

    key: str = ""
    exported_by: str | None = None  # a trial of the grid that also produces this artifact

    @property
    def node_id(self) -> str:
        return self.key


@dataclass(frozen=True)
class TrialSpec(_Node):
    """Everything one trial needs; its id hashes everything that determines the result."""

    selection: str = "last"
    # stage → artifact key, for the stages whose output another node of the grid needs
    exports: Mapping[str, str] = field(default_factory=dict)
    # datasets whose test split the trial is also evaluated on, never trained on (the
    # pair's also_test: cross-dataset generalisation)
    also_test: tuple[str, ...] = ()

    def identity(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "variant": self.variant,
            "hparams": dict(self.hparams),
            "source": self.source,
            "target": self.target,
            "seed": self.seed,
            "data": dict(self.data),
            "model": dict(self.model),
            # "steps" and "lr" hold the trial's own budget and rate, so the adaptation
            # settings of other trials must not make a from-scratch trial run again
            "train": _semantic_train(self.train, *ADAPT_TRAIN),
            "start": self.start.key if self.start else None,
        } | ({"also_test": list(self.also_test)} if self.also_test else {})

    @property
    def trial_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def node_id(self) -> str:
        return self.trial_id


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    path: Path
    trials: tuple[TrialSpec, ...]
    selection: str
    stage_runs: tuple[StageRunSpec, ...] = ()
    report: Mapping[str, Any] = field(default_factory=dict)


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


def dataclass_overrides(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against the fields of ``cls`` (unknown keys, wrong types)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise DabenchError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    return {k: coerce_value(v, fields[k].type, f"{where}: {k!r}") for k, v in values.items()}


def _per_method(
    given: Any, cls: type, section: str, where: str, base: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """``<section>.methods``: per-method settings over the grid's (a ViT, its learning
    rate and budget for the method that needs one, in a grid whose other rows share a CNN).
    With ``base`` each method's settings are also checked as a whole config over it."""
    if given is None:
        return {}
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise DabenchError(
            f"{where}: {section}.methods must map method names to {section} settings"
        )
    out = {}
    for m, v in given.items():
        at = f"{where}: {section}.methods.{m}"
        out[str(m)] = dataclass_overrides(cls, v, at)
        if base is not None:
            try:
                cls(**{**base, **out[str(m)]})
            except DabenchError as exc:
                raise DabenchError(f"{at}: {exc}") from None
    return out


def _resources(raw: Mapping[str, Any], methods: set[str], where: str) -> tuple[dict, dict]:
    """Grid-wide resources per trial, and per-method overrides (``resources.methods``)."""
    given = _mapping(raw, "resources", where)
    per_method = given.pop("methods", None) or {}
    if not isinstance(per_method, dict):
        raise DabenchError(f"{where}: resources.methods must map method names to resources")
    stray = sorted(set(per_method) - methods)
    if stray:
        raise DabenchError(
            f"{where}: resources given for {stray}, which the grid does not run; methods: "
            f"{sorted(methods)}"
        )

    def number(value: Any, at: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DabenchError(f"{at} must be a non-negative number")
        return value

    def check(values: Mapping[str, Any], at: str) -> dict[str, Any]:
        bad = sorted(set(values) - set(_RESOURCE_KEYS))
        if bad:
            raise DabenchError(
                f"{at}: unknown resource(s) {bad}; valid: {', '.join(_RESOURCE_KEYS)} "
                "(a cluster's own resources go under custom: {name: amount})"
            )
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key == "custom":
                if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                    raise DabenchError(f"{at}.custom must map resource names to amounts")
                out[key] = {k: number(v, f"{at}.custom.{k}") for k, v in value.items()}
            else:
                out[key] = number(value, f"{at}.{key}")
        if out.get("cpu", 1) <= 0:
            raise DabenchError(f"{at}.cpu must be positive")
        return out

    base = {"cpu": 1, "gpu": 0, **check(given, f"{where}: resources")}
    return base, {
        m: {**base, **check(v or {}, f"{where}: resources.methods.{m}")}
        for m, v in per_method.items()
    }


@dataclass(frozen=True)
class _Context:
    """The grid settings one (method, pair, seed) plan is made with."""

    grid: str
    source: str
    target: str
    seed: int
    data: Mapping[str, int]
    model_section: Mapping[str, Any]
    train: Mapping[str, Any]
    joint_set: str
    resources: Mapping[str, Any]
    method_resources: Mapping[str, Mapping[str, Any]]
    method_models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    method_trains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def train_for(self, r: ResolvedMethod) -> dict[str, Any]:
        """The grid's training settings with the method's own (``train.methods``)."""
        return {**self.train, **self.method_trains.get(r.card.name, {})}


def _model(ctx: _Context, r: ResolvedMethod, fixed_by: ResolvedMethod | None = None) -> dict:
    """The model a method trains with: the pair's defaults < the grid < the settings its
    card fixes (< those of ``fixed_by``, the method a warm start is computed for)."""
    pair_model = {
        "img_size": ctx.data["size"],
        "depth_range_mm": DEPTH_RANGE_MM.get(ctx.joint_set, DEFAULT_DEPTH_RANGE_MM),
    }
    pair_model.update(ctx.model_section)
    for method in (r, fixed_by):  # the grid's model for this method (model.methods)
        if method is not None:
            pair_model.update(ctx.method_models.get(method.card.name, {}))
    for card in (r.card, fixed_by.card if fixed_by else None):
        if card is not None:
            where = f"method card {card.name}: model"
            pair_model.update(dataclass_overrides(ModelConfig, card.model, where))
    model = dataclasses.asdict(ModelConfig(**pair_model))
    allowed = r.spec.backbones
    if allowed is not None and model["backbone"] not in allowed:
        raise DabenchError(
            f"method {r.card.name} needs one of the backbones {', '.join(allowed)}; the grid "
            f"gives {model['backbone']} (set model.backbone)"
        )
    return model


def _stage_key(
    r: ResolvedMethod,
    plan: list[Stage],
    stage: Stage,
    ctx: _Context,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    start: str | None,
) -> str:
    """The artifact key of ``stage``'s output: the method, the stage, the hyper-parameters
    it reads, the plan's lengths and budget, the data it reads, model, seed, training
    settings that change weights, and the artifact it starts from."""
    hp = r.hparams_dict()
    reads = hp if stage.reads is None else {k: hp[k] for k in stage.reads}
    domains = {getattr(v, "domain", None) for v in stage.views.values()}
    # a stage whose export a later stage reads for the target (a segmenter's target masks)
    # depends on the target even if it trains on source data only
    domains |= {
        v.domain
        for later in plan
        for v in later.views.values()
        if getattr(v, "stage", None) == stage.name
    }
    target = ctx.target if domains != {"source"} else None
    return artifact_key(
        {
            "method": r.card.name,
            "stage": stage.name,
            "reads": reads,
            # a stage's length is its own unless every stage is a share of the budget,
            # which the plan's shares then divide
            "length": repr(stage.length),
            "plan": [(s.name, repr(s.length)) for s in plan]
            if all(isinstance(s.length, Share) for s in plan)
            else None,
            "budget": train["steps"],
            "views": {role: repr(v) for role, v in stage.views.items()},
            "source": ctx.source,
            "target": target,
            "data": dict(ctx.data),
            "model": dict(model),
            "seed": ctx.seed,
            "train": _semantic_train(train, *EVALUATION_TRAIN, "steps", *ADAPT_TRAIN),
            "start": start,
        }
    )


def _also_test(pair: Mapping[str, Any], src: Any, tgt: Any, where: str) -> tuple[str, ...]:
    """The pair's ``also_test`` cards, checked: labelled datasets of the pair's joint set,
    each once, none of them the pair's own target (its test split is evaluated anyway)."""
    given = pair.get("also_test") or []
    at = f"{where}: pair {src.name} → {tgt.name}: also_test"
    if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
        raise DabenchError(f"{at} must be a list of dataset card names, got {given!r}")
    if len(set(given)) != len(given) or tgt.name in given:
        raise DabenchError(
            f"{at} lists a dataset twice or the pair's own target ({tgt.name}, whose test "
            f"split every trial is evaluated on anyway): {given}"
        )
    for name in given:
        card = load_dataset_card(name)
        if not card.has_joints or card.joint_set != src.joint_set:
            raise DabenchError(
                f"{at}: {name} has joint set {card.joint_set}, the pair {src.joint_set}; "
                "a dataset evaluated beside the pair must be converted to the pair's joints"
            )
    return tuple(given)


def _check_joint_names(resolved: list[ResolvedMethod], card: Any, where: str) -> None:
    """A method that reads joints by name (a skeleton's bones) cannot run on a pair whose
    joint set lacks them: refused when the grid is read, naming the way out."""
    from bench.data.joints import get_joint_set

    have = set(get_joint_set(card.joint_set).joints)
    for r in resolved:
        needed = r.spec.joint_names
        missing = sorted(set(needed) - have) if needed else []
        if missing:
            raise DabenchError(
                f"{where}: method {r.label} cannot run on {card.name} (joint set "
                f"{card.joint_set} has no {', '.join(missing)}); give that pair "
                f"'skip: [{r.card.name}]' to leave it out"
            )


@dataclass
class _Plan:
    """The nodes of one (method, pair, seed): its pre-training stage runs and its trial,
    plus the keys of its evaluated stages' outputs (which its trial can export)."""

    stage_runs: list[StageRunSpec]
    trial: TrialSpec
    stage_keys: dict[str, str]
    evaluated: StageRunSpec  # the same evaluated stages as a stage run, for a fallback


def _plan(
    r: ResolvedMethod,
    ctx: _Context,
    selection: str,
    warm: _Plan | None,
    budget: int,
    fixed_by: ResolvedMethod | None = None,
) -> _Plan:
    plan = r.spec.checked_stages(r.hparams)
    model = _model(ctx, r, fixed_by)
    own = ctx.train_for(r)
    train = {**own, "steps": budget, "eval_every": min(own["eval_every"], budget)}
    if warm is not None and own["adapt_lr"]:
        train["lr"] = own["adapt_lr"]
    common = {
        "grid": ctx.grid,
        "method": r.card.name,
        "variant": r.variant,
        "category": r.category,
        "hparams": r.hparams_dict(),
        "source": ctx.source,
        "target": ctx.target,
        "seed": ctx.seed,
        "data": dict(ctx.data),
        "model": model,
        "train": train,
        "resources": dict(ctx.method_resources.get(r.card.name, ctx.resources)),
    }
    upstream: list[Upstream] = []
    if warm is not None:
        last = warm.evaluated
        upstream.append(Upstream(last.key, last.method, last.stages[-1]))
    runs, keys = [], {}
    start = upstream[-1].key if upstream else None
    for stage in plan:
        key = _stage_key(r, plan, stage, ctx, model, train, start)
        start = key
        if stage.evaluate:  # run by the trial, which can export its output
            keys[stage.name] = key
        else:
            runs.append(
                StageRunSpec(**common, upstream=tuple(upstream), stages=(stage.name,), key=key)
            )
            upstream.append(Upstream(key, r.card.name, stage.name))
    evaluated = tuple(s.name for s in plan if s.evaluate)
    trial = TrialSpec(**common, upstream=tuple(upstream), stages=evaluated, selection=selection)
    fallback = StageRunSpec(
        **common, upstream=tuple(upstream), stages=evaluated, key=keys[evaluated[-1]]
    )
    return _Plan(stage_runs=runs, trial=trial, stage_keys=keys, evaluated=fallback)


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
    model_raw = dict(_mapping(raw, "model", f"{where}: model"))
    method_models = _per_method(model_raw.pop("methods", None), ModelConfig, "model", where)
    model = dataclass_overrides(ModelConfig, model_raw, f"{where}: model")
    train_raw = dict(_mapping(raw, "train", f"{where}: train"))
    given_trains = train_raw.pop("methods", None)
    train = dataclass_overrides(TrainConfig, train_raw, f"{where}: train")
    train_cfg = TrainConfig(**train)  # validates values (amp, device, positive counts)
    method_trains = _per_method(given_trains, TrainConfig, "train", where, base=train)
    hparams = _mapping(raw, "hparams", where)
    method_names = {split_label(m)[0] for m in methods}
    stray = sorted(set(hparams) - method_names)
    if stray:
        raise DabenchError(
            f"{where}: hparams given for {stray}, which the grid does not run; methods: "
            f"{sorted(method_names)}"
        )
    resources, method_resources = _resources(raw, method_names, where)
    stray = sorted((set(method_models) | set(method_trains)) - method_names)
    if stray:
        raise DabenchError(
            f"{where}: model or train settings given for {stray}, which the grid does not run; "
            f"methods: {sorted(method_names)}"
        )

    def resolve_all(pair_hparams: Mapping[str, Any]) -> tuple[list, ResolvedMethod | None]:
        """The grid's methods (and warm start) with the grid's hparams, then the pair's."""

        def one(entry: Any) -> ResolvedMethod:
            name = split_label(str(entry))[0]
            return resolve_method(
                str(entry), {**(hparams.get(name) or {}), **(pair_hparams.get(name) or {})}
            )

        warm = one(warm_entry) if warm_entry is not None else None
        return [one(m) for m in methods], warm

    warm_entry = raw.get("warm_start")
    resolved, warm_method = resolve_all({})
    if warm_entry is not None:
        if not any(r.spec.warm_start for r in resolved):
            raise DabenchError(
                f"{where}: warm_start {warm_entry!r}, but none of the grid's methods can start "
                "from it (a method opts in with a warm-start stage)"
            )
    checked_pairs = []
    pair_resolved = []
    pair_skips: list[set[str]] = []
    pair_also: list[tuple[str, ...]] = []
    for pair in pairs:
        if (
            not isinstance(pair, dict)
            or not {"source", "target"} <= set(pair)
            or set(pair) - {"source", "target", "hparams", "skip", "also_test"}
        ):
            raise DabenchError(
                f"{where}: each pair needs 'source' and 'target' (and optionally 'hparams', "
                "per-method hyper-parameters for this pair only, 'skip', methods the pair "
                "does not run, and 'also_test', datasets whose test split every trial is also "
                f"evaluated on), got {pair!r}"
            )
        skip = pair.get("skip") or []
        labels = [str(m) for m in methods]
        if not isinstance(skip, list) or not set(map(str, skip)) <= set(labels) | method_names:
            raise DabenchError(
                f"{where}: pair {pair['source']} → {pair['target']}: skip must list methods "
                f"the grid runs ({', '.join(labels)}), got {skip!r}"
            )
        pair_hp = pair.get("hparams") or {}
        if not isinstance(pair_hp, Mapping) or set(pair_hp) - method_names:
            raise DabenchError(
                f"{where}: pair {pair['source']} → {pair['target']}: hparams must map methods "
                f"the grid runs to their settings; methods: {sorted(method_names)}, got "
                f"{pair_hp!r}"
            )
        pair_resolved.append(resolve_all(pair_hp))
        src, tgt = load_dataset_card(pair["source"]), load_dataset_card(pair["target"])
        if src.joint_set != tgt.joint_set:
            raise DabenchError(
                f"{where}: pair {src.name} → {tgt.name} has different joint sets "
                f"({src.joint_set} vs {tgt.joint_set})"
            )
        if not src.has_joints:
            raise DabenchError(f"{where}: {src.name} has no joints and cannot be a pair member")
        pair_also.append(_also_test(pair, src, tgt, where))
        skipped = {str(m) for m in skip}
        runs_here = [
            r for r in pair_resolved[-1][0] if r.label not in skipped and r.card.name not in skipped
        ]
        _check_joint_names(runs_here, src, where)
        pair_skips.append(skipped)
        checked_pairs.append((src, tgt))

    full = dataclasses.asdict(train_cfg)
    trials: list[tuple[tuple[int, int, int], TrialSpec]] = []
    runs: dict[str, StageRunSpec] = {}
    producers: dict[str, str] = {}
    for pi, (src, tgt) in enumerate(checked_pairs):
        resolved, warm_method = pair_resolved[pi]
        for si, seed in enumerate(seeds):
            ctx = _Context(
                grid=name,
                source=src.name,
                target=tgt.name,
                seed=seed,
                data=dict(data),
                model_section=model,
                train=full,
                joint_set=src.joint_set,
                resources=resources,
                method_resources=method_resources,
                method_models=method_models,
                method_trains=method_trains,
            )
            # A warm start is computed with the model the adapting method uses (its card may
            # fix another head): every adapted row starts from a network that matches it.
            warms: dict[str, _Plan] = {}
            plans = []
            for r in resolved:
                if r.label in pair_skips[pi] or r.card.name in pair_skips[pi]:
                    plans.append(None)  # the grid's skip: this pair does not run it
                    continue
                warm = None
                if warm_method is not None and r.spec.warm_start:
                    steps = ctx.train_for(warm_method)["steps"]
                    warm = _plan(warm_method, ctx, selection, None, steps, r)
                    warms.setdefault(warm.evaluated.key, warm)
                own = ctx.train_for(r)
                budget = (own["adapt_steps"] or own["steps"]) if warm is not None else own["steps"]
                plans.append(_plan(r, ctx, selection, warm, budget))
            needed = {u.key for p in plans if p for u in p.trial.upstream}
            needed |= {u.key for p in plans if p for s in p.stage_runs for u in s.upstream}
            for mi, p in enumerate(plans):
                if p is None:
                    continue
                exports = {st: k for st, k in p.stage_keys.items() if k in needed}
                trial = dataclasses.replace(p.trial, exports=exports, also_test=pair_also[pi])
                trials.append(((mi, pi, si), trial))
                for k in exports.values():
                    producers.setdefault(k, trial.trial_id)
                for s in p.stage_runs:
                    runs.setdefault(s.key, s)
            for warm in warms.values():
                for s in warm.stage_runs:
                    runs.setdefault(s.key, s)
                runs.setdefault(warm.evaluated.key, warm.evaluated)
    stage_runs = tuple(
        dataclasses.replace(s, exported_by=producers.get(s.key)) for s in runs.values()
    )
    # method-major, as the grid lists them
    ordered = tuple(t for _, t in sorted(trials, key=lambda it: it[0]))
    ids = [t.trial_id for t in ordered]
    if len(set(ids)) != len(ids):
        raise DabenchError(f"{where}: the grid lists the same trial twice (duplicate entries)")
    return Grid(
        name=name,
        description=str(raw.get("description", "")),
        path=path,
        trials=ordered,
        selection=selection,
        stage_runs=stage_runs,
        report=_report_section(raw, [str(m) for m in methods], where),
    )


def _report_section(raw: Mapping[str, Any], labels: list[str], where: str) -> dict[str, Any]:
    """The grid's ``report:`` settings, checked against the grid's own method labels."""
    section = _mapping(raw, "report", where)
    unknown = sorted(set(section) - set(REPORT_KEYS))
    if unknown:
        raise DabenchError(
            f"{where}: unknown report key(s) {unknown}; valid keys: {list(REPORT_KEYS)}"
        )

    def label(value: Any, at: str) -> str:
        if value not in labels:
            raise DabenchError(f"{where}: {at} {value!r} is not a method of the grid: {labels}")
        return str(value)

    if "reference" in section:
        label(section["reference"], "report.reference")
    pairs = section.get("paper_pairs", {})
    if not isinstance(pairs, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()
    ):
        raise DabenchError(
            f"{where}: report.paper_pairs maps 'source → target' to a paper's 'Source→Target'"
        )
    entries = section.get("complementarity", [])
    keys = ("baseline", "a", "b", "both")
    if not isinstance(entries, list):
        raise DabenchError(
            f"{where}: report.complementarity is a list of {{name, {', '.join(keys)}}}"
        )
    for i, entry in enumerate(entries):
        at = f"report.complementarity[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"name", *keys} or set(keys) - set(entry):
            raise DabenchError(f"{where}: {at} needs name (optional), {', '.join(keys)}")
        for k in keys:
            label(entry[k], f"{at}.{k}")
        if len({entry[k] for k in keys}) < len(keys):
            raise DabenchError(f"{where}: {at} names one method twice: {dict(entry)}")
    return dict(section)
