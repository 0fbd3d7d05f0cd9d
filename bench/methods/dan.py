"""DAN — Deep Adaptation Network (Long et al., ICML 2015): multi-kernel MMD on several layers."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bench.config import ModelConfig
from bench.losses import AdaptationLayer, mk_mmd2
from bench.methods.base import Batch, Method, StepContext
from bench.methods.common import forward_source_target
from bench.methods.specs.dan import DANSpec


class DAN(Method):
    """Pose loss on source + λ·[MK-MMD²(adaptation layer) + MK-MMD²(pooled head features)].

    The adaptation layer (Linear–BN–ReLU on the pooled backbone feature) is DDC's; the second
    layer stands in for DAN's task-specific fc layers: the head's last hidden feature map
    (after its deconvolutions, before the 1×1 output conv), globally averaged.
    """

    spec = DANSpec

    def __init__(self, hparams: Any, model_config: ModelConfig, num_joints: int, root: int) -> None:
        super().__init__(hparams, model_config, num_joints, root)
        self.adapt = AdaptationLayer(self.net.backbone.out_channels, hparams.adapt_dim)

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        hp = self.hparams
        out, out_src, n = forward_source_target(self.net, batch, with_head_pooled=hp.on_head)
        a = self.adapt(out["pooled"])
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
