"""DANN — domain-adversarial training (Ganin et al., JMLR 2016): a domain discriminator on the
pooled backbone feature behind a gradient reversal layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bench.errors import DabenchError
from bench.losses import DomainDiscriminator, GradientReversal, dann_lambda, domain_adversarial_loss
from bench.methods.base import Batch, DataNeed, Hparams, Method
from bench.methods.common import (
    WindowMean,
    check_non_negative,
    check_positive_int,
    forward_source_target,
)
from bench.methods.registry import register_method
from bench.models.pose_net import ModelConfig

# "progress": λ_p over training progress p ∈ [0, 1) (the paper);
# "iterations": λ at p = step / schedule_iters, unclipped (tllib's WarmStartGradientReverseLayer);
# "constant": λ = lambda_max throughout.
SCHEDULES: tuple[str, ...] = ("progress", "iterations", "constant")


@dataclass(frozen=True)
class DANNHparams(Hparams):
    trade_off: float = 1.0  # weight of the adversarial loss (tllib's trade_off)
    schedule: str = "progress"
    schedule_gamma: float = 10.0  # γ of λ_p = 2/(1 + exp(−γ p)) − 1 (tllib's alpha)
    schedule_iters: int = 1000  # "iterations" only: tllib's max_iters
    lambda_max: float = 1.0  # the GRL coefficient the schedule rises to (tllib's hi)
    disc_hidden: int = 1024
    pose_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise DabenchError(
                f"dann: unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        check_non_negative(
            "dann",
            trade_off=self.trade_off,
            schedule_gamma=self.schedule_gamma,
            lambda_max=self.lambda_max,
            pose_weight=self.pose_weight,
        )
        check_positive_int("dann", schedule_iters=self.schedule_iters, disc_hidden=self.disc_hidden)


@register_method("dann")
class DANN(Method):
    """Pose loss on source + trade_off·0.5·[BCE(D(R_λ(f_s)), 1) + BCE(D(R_λ(f_t)), 0)],
    f = the globally pooled backbone feature, R_λ the gradient reversal layer."""

    needs = frozenset({DataNeed.SOURCE_LABELS, DataNeed.TARGET_IMAGES})
    Hparams = DANNHparams

    def __init__(
        self, hparams: DANNHparams, model_config: ModelConfig, num_joints: int, root: int
    ) -> None:
        super().__init__(hparams, model_config, num_joints, root)
        self.grl = GradientReversal(0.0)
        self.discriminator = DomainDiscriminator(
            self.net.backbone.out_channels, hparams.disc_hidden
        )
        self._disc_acc = WindowMean()

    def grl_lambda(self, step: int, progress: float) -> float:
        hp = self.hparams
        if hp.schedule == "constant":
            return hp.lambda_max
        p = progress if hp.schedule == "progress" else step / hp.schedule_iters
        return hp.lambda_max * dann_lambda(p, hp.schedule_gamma)

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, Tensor]:
        hp = self.hparams
        out, out_src, n = forward_source_target(self.net, batch)
        self.grl.coeff = self.grl_lambda(step, progress)
        # Source and target pass the discriminator together (as in tllib) so that its
        # BatchNorm sees one mixed batch rather than two single-domain ones.
        logits = self.discriminator(self.grl(out["pooled"]))
        adv, acc = domain_adversarial_loss(logits[:n], logits[n:])
        self._disc_acc.add(acc)
        return {
            "pose": hp.pose_weight * self.supervised_loss(batch["source"], out_src),
            "adv": hp.trade_off * adv,
        }

    def metrics_step(self) -> dict[str, float]:
        metrics = {"grl_lambda": self.grl.coeff}
        acc = self._disc_acc.pop()
        if acc is not None:
            metrics["disc_acc"] = acc
        return metrics
