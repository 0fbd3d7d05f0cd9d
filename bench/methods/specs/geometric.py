"""Geometric reconstruction (Lin et al., NeurIPS 2023): declaration. Style-invariant
pre-training on the source (L_sup + λ_a·L_align against StyleNet-stylised copies), then
fine-tuning on the target with integrated pseudo-labels from a mean teacher and a
keypoint-driven reconstruction of one frame from another (L_sup + λ_r·L_rec + λ_p·L_pseudo).
The choices where the papers are silent are argued in ``methods/geometric-reconstruction.yaml``;
the adapter is ``bench/methods/geometric.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.views import FramePairs, Images, Labelled
from bench.errors import DabenchError
from bench.methods.spec import (
    Epochs,
    Hparams,
    MethodSpec,
    Optim,
    Schedule,
    Share,
    Stage,
    register_method,
)
from bench.typed import check_choice, check_non_negative, check_positive_int

# Which pretrained features StyleNet's encoder and the perceptual loss read: a local VGG-19
# file (torchvision or timm layout, ``vgg_weights``), or — substitutes where no such file
# exists — the same layout at ``feature_width`` with weights drawn from ``feature_seed``
# ("random-vgg19"), or that stack trained in-harness as an autoencoder of source and target
# images in a stage of its own ("trained-vgg19").
FEATURES: tuple[str, ...] = ("vgg19", "random-vgg19", "trained-vgg19")
# The generator G: articulated-animation's (two down-samplings, six residual blocks, warped
# skips: the supplement's "Johnson architecture ... following [7]") or its U-Net reading.
GENERATORS: tuple[str, ...] = ("johnson", "unet")
# "warp": W's bone affines, masks and flow drive G (the method); "heatmap": the L_heatmap
# ablation of Table 3 — no W, G reconstructs from the base image and both images' heatmaps.
RECONSTRUCTIONS: tuple[str, ...] = ("warp", "heatmap")
# Which feature z of Eq. 2 is: the backbone's pooled feature, or a projection head on it.
ALIGN_FEATURES: tuple[str, ...] = ("pooled", "projection")
# Eq. 1 as printed (per-sample L2 norms, averaged over the batch) or mean squared errors.
SUP_FORMS: tuple[str, ...] = ("norm", "mse")
DISTANCES: tuple[str, ...] = ("squared", "plain")
# StyleNet's style loss: Huang & Belongie's per-channel mean/std (what UniFrame trains its
# StyleNet with, adain/net.py) or Gram matrices (UniFrame's lib/models/Style_net.py).
STYLE_LOSSES: tuple[str, ...] = ("mean_std", "gram")  # d² (S003's form) or d (S001 as printed)
DECODES: tuple[str, ...] = ("argmax", "soft-argmax")
# S002 Table B(a): M_2D only, M_3D only, their union from the start, independent masks
# throughout, and the method's independent-then-union (Eq. 3).
MASK_SCHEDULES: tuple[str, ...] = (
    "independent-then-union",
    "independent",
    "union",
    "m2d-only",
    "m3d-only",
)


@dataclass(frozen=True)
class GeometricHparams(Hparams):
    # -- L_sup (Eq. 1): heatmaps to Gaussians of σ = 2 heatmap px, plus λ_d·depth
    sup_form: str = "norm"
    lambda_d: float = 1.0  # not given in the paper
    heatmap_sigma: float = 2.0
    # β of softmax(β·h): the soft-argmax of Eq. 5 and the depth pooling read a heatmap
    # regressed to peak-1 Gaussians; at β = 1 its softmax is nearly uniform (methods.md §1.3)
    softmax_beta: float = 10.0
    decode: str = "argmax"  # 2D keypoints for evaluation (PCK is defined on the argmax)
    # -- style-invariant pre-training (Sec. 3.2)
    align_weight: float = 0.1  # λ_a; 0: w/o L_align (and no StyleNet)
    tau: float = 0.5
    align_feature: str = "pooled"
    projection_dim: int = 128
    style_weight: float = 0.1  # UniFrame's StyleNet losses: content 1, style 0.1
    style_loss: str = "mean_std"
    stylenet_lr: float = 1e-4
    stylenet_epochs: float = 1.0  # over the source images; the paper does not say
    pretrain_epochs: float = 2.0  # the paper: 40 (grids set it)
    pretrain_lr: float = 1e-4
    pretrain_batch: int = 0  # source images per step (0: the grid's train.batch_size)
    # -- features of StyleNet's encoder and the perceptual loss
    features: str = "vgg19"
    vgg_weights: str = ""  # a local VGG-19 file (torchvision or timm layout)
    feature_width: float = 1.0  # channels × width; random-vgg19 and trained-vgg19
    feature_seed: int = 0
    feature_epochs: float = 1.0  # trained-vgg19: the autoencoder stage, over source images
    feature_lr: float = 1e-3
    # -- integrated pseudo-labelling (Sec. 3.3.1)
    pseudo_weight: float = 0.1  # λ_p; 0: w/o L_pseudo
    lambda_y: float = 0.1
    ema: float = 0.999  # mean teacher, parameters only
    drop_quantile: float = 0.5  # γ_2D as UniFrame's per-batch quantile of teacher maxima
    gamma_3d: float = 0.025  # γ_3D, a fraction of the crop size (6.4 px at 256)
    mask_schedule: str = "independent-then-union"
    union_from: float = 0.5  # T of Eq. 3, as a fraction of fine-tuning
    # -- geometric reconstruction (Sec. 3.3.2)
    rec_weight: float = 0.1  # λ_r; 0: w/o L_rec
    reconstruction: str = "warp"
    generator: str = "johnson"
    generator_channels: int = 64
    motion_channels: int = 64
    motion_max_channels: int = 1024
    bone_sigma: float = 0.03  # σ of Eq. 6 as a fraction of the crop size
    distance: str = "squared"
    stride: tuple[int, int] = (5, 15)  # Table 4's best range, frames of one video
    generator_epochs: float = 1.0  # G and W pre-trained on predicted keypoints
    generator_lr: float = 1e-4
    # fine-tuning's warm start: before this fraction L_rec trains W and G only (keypoints
    # detached); after it, L_rec reaches the keypoint predictor too
    rec_start: float = 0.25
    finetune_epochs: float = 0.0  # 0: the grid's step budget; the paper: 80
    finetune_batch: int = 0  # target frame pairs per step (0: the grid's train.batch_size)

    def __post_init__(self) -> None:
        where = "geometric-reconstruction"
        for name, choices in (
            ("sup_form", SUP_FORMS),
            ("decode", DECODES),
            ("align_feature", ALIGN_FEATURES),
            ("features", FEATURES),
            ("mask_schedule", MASK_SCHEDULES),
            ("reconstruction", RECONSTRUCTIONS),
            ("generator", GENERATORS),
            ("distance", DISTANCES),
            ("style_loss", STYLE_LOSSES),
        ):
            check_choice(where, name, getattr(self, name), choices)
        check_non_negative(
            where,
            lambda_d=self.lambda_d,
            align_weight=self.align_weight,
            style_weight=self.style_weight,
            stylenet_epochs=self.stylenet_epochs,
            pretrain_batch=self.pretrain_batch,
            pseudo_weight=self.pseudo_weight,
            lambda_y=self.lambda_y,
            rec_weight=self.rec_weight,
            generator_epochs=self.generator_epochs,
            finetune_epochs=self.finetune_epochs,
            finetune_batch=self.finetune_batch,
            feature_seed=self.feature_seed,
            feature_epochs=self.feature_epochs,
        )
        check_positive_int(
            where,
            projection_dim=self.projection_dim,
            generator_channels=self.generator_channels,
            motion_channels=self.motion_channels,
            motion_max_channels=self.motion_max_channels,
        )
        positive = {
            "heatmap_sigma": self.heatmap_sigma,
            "softmax_beta": self.softmax_beta,
            "tau": self.tau,
            "stylenet_lr": self.stylenet_lr,
            "pretrain_epochs": self.pretrain_epochs,
            "pretrain_lr": self.pretrain_lr,
            "feature_width": self.feature_width,
            "feature_lr": self.feature_lr,
            "gamma_3d": self.gamma_3d,
            "bone_sigma": self.bone_sigma,
            "generator_lr": self.generator_lr,
        }
        bad = [k for k, v in positive.items() if not v > 0]
        if bad:
            raise DabenchError(f"{where}: {', '.join(bad)} must be > 0")
        for name in ("ema", "drop_quantile", "union_from", "rec_start"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise DabenchError(f"{where}: {name} must be in [0, 1), got {value!r}")
        lo, hi = self.stride
        if not 0 <= lo <= hi:
            raise DabenchError(f"{where}: stride must be [lo, hi] with 0 <= lo <= hi, got {lo, hi}")
        if self.features == "vgg19" and self.feature_width != 1.0:
            raise DabenchError(
                f"{where}: feature_width {self.feature_width} needs features random-vgg19 or "
                "trained-vgg19 (a pretrained VGG-19 file has the full width)"
            )
        if self.trains_features and self.feature_epochs <= 0:
            raise DabenchError(
                f"{where}: features trained-vgg19 are trained in their own stage: "
                "feature_epochs must be > 0"
            )
        if self.reconstructs and self.generator_epochs <= 0:
            raise DabenchError(
                f"{where}: the generator is pre-trained before L_rec reaches the keypoint "
                "predictor (supplement Sec. A): generator_epochs must be > 0"
            )

    @property
    def aligns(self) -> bool:
        return self.align_weight > 0

    @property
    def reconstructs(self) -> bool:
        return self.rec_weight > 0

    @property
    def pseudo_labels(self) -> bool:
        return self.pseudo_weight > 0

    @property
    def needs_features(self) -> bool:
        """Whether VGG features are built: StyleNet's encoder or the perceptual loss."""
        return self.aligns or self.reconstructs

    @property
    def trains_features(self) -> bool:
        """Whether a "features" stage trains the VGG stack (features trained-vgg19)."""
        return self.needs_features and self.features == "trained-vgg19"


# What each stage's output depends on: variants that differ only later share it. A stage
# after a "features" stage also reads that stage's settings (``_reads``).
FEATURE_READS = ("features", "vgg_weights", "feature_width", "feature_seed")
TRAINED_FEATURE_READS = ("feature_epochs", "feature_lr")
STYLENET_READS = (
    *FEATURE_READS,
    "style_weight",
    "style_loss",
    "stylenet_lr",
    "stylenet_epochs",
)
PRETRAIN_READS = (
    *STYLENET_READS,
    "sup_form",
    "lambda_d",
    "heatmap_sigma",
    "softmax_beta",
    "align_weight",
    "tau",
    "align_feature",
    "projection_dim",
    "pretrain_epochs",
    "pretrain_lr",
    "pretrain_batch",
)
GENERATOR_READS = (
    *PRETRAIN_READS,
    "reconstruction",
    "generator",
    "generator_channels",
    "motion_channels",
    "motion_max_channels",
    "bone_sigma",
    "distance",
    "stride",
    "generator_epochs",
    "generator_lr",
    "finetune_batch",
)


def _adam(params: tuple[str, ...], lr: float) -> Optim:
    """The pre-training stages' optimiser: Adam (the paper's), no weight decay, constant."""
    return Optim(
        params=params,
        factory="adam",
        lr=lr,
        weight_decay=0.0,
        schedule=Schedule("constant", warmup_steps=0),
    )


def _reads(hp: Any, reads: tuple[str, ...]) -> tuple[str, ...]:
    return (*reads, *TRAINED_FEATURE_READS) if hp.trains_features else reads


@register_method("geometric-reconstruction")
class GeometricSpec(MethodSpec):
    """Stages: "features" (with features trained-vgg19: the VGG stack and a mirrored decoder
    as an autoencoder of source and target images), "stylenet" (with L_align: the AdaIN
    StyleNet's decoder on source content and target style), "pretrain" (the keypoint
    predictor on the source, L_sup + λ_a·L_align), "generator" (with L_rec: W and G
    reconstruct target frames from the frozen predictor's keypoints), then "finetune" (L_sup
    on the source; L_pseudo from a mean teacher and L_rec on target frame pairs)."""

    Hparams = GeometricHparams
    adapter = "bench.methods.geometric:GeometricReconstruction"

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        stages = []
        if hp.trains_features:
            stages.append(
                Stage(
                    "features",
                    views={"source": Images("source"), "target": Images("target")},
                    length=Epochs(hp.feature_epochs, role="source"),
                    optimizers={"main": _adam(("feature_stack", "feature_decoder"), hp.feature_lr)},
                    evaluate=False,
                    reads=_reads(hp, FEATURE_READS),
                )
            )
        if hp.aligns:
            stages.append(
                Stage(
                    "stylenet",
                    views={"source": Images("source"), "target": Images("target")},
                    length=Epochs(hp.stylenet_epochs, role="source"),
                    optimizers={"main": _adam(("style_net.decoder",), hp.stylenet_lr)},
                    evaluate=False,
                    reads=_reads(hp, STYLENET_READS),
                )
            )
        views: dict = {"source": Labelled("source")}
        if hp.aligns:
            views["target"] = Images("target")  # the style images
        projects = hp.aligns and hp.align_feature == "projection"
        params = ("net", "projection") if projects else ("net",)
        stages.append(
            Stage(
                "pretrain",
                views=views,
                length=Epochs(hp.pretrain_epochs, role="source"),
                batch_sizes={r: hp.pretrain_batch for r in views} if hp.pretrain_batch else {},
                optimizers={"main": _adam(params, hp.pretrain_lr)},
                evaluate=False,
                reads=_reads(hp, PRETRAIN_READS),
            )
        )
        pairs = FramePairs("target", stride=hp.stride, fields=("images", "K"))
        if hp.reconstructs:
            stages.append(
                Stage(
                    "generator",
                    views={"target": pairs},
                    length=Epochs(hp.generator_epochs, role="target"),
                    batch_sizes={"target": hp.finetune_batch} if hp.finetune_batch else {},
                    optimizers={"main": _adam(("reconstructor",), hp.generator_lr)},
                    evaluate=False,
                    reads=_reads(hp, GENERATOR_READS),
                )
            )
        views = {"source": Labelled("source")}
        if hp.reconstructs:
            views["target"] = pairs
        elif hp.pseudo_labels:
            views["target"] = Images("target", fields=("images", "K"))
        # Adam, lr ×0.1 "at steps 60 and 75" of 80 fine-tuning epochs (Sec. 4.2)
        stages.append(
            Stage(
                "finetune",
                views=views,
                length=Epochs(hp.finetune_epochs, role="source")
                if hp.finetune_epochs > 0
                else Share(1.0),
                batch_sizes={"target": hp.finetune_batch}
                if hp.finetune_batch and "target" in views
                else {},
                optimizers={
                    "main": Optim(
                        params=("net", "reconstructor") if hp.reconstructs else ("net",),
                        factory="adam",
                        weight_decay=0.0,
                        schedule=Schedule("multistep", milestones=(0.75, 0.9375)),
                    )
                },
            )
        )
        return stages

    @classmethod
    def notes(cls, hp: Mapping[str, Any]) -> str:
        if not (hp.get("align_weight", 0) > 0 or hp.get("rec_weight", 0) > 0):
            return ""
        if hp.get("features") == "trained-vgg19":
            return (
                f"VGG-19 layout at width {hp.get('feature_width')} trained here as an "
                f"autoencoder of source and target images ({hp.get('feature_epochs')} epochs), "
                "not ImageNet's"
            )
        if hp.get("features") == "random-vgg19":
            return (
                f"VGG-19 features with seeded random weights (seed {hp.get('feature_seed')}, "
                f"width {hp.get('feature_width')}), not ImageNet's"
            )
        return f"VGG-19 features from {Path(str(hp.get('vgg_weights'))).name}"

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        if stage == "features":
            return ("pixel",)
        if stage == "stylenet":
            return ("content", "style")
        if stage == "pretrain":
            return ("sup", "align") if hp.aligns else ("sup",)
        if stage == "generator":
            return ("rec",)
        out = ["sup"]
        if hp.pseudo_labels:
            out.append("pseudo")
        if hp.reconstructs:
            out.append("rec")
        return tuple(out)
