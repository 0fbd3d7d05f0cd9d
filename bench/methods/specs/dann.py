"""DANN (Ganin et al., JMLR 2016): declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.methods.spec import Hparams, register_method
from bench.methods.specs.common import FeatureAlignmentSpec
from bench.typed import check_choice, check_non_negative, check_positive_int

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
        check_choice("dann", "schedule", self.schedule, SCHEDULES)
        check_non_negative(
            "dann",
            trade_off=self.trade_off,
            schedule_gamma=self.schedule_gamma,
            lambda_max=self.lambda_max,
            pose_weight=self.pose_weight,
        )
        check_positive_int("dann", schedule_iters=self.schedule_iters, disc_hidden=self.disc_hidden)


@register_method("dann")
class DANNSpec(FeatureAlignmentSpec):
    # One optimiser: the gradient reversal layer makes the discriminator's minimisation and
    # the features' maximisation one backward pass, as in the paper.
    Hparams = DANNHparams
    adapter = "bench.methods.dann:DANN"

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return ("pose", "adv")
