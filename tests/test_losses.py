"""Shared DA losses: linear and multi-kernel MMD, gradient reversal, the DANN schedule, the
domain discriminator loss."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import DabenchError
from bench.losses import (
    DEFAULT_ALPHAS,
    DomainDiscriminator,
    GradientReversal,
    dann_lambda,
    domain_adversarial_loss,
    gaussian_kernels,
    grad_reverse,
    linear_mmd2,
    mean_pairwise_sq_dist,
    mk_mmd2,
)

ESTIMATORS = ("linear", "quadratic")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- linear MMD (DDC)


def test_linear_mmd_is_the_squared_mean_difference():
    x = torch.randn(7, 5, generator=gen(0))
    y = torch.randn(9, 5, generator=gen(1)) + 0.3
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum()
    assert torch.allclose(linear_mmd2(x, y), expected)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0])
    assert linear_mmd2(x, x + shift).item() == pytest.approx(5.25, rel=1e-5)


def test_linear_mmd_near_zero_for_one_distribution_and_grows_with_shift():
    x = torch.randn(4000, 8, generator=gen(2))
    y = torch.randn(4000, 8, generator=gen(3))
    values = [linear_mmd2(x, y + s).item() for s in (0.0, 0.25, 0.5, 1.0)]
    assert values[0] < 0.01
    assert values == sorted(values) and values[-1] > 7.0  # 8 dims × 1²


# ---------------------------------------------------------------- MK-MMD (DAN)


def naive_mk_mmd2_quadratic(x, y, alphas=DEFAULT_ALPHAS) -> float:
    n = len(x)
    z = [*x.tolist(), *y.tolist()]
    d2 = [[sum((a - b) ** 2 for a, b in zip(zi, zj, strict=True)) for zj in z] for zi in z]
    base = sum(map(sum, d2)) / len(z) ** 2

    def k(i: int, j: int) -> float:
        return sum(math.exp(-d2[i][j] / (2 * a * base)) for a in alphas) / len(alphas)

    xx = sum(k(i, j) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(n + i, n + j) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(i, n + j) for i in range(n) for j in range(n)) / n**2
    return xx + yy - 2 * xy


def test_quadratic_estimator_equals_a_naive_double_loop():
    x = torch.randn(6, 3, generator=gen(4), dtype=torch.float64)
    y = torch.randn(6, 3, generator=gen(5), dtype=torch.float64) * 1.5 + 0.7
    got = mk_mmd2(x, y, estimator="quadratic").item()
    assert got == pytest.approx(naive_mk_mmd2_quadratic(x, y), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_quadratic_estimator_is_stable_far_from_the_origin(offset):
    # features with mean/std = 100 and 1,000 in float32, against a float64 reference
    x = torch.randn(16, 32, generator=gen(14)) + offset
    y = torch.randn(16, 32, generator=gen(15)) * 1.3 + offset + 0.5
    exact = mk_mmd2(x.double(), y.double(), estimator="quadratic").item()
    got = mk_mmd2(x, y, estimator="quadratic").item()
    assert exact > 0.02  # a real difference to measure
    assert got == pytest.approx(exact, rel=1e-3)


def test_linear_estimator_uses_disjoint_quad_tuples():
    x = torch.randn(7, 3, generator=gen(6))  # odd: the last sample is dropped
    y = torch.randn(7, 3, generator=gen(7)) + 1.0
    base = mean_pairwise_sq_dist(torch.cat([x, y]))

    def k(a, b):
        return gaussian_kernels(((a - b) ** 2).sum(), base).item()

    g = [
        k(x[2 * i], x[2 * i + 1])
        + k(y[2 * i], y[2 * i + 1])
        - k(x[2 * i], y[2 * i + 1])
        - k(x[2 * i + 1], y[2 * i])
        for i in range(3)
    ]
    assert mk_mmd2(x, y).item() == pytest.approx(sum(g) / 3, rel=1e-5)


def test_mean_pairwise_sq_dist_and_kernel_values():
    z = torch.randn(10, 4, generator=gen(8))
    brute = ((z[:, None] - z[None]) ** 2).sum(-1).mean()
    assert mean_pairwise_sq_dist(z).item() == pytest.approx(brute.item(), rel=1e-5)
    assert gaussian_kernels(torch.zeros(3), torch.tensor(2.0)).tolist() == [1.0, 1.0, 1.0]
    # one kernel: exp(−d² / (2 α σ̄²))
    one = gaussian_kernels(torch.tensor(4.0), torch.tensor(2.0), alphas=(0.5,))
    assert one.item() == pytest.approx(math.exp(-2.0))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mk_mmd_near_zero_for_one_distribution_and_grows_with_shift(estimator):
    n = 4000 if estimator == "linear" else 600
    x = torch.randn(n, 8, generator=gen(9))
    y = torch.randn(n, 8, generator=gen(10))
    values = [mk_mmd2(x, y + s, estimator=estimator).item() for s in (0.0, 0.5, 1.0, 2.0)]
    assert abs(values[0]) < 0.01
    assert values == sorted(values) and values[-1] > 0.1


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mk_mmd_bandwidth_follows_the_data_scale(estimator):
    x = torch.randn(64, 16, generator=gen(11), dtype=torch.float64)
    y = torch.randn(64, 16, generator=gen(12), dtype=torch.float64) + 0.4
    ref = mk_mmd2(x, y, estimator=estimator)
    for c in (1e-3, 7.0, 1e3):
        assert mk_mmd2(c * x, c * y, estimator=estimator).item() == pytest.approx(
            ref.item(), rel=1e-6
        )


def population_mk_mmd2(shift: float, dim: int, base: float, alphas=DEFAULT_ALPHAS) -> float:
    """MMD² of N(0, I) vs N(shift·1, I) under the mixture of exp(−||a−b||²/(2τ)), τ = α·base:
    E k(u) for u ~ N(m, 2I) is (τ/(τ+2))^{d/2} exp(−||m||²/(2(τ+2)))."""
    total = 0.0
    for a in alphas:
        tau = a * base
        scale = (tau / (tau + 2.0)) ** (dim / 2)
        total += 2.0 * scale * (1.0 - math.exp(-dim * shift**2 / (2.0 * (tau + 2.0))))
    return total / len(alphas)


def test_linear_estimator_is_unbiased():
    # A fixed bandwidth, so that the kernel is the same in every draw (with the batch's own
    # σ̄² the kernel itself would be random).
    dim, shift, base, n, draws = 4, 1.0, 8.0, 16, 800
    truth = population_mk_mmd2(shift, dim, base)
    g = gen(13)
    x = torch.randn(draws, n, dim, generator=g, dtype=torch.float64)
    y = torch.randn(draws, n, dim, generator=g, dtype=torch.float64) + shift
    estimates = torch.stack([mk_mmd2(x[i], y[i], base=base) for i in range(draws)])
    stderr = estimates.std().item() / math.sqrt(draws)
    assert abs(estimates.mean().item() - truth) < 4 * stderr
    assert stderr < 0.1 * truth  # the test has power: the mean is pinned to ±40 % at worst
    # The quadratic U-statistic on a huge sample agrees with the analytic value.
    big_x = torch.randn(1500, dim, generator=g, dtype=torch.float64)
    big_y = torch.randn(1500, dim, generator=g, dtype=torch.float64) + shift
    quad = mk_mmd2(big_x, big_y, estimator="quadratic", base=base).item()
    assert quad == pytest.approx(truth, rel=0.05)


def test_mk_mmd_input_errors():
    x = torch.randn(8, 4)
    with pytest.raises(DabenchError, match="equal source and target batch sizes, got 8 and 6"):
        mk_mmd2(x, torch.randn(6, 4))
    with pytest.raises(DabenchError, match="unknown MMD estimator 'cubic'"):
        mk_mmd2(x, x, estimator="cubic")
    with pytest.raises(DabenchError, match=r"feature matrices \[n, d\]"):
        mk_mmd2(x, torch.randn(8, 5))
    with pytest.raises(DabenchError, match="at least 2"):
        mk_mmd2(x[:1], x[:1])


def test_mk_mmd_of_identical_points_is_zero_not_nan():
    x = torch.ones(4, 3, requires_grad=True)
    for estimator in ESTIMATORS:
        value = mk_mmd2(x, x.detach().clone(), estimator=estimator)
        value.backward()
        assert value.item() == 0.0 and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- adversarial pieces


def test_gradient_reversal_is_identity_forward_and_negated_backward():
    x = torch.randn(5, 3, generator=gen(14), requires_grad=True)
    w = torch.randn(5, 3, generator=gen(15))
    (plain,) = torch.autograd.grad((x * w).sum(), x)
    lam = float(torch.rand(1, generator=gen(16))) * 3
    layer = GradientReversal()
    layer.coeff = lam
    out = layer(x)
    assert torch.equal(out, x)
    (reversed_,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(reversed_, -lam * plain)
    (functional,) = torch.autograd.grad((grad_reverse(x, 0.25) * w).sum(), x)
    assert torch.allclose(functional, -0.25 * plain)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(0.5) == pytest.approx(0.98661, abs=1e-5)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)
    # tllib's warm start (alpha = 1, max_iters = 1000) after 1000 iterations: the pitfall
    assert dann_lambda(1000 / 1000, gamma=1.0) == pytest.approx(0.4621, abs=1e-4)


def test_domain_adversarial_loss_at_chance_and_accuracy():
    zeros = torch.zeros(6)
    loss, acc = domain_adversarial_loss(zeros, zeros)
    assert loss.item() == pytest.approx(math.log(2))
    assert acc.item() == 0.5
    loss, acc = domain_adversarial_loss(torch.full((4,), 9.0), torch.full((4,), -9.0))
    assert loss.item() < 1e-3 and acc.item() == 1.0
    _, acc = domain_adversarial_loss(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0]))
    assert acc.item() == 0.5
    assert not acc.requires_grad


def test_domain_discriminator_shapes():
    f = torch.randn(8, 12)
    assert DomainDiscriminator(12, hidden=16)(f).shape == (8,)
    with pytest.raises(DabenchError):
        DomainDiscriminator(0)
