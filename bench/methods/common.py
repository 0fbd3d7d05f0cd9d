"""Pieces several method adapters share: the joint source+target forward pass and
hyper-parameter range checks."""

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


def check_non_negative(where: str, **values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise DabenchError(f"{where}: {name} must be >= 0, got {value!r}")


def check_positive_int(where: str, **values: int) -> None:
    for name, value in values.items():
        if not value > 0:
            raise DabenchError(f"{where}: {name} must be a positive integer, got {value!r}")
