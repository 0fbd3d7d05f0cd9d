"""DAN — Deep Adaptation Network (Long et al., ICML 2015): multi-kernel MMD on several layers."""

from __future__ import annotations

from torch import Tensor

from bench.losses import mk_mmd2
from bench.methods.base import Batch, Method, StepContext
from bench.methods.common import forward_source_target
from bench.methods.specs.dan import DANSpec


class DAN(Method):
    """Pose loss on source + λ·[MK-MMD²(neck) + MK-MMD²(pooled head features)].

    Both layers lie on the pose path: the neck (the bottleneck the head reads, DDC's
    adaptation layer) globally averaged, and the head's last hidden feature map (after its
    deconvolutions, before the 1×1 output conv), globally averaged, which stands in for DAN's
    task-specific fc layers.
    """

    spec = DANSpec

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        hp = self.hparams
        out, out_src, n = forward_source_target(self.net, batch, with_head_pooled=hp.on_head)
        a = out["pooled"]
        losses = {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "mmd": hp.trade_off * self._mmd(a[:n], a[n:]),
        }
        if hp.on_head:
            h = out["head_pooled"]
            losses["mmd_head"] = hp.trade_off * self._mmd(h[:n], h[n:])
        return losses

    def _mmd(self, x: Tensor, y: Tensor) -> Tensor:
        return mk_mmd2(x, y, alphas=self.hparams.alphas, estimator=self.hparams.estimator)
