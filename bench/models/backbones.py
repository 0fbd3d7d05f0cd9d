"""Feature extractors built through timm, randomly initialised or from a local weight file.

Nothing here ever downloads: every model is created with ``pretrained=False`` and weights
come only from a file the user names. Every backbone maps normalised images [B,3,H,W] to a
single feature map [B,C,H/stride,W/stride]:

* ``resnet*`` and the other CNNs: the last stage (stride 32), no pooling, no classifier; or,
  with ``feature_stride`` 16 or 8, the last stage at that stride, the later stages dropped.
* ``vit_*``: timm's VisionTransformer at ``img_size`` with ``patch_size`` (default 16); the
  patch tokens after the final norm, prefix (class) tokens dropped, laid out as a
  [B, C, H/p, W/p] grid (stride = patch size), as ViTPose does.
* ``hrnet_w32``: the stride-4 (highest-resolution, 32-channel) branch of the last stage, the
  one HRNet's pose model (Sun et al., CVPR 2019) puts its 1×1 keypoint head on. The other
  branches only feed ImageNet classification; the last stage's fusion into them is pruned
  (as in the pose model, ``multi_scale_output=False``), so every parameter gets a gradient.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from bench.config import BACKBONES, check_strides
from bench.errors import DabenchError

_SMALL_CNNS = ("resnet10t", "regnetx_002", "mobilenetv3_small_100")

_VIT_MODELS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}

# Checkpoint entries with no counterpart in a backbone by design (classification heads of
# ImageNet checkpoints); dropped instead of reported as unexpected.
_IGNORED_PREFIXES = {
    "resnet": ("fc.",),
    "vit": ("head.", "fc_norm.", "head_drop."),
    "hrnet": ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: Tensor) -> Tensor:
    """uint8 images [B,H,W,3] (any device) -> ImageNet-normalised float32 [B,3,H,W].

    Data stays uint8 (4× smaller) until it is on the device; this is the one place where it
    becomes network input.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DabenchError(
            f"expected uint8 images [B,H,W,3], got {images.dtype} {list(images.shape)}"
        )
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


class Backbone(nn.Module):
    """A timm model (``self.model``) seen as images -> one feature map."""

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        out_channels: int,
        stride: int,
        img_size: int,
        is_vit: bool,
        ignored_keys: tuple[str, ...] = (),
        feature_list: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.out_channels = out_channels
        self.stride = stride
        self.img_size = img_size
        self.is_vit = is_vit
        # prefixes of weight-file keys this backbone has no use for (see load_weights)
        self.ignored_keys = ignored_keys
        # a timm feature extractor (features_only) returning [map]: HRNet's one branch, or a
        # CNN cut at feature_stride
        self.feature_list = feature_list

    def forward(self, x: Tensor) -> Tensor:
        """Normalised float images [B,3,H,W] -> feature map [B,C,H/stride,W/stride]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DabenchError(f"{self.name}: expected images [B,3,H,W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if self.is_vit:
            # the position embedding is fixed to the grid of img_size
            if (h, w) != (self.img_size, self.img_size):
                raise DabenchError(
                    f"{self.name}: built for {self.img_size}×{self.img_size} images, got {h}×{w}"
                )
            tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
            grid_h, grid_w = h // self.stride, w // self.stride
            return tokens.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)
        if h % 32 or w % 32:
            raise DabenchError(f"{self.name}: image size must be a multiple of 32, got {h}×{w}")
        if self.feature_list:
            return self.model(x)[-1]
        return self.model.forward_features(x)

    def pool(self, feat: Tensor) -> Tensor:
        """Feature map [B,C,h,w] -> [B,C] global average (for ViT: over patch tokens only)."""
        return feat.mean(dim=(-2, -1))


def create_backbone(
    name: str,
    *,
    img_size: int,
    patch_size: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    output_stride: int = 32,
    feature_stride: int = 32,
    vit_depth: int | None = None,
) -> Backbone:
    """Build backbone ``name`` (one of BACKBONES) for square ``img_size`` inputs.

    ``patch_size`` and ``vit_depth`` (blocks kept; None: all) apply to ViTs only (default
    patch 16). ``output_stride`` (ResNets only: 32,
    16 or 8) dilates the last stages instead of striding them, as DeepLab does; at small
    crops (64 px → a 2×2 map at stride 32) it keeps spatial detail, at the cost of running
    the dilated stages at higher resolution. ``feature_stride`` (CNNs other than HRNet: 32,
    16 or 8) cuts the backbone after its last stage at that stride instead: the later, widest
    stages are dropped, so the network is cheaper and the map finer (regnetx_002 at 16: a
    tenth of the parameters, about twice the training steps per second on one CPU thread;
    docs/benchmarks.md). ``weights`` is a local file holding a state
    dict (of the timm model, of a Backbone, or of a model whose backbone is called
    ``backbone``), possibly wrapped in a checkpoint dict under "state_dict" or "model".
    """
    if name not in BACKBONES:
        raise DabenchError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    if not isinstance(img_size, int) or img_size <= 0:
        raise DabenchError(f"img_size must be a positive integer, got {img_size!r}")
    is_vit = name in _VIT_MODELS
    if not is_vit and patch_size is not None:
        raise DabenchError(f"patch_size applies to ViT backbones only, not {name}")

    check_strides(name, output_stride, feature_stride)
    if is_vit:
        patch = 16 if patch_size is None else patch_size
        if not isinstance(patch, int) or patch <= 0 or img_size % patch:
            raise DabenchError(
                f"{name}: img_size {img_size} is not a multiple of patch_size {patch}"
            )
        depth = {} if vit_depth is None else {"depth": vit_depth}
        model = timm.create_model(
            _VIT_MODELS[name],
            pretrained=False,
            img_size=img_size,
            patch_size=patch,
            num_classes=0,
            **depth,
        )
        backbone = Backbone(
            model,
            name=name,
            out_channels=model.embed_dim,
            stride=patch,
            img_size=img_size,
            is_vit=True,
            ignored_keys=_IGNORED_PREFIXES["vit"],
        )
    else:
        if img_size % 32:
            raise DabenchError(f"{name}: img_size must be a multiple of 32, got {img_size}")
        if name.startswith("hrnet"):
            model = timm.create_model(
                name, pretrained=False, features_only=True, feature_location="", out_indices=(1,)
            )
            last_index = len(model.stage4) - 1
            last = model.stage4[last_index]
            pruned = tuple(
                f"stage4.{last_index}.fuse_layers.{i}." for i in range(1, len(last.fuse_layers))
            )
            last.fuse_layers = last.fuse_layers[:1]
            last.multi_scale_output = False
            channels, stride = model.feature_info.channels()[0], model.feature_info.reduction()[0]
            ignored = _IGNORED_PREFIXES["hrnet"] + pruned
        else:
            kwargs = {"output_stride": output_stride} if name.startswith("resnet") else {}
            model = timm.create_model(
                name, pretrained=False, num_classes=0, global_pool="", **kwargs
            )
            # forward_features stops before any classifier-side layers (MobileNetV3's
            # conv_head), so the map is the last stage's.
            with torch.no_grad():
                probe = model.eval().forward_features(torch.zeros(1, 3, 32, 32))
            model.train()
            channels, stride = probe.shape[1], output_stride
            ignored = _IGNORED_PREFIXES["resnet"] + ("conv_head.", "classifier.", "head.")
            if feature_stride != 32:
                model, channels, dropped = _truncate(name, model, feature_stride)
                stride = feature_stride
                ignored += dropped
        backbone = Backbone(
            model,
            name=name,
            out_channels=channels,
            stride=stride,
            img_size=img_size,
            is_vit=False,
            ignored_keys=ignored,
            feature_list=name.startswith("hrnet") or feature_stride != 32,
        )
    if weights is not None:
        load_weights(backbone, weights)
    return backbone


def _truncate(
    name: str, full: nn.Module, feature_stride: int
) -> tuple[nn.Module, int, tuple[str, ...]]:
    """timm's feature extractor of ``name`` ending at its last stage of ``feature_stride``:
    (model, channels, the full model's state-dict keys it no longer has)."""
    # (built only for its feature_info; it also draws from the RNG before the kept model is
    # built, which the committed reference runs' initial weights depend on)
    probe = timm.create_model(name, pretrained=False, features_only=True)
    reductions = probe.feature_info.reduction()
    if feature_stride not in reductions:
        raise DabenchError(
            f"{name}: no stage at feature_stride {feature_stride} "
            f"(its stages' strides: {', '.join(map(str, reductions))})"
        )
    index = max(i for i, r in enumerate(reductions) if r == feature_stride)
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=(index,))
    # a weight file of the whole network loads: keys of the dropped stages are ignored
    dropped = tuple(sorted(set(full.state_dict()) - set(model.state_dict())))
    return model, model.feature_info.channels()[-1], dropped


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise DabenchError(f"{path}: weight file not found")
    # weights_only keeps arbitrary pickled code from running; MAE-style checkpoints also
    # pickle their argparse Namespace, which is harmless
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DabenchError(f"{path}: not a readable torch weight file ({first})") from None
    if isinstance(ckpt, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(ckpt.get(key), Mapping):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise DabenchError(f"{path}: holds no state dict of tensors")
    state = {str(k): v for k, v in ckpt.items()}

    def strip(prefix: str, *, only_if_all: bool) -> None:
        nonlocal state
        if not any(k.startswith(prefix) for k in state):
            return
        if not only_if_all or all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    strip("module.", only_if_all=True)  # DataParallel / DDP
    strip("backbone.", only_if_all=False)  # a whole PoseNet: keep only its backbone
    strip("model.", only_if_all=True)  # a Backbone's own state dict
    return state


def load_weights(backbone: Backbone, weights: str | os.PathLike[str]) -> None:
    """Load a local weight file into ``backbone`` (strict; see create_backbone)."""
    path = Path(weights)
    state = _read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(backbone.ignored_keys)}
    target = backbone.model.state_dict()

    if backbone.is_vit and "pos_embed" in state and "pos_embed" in target:
        state["pos_embed"] = _resample_pos_embed(
            state["pos_embed"], target["pos_embed"], backbone.model.num_prefix_tokens
        )

    parts = fit_problems(state, target)
    if parts:
        raise DabenchError(f"{path}: does not fit backbone {backbone.name}: {'; '.join(parts)}")
    backbone.model.load_state_dict(state, strict=True)


def fit_problems(
    given: Mapping[str, Tensor], target: Mapping[str, Tensor], unexpected: Sequence[str] = ()
) -> list[str]:
    """Why the state dict ``given`` does not load strictly into one shaped as ``target``:
    "N missing (e.g. …)", "N unexpected (e.g. …)", "N mismatched (e.g. key [a] vs [b])";
    [] if it does. ``unexpected`` adds keys the caller already set aside."""
    missing = [k for k in target if k not in given]
    extra = [*unexpected, *(k for k in given if k not in target)]
    mismatched = [
        f"{k} {list(given[k].shape)} vs {list(target[k].shape)}"
        for k in target
        if k in given and given[k].shape != target[k].shape
    ]
    return [
        f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"
        for label, keys in (("missing", missing), ("unexpected", extra), ("mismatched", mismatched))
        if keys
    ]


def _resample_pos_embed(saved: Tensor, wanted: Tensor, num_prefix: int) -> Tensor:
    """Bicubically resample a square position-embedding grid to the model's grid size."""
    if saved.shape == wanted.shape or saved.ndim != 3 or saved.shape[-1] != wanted.shape[-1]:
        return saved  # equal, or a mismatch load_weights reports
    old_grid = math.isqrt(saved.shape[1] - num_prefix)
    new_grid = math.isqrt(wanted.shape[1] - num_prefix)
    if old_grid**2 != saved.shape[1] - num_prefix or new_grid**2 != wanted.shape[1] - num_prefix:
        return saved
    return resample_abs_pos_embed(
        saved,
        new_size=[new_grid, new_grid],
        old_size=[old_grid, old_grid],
        num_prefix_tokens=num_prefix,
    )
