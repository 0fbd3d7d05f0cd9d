"""The two reference rows of every DA table: source-only (lower bound) and oracle (upper
bound, supervised on target labels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.base import Batch, DataNeed, Hparams, Method
from bench.methods.registry import register_method


@dataclass(frozen=True)
class SupervisedHparams(Hparams):
    # Weight of the supervised integral pose loss (kept as a knob so that DA methods'
    # trade-off weights are read against a stated scale).
    pose_weight: float = 1.0


@register_method("source-only")
class SourceOnly(Method):
    """Supervised on labelled source images only; never sees the target domain."""

    needs = frozenset({DataNeed.SOURCE_LABELS})
    Hparams = SupervisedHparams

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, torch.Tensor]:
        src = batch["source"]
        out = self.net(src["images"])
        return {"pose": self.hparams.pose_weight * self.supervised_loss(src, out)}


@register_method("oracle")
class Oracle(Method):
    """Supervised on labelled *target* training images: the upper bound a DA method can
    approach, trained with the same model, budget and loss as source-only."""

    needs = frozenset({DataNeed.TARGET_LABELS})
    Hparams = SupervisedHparams

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, torch.Tensor]:
        tgt = batch["target"]
        out = self.net(tgt["images"])
        return {"pose": self.hparams.pose_weight * self.supervised_loss(tgt, out)}
