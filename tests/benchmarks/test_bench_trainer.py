"""Harness overhead: one trainer step against a bare PyTorch loop on the same model and
batch (target: ratio ≤ 1.05). Both sides do the same work — forward, integral loss,
backward, AdamW step — with clipping and AMP off, so the difference is what the harness
adds (method dispatch, loss dict, grad scaler no-op, bookkeeping).

Run with ``pytest tests/benchmarks/test_bench_trainer.py --benchmark-enable``; the two
medians go to docs/benchmarks.md.
"""

from __future__ import annotations

import pytest
import torch

from bench.methods.specs.supervised import SupervisedHparams
from bench.methods.supervised import SourceOnly
from bench.models.pose_net import ModelConfig
from bench.trainer import StepContext, TrainConfig, Trainer

BATCH = 32


@pytest.fixture(scope="module")
def setup(hand_pair, tmp_path_factory):
    pair = hand_pair(n_train=64, n_test=16, size=64)
    torch.manual_seed(0)
    method = SourceOnly(SupervisedHparams(), ModelConfig(), 21, pair.root)
    trainer = Trainer(
        method,
        pair,
        TrainConfig(grad_clip=0.0, amp="none"),
        seed=0,
        workdir=tmp_path_factory.mktemp("work"),
        progress=False,
    )
    stage = trainer.stages[0]
    update = trainer.updater(stage)
    trainer.streams = trainer.open_streams(stage)
    return method, update, trainer.next_batch()


@pytest.mark.benchmark(group="trainer-overhead")
def test_bare_pytorch_step(benchmark, setup):
    method, _, batch = setup
    net, src = method.net, batch["source"]
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        out = net(src["images"])
        loss = net.integral_loss(out, src["kp2d"], src["kp3d"], src["vis"], method.root)
        loss.backward()
        opt.step()
        return loss.detach()

    loss = benchmark.pedantic(step, rounds=5 if not benchmark.disabled else 1, warmup_rounds=1)
    assert torch.isfinite(loss)


@pytest.mark.benchmark(group="trainer-overhead")
def test_trainer_step(benchmark, setup):
    _, update, batch = setup
    ctx = StepContext(update)
    loss = benchmark.pedantic(
        lambda: sum(update.step(batch, ctx).values()).detach(),
        rounds=5 if not benchmark.disabled else 1,
        warmup_rounds=1,
    )
    assert torch.isfinite(loss)
