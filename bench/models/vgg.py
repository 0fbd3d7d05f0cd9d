"""VGG-19 feature stacks: frozen feature extractor and the multi-scale perceptual loss.

Lin et al. (NeurIPS 2023) use VGG-19 twice: as the encoder of the AdaIN StyleNet (up to
relu4_1, :mod:`bench.models.style_net`) and in the reconstruction loss L_rec (Eq. 9), "a
multi-scale perceptual ℓ1 loss with a pre-trained VGG-19", which follows articulated-animation
(snap-research): torchvision ``vgg19().features`` cut after relu1_1, relu2_1, relu3_1, relu4_1
and relu5_1, ImageNet mean/std applied inside, an image pyramid at scales 1, 1/2, 1/4, 1/8, and
per layer ``weight · mean|φ(pred) − φ(target).detach()|`` with weight 10.

The layer stack is torchvision's own (``make_layers`` on config "E", zero padding, floor
max-pooling), optionally narrowed by ``width`` for fast tests. Nothing downloads: pretrained
weights come from a local file in torchvision's or timm's layout (:func:`load_vgg19`); without
one, :func:`random_vgg19` gives a seeded random stack, identical in every trial of a grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from bench.errors import DabenchError
from bench.models.backbones import IMAGENET_MEAN, IMAGENET_STD, _read_state_dict, fit_problems

# torchvision ``vgg19().features`` index ranges; each ends on the named ReLU
# (articulated-animation's Vgg19 slices [0:2], [2:7], [7:12], [12:21], [21:30])
VGG19_SLICES: dict[str, tuple[int, int]] = {
    "relu1_1": (0, 2),
    "relu2_1": (2, 7),
    "relu3_1": (7, 12),
    "relu4_1": (12, 21),
    "relu5_1": (21, 30),
}

# keys of whole-network checkpoints that no feature stack has: torchvision's classifier,
# timm's pre_logits (ConvMlp) and head
_IGNORED_PREFIXES = ("classifier.", "pre_logits.", "head.")


def _check_depth(depth: str) -> int:
    if depth not in VGG19_SLICES:
        raise DabenchError(f"VGG-19 depth {depth!r} is not one of {', '.join(VGG19_SLICES)}")
    return VGG19_SLICES[depth][1]


def _vgg19_layers(width: float, depth: str) -> nn.Sequential:
    end = _check_depth(depth)
    if not (width > 0 and math.isfinite(width)):
        raise DabenchError(f"VGG-19 width must be a positive number, got {width}")
    cfg: list[str | int] = []
    n_layers = 0  # make_layers emits MaxPool2d for "M", Conv2d + ReLU for a width
    for v in cfgs["E"]:
        if n_layers >= end:
            break  # layers past the cut are never built (width 1.0 would init 20M weights)
        cfg.append(v if v == "M" else max(1, round(int(v) * width)))
        n_layers += 1 if v == "M" else 2
    return nn.Sequential(*list(make_layers(cfg, batch_norm=False))[:end])


def build_vgg19_features(width: float = 1.0, depth: str = "relu5_1") -> nn.Sequential:
    """torchvision's VGG-19 ``features`` (config "E", no batch norm) cut after ``depth``.

    ``width`` multiplies every conv's channels (rounded, at least 1): 1.0 is the real network,
    whose layer indices and parameter shapes equal ``torchvision.models.vgg19().features``.
    Weights are PyTorch's default initialisation (global RNG); see :func:`random_vgg19` for a
    seeded stack and :func:`load_vgg19` for pretrained weights.
    """
    return _vgg19_layers(width, depth)


def random_vgg19(width: float = 1.0, depth: str = "relu5_1", seed: int = 0) -> nn.Sequential:
    """:func:`build_vgg19_features` with torchvision's VGG initialisation (Kaiming-normal,
    fan_out, relu; zero biases) drawn from ``seed`` alone.

    The stand-in for a pretrained VGG when no weight file exists: every trial of a grid gets
    the same features, and the global RNG is left untouched (so building it does not shift
    the trial's own random stream).
    """
    # built on the meta device, so module construction consumes no global randomness
    # and no time on a default init that is overwritten anyway
    with torch.device("meta"):
        stack = _vgg19_layers(width, depth)
    stack = stack.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(int(seed))
    for layer in stack:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(
                layer.weight, mode="fan_out", nonlinearity="relu", generator=gen
            )
            nn.init.zeros_(layer.bias)
    return stack


def load_vgg19(features: nn.Sequential, path: str | Path) -> None:
    """Load a local VGG-19 weight file into a width-1.0 stack from :func:`build_vgg19_features`.

    Accepted layouts: torchvision (``features.N.weight`` … plus ``classifier.*``) and timm's
    ``vgg19`` (the same ``features.N.*`` keys plus ``pre_logits.*`` / ``head.*``); the
    non-feature keys and the feature layers beyond the stack's depth are ignored. Every other
    problem (missing, unexpected or mis-shaped tensors, e.g. a ``vgg19_bn`` file or a
    width-scaled stack) is one :class:`DabenchError` naming the file.
    """
    path = Path(path)
    target = features.state_dict()
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    if convs and convs[0].out_channels != 64:
        raise DabenchError(
            f"{path}: pretrained VGG-19 weights need a width-1.0 stack "
            f"(first conv has {convs[0].out_channels} channels, not 64)"
        )
    state = _read_state_dict(path)
    given: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        head, _, rest = key.partition(".")
        index = rest.split(".", 1)[0]
        if head == "features" and index.isdigit():
            if int(index) >= len(features):
                continue  # a deeper layer than this stack reaches
            given[rest] = value
        else:
            unexpected.append(key)
    problems = fit_problems(given, target, unexpected)
    if problems:
        raise DabenchError(
            f"{path}: does not fit VGG-19 features ({len(features)} layers): " + "; ".join(problems)
        )
    features.load_state_dict(given, strict=True)


class VGGFeatures(nn.Module):
    """Frozen VGG-19 stack returning the relu1_1, relu2_1, … outputs it reaches, in order.

    ``forward`` takes images in [0, 1] and applies the ImageNet mean/std itself (as
    articulated-animation's Vgg19). With ``normalized_input=True`` it takes ImageNet-normalised
    images instead (the StyleNet's encoder, which works in that space throughout). The stack's
    parameters are frozen and it stays in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, features: nn.Sequential, *, normalized_input: bool = False) -> None:
        super().__init__()
        ends = [end for _, end in VGG19_SLICES.values() if end <= len(features)]
        if not ends:
            raise DabenchError(f"a VGG-19 stack of {len(features)} layers reaches no relu*_1")
        self.names = [name for name, (_, end) in VGG19_SLICES.items() if end <= len(features)]
        self.slices = nn.ModuleList(
            features[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)
        )
        self.normalized_input = normalized_input
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VGGFeatures:
        """Ignore ``mode``: a frozen feature extractor is always in eval mode."""
        return super().train(False)

    @property
    def stack_pools(self) -> int:
        """Max-pools before the deepest slice's output (it is 1/2**n of the input)."""
        return sum(isinstance(m, nn.MaxPool2d) for s in self.slices for m in s)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Images [B,3,H,W] (in [0,1], or normalised; see the class) -> slice outputs."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DabenchError(f"VGG features expect images [B,3,H,W], got {list(x.shape)}")
        if not self.normalized_input:
            x = (x - self.mean) / self.std
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out


class PerceptualLoss(nn.Module):
    """Multi-scale VGG-19 ℓ1 perceptual loss (L_rec of Lin et al., articulated-animation's form).

    loss = Σ_scales Σ_layers w_l · mean|φ_l(pred_s) − φ_l(target_s)|, target features detached
    (computed without a graph), so gradients reach ``pred`` only.

    Pyramid: ``F.interpolate(mode="bilinear", antialias=True)`` to round(H·s) × round(W·s);
    articulated-animation blurs with a Gaussian (σ = (1/s − 1)/2) and takes every (1/s)-th
    pixel (``AntiAliasInterpolation2d``) — both low-pass before subsampling; the values differ
    slightly. Scale rule: a scale is used only if its image is at least ``min_size`` on its
    shorter side; ``min_size`` defaults to 2**(max-pools in the stack) (16 for relu5_1), the
    smallest input whose deepest feature map is still ≥ 1×1. So 32×32 inputs use scales 1 and
    1/2, 64×64 use 1, 1/2, 1/4 and 256×256 all four; an input too small for every scale is a
    :class:`DabenchError`. ``weights`` are per VGG slice (relu1_1 first); only the first
    ``len(features.slices)`` are used.
    """

    def __init__(
        self,
        features: VGGFeatures,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        weights: Sequence[float] = (10.0,) * 5,
        min_size: int | None = None,
    ) -> None:
        super().__init__()
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise DabenchError(f"perceptual-loss scales must lie in (0, 1], got {list(scales)}")
        if len(weights) < len(features.slices):
            raise DabenchError(
                f"perceptual loss needs {len(features.slices)} layer weights "
                f"({', '.join(features.names)}), got {len(weights)}"
            )
        self.features = features
        self.scales = tuple(float(s) for s in scales)
        self.weights = tuple(float(w) for w in weights[: len(features.slices)])
        self.min_size = 2**features.stack_pools if min_size is None else int(min_size)

    def used_scales(self, height: int, width: int) -> tuple[float, ...]:
        """The scales an image of this size is compared at (see the class docstring)."""
        return tuple(
            s for s in self.scales if min(round(height * s), round(width * s)) >= self.min_size
        )

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """``x`` [B,3,H,W] anti-aliased down to each of :meth:`used_scales` (scale 1: ``x``)."""
        h, w = x.shape[-2:]
        scales = self.used_scales(h, w)
        if not scales:
            raise DabenchError(
                f"perceptual loss: {h}×{w} images are smaller than {self.min_size} px at every "
                f"scale {list(self.scales)}"
            )
        return [
            x
            if s == 1.0
            else F.interpolate(
                x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True
            )
            for s in scales
        ]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: images [B,3,H,W] in [0,1] -> scalar loss."""
        if pred.shape != target.shape:
            raise DabenchError(
                f"perceptual loss: pred {list(pred.shape)} and target {list(target.shape)} differ"
            )
        total = pred.new_zeros(())
        for p, t in zip(self.pyramid(pred), self.pyramid(target), strict=True):
            with torch.no_grad():
                t_feats = self.features(t)
            for weight, fp, ft in zip(self.weights, self.features(p), t_feats, strict=True):
                total = total + weight * (fp - ft).abs().mean()
        return total
