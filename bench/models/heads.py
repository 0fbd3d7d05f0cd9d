"""Keypoint heads on a backbone feature map: the Simple-Baseline / ViTPose deconvolution head,
its 2.5D (heatmaps + depth maps, Iqbal et al.) and volumetric (Sun et al.) variants."""

from __future__ import annotations

import math

from torch import Tensor, nn

from bench.errors import DabenchError


def num_deconv_for(backbone_stride: int, heatmap_stride: int) -> int:
    """How many ×2 deconvolutions bring ``backbone_stride`` features to ``heatmap_stride``."""
    if backbone_stride <= 0 or heatmap_stride <= 0:
        raise DabenchError(
            f"strides must be positive, got backbone {backbone_stride}, heatmap {heatmap_stride}"
        )
    ratio, rest = divmod(backbone_stride, heatmap_stride)
    if rest or ratio & (ratio - 1):
        raise DabenchError(
            f"backbone stride {backbone_stride} is not a power-of-two multiple of heatmap "
            f"stride {heatmap_stride} (each deconvolution doubles the resolution)"
        )
    return int(math.log2(ratio))


class DeconvHead(nn.Module):
    """``num_deconv`` × [ConvTranspose2d(4, s2, p1) → BN → ReLU] then a 1×1 conv.

    Same layers and initialisation as mmpose's TopdownHeatmapSimpleHead (used by
    Simple-Baseline and ViTPose); ``num_deconv = 0`` leaves only the 1×1 conv (HRNet).
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_deconv: int, channels: int = 256
    ) -> None:
        super().__init__()
        if num_deconv < 0:
            raise DabenchError(f"num_deconv must be >= 0, got {num_deconv}")
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(c, out_channels, 1)
        self.out_channels = out_channels
        self.num_deconv = num_deconv
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def hidden(self, feat: Tensor) -> Tensor:
        """The last hidden feature map (after the deconvolutions, before the 1×1 conv):
        [B,C,h,w] -> [B,channels,h·2^n,w·2^n] (the input itself when ``num_deconv = 0``)."""
        return self.deconv(feat)

    def forward(self, feat: Tensor) -> Tensor:
        """[B,C,h,w] -> [B,out_channels,h·2^n,w·2^n]."""
        return self.final(self.hidden(feat))


class Head25D(nn.Module):
    """2K channels: K heatmap logits (latent, soft-argmaxed) and K root-relative depth maps."""

    def __init__(
        self, in_channels: int, num_joints: int, num_deconv: int, channels: int = 256
    ) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.net = DeconvHead(in_channels, 2 * num_joints, num_deconv, channels)

    def forward(self, feat: Tensor, return_hidden: bool = False) -> dict[str, Tensor]:
        """{"heatmaps": [B,K,h,w] logits, "depth": [B,K,h,w]}, plus "hidden" (the last
        feature map before the 1×1 conv) when ``return_hidden``."""
        hidden = self.net.hidden(feat)
        out = self.net.final(hidden)
        k = self.num_joints
        maps = {"heatmaps": out[:, :k], "depth": out[:, k:]}
        return maps | {"hidden": hidden} if return_hidden else maps


class VolumetricHead(nn.Module):
    """K·D channels reshaped joint-major to per-joint volumes [B,K,D,h,w] (as Sun et al.)."""

    def __init__(
        self,
        in_channels: int,
        num_joints: int,
        depth_bins: int,
        num_deconv: int,
        channels: int = 256,
    ) -> None:
        super().__init__()
        if depth_bins < 1:
            raise DabenchError(f"depth_bins must be >= 1, got {depth_bins}")
        self.num_joints = num_joints
        self.depth_bins = depth_bins
        self.net = DeconvHead(in_channels, num_joints * depth_bins, num_deconv, channels)

    def forward(self, feat: Tensor, return_hidden: bool = False) -> dict[str, Tensor]:
        """{"volumes": [B,K,D,h,w] logits}, plus "hidden" (the last feature map before the
        1×1 conv) when ``return_hidden``."""
        hidden = self.net.hidden(feat)
        out = self.net.final(hidden)
        b, _, h, w = out.shape
        maps = {"volumes": out.view(b, self.num_joints, self.depth_bins, h, w)}
        return maps | {"hidden": hidden} if return_hidden else maps
