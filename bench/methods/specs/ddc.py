"""DDC (Tzeng et al., 2014): declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.methods.spec import Hparams, register_method
from bench.methods.specs.common import FeatureAlignmentSpec
from bench.typed import check_non_negative


@dataclass(frozen=True)
class DDCHparams(Hparams):
    mmd_weight: float = 0.25  # λ of L = L_pose + λ·MMD² (Tzeng et al.)
    pose_weight: float = 1.0

    def __post_init__(self) -> None:
        check_non_negative("ddc", mmd_weight=self.mmd_weight, pose_weight=self.pose_weight)


@register_method("ddc")
class DDCSpec(FeatureAlignmentSpec):
    Hparams = DDCHparams
    adapter = "bench.methods.ddc:DDC"

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return ("pose", "mmd")
