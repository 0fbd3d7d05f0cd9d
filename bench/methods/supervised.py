"""The two reference rows of every DA table: source-only (lower bound) and oracle (upper
bound, supervised on target labels)."""

from __future__ import annotations

from typing import ClassVar

import torch

from bench.methods.base import Batch, Method, StepContext
from bench.methods.specs.supervised import OracleSpec, SourceOnlySpec


class _Supervised(Method):
    """The integral pose loss on the labelled images of one batch role."""

    role: ClassVar[str]

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        data = batch[self.role]
        out = self.net(data["images"])
        return {"pose": self.hparams.pose_weight * self.supervised_loss(data, out)}


class SourceOnly(_Supervised):
    """Supervised on labelled source images only; never sees the target domain."""

    spec = SourceOnlySpec
    role = "source"


class Oracle(_Supervised):
    """Supervised on labelled *target* training images (the upper bound)."""

    spec = OracleSpec
    role = "target"
