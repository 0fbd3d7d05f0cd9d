"""The foreground segmenter f^S of Park et al. (Table 6): a 64-channel U-Net that turns an
image into per-pixel foreground probabilities; trained on source masks, it makes the target
masks that weight the foreground-centric reconstruction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError

# Table 6's bottleneck at 256 px; the default depth keeps it wherever the input allows
BOTTLENECK_SIZE = 8
MAX_DEPTH = 4


def unet_depth(img_size: int) -> int:
    """The default number of pooling stages for a square ``img_size`` input:
    ``floor(log2(img_size / 2 / 8))`` clipped to [1, 4], i.e. as many stages as keep the
    bottleneck at least 8×8 after the stride-2 stem (4 at 256 px as in Table 6, 2 at 64,
    1 at 32). The clip keeps at least one skip level for small inputs (16 px: a 4×4
    bottleneck) and Table 6's four stages for large ones (512 px: 16×16)."""
    if not isinstance(img_size, int) or img_size <= 0:
        raise DabenchError(f"img_size must be a positive integer, got {img_size!r}")
    depth = math.floor(math.log2(img_size / 2 / BOTTLENECK_SIZE))
    return min(max(depth, 1), MAX_DEPTH)


def _double_conv(in_channels: int, channels: int) -> nn.Sequential:
    # Table 6 has BN only after the stem; the stages are plain Conv + ReLU
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNetSegmenter(nn.Module):
    """Table 6's U-Net, scaled to the input size.

    Layers: 7×7 stride-2 conv stem + BN + ReLU (H/2); ``depth`` encoder stages of
    2×(3×3 conv + ReLU) then a 2×2 max-pool; a bottleneck of 2×(3×3 conv + ReLU) at
    H/2^(depth+1); ``depth`` decoder stages of ×2 upsampling, concatenation with the encoder
    stage of the same resolution (skip first, as Table 6's "Concat(skip, upsampled)") and
    2×(3×3 conv + ReLU); a final ×2 upsampling to H, 2×(3×3 conv + ReLU) and a 1×1 conv
    (+ sigmoid in :meth:`forward`). Every layer has ``channels`` (64) channels.

    Choices where Table 6 is inconsistent or silent:

    * Table 6 lists its first max-pool (L5) as keeping 128×128, yet the next convs run at
      64×64 and the bottleneck is 8×8. We let every pool halve the resolution, so 256 px
      runs 256 → 128 (stem) → 64 → 32 → 16 → 8 (bottleneck); the skips are then the
      pre-pool outputs at 128, 64, 32 and 16 (the table's skip indices L5, L10, L13, L16 are
      one stage off under either reading, so we follow the resolutions it prints).
    * "Upsampling 2×2" is a learned 2×2 stride-2 transposed convolution, the "2×2
      up-convolution" of the original U-Net [47] (a kernel size is listed, so not a
      parameter-free interpolation); it keeps the channels at 64.
    * ``depth`` (the number of pooling stages) defaults to :func:`unet_depth`; the input
      side must be divisible by 2^(depth+1) so that every skip matches its upsampled map.

    Input: ImageNet-normalised float images [B,3,H,W] (``normalize_images``); output of
    :meth:`forward`: foreground probabilities [B,H,W]; :meth:`logits` gives the
    pre-sigmoid values for a numerically stable loss (:func:`segmentation_loss`).
    """

    def __init__(self, img_size: int, channels: int = 64, depth: int | None = None) -> None:
        super().__init__()
        if depth is None:
            depth = unet_depth(img_size)
        if not isinstance(depth, int) or depth < 1:
            raise DabenchError(f"U-Net depth must be a positive integer, got {depth!r}")
        if not isinstance(img_size, int) or img_size <= 0 or img_size % 2 ** (depth + 1):
            raise DabenchError(
                f"img_size {img_size!r} must be a positive multiple of 2^(depth+1) = "
                f"{2 ** (depth + 1)} (the stem and {depth} pooling stages each halve it)"
            )
        if channels < 1:
            raise DabenchError(f"channels must be >= 1, got {channels}")
        self.img_size = img_size
        self.depth = depth
        self.channels = channels
        self.bottleneck_size = img_size // 2 ** (depth + 1)
        c = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.encoder = nn.ModuleList(_double_conv(c, c) for _ in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(c, c)
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, stride=2) for _ in range(depth))
        self.decoder = nn.ModuleList(_double_conv(2 * c, c) for _ in range(depth))
        self.final_upsample = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.final = _double_conv(c, c)
        self.classifier = nn.Conv2d(c, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                # He init: without BN in the stages, PyTorch's default (a=√5) shrinks the
                # activations stage by stage and slows the first steps markedly
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def logits(self, x: Tensor) -> Tensor:
        """Pre-sigmoid foreground scores [B,H,W] of normalised images [B,3,H,W]."""
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
            raise DabenchError(
                "UNetSegmenter takes normalised float images [B,3,H,W], "
                f"got {x.dtype} {list(x.shape)}"
            )
        unit = 2 ** (self.depth + 1)
        if x.shape[-2] % unit or x.shape[-1] % unit:
            raise DabenchError(
                f"image size {list(x.shape[-2:])} is not divisible by 2^(depth+1) = {unit}"
            )
        h = self.stem(x)
        skips = []
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for up, stage, skip in zip(self.upsample, self.decoder, reversed(skips), strict=True):
            h = stage(torch.cat([skip, up(h)], dim=1))
        h = self.final(self.final_upsample(h))
        return self.classifier(h)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """Foreground probabilities [B,H,W] in (0, 1) of normalised images [B,3,H,W]."""
        return torch.sigmoid(self.logits(x))


def segmentation_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Binary cross-entropy of :meth:`UNetSegmenter.logits` [B,H,W] against masks [B,H,W] in
    [0, 1] (soft masks allowed), mean over pixels. The paper does not state f^S's loss; BCE
    is our choice, the standard one for a sigmoid output."""
    if logits.shape != masks.shape:
        raise DabenchError(
            f"logits {list(logits.shape)} and masks {list(masks.shape)} differ in shape"
        )
    return F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype))


def iou(pred: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-image intersection over union [B] of ``pred > threshold`` (probabilities or
    masks, [B,H,W]) and ``masks > threshold``; an image where both are empty scores 1
    (nothing to find, nothing found)."""
    if pred.shape != masks.shape or pred.ndim < 2:
        raise DabenchError(
            f"pred {list(pred.shape)} and masks {list(masks.shape)} must both be [B,H,W]"
        )
    a = pred.float() > threshold
    b = masks.float() > threshold
    inter = (a & b).flatten(1).sum(-1)
    union = (a | b).flatten(1).sum(-1)
    return torch.where(
        union > 0, inter / union.clamp_min(1), torch.ones_like(inter, dtype=torch.float)
    )
