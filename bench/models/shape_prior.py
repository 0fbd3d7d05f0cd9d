"""The shape prior network ψ of Mask as Supervision (MaS, ECCV 2024, Sec. 3): it turns the
skeleton mask M_Skel drawn from the predicted joints into a body silhouette
M_Physo = sigmoid(ψ(M_Skel)), which the physique loss compares with the person's real
silhouette. Its gradient flows back through ψ into the skeleton mask and hence into the
keypoints, so ψ never detaches its input.

The paper calls ψ "a lightweight U-Net". The authors' later code (X-as-Supervision,
``PhysiqueMaskGenerator(layers=[32, 64, 128])``) is a plain encoder–decoder *without* skip
connections; both readings are offered (``skips``), re-written here:

* stem conv3×3(1→c0);
* per encoder level i < n−1: conv3×3(c_i→c_i), then a stride-2 conv3×3(c_i→c_{i+1});
* bottleneck conv3×3(c_{n−1}→c_{n−1});
* per decoder level i = n−1 … 1: bilinear upsampling to the size level i−1 had in the
  encoder, conv3×3(c_i→c_{i−1}); then conv3×3(c_{i−1}→c_{i−1}), or for the last level the
  output conv3×3(c0→1) (no norm, no activation; the sigmoid is applied in :meth:`forward`).

Every conv but the output one is followed by a norm and LeakyReLU(0.01). With the default
``channels=(32, 64, 128)`` this is exactly the authors' layer list.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError

NORMS: tuple[str, ...] = ("batch", "group")
# LeakyReLU slope of the authors' code
NEGATIVE_SLOPE = 0.01
# GroupNorm uses the largest divisor of the channel count up to this many groups
MAX_GROUPS = 8


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        # the authors use SyncBatchNorm; nn.SyncBatchNorm.convert_sync_batchnorm turns this
        # into it for multi-GPU training, and plain BatchNorm2d is the same on one device
        return nn.BatchNorm2d(channels)
    groups = max(g for g in range(1, min(MAX_GROUPS, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _conv_block(kind: str, c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    # no conv bias: the norm that follows has its own shift
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        _norm(kind, c_out),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


class ShapePrior(nn.Module):
    """ψ: skeleton mask [B,1,H,W] (or [B,H,W]) → silhouette probabilities [B,1,H,W] in (0, 1).

    * ``channels``: the width of each resolution level, full resolution first; the network
      downsamples ``len(channels) − 1`` times (so ≥ 2 entries). Smaller widths, e.g.
      (8, 16, 32), make it cheap for small inputs.
    * ``skips=False`` (default): the authors' code, no skip connections — the silhouette must
      be reconstructed from the bottleneck, which forces ψ to learn a body-shape *prior*
      rather than copy the skeleton through.
    * ``skips=True``: the paper's "U-Net" reading. The encoder map of each level (the output
      of that level's conv3×3(c_i→c_i), the last map before it is downsampled) is
      *concatenated* (skip first) with the upsampled decoder map of the same resolution and
      fed to the conv that follows the upsampling conv, whose input width doubles to 2·c_i.
      Concatenation is the original U-Net's form (and :mod:`bench.models.unet`'s); addition
      would force encoder and decoder features into the same space and save only a few
      weights at these widths.
    * ``norm``: ``"batch"`` (BatchNorm2d, the authors' choice) or ``"group"`` (GroupNorm with
      the largest divisor of the width up to 8 groups; independent of the batch, so usable
      with batch size 1 or a frozen ψ in train mode).
    * Any H, W: each decoder level upsamples to the exact size its encoder level had (an odd
      side halves to ⌈side/2⌉ under a stride-2, padding-1 conv), not blindly ×2.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        skips: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        try:
            widths = tuple(operator.index(c) for c in channels)
        except TypeError:
            widths = ()
        if len(widths) < 2 or any(c < 1 for c in widths):
            raise DabenchError(
                "ShapePrior channels must be a sequence of at least 2 positive integers "
                f"(one per resolution level), got {channels!r}"
            )
        if norm not in NORMS:
            raise DabenchError(f"unknown ShapePrior norm {norm!r}; choose one of {NORMS}")
        self.channels = widths
        self.skips = bool(skips)
        self.norm = norm
        n = len(widths)
        self.stem = _conv_block(norm, 1, widths[0])
        self.encoder = nn.ModuleList(_conv_block(norm, widths[i], widths[i]) for i in range(n - 1))
        self.down = nn.ModuleList(
            _conv_block(norm, widths[i], widths[i + 1], stride=2) for i in range(n - 1)
        )
        self.bottleneck = _conv_block(norm, widths[-1], widths[-1])
        # decoder, deepest first: up_convs[k] maps level n−1−k to level n−2−k
        self.up_convs = nn.ModuleList(
            _conv_block(norm, widths[i], widths[i - 1]) for i in range(n - 1, 0, -1)
        )
        factor = 2 if self.skips else 1
        # the conv after each upsampling conv, except at full resolution where it is the output
        self.decoder = nn.ModuleList(
            _conv_block(norm, factor * widths[i - 1], widths[i - 1]) for i in range(n - 1, 1, -1)
        )
        self.output = nn.Conv2d(factor * widths[0], 1, 3, padding=1)

    def logits(self, skeleton: Tensor) -> Tensor:
        """Pre-sigmoid silhouette scores [B,1,H,W] (for a numerically stable BCE, if wanted)."""
        x = _as_mask_batch(skeleton)
        h = self.stem(x)
        features: list[Tensor] = []
        for conv, down in zip(self.encoder, self.down, strict=True):
            h = conv(h)
            features.append(h)
            h = down(h)
        h = self.bottleneck(h)
        convs_after = [*self.decoder, None]
        for up_conv, after, skip in zip(
            self.up_convs, convs_after, reversed(features), strict=True
        ):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up_conv(h)
            if self.skips:
                h = torch.cat([skip, h], dim=1)
            h = after(h) if after is not None else self.output(h)
        return h

    def forward(self, skeleton: Tensor) -> Tensor:
        """M_Physo = sigmoid(ψ(M_Skel)) [B,1,H,W] in (0, 1); differentiable w.r.t. the input."""
        return torch.sigmoid(self.logits(skeleton))


def _as_mask_batch(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise DabenchError(
            f"ShapePrior takes a float skeleton mask, got {getattr(x, 'dtype', type(x))}"
        )
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise DabenchError(
            f"ShapePrior takes a skeleton mask [B,1,H,W] or [B,H,W], got {list(x.shape)}"
        )
    return x
