"""The settings a grid gives every trial — model and training — as torch-free frozen
dataclasses, with the names of the choices they allow. Kept apart from the code that uses
them so that parsing grids, `dabench grid show` and `dabench report` never import torch."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import DabenchError

BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet50",
    "resnet101",
    "vit_tiny",
    "vit_small",
    "vit_base",
    "hrnet_w32",
    # Small CNNs for CPU budgets (the quickstart): stride 32, random init like the rest.
    "resnet10t",
    "regnetx_002",
    "mobilenetv3_small_100",
)
HEADS: tuple[str, ...] = ("2.5d", "volumetric")
# Normalisation layers of a CNN pose network: BatchNorm as built, or every BatchNorm swapped
# for GroupNorm (Mask as Supervision: batch statistics at inference hurt its left/right
# disambiguation)
NORMS: tuple[str, ...] = ("batch", "group")
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
# Method categories (cards, records, report groups).
CATEGORIES: tuple[str, ...] = (
    "source-only",
    "domain-adaptation",
    "domain-generalisation",
    # target images and masks (and cameras) without labels: Mask as Supervision
    "unsupervised",
    "oracle",
)


def check_strides(backbone: str, output_stride: int, feature_stride: int) -> None:
    """The two ways to a finer backbone map, checked where a grid is loaded and where a
    backbone is built: ResNets dilate (``output_stride``), CNNs but HRNet are cut
    (``feature_stride``); one of them at a time."""
    is_vit = backbone.startswith("vit")
    if feature_stride != 32 and (is_vit or backbone.startswith("hrnet")):
        raise DabenchError(
            f"feature_stride applies to CNN backbones other than HRNet, not {backbone}"
        )
    if feature_stride not in (8, 16, 32):
        raise DabenchError(f"{backbone}: feature_stride {feature_stride} not supported (8, 16, 32)")
    if feature_stride != 32 and output_stride != 32:
        raise DabenchError(
            f"{backbone}: output_stride {output_stride} (dilation) and feature_stride "
            f"{feature_stride} (truncation) are two ways to a finer map; set one of them"
        )
    if is_vit and output_stride != 32:
        raise DabenchError(f"output_stride applies to ResNet backbones only, not {backbone}")
    if output_stride not in (8, 16, 32) or (
        output_stride != 32 and not backbone.startswith("resnet")
    ):
        raise DabenchError(
            f"{backbone}: output_stride {output_stride} not supported (ResNets: 8, 16, 32; "
            "other backbones: 32)"
        )


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    img_size: int = 64
    patch_size: int | None = None  # ViT only; default 16
    # ViT only: the number of transformer blocks (None: the model's own, 12); fewer make a
    # ViT affordable on CPU budgets and in tests
    vit_depth: int | None = None
    output_stride: int = 32  # ResNet only: 32, 16 or 8 (dilated last stages)
    # CNNs: cut the backbone after its last stage at this stride (32 = whole; 16 drops the
    # last stage: fewer parameters, a finer map, a faster step)
    feature_stride: int = 32
    head: str = "2.5d"  # "2.5d" | "volumetric"
    heatmap_stride: int = 4  # input px per heatmap cell
    depth_bins: int = 16  # volumetric only
    head_channels: int = 256
    # Channels of the neck, a 1×1 Conv–BN–ReLU between backbone and head (0 = none: the head
    # reads the backbone map). It is the pose network's bottleneck, as in tllib's classifiers:
    # the representation the head consumes, which feature-level DA methods align.
    neck: int = 256
    depth_range_mm: float = 400.0  # root-relative depth range mapped to [-0.5, 0.5]
    weights: str | None = None  # local backbone weight file
    # Auxiliary heatmap supervision: KL between the softmax heatmap (2.5D; the volume
    # marginalised over depth for volumetric) and a normalised Gaussian at the label, with
    # this weight (0 = off). Dense gradients make training from scratch converge faster.
    heatmap_loss: float = 0.0
    heatmap_sigma: float = 1.0  # heatmap cells
    norm: str = "batch"  # "batch" | "group" (CNN backbones, neck and head)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise DabenchError(f"unknown backbone {self.backbone!r}; valid: {', '.join(BACKBONES)}")
        if self.head not in HEADS:
            raise DabenchError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.norm not in NORMS:
            raise DabenchError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.norm == "group" and self.backbone.startswith("vit_"):
            raise DabenchError(
                f"norm group swaps a CNN's BatchNorm for GroupNorm; {self.backbone} has "
                "LayerNorm only: use norm batch"
            )
        check_strides(self.backbone, self.output_stride, self.feature_stride)
        for name in ("img_size", "heatmap_stride", "depth_bins", "head_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise DabenchError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.neck, int) or isinstance(self.neck, bool) or self.neck < 0:
            raise DabenchError(
                f"ModelConfig.neck must be a non-negative integer (0 = no neck), got {self.neck!r}"
            )
        if self.vit_depth is not None and (
            not self.backbone.startswith("vit_")
            or not isinstance(self.vit_depth, int)
            or isinstance(self.vit_depth, bool)
            or self.vit_depth < 1
        ):
            raise DabenchError(
                f"ModelConfig.vit_depth must be a positive integer and applies to ViT "
                f"backbones only, got {self.vit_depth!r} for {self.backbone}"
            )
        if self.img_size % self.heatmap_stride:
            raise DabenchError(
                f"img_size {self.img_size} is not a multiple of heatmap_stride "
                f"{self.heatmap_stride}"
            )
        if not self.depth_range_mm > 0:
            raise DabenchError(f"depth_range_mm must be > 0, got {self.depth_range_mm!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and optimisation defaults shared by every method of a grid.
    A method's stages may set their own optimiser, learning rate, decay and schedule; what
    they leave unset comes from here."""

    steps: int = 1000  # the budget that stage lengths given as a share divide
    adapt_steps: int = 0  # budget of warm-started (adapting) trials; 0 = steps
    batch_size: int = 32
    lr: float = 1e-3
    adapt_lr: float = 0.0  # learning rate of warm-started (adapting) trials; 0 = lr
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    eval_every: int = 250
    eval_batch_size: int = 256
    eval_source_test: bool = True
    source_val_fraction: float = 0.1  # held out of source train for source-val selection
    amp: str = "none"  # none | bf16 | fp16 (fp16 with loss scaling, CUDA only)
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0: the trial's CPU resources
    workers: int = 0  # DataLoader workers per batch role
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    log_every: int = 10
    keep_checkpoint: bool = False  # keep checkpoint.pt (weights + optimiser) after the trial
    # A checkpoint at every evaluation and, between them, after a step once this many
    # seconds passed since the last one (0 = at evaluations only): a killed or retried
    # trial loses at most this much work, whatever eval_every is.
    checkpoint_every_s: float = 120.0
    max_failures: int = 1  # Ray retries of a trial that crashed (not of a bad configuration)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise DabenchError(f"train.amp {self.amp!r} is not one of {AMP_MODES}")
        if self.device not in DEVICES:
            raise DabenchError(f"train.device {self.device!r} is not one of {DEVICES}")
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise DabenchError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("adapt_steps", "warmup_steps", "max_failures", "threads", "workers"):
            if getattr(self, name) < 0:
                raise DabenchError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.source_val_fraction < 0.5:
            raise DabenchError("train.source_val_fraction must be in [0, 0.5)")
        if self.adapt_lr < 0:
            raise DabenchError(f"train.adapt_lr must be >= 0 (0 = lr), got {self.adapt_lr}")
        if self.grad_clip < 0:
            raise DabenchError(f"train.grad_clip must be >= 0, got {self.grad_clip}")
        if self.checkpoint_every_s < 0:
            raise DabenchError(
                f"train.checkpoint_every_s must be >= 0 (0 = at evaluations only), "
                f"got {self.checkpoint_every_s}"
            )


# Train settings that do not change what is learned: excluded from trial ids and artifact
# keys, so that changing them reuses finished work.
NON_SEMANTIC_TRAIN: tuple[str, ...] = (
    "threads",
    "workers",
    "log_every",
    "device",
    "eval_batch_size",
    "keep_checkpoint",
    "checkpoint_every_s",
    "max_failures",
)
# Train settings that change only what is evaluated, not the weights (evaluation runs under
# a forked RNG): excluded from artifact keys, kept in trial ids.
EVALUATION_TRAIN: tuple[str, ...] = ("eval_every", "eval_source_test")
