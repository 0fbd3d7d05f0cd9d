"""Pieces several method adapters share: the joint source+target forward pass and a logged
window mean."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.errors import DabenchError
from bench.methods.base import Batch
from bench.models.pose_net import PoseNet


def forward_source_target(
    net: PoseNet, batch: Batch, **kwargs: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor], int]:
    """One forward pass over source + target images concatenated (so that every BatchNorm
    normalises with statistics of both domains, as tllib's DA examples do); returns the
    outputs of the whole batch, the source part, and the source batch size."""
    src, tgt = batch["source"], batch["target"]
    n = src["images"].shape[0]
    if tgt["images"].shape[0] != n:
        raise DabenchError(
            f"domain alignment needs equal source and target batch sizes, got {n} and "
            f"{tgt['images'].shape[0]}"
        )
    out = net(torch.cat([src["images"], tgt["images"]]), **kwargs)
    return out, {k: v[:n] for k, v in out.items()}, n


class WindowMean:
    """A per-step scalar (e.g. discriminator accuracy) averaged over the steps between two
    reads. It accumulates as a tensor so that logging costs one synchronisation per read,
    not one per step."""

    def __init__(self) -> None:
        self._sum: Tensor | None = None
        self._count = 0

    def add(self, value: Tensor) -> None:
        value = value.detach()
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1

    def pop(self) -> float | None:
        """The mean since the last read (None if nothing was added), and a new window."""
        if self._sum is None:
            return None
        mean = float(self._sum) / self._count
        self._sum, self._count = None, 0
        return mean
