"""The two reference rows of every DA table: source-only (lower bound) and oracle (upper
bound, supervised on target labels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.methods.base import Batch, DataNeed, Hparams, Method
from bench.methods.registry import register_method


@dataclass(frozen=True)
class SupervisedHparams(Hparams):
    # Weight of the supervised integral pose loss (kept as a knob so that DA methods'
    # trade-off weights are read against a stated scale).
    pose_weight: float = 1.0


class _Supervised(Method):
    """The integral pose loss on the labelled images of one batch role."""

    role: ClassVar[str]
    Hparams = SupervisedHparams

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, torch.Tensor]:
        data = batch[self.role]
        out = self.net(data["images"])
        return {"pose": self.hparams.pose_weight * self.supervised_loss(data, out)}


@register_method("source-only")
class SourceOnly(_Supervised):
    """Supervised on labelled source images only; never sees the target domain."""

    needs = frozenset({DataNeed.SOURCE_LABELS})
    role = "source"


@register_method("oracle")
class Oracle(_Supervised):
    """Supervised on labelled *target* training images: the upper bound a DA method can
    approach, trained with the same model, budget and loss as source-only."""

    needs = frozenset({DataNeed.TARGET_LABELS})
    role = "target"
