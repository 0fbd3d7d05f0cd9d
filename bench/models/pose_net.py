"""The pose model every method uses: backbone, neck, 2.5D or volumetric head, integral
regression.

The neck (``ModelConfig.neck`` channels, 0 = none) is a 1×1 Conv–BN–ReLU bottleneck, the
pose network's counterpart of tllib's classifier bottleneck: the head reads it, so a method
that aligns it (DDC, DAN, DANN) aligns what the head consumes, and every method of a grid
starts from the same architecture.

Both heads are decoded by integral (soft-argmax) regression (Sun et al., ECCV 2018), so the
coordinates are differentiable and the loss is L1 on them:

* ``"2.5d"`` (Iqbal et al., ECCV 2018): (x, y) = soft-argmax of the K heatmap logits and
  z = Σ_p softmax(h_k)(p)·D_k(p) over the K depth maps.
* ``"volumetric"``: 3D soft-argmax over K volumes of ``depth_bins`` × h × w.

Normalised coordinates (``out["coords"]``, ``PoseNet.targets``), for an S×S input crop:

* x = (x_px + 0.5) / S and y = (y_px + 0.5) / S: the crop's extent [−0.5, S − 0.5) px maps to
  [0, 1). Since heatmap cells tile the crop exactly, this is also (x_hm + 0.5) / w_hm.
  A soft-argmax can only reach the range of cell centres, [0.5/w_hm, 1 − 0.5/w_hm].
* z = (Z_k − Z_root) / depth_range_mm: root-relative camera depth, so ±depth_range_mm/2 maps
  to ±0.5 (Sun et al.: 2000 mm for bodies). The volumetric head spans exactly
  [−0.5, 0.5) with its depth bins (bin i centred at (i + 0.5)/D − 0.5); the 2.5D depth maps
  regress z directly and are unbounded.

``decode`` inverts this (and re-subtracts the predicted root depth, which training only pushes
towards 0), so ``decode({"coords": targets(kp2d, kp3d, root)}, root)`` returns ``kp2d`` and
``kp3d[..., 2] − kp3d[..., root, 2]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.layers import BatchNormAct2d, GroupNormAct
from torch import Tensor, nn

from bench.config import ModelConfig
from bench.errors import DabenchError
from bench.models.backbones import Backbone, create_backbone, normalize_images
from bench.models.heads import Head25D, VolumetricHead, num_deconv_for
from bench.models.heatmaps import (
    gaussian_targets,
    image_to_heatmap,
    soft_argmax_2d,
    soft_argmax_3d_marginal,
)


@dataclass
class Prediction:
    kp2d: Tensor  # [B,K,2] px in the input crop
    rel_depth: Tensor  # [B,K] mm, Z_k − Z_root (camera z)


def coord_l1(pred: Tensor, target: Tensor, vis: Tensor) -> Tensor:
    """The integral loss's L1 on normalised (x, y, z) [B,K,3] with its weighting: x, y for
    visible joints, z for all; non-finite labels count nothing."""
    w_xy = vis.to(pred.dtype)[..., None] * torch.isfinite(target[..., :2])
    w_z = torch.isfinite(target[..., 2:]).to(pred.dtype)
    weights = torch.cat([w_xy, w_z], dim=-1)
    diff = torch.where(weights > 0, pred - target.to(pred.dtype), torch.zeros_like(pred))
    return (diff.abs() * weights).mean()


def group_count(channels: int, most: int = 32) -> int:
    """GroupNorm groups for ``channels``: Wu & He's 32 where it divides them, else the
    largest common divisor with 32 (regnetx_002's 24 channels: 8 groups of 3)."""
    return math.gcd(channels, most)


def to_group_norm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d of ``module`` for GroupNorm in place (the affine weights carry
    over, so a pretrained BN's γ and β seed GN's; running statistics are dropped). timm's
    fused BatchNormAct2d becomes a GroupNormAct that keeps its activation and drop layer."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            groups = group_count(child.num_features)
            if isinstance(child, BatchNormAct2d):
                gn = GroupNormAct(
                    child.num_features, groups, eps=child.eps, affine=child.affine, apply_act=False
                )
                gn.act, gn.drop = child.act, child.drop
            else:
                gn = nn.GroupNorm(groups, child.num_features, eps=child.eps, affine=child.affine)
            if child.affine:
                with torch.no_grad():
                    gn.weight.copy_(child.weight)
                    gn.bias.copy_(child.bias)
            setattr(module, name, gn)
        else:
            to_group_norm(child)
    return module


class PoseNet(nn.Module):
    """Backbone → neck → deconvolution head → integral regression (module docstring)."""

    def __init__(self, config: ModelConfig, num_joints: int) -> None:
        super().__init__()
        if not isinstance(num_joints, int) or num_joints <= 0:
            raise DabenchError(f"num_joints must be a positive integer, got {num_joints!r}")
        self.config = config
        self.num_joints = num_joints
        self.backbone: Backbone = create_backbone(
            config.backbone,
            img_size=config.img_size,
            patch_size=config.patch_size,
            weights=config.weights,
            output_stride=config.output_stride,
            feature_stride=config.feature_stride,
            vit_depth=config.vit_depth,
        )
        try:
            num_deconv = num_deconv_for(self.backbone.stride, config.heatmap_stride)
        except DabenchError as exc:
            raise DabenchError(f"{config.backbone} with heatmap_stride: {exc}") from None
        self.heatmap_size = config.img_size // config.heatmap_stride
        self.neck: nn.Module = nn.Identity()
        self.feature_channels = self.backbone.out_channels
        if config.neck:
            self.neck = nn.Sequential(
                nn.Conv2d(self.backbone.out_channels, config.neck, 1, bias=False),
                nn.BatchNorm2d(config.neck),
                nn.ReLU(inplace=True),
            )
            self.feature_channels = config.neck
        self.head: nn.Module
        if config.head == "2.5d":
            self.head = Head25D(self.feature_channels, num_joints, num_deconv, config.head_channels)
        else:
            self.head = VolumetricHead(
                self.feature_channels,
                num_joints,
                config.depth_bins,
                num_deconv,
                config.head_channels,
            )
        if config.norm == "group":
            to_group_norm(self)
        # NHWC convolutions are markedly faster on CPUs (oneDNN) and with AMP on GPUs; uint8
        # images arrive as [B,H,W,3], which is already that layout once permuted.
        self.channels_last = not self.backbone.is_vit
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _input(self, images: Tensor) -> Tensor:
        # uint8 [B,H,W,3] straight from the shards, or float [B,3,H,W] already normalised
        # (images made on the device, e.g. by style transfer or augmentation)
        if images.dtype == torch.uint8:
            x = normalize_images(images)
        elif images.is_floating_point() and images.ndim == 4 and images.shape[1] == 3:
            x = images
        else:
            raise DabenchError(
                "PoseNet takes uint8 images [B,H,W,3] or normalised float images [B,3,H,W], "
                f"got {images.dtype} {list(images.shape)}"
            )
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, images: Tensor) -> Tensor:
        """The map the head reads, [B,feature_channels,h,w] (backbone, then the neck), of uint8
        [B,H,W,3] (or normalised float) images."""
        return self.neck(self.backbone(self._input(images)))

    def forward(self, images: Tensor, with_head_pooled: bool = False) -> dict[str, Tensor]:
        """{"feat": the head's input [B,C,h,w], "pooled": it globally averaged [B,C]
        (C = ``feature_channels``), "coords": [B,K,3] normalised, plus
        "heatmaps" and "depth" [B,K,h',w'] (2.5D) or "volumes" [B,K,D,h',w'] and their
        (x, y) marginal "probs_xy" [B,K,h',w'] (volumetric)}; with
        ``with_head_pooled`` also "head_pooled" [B,head_channels]: the head's last hidden
        feature map (before its 1×1 conv; the neck's map for a head without deconvolutions)
        globally averaged, which DAN aligns."""
        return self.head_outputs(self.features(images), with_head_pooled)

    @staticmethod
    def pool(feat: Tensor) -> Tensor:
        """The head's input map [B,C,h,w] globally averaged, [B,C]: what DDC, DAN, DANN and
        causal interventions' φ read."""
        return feat.mean(dim=(-2, -1))

    def head_outputs(self, feat: Tensor, with_head_pooled: bool = False) -> dict[str, Tensor]:
        """:meth:`forward` from already computed :meth:`features`, so that a method can run
        the backbone on more images than the (costly) head."""
        if with_head_pooled:
            out = self.head(feat, return_hidden=True)
            out["head_pooled"] = out.pop("hidden").mean(dim=(-2, -1))
        else:
            out = self.head(feat)
        if "volumes" in out:
            vol = out["volumes"]
            depth_bins, h, w = vol.shape[-3:]
            xyz, out["probs_xy"] = soft_argmax_3d_marginal(vol)
            z = (xyz[..., 2] + 0.5) / depth_bins - 0.5
        else:
            xy, probs = soft_argmax_2d(out["heatmaps"])
            h, w = probs.shape[-2:]
            xyz = xy
            z = (probs * out["depth"]).sum(dim=(-2, -1))
        x = (xyz[..., 0] + 0.5) / w
        y = (xyz[..., 1] + 0.5) / h
        coords = torch.stack([x, y, z], dim=-1)
        return {"feat": feat, "pooled": self.pool(feat), "coords": coords, **out}

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.num_joints:
            raise DabenchError(f"root joint {root} out of range for {self.num_joints} joints")

    def targets(self, kp2d_px: Tensor, kp3d_mm: Tensor, root: int) -> Tensor:
        """Labels in the space of ``coords``: kp2d [B,K,2] px, kp3d [B,K,3] mm -> [B,K,3]."""
        self._check_root(root)
        xy = (kp2d_px + 0.5) / self.config.img_size
        z = (kp3d_mm[..., 2] - kp3d_mm[..., root : root + 1, 2]) / self.config.depth_range_mm
        return torch.cat([xy, z[..., None]], dim=-1)

    def decode(self, out: dict[str, Tensor], root: int) -> Prediction:
        """``out["coords"]`` -> px in the crop and root-relative depth in mm."""
        self._check_root(root)
        coords = out["coords"]
        kp2d = coords[..., :2] * self.config.img_size - 0.5
        z = coords[..., 2]
        rel = (z - z[..., root : root + 1]) * self.config.depth_range_mm
        return Prediction(kp2d=kp2d, rel_depth=rel)

    def integral_loss(
        self, out: dict[str, Tensor], kp2d: Tensor, kp3d: Tensor, vis: Tensor, root: int
    ) -> Tensor:
        """L1 on normalised (x, y, z), mean over B·K·3 entries.

        x and y count only for visible joints (``vis`` [B,K], bool or weights); z counts for
        every joint, since 3D labels exist for occluded ones too. Non-finite labels (a
        dataset without 3D, a missing joint) contribute nothing.
        """
        loss = coord_l1(out["coords"], self.targets(kp2d, kp3d, root), vis)
        if self.config.heatmap_loss > 0:
            loss = loss + self.config.heatmap_loss * self._heatmap_kl(out, kp2d, vis)
        return loss

    def _heatmap_kl(self, out: dict[str, Tensor], kp2d: Tensor, vis: Tensor) -> Tensor:
        if "probs_xy" in out:
            # the volume's (x, y) marginal, from the integral regression's own pass; a cell
            # whose probability underflows float32 has a Gaussian target of ~0 as well
            h, w = out["probs_xy"].shape[-2:]
            logp = out["probs_xy"].flatten(-2).float().clamp_min(1e-30).log()
        else:
            h, w = out["heatmaps"].shape[-2:]
            logp = torch.log_softmax(out["heatmaps"].flatten(-2).float(), dim=-1)
        xy_hm = image_to_heatmap(kp2d, self.config.heatmap_stride)
        target, weight = gaussian_targets(xy_hm, vis, (h, w), self.config.heatmap_sigma)
        target = target.flatten(-2).to(logp.dtype)
        total = target.sum(-1, keepdim=True)
        weight = weight.to(logp.dtype) * (total[..., 0] > 0)
        target = target / total.clamp_min(1e-12)
        kl = (target * (torch.log(target.clamp_min(1e-12)) - logp)).sum(-1)
        return (kl * weight).sum() / weight.sum().clamp_min(1.0)
