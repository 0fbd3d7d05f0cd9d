"""Losses and small modules shared by domain-adaptation methods (each defined once here)."""

from bench.losses.adversarial import (
    DomainDiscriminator,
    GradientReversal,
    GradientReverseFunction,
    dann_lambda,
    domain_adversarial_loss,
    grad_reverse,
)
from bench.losses.mmd import (
    DEFAULT_ALPHAS,
    ESTIMATORS,
    gaussian_kernels,
    linear_mmd2,
    mean_pairwise_sq_dist,
    mk_mmd2,
)

__all__ = [
    "DEFAULT_ALPHAS",
    "ESTIMATORS",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReverseFunction",
    "dann_lambda",
    "domain_adversarial_loss",
    "gaussian_kernels",
    "grad_reverse",
    "linear_mmd2",
    "mean_pairwise_sq_dist",
    "mk_mmd2",
]
