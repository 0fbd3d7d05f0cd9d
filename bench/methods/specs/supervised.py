"""Source-only (lower bound) and oracle (upper bound): one supervised stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.data.views import Labelled
from bench.methods.spec import Hparams, MethodSpec, Stage, register_method


@dataclass(frozen=True)
class SupervisedHparams(Hparams):
    # Weight of the supervised integral pose loss (kept as a knob so that DA methods'
    # trade-off weights are read against a stated scale).
    pose_weight: float = 1.0


class _SupervisedSpec(MethodSpec):
    Hparams = SupervisedHparams
    domain: str

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        return [Stage("train", views={cls.domain: Labelled(cls.domain)})]

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return ("pose",)


@register_method("source-only")
class SourceOnlySpec(_SupervisedSpec):
    """Supervised on labelled source images only; never sees the target domain."""

    adapter = "bench.methods.supervised:SourceOnly"
    domain = "source"


@register_method("oracle")
class OracleSpec(_SupervisedSpec):
    """Supervised on labelled *target* training images: the upper bound a DA method can
    approach, trained with the same model, budget and loss as source-only."""

    adapter = "bench.methods.supervised:Oracle"
    domain = "target"
