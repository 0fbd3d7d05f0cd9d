"""DAN (Long et al., ICML 2015): declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import DabenchError
from bench.methods.spec import Hparams, register_method
from bench.methods.specs.common import FeatureAlignmentSpec
from bench.typed import check_choice, check_non_negative

ESTIMATORS: tuple[str, ...] = ("linear", "quadratic")
# Kernel bandwidths as multiples of the mean pairwise squared distance (tllib's DAN).
DEFAULT_ALPHAS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DANHparams(Hparams):
    trade_off: float = 1.0  # λ of L = L_pose + λ·Σ_layers MK-MMD²
    estimator: str = "linear"  # "linear" (unbiased, O(n)) | "quadratic" (unbiased, O(n²))
    alphas: tuple[float, ...] = DEFAULT_ALPHAS  # kernel bandwidths / mean pairwise sq. distance
    on_head: bool = True  # also align the pooled last hidden map of the pose head
    pose_weight: float = 1.0

    def __post_init__(self) -> None:
        check_choice("dan", "estimator", self.estimator, ESTIMATORS)
        alphas = tuple(self.alphas)
        if not alphas or not all(
            isinstance(a, int | float) and not isinstance(a, bool) and a > 0 for a in alphas
        ):
            raise DabenchError(f"dan: alphas must be positive numbers, got {self.alphas!r}")
        # YAML gives [0.125, 1, 2]: store floats so equal settings compare and hash equal.
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        check_non_negative("dan", trade_off=self.trade_off, pose_weight=self.pose_weight)


@register_method("dan")
class DANSpec(FeatureAlignmentSpec):
    Hparams = DANHparams
    adapter = "bench.methods.dan:DAN"

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return ("pose", "mmd", "mmd_head") if hp.on_head else ("pose", "mmd")
