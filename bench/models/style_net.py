"""AdaIN StyleNet (Huang & Belongie, ICCV 2017) as UniFrame uses it for style augmentation.

Lin et al. (NeurIPS 2023) give source images the target's style with "a StyleNet from [24]"
(Aladin) and say they follow UniFrame (VisionLearningGroup/UDA_PoseEstimation), whose
StyleNet is AdaIN: a frozen VGG-19 encoder up to relu4_1, AdaIN on relu4_1, a decoder that
mirrors the encoder, trained with a content loss (relu4_1 of the decoded image against the
AdaIN target) and a style loss over relu1_1..relu4_1.

Differences from UniFrame's code, all deliberate:

* The encoder is torchvision's VGG-19 (:mod:`bench.models.vgg`: zero padding, floor pooling,
  ImageNet-normalised RGB input), not the Caffe-converted ``vgg_normalised.pth`` (reflection
  padding, its own 1×1 colour conv). UniFrame feeds ImageNet-normalised tensors to that
  network; here the input space is the one the encoder was trained for.
* Image space: StyleNet's inputs and outputs are ImageNet-normalised images (what
  :func:`bench.models.backbones.normalize_images` makes and the pose network reads), and the
  encoder reads them directly — equivalent to converting to [0, 1] and letting
  :class:`~bench.models.vgg.VGGFeatures` normalise, without the round trip. The decoder
  therefore also outputs normalised images; ``stylize`` clamps them per channel to the range
  of a [0, 1] image, as UniFrame clamps (``recover_min`` / ``recover_max``).
* Style loss: UniFrame's ``lib/models/Style_net.py`` variant ("gram", the default): MSE
  between Gram matrices normalised by C·h·w. Its StyleNet *training* script
  (``adain/train/train_human.py``) imports ``adain/net.py`` instead, whose style loss is
  Huang & Belongie's MSE of per-channel means plus MSE of stds; that one is ``"mean_std"``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from bench.models.vgg import VGG19_SLICES, VGGFeatures

StyleLossKind = Literal["gram", "mean_std"]


def _mean_std(feat: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and sqrt(unbiased variance + eps), shaped [B,C,1,1]."""
    b, c = feat.shape[:2]
    if feat.shape[2] * feat.shape[3] < 2:
        raise DabenchError(
            f"AdaIN needs feature maps of at least 2 positions, got {list(feat.shape)} "
            "(images too small for the encoder)"
        )
    flat = feat.reshape(b, c, -1)
    # unbiased variance + eps under the root, exactly as UniFrame's calc_mean_std
    std = (flat.var(dim=2) + eps).sqrt().view(b, c, 1, 1)
    return flat.mean(dim=2).view(b, c, 1, 1), std


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Adaptive instance normalisation: ``content`` [B,C,h,w] normalised per sample and
    channel, then given the per-channel mean and std of ``style`` [B or 1,C,h',w'].

    Only statistics of ``style`` are used, so its spatial size may differ from the content's.
    """
    if content.ndim != 4 or style.ndim != 4 or content.shape[1] != style.shape[1]:
        raise DabenchError(
            f"AdaIN needs [B,C,h,w] maps with equal C, got {list(content.shape)} "
            f"and {list(style.shape)}"
        )
    if style.shape[0] not in (1, content.shape[0]):
        raise DabenchError(
            f"AdaIN: {style.shape[0]} style maps for {content.shape[0]} content maps"
        )
    c_mean, c_std = _mean_std(content, eps)
    s_mean, s_std = _mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


def gram_matrix(feat: Tensor) -> Tensor:
    """[B,C,h,w] -> [B,C,C] Gram matrices divided by C·h·w (UniFrame's normalisation, which
    also makes them comparable between images of different sizes)."""
    b, c, h, w = feat.shape
    flat = feat.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def mirror_decoder(encoder: nn.Sequential) -> nn.Sequential:
    """Huang & Belongie's decoder: the encoder's convs in reverse with in/out channels swapped
    (reflection-padded 3×3 + ReLU), each max-pool replaced by nearest ×2 upsampling, and the
    mirror of the first conv (-> 3 channels) without activation.

    At width 1.0 this is UniFrame's decoder layer for layer (same module order, so the same
    state-dict keys): 512→256, up, 256→256 ×3, 256→128, up, 128→128, 128→64, up, 64→64, 64→3.
    """
    first = next(m for m in encoder if isinstance(m, nn.Conv2d))
    layers: list[nn.Module] = []
    for module in reversed(encoder):
        if isinstance(module, nn.Conv2d):
            layers += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(module.out_channels, module.in_channels, kernel_size=3),
            ]
            if module is not first:
                layers.append(nn.ReLU())
        elif isinstance(module, nn.MaxPool2d):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(*layers)


class StyleNet(nn.Module):
    """AdaIN style transfer on ImageNet-normalised images [B,3,H,W] (see the module docstring).

    ``encoder``: a VGG-19 stack reaching relu4_1 (e.g. ``random_vgg19(width, "relu4_1")`` or a
    loaded ``build_vgg19_features(depth="relu4_1")``); a deeper stack is cut at relu4_1. It is
    frozen and kept in eval mode; only ``self.decoder`` trains (UniFrame: Adam, lr 1e-5, batch
    16, content weight 1, style weight 0.1 for human/hand). Content images need H and W
    divisible by 8 (three poolings, then ×8 upsampling back); style images may be any size
    that leaves ≥ 2 positions at relu4_1.
    """

    def __init__(self, encoder: nn.Sequential, style_loss: StyleLossKind = "gram") -> None:
        super().__init__()
        end = VGG19_SLICES["relu4_1"][1]
        if len(encoder) < end:
            raise DabenchError(
                f"StyleNet needs a VGG-19 stack up to relu4_1 ({end} layers), got {len(encoder)}"
            )
        if style_loss not in ("gram", "mean_std"):
            raise DabenchError(f"style_loss must be 'gram' or 'mean_std', got {style_loss!r}")
        self.encoder = VGGFeatures(encoder[:end], normalized_input=True)
        self.decoder = mirror_decoder(encoder[:end])
        self.style_loss = style_loss
        low = [(0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        high = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        self.register_buffer("low", torch.tensor(low).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("high", torch.tensor(high).view(1, 3, 1, 1), persistent=False)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Normalised images -> [relu1_1, relu2_1, relu3_1, relu4_1]."""
        return self.encoder(x)

    def _target(self, content: Tensor, style_feat: Tensor, alpha: Tensor | float) -> Tensor:
        """t = α·AdaIN(f_c, f_s) + (1 − α)·f_c on relu4_1."""
        if content.shape[-2] % 8 or content.shape[-1] % 8:
            raise DabenchError(
                f"StyleNet content images need H, W divisible by 8, got {list(content.shape)}"
            )
        f_c = self.encode(content)[-1]
        t = adain(f_c, style_feat)
        if isinstance(alpha, Tensor):
            if alpha.ndim == 1 and alpha.shape[0] == content.shape[0]:
                alpha = alpha.view(-1, 1, 1, 1)
            elif alpha.ndim != 0:
                raise DabenchError(
                    f"alpha must be a scalar or one value per sample [B], got {list(alpha.shape)}"
                )
            alpha = alpha.to(t)
        elif not 0.0 <= alpha <= 1.0:
            raise DabenchError(f"alpha must lie in [0, 1], got {alpha}")
        return alpha * t + (1 - alpha) * f_c

    def stylize(self, content: Tensor, style: Tensor, alpha: Tensor | float = 1.0) -> Tensor:
        """Content images rendered in the style of ``style`` (one per content image, or one for
        all), mixing α per sample (scalar or [B]); the output has the content's shape and is
        clamped to the normalised range of a [0, 1] image. Run it under ``torch.no_grad()``
        when it is only data augmentation."""
        t = self._target(content, self.encode(style)[-1], alpha)
        out = self.decoder(t)
        return torch.maximum(torch.minimum(out, self.high), self.low)

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """Decoder training losses at α = 1: ``content`` = MSE(relu4_1 of the decoded image,
        AdaIN target t) with t detached; ``style`` = sum over relu1_1..relu4_1 of the style
        statistic's MSE (Gram matrices, or means and stds; see the module docstring) between
        the decoded image and the style image. Combine as content + 0.1·style (UniFrame)."""
        with torch.no_grad():
            style_feats = self.encode(style)
            t = self._target(content, style_feats[-1], 1.0)
        decoded = self.decoder(t)  # not clamped: UniFrame trains on the raw decoder output
        out_feats = self.encode(decoded)
        loss_c = F.mse_loss(out_feats[-1], t)
        loss_s = decoded.new_zeros(())
        for fo, fs in zip(out_feats, style_feats, strict=True):
            if self.style_loss == "gram":
                go, gs = gram_matrix(fo), gram_matrix(fs)
                loss_s = loss_s + F.mse_loss(go, gs.expand_as(go))
            else:
                mo, so = _mean_std(fo, 1e-5)
                ms, ss = _mean_std(fs, 1e-5)
                loss_s = (
                    loss_s + F.mse_loss(mo, ms.expand_as(mo)) + F.mse_loss(so, ss.expand_as(so))
                )
        return {"content": loss_c, "style": loss_s}
