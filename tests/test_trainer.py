"""Trainer behaviour: schedules, AMP paths, clipping, devices, stages."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.errors import DabenchError
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import TrainConfig, Trainer, warmup_cosine


@pytest.fixture(scope="module")
def pair(hand_pair):
    return hand_pair(n_train=48, n_test=16, size=32)


def trainer(pair, tmp_path, method="source-only", **train):
    resolved = resolve_method(method)
    torch.manual_seed(0)
    m = resolved.cls(
        resolved.hparams,
        ModelConfig(img_size=32, head_channels=16, **resolved.card.model),
        21,
        pair.root,
    )
    config = TrainConfig(
        steps=4,
        batch_size=8,
        eval_every=4,
        warmup_steps=1,
        log_every=2,
        eval_batch_size=16,
        **train,
    )
    return Trainer(m, pair, config, seed=0, workdir=tmp_path, progress=False)


def test_warmup_then_cosine_to_zero():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    values = [warmup_cosine(s, 100, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_bf16_autocast_trains_on_the_cpu(pair, tmp_path):
    t = trainer(pair, tmp_path, amp="bf16")
    result = t.fit()
    assert result.status == "ok"
    assert all(math.isfinite(e["pose"]) for e in result.losses)
    assert result.evaluations[-1].reports["target_test"].overall["mpjpe"] > 0


def test_fp16_needs_cuda_and_bad_settings_are_named(pair, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(DabenchError, match="fp16.*CUDA"):
            trainer(pair, tmp_path, amp="fp16")
        with pytest.raises(DabenchError, match="no CUDA device"):
            trainer(pair, tmp_path, device="cuda")
    with pytest.raises(DabenchError, match="train.amp 'fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(DabenchError, match="train.steps must be positive"):
        TrainConfig(steps=0)


def test_gradient_clipping_bounds_the_update(pair, tmp_path):
    t = trainer(pair, tmp_path, grad_clip=1e-3)
    t.make_optimizer([p for p in t.method.parameters() if p.requires_grad], 1.0)
    batch = {role: t._to_device(next(it)) for role, it in t._loaders().items()}
    t.train_step("train", batch, 0, 0.0)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in t._params if p.grad is not None))
    assert norm <= 1e-3 * 1.01


def test_stages_run_in_order_with_their_share_of_the_budget(pair, tmp_path):
    t = trainer(pair, tmp_path, method="causal-interventions")
    result = t.fit()
    stages = [e["stage"] for e in result.losses]
    assert result.status == "ok" and result.timings["steps"] == 4
    assert stages == sorted(stages, key=lambda s: [st.name for st in t.method.stages()].index(s))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_paths(pair, tmp_path, amp):
    t = trainer(pair, tmp_path, amp=amp, device="cuda")
    result = t.fit()
    assert result.status == "ok" and result.device.startswith("cuda:")
    assert result.peak_memory_mb > 0
