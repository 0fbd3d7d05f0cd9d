"""DDC — Deep Domain Confusion (Tzeng et al., 2014): linear-kernel MMD² on an adaptation layer."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bench.config import ModelConfig
from bench.losses import AdaptationLayer, linear_mmd2
from bench.methods.base import Batch, Method, StepContext
from bench.methods.common import forward_source_target
from bench.methods.specs.ddc import DDCSpec


class DDC(Method):
    """Pose loss on source + λ·||mean φ(f_s) − mean φ(f_t)||², φ = Linear–BN–ReLU on the
    globally pooled backbone feature (a side branch: the pose head is unchanged)."""

    spec = DDCSpec

    def __init__(self, hparams: Any, model_config: ModelConfig, num_joints: int, root: int) -> None:
        super().__init__(hparams, model_config, num_joints, root)
        self.adapt = AdaptationLayer(self.net.backbone.out_channels, hparams.adapt_dim)

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        out, out_src, n = forward_source_target(self.net, batch)
        a = self.adapt(out["pooled"])
        hp = self.hparams
        return {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "mmd": hp.mmd_weight * linear_mmd2(a[:n], a[n:]),
        }
