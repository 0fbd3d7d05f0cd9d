"""MIM-FCR-AR (Park et al.): declaration. Masked-image-modelling pre-training with
foreground-centric reconstruction on source, target and unconstrained images, then pose
fine-tuning with attention regularisation on target images. The choices where the paper is
silent are argued in ``methods/mim-fcr-ar.yaml``; the adapter is ``bench/methods/mim.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.data.views import Backgrounds, FromArtifact, Images, Labelled, Masked
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

# "da": X_S, X_T and X_C; "source-only": no target image anywhere (no target pre-training,
# no attention regularisation, no segmenter), the paper's source-only rows.
SETTINGS: tuple[str, ...] = ("da", "source-only")
PRETRAINING: tuple[str, ...] = ("mim", "none")  # "none": Ours (Scratch)
# Eq. 7's single summed loss, or Algorithm 1's two successive updates per iteration.
AR_UPDATES: tuple[str, ...] = ("sum", "alternate")
DECODES: tuple[str, ...] = ("soft-argmax", "argmax")
MASKS_FILE = "masks.h5"  # the segmenter's target masks, one row per target training image


@dataclass(frozen=True)
class MimHparams(Hparams):
    setting: str = "da"
    pretrain: str = "mim"
    mask_ratio: float = 0.75  # r
    fcr: bool = True  # False: w ≡ 1 (Ours w/o FCR)
    alpha: float = 4.0  # α of Eq. 2
    # False: FCR weights (and background replacement) only where masks are given, i.e. on
    # source images; no segmenter (Ours w/o S_T).
    target_masks: bool = True
    backgrounds: bool = True  # background replacement with unconstrained images X_C
    background_prob: float = 0.5  # per image; the paper does not state it
    norm_pix: bool = True  # per-patch normalised targets (MAE's recommendation)
    decoder_depth: int = 1  # Table 5: one 512-d block
    attn_weight: float = 100.0  # λ_attn (100 hand, 10 human); 0: Ours w/o AR
    ar_update: str = "sum"
    pose_weight: float = 1.0
    heatmap_sigma: float = 2.0  # voxels, of the 3-D Gaussian target of Eq. 5
    decode: str = "soft-argmax"
    # Lengths: epochs over the source images (a stage with 0 epochs runs ``*_share`` of
    # the grid's train.steps instead); fine-tuning is the grid's budget unless set.
    segment_epochs: float = 1.0
    pretrain_epochs: float = 2.0
    finetune_epochs: float = 0.0
    # The paper's 2.4e-3 is MAE's base lr 1.5e-4 × 4,096 / 256 (its batch); MAE's rule
    # scales it linearly with the batch. The default suits the harness's short CPU budgets.
    pretrain_lr: float = 1e-3
    pretrain_weight_decay: float = 0.05
    # Images per domain in a pre-training batch (0: the grid's train.batch_size); the paper
    # pre-trains with 4,096 images per step, i.e. 2,048 source + 2,048 target in DA
    pretrain_batch: int = 0
    segment_lr: float = 1e-3
    # Table 6's U-Net has 64 channels in every layer; fewer make it affordable on a CPU
    # (its cost is ∝ channels²: at 64 px, batch 32, one thread 2.76 s a step at 64, 0.26 at 16)
    segmenter_channels: int = 64
    # A local MAE checkpoint (facebookresearch layout) the encoder, and the decoder where it
    # has one, start from; "" starts from random weights (the paper does not say which).
    mae_checkpoint: str = ""

    def __post_init__(self) -> None:
        where = "mim-fcr-ar"
        check_choice(where, "setting", self.setting, SETTINGS)
        check_choice(where, "pretrain", self.pretrain, PRETRAINING)
        check_choice(where, "ar_update", self.ar_update, AR_UPDATES)
        check_choice(where, "decode", self.decode, DECODES)
        if not 0.0 <= self.mask_ratio < 1.0:
            raise DabenchError(f"{where}: mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
        if not 0.0 <= self.background_prob <= 1.0:
            raise DabenchError(
                f"{where}: background_prob must be in [0, 1], got {self.background_prob!r}"
            )
        check_non_negative(
            where,
            alpha=self.alpha,
            attn_weight=self.attn_weight,
            pose_weight=self.pose_weight,
            segment_epochs=self.segment_epochs,
            pretrain_epochs=self.pretrain_epochs,
            pretrain_batch=self.pretrain_batch,
            finetune_epochs=self.finetune_epochs,
            pretrain_weight_decay=self.pretrain_weight_decay,
        )
        check_positive_int(
            where, decoder_depth=self.decoder_depth, segmenter_channels=self.segmenter_channels
        )
        if not self.heatmap_sigma > 0 or not self.pretrain_lr > 0 or not self.segment_lr > 0:
            raise DabenchError(f"{where}: heatmap_sigma, pretrain_lr and segment_lr must be > 0")
        if self.pretrain == "mim" and self.pretrain_epochs <= 0:
            raise DabenchError(f"{where}: MIM pre-training needs pretrain_epochs > 0")

    @property
    def da(self) -> bool:
        return self.setting == "da"

    @property
    def uses_masks(self) -> bool:
        """Whether pre-training reads foreground masks (FCR weights or X_C replacement)."""
        return self.pretrain == "mim" and (self.fcr or self.backgrounds)

    @property
    def segments(self) -> bool:
        """Whether a segmenter makes target masks: DA pre-training that uses masks on
        target images."""
        return self.da and self.uses_masks and self.target_masks

    @property
    def regularises(self) -> bool:
        return self.da and self.attn_weight > 0


# What each stage's output depends on: variants that differ only later share it.
SEGMENT_READS = ("setting", "segment_epochs", "segment_lr", "segmenter_channels")
PRETRAIN_READS = (
    *SEGMENT_READS,
    "pretrain",
    "mask_ratio",
    "fcr",
    "alpha",
    "target_masks",
    "backgrounds",
    "background_prob",
    "norm_pix",
    "decoder_depth",
    "pretrain_epochs",
    "pretrain_lr",
    "pretrain_weight_decay",
    "pretrain_batch",
    "mae_checkpoint",
)


@register_method("mim-fcr-ar")
class MimSpec(MethodSpec):
    """Stages: "segment" (DA with target masks: the U-Net f^S on source images and masks;
    its artifact holds the masks it predicts for every target training image), "pretrain"
    (MAE with FCR weights and background replacement; the encoder and decoder), then
    "finetune" (pose from all tokens, plus λ_attn·L_attn on target images)."""

    Hparams = MimHparams
    adapter = "bench.methods.mim:MimFcrAr"
    backbones = ("vit_tiny", "vit_small", "vit_base")  # masking and attention need tokens

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        stages = []
        if hp.segments:
            stages.append(
                Stage(
                    "segment",
                    views={"source": Masked("source")},
                    length=Epochs(hp.segment_epochs),
                    optimizers={"main": Optim(params=("segmenter",), lr=hp.segment_lr)},
                    evaluate=False,
                    reads=SEGMENT_READS,
                )
            )
        if hp.pretrain == "mim":
            views: dict = {"source": Masked("source") if hp.uses_masks else Images("source")}
            if hp.da:
                views["target"] = (
                    FromArtifact("segment", MASKS_FILE) if hp.segments else Images("target")
                )
            if hp.backgrounds:
                views["backgrounds"] = Backgrounds()
            stages.append(
                Stage(
                    "pretrain",
                    views=views,
                    length=Epochs(hp.pretrain_epochs, role="source"),
                    batch_sizes={role: hp.pretrain_batch for role in views}
                    if hp.pretrain_batch
                    else {},
                    optimizers={
                        "main": Optim(
                            params=("net.backbone", "decoder"),
                            betas=(0.9, 0.95),
                            lr=hp.pretrain_lr,
                            weight_decay=hp.pretrain_weight_decay,
                            schedule=Schedule("warmup-cosine"),
                        )
                    },
                    evaluate=False,
                    reads=PRETRAIN_READS,
                )
            )
        views = {"source": Labelled("source")}
        if hp.regularises:
            views["target"] = Images("target")
        stages.append(
            Stage(
                "finetune",
                views=views,
                length=Epochs(hp.finetune_epochs, role="source")
                if hp.finetune_epochs > 0
                else Share(1.0),
                manual=hp.regularises and hp.ar_update == "alternate",
            )
        )
        return stages

    @classmethod
    def category(cls, hp: Any, declared: str) -> str:
        # The paper's source-only rows use no target image anywhere: they are source-only
        # baselines (Table 1's lower block), not adaptation methods.
        return declared if hp.da else "source-only"

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        if stage == "segment":
            return ("seg",)
        if stage == "pretrain":
            return ("recon",)
        return ("pose", "attn") if hp.regularises else ("pose",)
