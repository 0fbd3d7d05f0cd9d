"""DAN — Deep Adaptation Network (Long et al., ICML 2015): multi-kernel MMD on several layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bench.errors import DabenchError
from bench.losses import DEFAULT_ALPHAS, ESTIMATORS, AdaptationLayer, mk_mmd2
from bench.methods.base import Batch, DataNeed, Hparams, Method
from bench.methods.common import check_non_negative, check_positive_int, forward_source_target
from bench.methods.registry import register_method
from bench.models.pose_net import ModelConfig


@dataclass(frozen=True)
class DANHparams(Hparams):
    trade_off: float = 1.0  # λ of L = L_pose + λ·Σ_layers MK-MMD²
    estimator: str = "linear"  # "linear" (unbiased, O(n)) | "quadratic" (unbiased, O(n²))
    alphas: tuple[float, ...] = DEFAULT_ALPHAS  # kernel bandwidths / mean pairwise sq. distance
    on_head: bool = True  # also align the pooled last hidden map of the pose head
    adapt_dim: int = 256
    pose_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise DabenchError(
                f"dan: unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}"
            )
        alphas = tuple(self.alphas)
        if not alphas or not all(
            isinstance(a, int | float) and not isinstance(a, bool) and a > 0 for a in alphas
        ):
            raise DabenchError(f"dan: alphas must be positive numbers, got {self.alphas!r}")
        # YAML gives [0.125, 1, 2]: store floats so equal settings compare and hash equal.
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        check_non_negative("dan", trade_off=self.trade_off, pose_weight=self.pose_weight)
        check_positive_int("dan", adapt_dim=self.adapt_dim)


@register_method("dan")
class DAN(Method):
    """Pose loss on source + λ·[MK-MMD²(adaptation layer) + MK-MMD²(pooled head features)].

    The adaptation layer (Linear–BN–ReLU on the pooled backbone feature) is DDC's; the second
    layer stands in for DAN's task-specific fc layers: the head's last hidden feature map
    (after its deconvolutions, before the 1×1 output conv), globally averaged.
    """

    needs = frozenset({DataNeed.SOURCE_LABELS, DataNeed.TARGET_IMAGES})
    Hparams = DANHparams

    def __init__(
        self, hparams: DANHparams, model_config: ModelConfig, num_joints: int, root: int
    ) -> None:
        super().__init__(hparams, model_config, num_joints, root)
        self.adapt = AdaptationLayer(self.net.backbone.out_channels, hparams.adapt_dim)

    def training_step(
        self, stage: str, batch: Batch, step: int, progress: float
    ) -> dict[str, Tensor]:
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
