"""DDC — Deep Domain Confusion (Tzeng et al., 2014): linear-kernel MMD² on the bottleneck the
pose head reads."""

from __future__ import annotations

from torch import Tensor

from bench.losses import linear_mmd2
from bench.methods.base import Batch, Method, StepContext
from bench.methods.common import forward_source_target
from bench.methods.specs.ddc import DDCSpec


class DDC(Method):
    """Pose loss on source + λ·||mean φ(x_s) − mean φ(x_t)||², φ = the network's neck (its
    adaptation layer, which the pose head reads) globally averaged."""

    spec = DDCSpec

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        out, out_src, n = forward_source_target(self.net, batch)
        a = out["pooled"]
        hp = self.hparams
        return {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "mmd": hp.mmd_weight * linear_mmd2(a[:n], a[n:]),
        }
