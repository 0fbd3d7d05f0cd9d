"""What a method declares, without torch: its typed hyper-parameters and its stages —
each with a length, the data it reads, its named optimisers (each with its own factory,
learning rate, decay rule and schedule) and the losses each one minimises.

The grid parser, `dabench grid show` and the artifact keys read these declarations without
building a network; the trainer executes them. A method is a :class:`MethodSpec` (this
module's world) plus a torch :class:`bench.methods.base.Method` (its ``adapter``), as
DomainBed keeps ``hparams_registry`` beside ``algorithms``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.data.views import View
from bench.errors import DabenchError
from bench.typed import coerce_value, type_name

FACTORIES: tuple[str, ...] = ("adamw", "adam", "sgd")
SCHEDULES: tuple[str, ...] = ("warmup-cosine", "multistep", "constant")


# Shard fields and view kinds in the words a report uses for "which data a row used".
_DATA_WORDS = {
    "kp2d": "pose labels",
    "kp3d": "pose labels",
    "vis": "pose labels",
    "K": "intrinsics",
    "cam_R": "cameras",
    "cam_t": "cameras",
}
_STRUCTURE_WORDS = {"frame-pairs": "frame pairs", "multi-view": "multi-view groups"}


# -- stage lengths ------------------------------------------------------------------------
@dataclass(frozen=True)
class Steps:
    """A fixed number of optimisation steps."""

    n: int

    def describe(self) -> str:
        return f"{self.n} steps"


@dataclass(frozen=True)
class Epochs:
    """Passes over the units of one of the stage's views (``role``; default its first)."""

    n: float
    role: str | None = None

    def describe(self) -> str:
        return f"{self.n:g} epochs" + (f" of {self.role}" if self.role else "")


@dataclass(frozen=True)
class Share:
    """A fraction of the trial's step budget (``train.steps``, or ``train.adapt_steps`` for
    a warm-started trial). Shares of a method's stages normally add up to 1."""

    fraction: float = 1.0

    def describe(self) -> str:
        return f"{self.fraction:g} of the budget"


Length = Steps | Epochs | Share


# -- optimisers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A learning-rate factor over one stage.

    ``warmup-cosine``: linear warm-up from 0 over ``warmup_steps`` (None: the grid's
    ``train.warmup_steps``, at most a quarter of the stage), then cosine decay to 0.
    ``multistep``: ×``gamma`` at each milestone, given as fractions of the stage (so that
    a paper's "decay at epochs 15 and 20 of 25" survives a change of budget).
    ``constant``: 1 throughout (after an optional warm-up)."""

    kind: str = "warmup-cosine"
    warmup_steps: int | None = None
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise DabenchError(f"unknown schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise DabenchError(f"schedule warmup_steps must be >= 0, got {self.warmup_steps}")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise DabenchError(
                f"schedule milestones must be increasing fractions of the stage in (0, 1), "
                f"got {self.milestones}"
            )


@dataclass(frozen=True)
class Optim:
    """One named optimiser of a stage.

    ``params``: names of the method's submodules (``"discriminator"``, ``"net.backbone"``)
    or of methods returning parameters; None takes every trainable parameter that no other
    optimiser of the stage names. ``losses``: the loss keys it minimises; () takes every
    loss no other optimiser names. Unset numbers (None) come from the grid's ``train``.
    No weight decay on norms, biases, position embeddings and class/mask tokens; with
    ``layer_decay`` the learning rate of a ViT block i of L is scaled by decay^(L+1−i)."""

    params: tuple[str, ...] | None = None
    losses: tuple[str, ...] = ()
    factory: str = "adamw"
    lr: float | None = None
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float | None = None
    layer_decay: float | None = None
    grad_clip: float | None = None
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self) -> None:
        if self.factory not in FACTORIES:
            raise DabenchError(
                f"unknown optimiser factory {self.factory!r}; valid: {', '.join(FACTORIES)}"
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise DabenchError(f"layer_decay must be in (0, 1], got {self.layer_decay}")


# -- stages ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One training stage.

    ``views``: batch role → the view it reads (see :mod:`bench.data.views`);
    ``batch_sizes``: role → batch size (default the grid's ``train.batch_size``).
    ``optimizers``: name → :class:`Optim`, stepped in this order. ``manual``: the method
    calls ``ctx.backward``/``ctx.step`` itself (several updates per iteration); otherwise
    the trainer does one backward and step per optimiser of the losses it owns.
    ``evaluate``: the pose is evaluated (and may be selected) during this stage; stages
    that are not (pre-training) must come first, and each is run once as a stored artifact
    keyed by what determines it — ``reads``: the hyper-parameters the stage's output depends
    on (None: all of them), so ablation variants that differ only later share it."""

    name: str
    views: Mapping[str, View]
    length: Steps | Epochs | Share = field(default_factory=Share)
    batch_sizes: Mapping[str, int] = field(default_factory=dict)
    optimizers: Mapping[str, Optim] = field(default_factory=lambda: {"main": Optim()})
    manual: bool = False
    evaluate: bool = True
    reads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.views:
            raise DabenchError(f"stage {self.name!r} reads no view")
        if not self.optimizers and self.length != Steps(0):
            raise DabenchError(
                f"stage {self.name!r} has no optimiser (only a stage of Steps(0), which "
                "trains nothing and exports an artifact, may have none)"
            )
        unknown = sorted(set(self.batch_sizes) - set(self.views))
        if unknown:
            raise DabenchError(
                f"stage {self.name!r}: batch sizes for {unknown}, which are not its views "
                f"({sorted(self.views)})"
            )
        if isinstance(self.length, Epochs) and self.length.role not in (None, *self.views):
            raise DabenchError(
                f"stage {self.name!r}: epochs of {self.length.role!r}, not one of its views"
            )
        open_params = [n for n, o in self.optimizers.items() if o.params is None]
        open_losses = [n for n, o in self.optimizers.items() if not o.losses]
        if len(open_params) > 1 or len(open_losses) > 1:
            raise DabenchError(
                f"stage {self.name!r}: at most one optimiser may take the remaining "
                "parameters (params None) and one the remaining losses (losses ())"
            )

    def loss_owner(self, declared: tuple[str, ...]) -> dict[str, str]:
        """Loss key → the optimiser that minimises it."""
        owner = {k: name for name, o in self.optimizers.items() for k in o.losses}
        rest = next((n for n, o in self.optimizers.items() if not o.losses), None)
        for key in declared:
            if key not in owner:
                if rest is None:
                    raise DabenchError(f"stage {self.name!r}: no optimiser minimises loss {key!r}")
                owner[key] = rest
        return owner


@dataclass(frozen=True)
class Hparams:
    """Base of every method's typed hyper-parameters (a frozen dataclass)."""


class MethodSpec:
    """A method's torch-free declaration. Subclasses set ``Hparams``, ``adapter`` (the
    :class:`~bench.methods.base.Method` subclass, or its ``"module:Class"`` path) and
    implement :meth:`stages` and :meth:`losses`."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type] = Hparams
    adapter: ClassVar[str | type] = ""
    # Whether the method may start from another method's pose network (a source-only one)
    # when a grid says ``warm_start: source-only``: its first stage then starts from that
    # artifact and its stages' shares divide ``train.adapt_steps``. A method opts in.
    warm_start: ClassVar[bool] = False
    # The backbones the method can train (None: any). Checked when a grid is expanded, so
    # a grid that gives a masked-image-modelling method a CNN is refused before any run.
    backbones: ClassVar[tuple[str, ...] | None] = None
    # The joints, by name, the method draws or reads by name (None: any joint set). Checked
    # when a grid is expanded: a pair whose joint set lacks one is refused (or skipped by
    # the grid's ``skip``) before any run.
    joint_names: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        raise NotImplementedError

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        """The loss keys ``training_step`` returns in ``stage`` (checked every step)."""
        raise NotImplementedError

    @classmethod
    def category(cls, hp: Any, declared: str) -> str:
        """The category a trial with these hyper-parameters belongs to in records and
        reports; ``declared`` is the card's. A method whose hyper-parameters can switch it
        to another setting (a source-only setting that uses no target data) says so here."""
        return declared

    @classmethod
    def notes(cls, hp: Mapping[str, Any]) -> str:
        """What a report must say about a row beyond its name (a substitute for something
        the paper uses, e.g. random-weight features where the paper loads ImageNet
        weights), from its hyper-parameters as a record stores them; "" for nothing."""
        return ""

    @classmethod
    def data_used(cls, hp: Any) -> dict[str, list[str]]:
        """Which data of which domain the stages read, in report words (domain →
        ["images", "pose labels", "masks", ...]); "unconstrained" for background images.
        Derived from the stages' views, so it cannot drift from what the method reads."""
        used: dict[str, list[str]] = {}
        for stage in cls.stages(hp):
            for view in stage.views.values():
                words = used.setdefault(getattr(view, "domain", None) or "unconstrained", [])
                found = [_DATA_WORDS.get(f, f) for f in view._fields()]
                found += [_STRUCTURE_WORDS[view.kind]] if view.kind in _STRUCTURE_WORDS else []
                words += [w for w in dict.fromkeys(found) if w not in words]
        order = {"source": 0, "target": 1}
        return dict(sorted(used.items(), key=lambda kv: order.get(kv[0], 2)))

    @classmethod
    def data_text(cls, hp: Any) -> str:
        """:meth:`data_used` as one line: "source: images, pose labels; target: images"."""
        return "; ".join(f"{d}: {', '.join(w)}" for d, w in cls.data_used(hp).items())

    @classmethod
    def method_class(cls) -> type:
        if isinstance(cls.adapter, str):
            module, _, attr = cls.adapter.partition(":")
            return getattr(importlib.import_module(module), attr)
        return cls.adapter

    @classmethod
    def checked_stages(cls, hp: Any) -> list[Stage]:
        """:meth:`stages` with the rules every plan must obey checked."""
        stages = cls.stages(hp)
        names = [s.name for s in stages]
        if not stages or len(set(names)) != len(names):
            raise DabenchError(f"method {cls.name}: stage names must be unique, got {names}")
        evaluating = [s.evaluate for s in stages]
        if not any(evaluating):
            raise DabenchError(f"method {cls.name}: no stage evaluates the pose")
        first = evaluating.index(True)
        if not all(evaluating[first:]):
            raise DabenchError(
                f"method {cls.name}: pre-training stages (evaluate false) must come before "
                f"the evaluated ones, got {names}"
            )
        fields = {f.name for f in dataclasses.fields(cls.Hparams)}
        for s in stages:
            stray = sorted(set(s.reads or ()) - fields)
            if stray:
                raise DabenchError(
                    f"method {cls.name}: stage {s.name!r} reads unknown hyper-parameters {stray}"
                )
            s.loss_owner(cls.losses(hp, s.name))
        return stages


# -- the registry -----------------------------------------------------------------------------
_REGISTRY: dict[str, type[MethodSpec]] = {}


def register_method(name: str) -> Callable[[type[MethodSpec]], type[MethodSpec]]:
    """``@register_method("name")`` on a :class:`MethodSpec` subclass, timm-style."""

    def wrap(cls: type[MethodSpec]) -> type[MethodSpec]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise DabenchError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def method_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_spec(name: str) -> type[MethodSpec]:
    _load_builtin()
    if name not in _REGISTRY:
        raise DabenchError(
            f"unknown method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _load_builtin() -> None:
    # Importing the declarations runs their decorators; they are torch-free, the adapters
    # they name are imported only when a network is built.
    import bench.methods.specs  # noqa: F401


def split_label(label: str) -> tuple[str, str | None]:
    """``method/variant`` → (method, variant or None): the one parser of grid entries."""
    method, _, variant = str(label).partition("/")
    return method, variant or None


def coerce_hparams(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build ``cls`` from ``values``; unknown keys and wrong types are one clear error that
    names the method's valid keys and types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(f"{n} ({type_name(f.type)})" for n, f in fields.items()) or "none"
        raise DabenchError(f"{where}: unknown hyper-parameter(s) {unknown}; valid: {valid}")
    fixed = {}
    for key, value in values.items():
        fixed[key] = coerce_value(value, fields[key].type, f"{where}: hyper-parameter {key!r}")
    return cls(**fixed)


def hparams_dict(hp: Any) -> dict[str, Any]:
    """Hyper-parameters as JSON-ready values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()}
