"""DANN — domain-adversarial training (Ganin et al., JMLR 2016): a domain discriminator on the
pooled neck (the feature the pose head reads) behind a gradient reversal layer."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from bench.losses import DomainDiscriminator, GradientReversal, dann_lambda, domain_adversarial_loss
from bench.methods.base import Batch, Method, StepContext
from bench.methods.common import WindowMean, forward_source_target
from bench.methods.specs.dann import DANNSpec


class DANN(Method):
    """Pose loss on source + trade_off·0.5·[BCE(D(R_λ(f_s)), 1) + BCE(D(R_λ(f_t)), 0)],
    f = the globally pooled neck (the map the pose head reads), R_λ the gradient reversal layer."""

    spec = DANNSpec

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        hparams = self.hparams
        self.grl = GradientReversal(0.0)
        self.discriminator = DomainDiscriminator(self.net.feature_channels, hparams.disc_hidden)
        self._disc_acc = WindowMean()

    def grl_lambda(self, step: int, progress: float) -> float:
        hp = self.hparams
        if hp.schedule == "constant":
            return hp.lambda_max
        p = progress if hp.schedule == "progress" else step / hp.schedule_iters
        return hp.lambda_max * dann_lambda(p, hp.schedule_gamma)

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        hp = self.hparams
        out, out_src, n = forward_source_target(self.net, batch)
        self.grl.coeff = self.grl_lambda(ctx.step, ctx.progress)
        # Source and target pass the discriminator together (as in tllib) so that its
        # BatchNorm sees one mixed batch rather than two single-domain ones.
        logits = self.discriminator(self.grl(out["pooled"]))
        adv, acc = domain_adversarial_loss(logits[:n], logits[n:])
        self._disc_acc.add(acc)
        return {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "adv": hp.trade_off * adv,
        }

    def scalars(self) -> dict[str, float]:
        metrics = {"grl_lambda": self.grl.coeff}
        acc = self._disc_acc.pop()
        if acc is not None:
            metrics["disc_acc"] = acc
        return metrics
