"""Pieces several method adapters share: the joint source+target forward pass, a logged
window mean, pairing one batch's images with another's, and a mean teacher's update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def match_images(others: Tensor, images: Tensor) -> Tensor:
    """One of ``others`` (uint8 [N,h,w,3]) per image of ``images`` (uint8 [B,H,W,3]), cycling
    through them, at the images' size: backgrounds to paste, style images to transfer."""
    index = torch.arange(images.shape[0], device=others.device) % others.shape[0]
    bg = others[index]
    if bg.shape[1:3] != images.shape[1:3]:
        resized = F.interpolate(
            bg.permute(0, 3, 1, 2).float(), size=images.shape[1:3], mode="bilinear"
        )
        bg = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return bg


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """θ_t ← α·θ_t + (1 − α)·θ_s over the parameters only; the teacher's buffers (its
    BatchNorm statistics) stay its own, as UniFrame's OldWeightEMA. timm's ModelEmaV3 and
    torch's AveragedModel both copy the student's buffers into the teacher instead."""
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise DabenchError("the teacher and the student have different parameters")
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - alpha)
