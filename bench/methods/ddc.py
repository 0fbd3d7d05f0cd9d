"""DDC — Deep Domain Confusion (Tzeng et al., 2014): linear-kernel MMD² on an adaptation layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bench.losses import AdaptationLayer, linear_mmd2
from bench.methods.base import Batch, DataNeed, Hparams, Method
from bench.methods.common import check_non_negative, check_positive_int, forward_source_target
from bench.methods.registry import register_method
from bench.models.pose_net import ModelConfig


@dataclass(frozen=True)
class DDCHparams(Hparams):
    mmd_weight: float = 0.25  # λ of L = L_pose + λ·MMD² (Tzeng et al.)
    adapt_dim: int = 256  # width of the adaptation layer
    pose_weight: float = 1.0

    def __post_init__(self) -> None:
        check_non_negative("ddc", mmd_weight=self.mmd_weight, pose_weight=self.pose_weight)
        check_positive_int("ddc", adapt_dim=self.adapt_dim)


@register_method("ddc")
class DDC(Method):
    """Pose loss on source + λ·||mean φ(f_s) − mean φ(f_t)||², φ = Linear–BN–ReLU on the
    globally pooled backbone feature (a side branch: the pose head is unchanged)."""

    needs = frozenset({DataNeed.SOURCE_LABELS, DataNeed.TARGET_IMAGES})
    Hparams = DDCHparams

    def __init__(
        self, hparams: DDCHparams, model_config: ModelConfig, num_joints: int, root: int
    ) -> None:
        super().__init__(hparams, model_config, num_joints, root)
        self.adapt = AdaptationLayer(self.net.backbone.out_channels, hparams.adapt_dim)

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, Tensor]:
        out, out_src, n = forward_source_target(self.net, batch)
        a = self.adapt(out["pooled"])
        hp = self.hparams
        return {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "mmd": hp.mmd_weight * linear_mmd2(a[:n], a[n:]),
        }
