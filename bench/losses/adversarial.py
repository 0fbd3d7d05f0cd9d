"""Domain-adversarial pieces (Ganin et al., JMLR 2016): gradient reversal, the λ_p schedule,
the domain discriminator and its loss."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError


class GradientReverseFunction(torch.autograd.Function):
    """Identity forward; the gradient times −coeff backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.neg() * ctx.coeff, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    return GradientReverseFunction.apply(x, coeff)


class GradientReversal(nn.Module):
    """The gradient reversal layer; set ``coeff`` (λ) before each forward."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule λ_p = 2 / (1 + exp(−γ p)) − 1 (γ = 10; p = training progress).

    tllib's ``WarmStartGradientReverseLayer`` (lo = 0, hi = 1) is the same curve evaluated at
    p = i / max_iters with γ = alpha: its defaults (alpha = 1, max_iters = 1000) reach only
    λ ≈ 0.46 after 1000 iterations instead of ≈ 1 within the first half of training.
    """
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainDiscriminator(nn.Module):
    """Linear–BN–ReLU ×2 → Linear(1): domain logits [N] (source = 1), as tllib's
    ``DomainDiscriminator(batch_norm=True)`` without its final sigmoid (the loss takes logits)."""

    def __init__(self, in_features: int, hidden: int = 1024) -> None:
        super().__init__()
        if in_features <= 0 or hidden <= 0:
            raise DabenchError(
                f"DomainDiscriminator sizes must be positive, got {in_features}, {hidden}"
            )
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f).squeeze(-1)


def domain_adversarial_loss(logits_src: Tensor, logits_tgt: Tensor) -> tuple[Tensor, Tensor]:
    """0.5·[BCE(D(f_s), 1) + BCE(D(f_t), 0)] on logits, and the discriminator's accuracy.

    The accuracy is the mean of the per-domain accuracies (0.5 at chance whatever the batch
    sizes), returned as a detached tensor so that reading it need not synchronise a GPU.
    """
    ls, lt = logits_src.float(), logits_tgt.float()
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(ls, torch.ones_like(ls))
        + F.binary_cross_entropy_with_logits(lt, torch.zeros_like(lt))
    )
    with torch.no_grad():
        acc = 0.5 * ((ls > 0).float().mean() + (lt <= 0).float().mean())
    return loss, acc
