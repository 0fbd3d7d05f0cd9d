"""The method adapter interface: one small class per method.

DomainBed's lesson (an algorithm is a class with an update and a predict) plus what pose
UDA needs: declared data needs, several stages, typed hyper-parameters. The trainer owns
optimisation; a method only says which losses to minimise on a batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.data.views import DataNeed
from bench.errors import DabenchError
from bench.models.pose_net import ModelConfig, PoseNet, Prediction
from bench.typed import coerce_value, type_name


@dataclass(frozen=True)
class Stage:
    """A training stage: a share of the step budget, which parameters it trains, and a
    learning-rate multiplier. ``params`` None trains every parameter of the method."""

    name: str
    share: float = 1.0
    lr_scale: float = 1.0
    params: Callable[[Method], Iterable[nn.Parameter]] | None = None


@dataclass(frozen=True)
class Hparams:
    """Base of every method's typed hyper-parameters (a frozen dataclass)."""


Batch = Mapping[str, Mapping[str, torch.Tensor]]


class Method(nn.Module):
    """Base class of method adapters. Subclasses set ``needs`` and ``Hparams`` and
    implement :meth:`training_step`; the default :meth:`predict` decodes the pose net."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[DataNeed]] = frozenset({DataNeed.SOURCE_LABELS})
    Hparams: ClassVar[type] = Hparams

    def __init__(self, hparams: Any, model_config: ModelConfig, num_joints: int, root: int):
        super().__init__()
        self.hparams = hparams
        self.root = root
        self.net = PoseNet(model_config, num_joints)

    @classmethod
    def data_needs(cls, hparams: Any) -> frozenset[DataNeed]:
        """The data this method needs with these hyper-parameters (a variant may need
        other data than the default, e.g. background images instead of target images)."""
        return cls.needs

    @property
    def active_needs(self) -> frozenset[DataNeed]:
        return self.data_needs(self.hparams)

    def stages(self) -> list[Stage]:
        return [Stage("train")]

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, torch.Tensor]:
        """Losses to minimise on one batch (the trainer sums them). ``progress`` runs from
        0 to 1 over the stage, for schedules such as DANN's λ_p."""
        raise NotImplementedError

    def metrics_step(self) -> dict[str, float]:
        """Extra scalars to log with the losses (e.g. discriminator accuracy)."""
        return {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """2D keypoints (px) and root-relative depth (mm) for uint8 images [B, H, W, 3]."""
        return self.net.decode(self.net(images), self.root)

    def supervised_loss(self, data: Mapping[str, torch.Tensor], out: Mapping) -> torch.Tensor:
        """The integral pose loss on a labelled batch — shared by every method."""
        return self.net.integral_loss(out, data["kp2d"], data["kp3d"], data["vis"], self.root)


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
