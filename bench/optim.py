"""Optimisers and learning-rate schedules from a stage's :class:`~bench.methods.spec.Optim`
declarations: the factory, parameter groups (weight decay, layer-wise lr decay) and the
per-step learning-rate factor."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from timm.models import group_parameters
from torch import nn

from bench.config import TrainConfig
from bench.errors import DabenchError
from bench.methods.spec import Optim, Schedule

# Parameters that are not weights in the decay sense (MAE, BEiT and ViTPose exempt them):
# position embeddings and the learnable class / mask / register tokens.
NO_DECAY_NAMES: tuple[str, ...] = (
    "pos_embed",
    "decoder_pos_embed",
    "cls_token",
    "mask_token",
    "dist_token",
    "reg_token",
)


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices and kernels only: not to norms and biases
    (one-dimensional) nor to embeddings and tokens named in :data:`NO_DECAY_NAMES`."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim > 1 and leaf not in NO_DECAY_NAMES and not name.endswith(".bias")


def layer_scales(root: nn.Module, names: Iterable[str], decay: float) -> dict[str, float]:
    """Layer-wise lr decay (BEiT/MAE fine-tuning): inside every timm model below ``root``
    that declares its layer order (``group_matcher``, e.g. a ViT: embeddings, blocks, final
    norm), layer i of L+1 gets decay^(L−i); everything else (heads, decoders) gets 1."""
    scales = {}
    for prefix, module in root.named_modules():
        if not hasattr(module, "group_matcher") or module is root:
            continue
        layers = group_parameters(module, module.group_matcher(coarse=False), reverse=True)
        top = max(layers.values())
        pre = f"{prefix}." if prefix else ""
        for pname, layer in layers.items():
            scales[pre + pname] = decay ** (top + 1 - layer)
    return {n: scales.get(n, 1.0) for n in names}


def resolve_params(
    method: nn.Module, names: Sequence[str] | None, taken: set[int]
) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters an optimiser names (submodules or parameter-returning
    methods of ``method``); None takes every trainable parameter not in ``taken``."""
    by_id = {id(p): n for n, p in method.named_parameters()}
    if names is None:
        chosen = [(n, p) for n, p in method.named_parameters() if id(p) not in taken]
    else:
        chosen = []
        for name in names:
            try:
                params: Iterable[nn.Parameter] = method.get_submodule(name).parameters()
            except AttributeError:
                attr = getattr(method, name, None)
                if not callable(attr):
                    raise DabenchError(
                        f"{type(method).__name__}: optimiser parameters {name!r} are neither a "
                        "submodule nor a method returning parameters"
                    ) from None
                params = attr()
            chosen += [(by_id[id(p)], p) for p in params]
    seen: set[int] = set()
    out = []
    for n, p in chosen:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((n, p))
    return out


def build_optimizer(
    spec: Optim, named: list[tuple[str, nn.Parameter]], train: TrainConfig, method: nn.Module
) -> tuple[torch.optim.Optimizer, list[float]]:
    """The optimiser of ``spec`` over ``named`` parameters and each group's base lr."""
    lr = (spec.lr if spec.lr is not None else train.lr) * spec.lr_scale
    wd = spec.weight_decay if spec.weight_decay is not None else train.weight_decay
    scales = (
        layer_scales(method, [n for n, _ in named], spec.layer_decay)
        if spec.layer_decay is not None and spec.layer_decay < 1
        else {n: 1.0 for n, _ in named}
    )
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in named:
        groups.setdefault((decays(name, p), scales[name]), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": wd if decay else 0.0, "lr": lr * scale}
        for (decay, scale), ps in groups.items()
    ]
    if not param_groups:
        raise DabenchError("an optimiser has no trainable parameters")
    if spec.factory == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=spec.betas)
    elif spec.factory == "adam":
        # Adam's weight decay is L2 on the gradient, as the papers that use Adam mean it.
        opt = torch.optim.Adam(param_groups, lr=lr, betas=spec.betas)
    else:
        opt = torch.optim.SGD(param_groups, lr=lr, momentum=spec.momentum)
    return opt, [g["lr"] for g in opt.param_groups]


def lr_factor(schedule: Schedule, step: int, total: int, default_warmup: int) -> float:
    """Learning-rate factor at ``step`` (0-based) of a stage of ``total`` steps."""
    warmup = schedule.warmup_steps
    if warmup is None:
        warmup = min(default_warmup, total // 4) if schedule.kind == "warmup-cosine" else 0
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "multistep":
        passed = sum(step >= round(m * total) for m in schedule.milestones)
        return schedule.gamma**passed
    return warmup_cosine(step, total, warmup)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
